//! Tree prompts (issue 15): `Tree::run` on the tiny CLIP and OWL-ViT against the same steps done
//! by hand with transformers (`models/make_fixtures.py --tree`: detector on the image, crop, CLIP
//! on the crop, detector on the crop), and `promptcam tree`'s JSON and drawing.

use promptcam::decode::read_image;
use promptcam::model::tree::{models::Models, ClassScore, Tree, TreeOutput};
use promptcam::model::{ModelDir, Precision};
use serde_json::Value;

use crate::fixture::{self, floats, TempDir};

fn dirs() -> (ModelDir, ModelDir) {
    (
        ModelDir::open(&fixture::path("models/tiny/owlvit")).unwrap(),
        ModelDir::open(&fixture::path("models/tiny/clip")).unwrap(),
    )
}

/// Same prompts in the same order, probabilities within 0.01 (the tolerance of the CLIP parity
/// tests: the two resamplers differ by a level here and there).
fn assert_classes(ours: &[ClassScore], want: &Value, what: &str) {
    let want = want.as_array().unwrap();
    let names: Vec<&str> = ours.iter().map(|c| c.prompt.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|c| c["prompt"].as_str().unwrap()).collect();
    assert_eq!(names, want_names, "{what}: classes");
    for (c, w) in ours.iter().zip(want) {
        let s = w["score"].as_f64().unwrap() as f32;
        assert!(
            (c.score - s).abs() <= 0.01,
            "{what}: {:?} {} vs {s}",
            c.prompt,
            c.score
        );
    }
}

/// Detection by detection in the reference's order (breadth first, each group's boxes by score):
/// same prompt and parent, score within 0.01, corners within 0.5 px, same classes.
fn assert_output(ours: &TreeOutput, want: &Value, what: &str) {
    assert_classes(&ours.classes, &want["classes"], &format!("{what} frame"));
    let dets = want["detections"].as_array().unwrap();
    let got: Vec<(&str, Option<usize>)> = ours
        .detections
        .iter()
        .map(|d| (d.prompt.as_str(), d.parent))
        .collect();
    let expected: Vec<(&str, Option<usize>)> = dets
        .iter()
        .map(|d| {
            (
                d["prompt"].as_str().unwrap(),
                d["parent"].as_u64().map(|p| p as usize),
            )
        })
        .collect();
    assert_eq!(got, expected, "{what}: detections (prompt, parent)");
    for (i, (d, w)) in ours.detections.iter().zip(dets).enumerate() {
        let s = w["score"].as_f64().unwrap() as f32;
        assert!(
            (d.score - s).abs() <= 0.01,
            "{what} #{i}: score {} vs {s}",
            d.score
        );
        let b = floats(&w["box"]);
        for (x, y) in d.bbox.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 0.5,
                "{what} #{i}: box {:?} vs {b:?}",
                d.bbox
            );
        }
        assert_classes(&d.classes, &w["classes"], &format!("{what} #{i}"));
    }
}

#[test]
fn trees_match_the_same_steps_done_by_hand_with_transformers() {
    let refs = fixture::reference("tree.json");
    let (owl, clip) = dirs();
    let mut nested = 0;
    let mut classified = 0;
    for t in refs["trees"].as_array().unwrap() {
        let source = t["tree"].as_str().unwrap();
        let tree = Tree::parse(source).unwrap();
        let threshold = t["threshold"].as_f64().unwrap() as f32;
        let mut models =
            Models::load(&tree, Some(&owl), Some(&clip), Precision::Fp32, None).unwrap();
        for im in t["images"].as_array().unwrap() {
            let name = im["image"].as_str().unwrap();
            let image = read_image(&fixture::image(name)).unwrap();
            let out = tree.run(&mut models, &image, threshold).unwrap();
            assert_output(&out, im, &format!("{source} on {name}"));
            nested += out.detections.iter().filter(|d| d.parent.is_some()).count();
            classified += out
                .detections
                .iter()
                .filter(|d| !d.classes.is_empty())
                .count();
        }
    }
    // the reference exercises every rule: boxes in crops, classified boxes
    assert!(
        nested >= 2 && classified >= 2,
        "{nested} nested, {classified} classified"
    );
}

#[test]
fn a_tree_needs_the_models_its_groups_use() {
    let (owl, clip) = dirs();
    let tree = Tree::parse("[a cat (a photo of a cat, a photo of a dog)]").unwrap();
    let e = Models::load(&tree, None, Some(&clip), Precision::Fp32, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--detector") && e.contains("column 1"), "{e}");
    let e = Models::load(&tree, Some(&owl), None, Precision::Fp32, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--clip") && e.contains("column 8"), "{e}");
    // a classification-only tree loads no detector
    let tree = Tree::parse("(a photo of a cat, a photo of a dog)").unwrap();
    let m = Models::load(&tree, None, Some(&clip), Precision::Fp32, None).unwrap();
    assert!(m.detector.is_none() && m.clip.is_some());
}

/// The reference's first tree and its result on `image`.
fn first_tree_on<'a>(refs: &'a Value, image: &str) -> (&'a Value, &'a Value) {
    let t = &refs["trees"][0];
    let im = t["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image"] == image)
        .unwrap();
    (t, im)
}

#[test]
fn the_tree_command_prints_the_issues_json_and_draws_the_boxes() {
    let refs = fixture::reference("tree.json");
    let (t, im) = first_tree_on(&refs, "astronaut_portrait.png");
    let tmp = TempDir::new("tree-cli");
    let out = tmp.path().join("drawn.png");
    let image = fixture::image("astronaut_portrait.png");
    let threshold = t["threshold"].as_f64().unwrap().to_string();
    let (code, stdout, stderr) = fixture::promptcam(&[
        "tree",
        "--detector",
        fixture::path("models/tiny/owlvit").to_str().unwrap(),
        "--clip",
        fixture::path("models/tiny/clip").to_str().unwrap(),
        "--tree",
        t["tree"].as_str().unwrap(),
        "--threshold",
        &threshold,
        "--json",
        "--out",
        out.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    // the issue's keys, and the leaf scores the daemon would threshold
    assert_eq!(
        keys(&v),
        [
            "classes",
            "detections",
            "height",
            "image",
            "leaves",
            "width"
        ]
    );
    let leaves: Vec<&str> = v["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        leaves,
        [
            "a cat",
            "a rocket > a photo of a cat",
            "a rocket > a photo of a dog",
            "a rocket > a cup",
            "a rocket > a person"
        ]
    );
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(300), Some(512))
    );
    assert_eq!(v["image"], image.to_str().unwrap());
    let dets = v["detections"].as_array().unwrap();
    assert_eq!(dets.len(), im["detections"].as_array().unwrap().len());
    for d in dets {
        assert_eq!(keys(d), ["box", "classes", "parent", "prompt", "score"]);
        for c in d["classes"].as_array().unwrap() {
            assert_eq!(keys(c), ["prompt", "score"]);
        }
    }
    assert!(dets[0]["parent"].is_null());
    assert!(dets.iter().any(|d| d["parent"] == 0));
    assert_eq!(dets[0]["classes"].as_array().unwrap().len(), 2);

    // the drawing: the first box's outline in its label's colour, the rest of the picture kept
    let drawn = image::open(&out).unwrap().to_rgb8();
    let original = read_image(&image).unwrap();
    assert_eq!(drawn.dimensions(), original.dimensions());
    let b = floats(&dets[0]["box"]);
    // the left edge at mid-height (nested boxes and their labels lie right of it)
    let (x, y) = (b[0], (b[1] + b[3]) / 2.0);
    let colour = promptcam::annotate::colour(2);
    assert_eq!(
        drawn.get_pixel(x as u32, y as u32),
        &colour,
        "left edge of {b:?}"
    );
    assert_eq!(drawn.get_pixel(150, 100), original.get_pixel(150, 100));
}

#[test]
fn a_parse_error_points_at_its_column() {
    let (code, _, stderr) = fixture::promptcam(&[
        "tree",
        "--tree",
        "[a person (a hard hat, no hard hat]",
        "x.png",
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("column 35: expected ')' to close the '(' at column 11, found ']'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\n  [a person (a hard hat, no hard hat]\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("\n  {}^\n", " ".repeat(34))),
        "{stderr}"
    );
}

/// The reference's leaf scores for the first tree on one image, computed from its detections:
/// a leaf's best chain of detection scores times class probabilities.
fn reference_leaves(im: &Value) -> Vec<(&'static str, f32)> {
    let dets = im["detections"].as_array().unwrap();
    let score = |d: &Value| d["score"].as_f64().unwrap() as f32;
    let class = |d: &Value, name: &str| {
        d["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["prompt"] == name)
            .map_or(0.0, |c| c["score"].as_f64().unwrap() as f32)
    };
    let top = |prompt: &'static str| {
        dets.iter()
            .enumerate()
            .filter(move |(_, d)| d["parent"].is_null() && d["prompt"] == prompt)
    };
    let best = |v: Vec<f32>| v.into_iter().fold(0f32, f32::max);
    let nested = |name: &'static str| {
        best(
            top("a rocket")
                .flat_map(|(i, r)| {
                    dets.iter()
                        .filter(move |d| d["parent"] == i && d["prompt"] == name)
                        .map(move |d| score(r) * score(d))
                })
                .collect(),
        )
    };
    vec![
        ("a_cat", best(top("a cat").map(|(_, d)| score(d)).collect())),
        (
            "a_rocket_a_photo_of_a_cat",
            best(
                top("a rocket")
                    .map(|(_, d)| score(d) * class(d, "a photo of a cat"))
                    .collect(),
            ),
        ),
        (
            "a_rocket_a_photo_of_a_dog",
            best(
                top("a rocket")
                    .map(|(_, d)| score(d) * class(d, "a photo of a dog"))
                    .collect(),
            ),
        ),
        ("a_rocket_a_cup", nested("a cup")),
        ("a_rocket_a_person", nested("a person")),
    ]
}

#[test]
fn the_daemon_makes_each_leaf_path_a_state_scored_as_the_reference() {
    let refs = fixture::reference("tree.json");
    let (t, im) = first_tree_on(&refs, "astronaut_portrait.png");
    let tmp = TempDir::new("tree-daemon");
    let frames = tmp.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    // the tree's leaves start on the astronaut and end on coffee (no detection there)
    std::fs::copy(
        fixture::image("astronaut_portrait.png"),
        frames.join("0.png"),
    )
    .unwrap();
    std::fs::copy(fixture::image("coffee.png"), frames.join("1.png")).unwrap();
    let config = tmp.path().join("promptcam.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[models.clip]
dir = "{clip}"
quantized = false

[models.owlvit]
dir = "{owl}"
quantized = false

[motion]
enabled = false

[[cameras]]
name = "Pad"
source = "{frames}"
fps = 10
loop = false

  [[cameras.prompts]]
  tree = "{tree}"
  model = "owlvit"
  tree_threshold = {threshold}
  threshold = 0.5
  window = 1
  min_frames = 1
  off_delay = 0
"#,
            clip = fixture::path("models/tiny/clip").display(),
            owl = fixture::path("models/tiny/owlvit").display(),
            frames = frames.display(),
            tree = t["tree"].as_str().unwrap(),
            threshold = t["threshold"],
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = fixture::promptcam(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut started = 0;
    for (id, want) in reference_leaves(im) {
        let starts: Vec<&Value> = events
            .iter()
            .filter(|e| e["prompt"] == id && e["type"] == "start")
            .collect();
        let ends = events
            .iter()
            .filter(|e| e["prompt"] == id && e["type"] == "end")
            .count();
        if want < 0.5 {
            assert!(
                starts.is_empty(),
                "{id}: {want} is under the threshold: {starts:?}"
            );
            continue;
        }
        assert_eq!((starts.len(), ends), (1, 1), "{id}: {stdout}");
        let got = starts[0]["score"].as_f64().unwrap() as f32;
        assert!(
            (got - want).abs() <= 0.02,
            "{id}: {got} vs the reference's {want}"
        );
        assert!(
            starts[0]["box"].is_array(),
            "{id}: a leaf under a detection has a box"
        );
        started += 1;
    }
    assert!(started >= 3, "{started} leaves started: {stdout}");
}
