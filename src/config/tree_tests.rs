//! Tree prompts in the config: one prompt per leaf path, and errors that point into the tree.

use std::path::Path;

use super::super::parse;
use crate::model::ModelKind;

const MODELS: &str = r#"
[models.clip]
dir = "models/tiny/clip"

[models.owlvit]
dir = "models/tiny/owlvit"

[[cameras]]
name = "Site"
source = "tests/fixtures/images"
"#;

fn config(prompt: &str) -> anyhow::Result<super::super::Config> {
    parse(
        &format!("{MODELS}\n[[cameras.prompts]]\n{prompt}\n"),
        Path::new("t.toml"),
    )
}

fn err(prompt: &str) -> String {
    format!("{:#}", config(prompt).expect_err(prompt))
}

#[test]
fn a_tree_becomes_one_prompt_per_leaf_path() {
    let c = config(
        "tree = \"[a person (a hard hat, no hard hat)]\"\nmodel = \"owlvit\"\nname = \"Safety\"\nthreshold = 0.6\ntree_threshold = 0.2",
    )
    .unwrap();
    let p = &c.cameras[0].prompts;
    let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Safety: a person > a hard hat",
            "Safety: a person > no hard hat"
        ]
    );
    assert_eq!(p[1].id, "safety_a_person_no_hard_hat");
    assert_eq!(p[1].text, "a person > no hard hat");
    for (k, q) in p.iter().enumerate() {
        let t = q.tree.as_ref().unwrap();
        assert_eq!((t.leaf, t.threshold), (k, 0.2));
        assert_eq!(q.decide.threshold, 0.6);
        assert_eq!(q.model, ModelKind::OwlVit);
    }
    assert!(std::sync::Arc::ptr_eq(
        &p[0].tree.as_ref().unwrap().tree,
        &p[1].tree.as_ref().unwrap().tree
    ));
    // a classification-only tree runs on CLIP; without a name the path is the name
    let c = config("tree = \"(indoors, outdoors)\"\nmodel = \"clip\"").unwrap();
    let p = &c.cameras[0].prompts;
    assert_eq!(
        (p[0].name.as_str(), p[1].id.as_str()),
        ("indoors", "outdoors")
    );
    assert_eq!(p[0].tree.as_ref().unwrap().threshold, 0.1);
}

#[test]
fn tree_errors_point_into_the_tree() {
    // the tree string opens at column 8 of line 13: tree column c is file column 8 + c
    let e = err("tree = \"[a person (a hard hat]\"\nmodel = \"owlvit\"");
    assert!(e.contains("line 13, column 30"), "{e}");
    assert!(
        e.contains("column 22: expected ')' to close the '(' at column 11, found ']'"),
        "{e}"
    );
    let cases: &[(&str, &str)] = &[
        (
            "tree = \"[a person]\"\nmodel = \"clip\"",
            "set `model` to its detector",
        ),
        (
            "tree = \"(a, b)\"\nmodel = \"owlvit\"",
            "set `model = \"clip\"`",
        ),
        (
            "tree = \"[a]\"\ntext = \"a\"\nmodel = \"owlvit\"",
            "either `text` or `tree`",
        ),
        ("model = \"owlvit\"", "a prompt needs `text` (or a `tree`"),
        (
            "text = \"a\"\nmodel = \"owlvit\"\ntree_threshold = 0.3",
            "tree prompts only",
        ),
        (
            "tree = \"(a, b)\"\nmodel = \"clip\"\nnegatives = [\"c\"]",
            "their own alternatives",
        ),
        (
            "tree = \"[a]\"\nmodel = \"owlvit\"\ntree_threshold = 2.0",
            "tree_threshold",
        ),
    ];
    for (prompt, needle) in cases {
        let e = err(prompt);
        assert!(e.contains(needle), "{prompt}: {e}");
    }
    // classification groups need CLIP's table
    let no_clip = MODELS.replace("[models.clip]\ndir = \"models/tiny/clip\"", "");
    let text =
        format!("{no_clip}\n[[cameras.prompts]]\ntree = \"[a (b, c)]\"\nmodel = \"owlvit\"\n");
    let e = format!("{:#}", parse(&text, Path::new("t.toml")).unwrap_err());
    assert!(e.contains("[models.clip]"), "{e}");
    // two leaves with the same id (the same tree twice) are refused like a repeated prompt
    let e = err("tree = \"[a]\"\nmodel = \"owlvit\"\n[[cameras.prompts]]\ntree = \"[a]\"\nmodel = \"owlvit\"");
    assert!(e.contains("appears twice"), "{e}");
}

#[test]
fn example_prompts_are_clip_prompts_with_a_name() {
    let c = config(
        "examples = [\"cars/*.jpg\", \"more\"]\nnegative_examples = [\"street/*.jpg\"]\nmodel = \"clip\"\nname = \"Our car\"",
    )
    .unwrap();
    let p = &c.cameras[0].prompts[0];
    assert_eq!((p.id.as_str(), p.text.as_str()), ("our_car", "Our car"));
    assert_eq!(p.examples, ["cars/*.jpg", "more"]);
    assert_eq!(p.negative_examples, ["street/*.jpg"]);
    let cases: &[(&str, &str)] = &[
        (
            "examples = [\"a\"]\nmodel = \"clip\"\nnegatives = [\"b\"]",
            "needs a `name`",
        ),
        (
            "examples = [\"a\"]\ntext = \"x\"\nmodel = \"clip\"\nnegatives = [\"b\"]",
            "`text`, a `tree` or `examples`, one of them",
        ),
        (
            "examples = [\"a\"]\nname = \"A\"\nmodel = \"owlvit\"",
            "class_embeds",
        ),
        // alone on its camera, an example prompt needs negatives like a text prompt
        (
            "examples = [\"a\"]\nname = \"A\"\nmodel = \"clip\"",
            "something to beat",
        ),
    ];
    for (prompt, needle) in cases {
        let e = err(prompt);
        assert!(e.contains(needle), "{prompt}: {e}");
    }
}
