//! The daemon's tree adapter on the tiny models: its leaf observations are the CLI path's leaf
//! scores (`Tree::run` with models loaded for the tree alone), with a detector shared with
//! another camera's prompts and CLIP text embeddings made apart.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use super::*;
use crate::model::tree::models::Models;
use crate::model::{ClipText, ModelDir, Precision};

fn dir(name: &str) -> ModelDir {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models/tiny")
        .join(name);
    ModelDir::open(&p).unwrap()
}

#[test]
fn leaf_observations_are_the_trees_leaf_scores() {
    let source = "[a cat, a rocket (a photo of a cat, a photo of a dog) [a cup, a person]]";
    let tree = Arc::new(Tree::parse(source).unwrap());
    let threshold = 0.725;
    let image = crate::decode::read_image(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/images/astronaut_portrait.png"),
    )
    .unwrap();

    // the reference: the tree's own models, as `promptcam tree` loads them
    let mut own = Models::load(
        &tree,
        Some(&dir("owlvit")),
        Some(&dir("clip")),
        Precision::Fp32,
        None,
    )
    .unwrap();
    let want = tree
        .run(&mut own, &image, threshold)
        .unwrap()
        .leaf_scores(&tree);
    assert!(
        want.iter().filter(|l| l.score > 0.0).count() >= 3,
        "{want:?}"
    );

    // the daemon's: a detector holding another camera's prompt first, CLIP's towers apart
    let mut texts = vec!["a package on the doorstep".to_string()];
    texts.extend(tree.texts(Op::Detect));
    let detector = Detector::load(&dir("owlvit"), Precision::Fp32, &texts, None).unwrap();
    let queries = (1..texts.len()).collect();
    let clip_texts = tree.texts(Op::Classify);
    let embeds = ClipText::load(&dir("clip"), Precision::Fp32)
        .unwrap()
        .embed(&clip_texts)
        .unwrap();
    let tower = ClipImage::load(&dir("clip"), Precision::Fp32).unwrap();
    let leaves: Vec<usize> = (10..10 + want.len()).collect();
    let mut prompts = TreePrompts::new(
        ModelKind::OwlVit,
        tree.clone(),
        threshold,
        leaves.clone(),
        TreeBackends {
            detector: Some((Arc::new(detector), queries)),
            clip: Some((tower, embeds)),
        },
    )
    .unwrap();
    assert_eq!(prompts.prompts(), leaves.as_slice());
    let frame = Frame {
        image,
        seq: 1,
        captured_at: SystemTime::now(),
        monotonic: Instant::now(),
    };
    let seen = prompts.observe(&frame, None).unwrap();
    for (leaf, prompt) in want.iter().zip(&leaves) {
        let best = seen
            .iter()
            .filter(|o| o.prompt == *prompt)
            .max_by(|a, b| a.score.total_cmp(&b.score));
        let score = best.map_or(0.0, |o| o.score);
        assert!(
            (score - leaf.score).abs() < 1e-4,
            "{}: {score} vs {}",
            leaf.path,
            leaf.score
        );
        assert_eq!(best.and_then(|o| o.bbox), leaf.bbox, "{}", leaf.path);
    }
    // one observation per chain: the nested persons are many
    assert!(seen.len() > want.len(), "{} observations", seen.len());
}

#[test]
fn a_configured_tree_runs_on_the_shared_towers() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        r#"
[models.clip]
dir = "{root}/models/tiny/clip"
quantized = false

[models.owlvit]
dir = "{root}/models/tiny/owlvit"
quantized = false

[[cameras]]
name = "Pad"
source = "{root}/tests/fixtures/images"

[[cameras.prompts]]
text = "a package on the doorstep"
model = "owlvit"

[[cameras.prompts]]
tree = "[a cat, a rocket (a photo of a cat, a photo of a dog) [a cup, a person]]"
model = "owlvit"
tree_threshold = 0.725

[[cameras]]
name = "Gate"
source = "{root}/tests/fixtures/images"

[[cameras.prompts]]
text = "a person"
model = "owlvit"
"#,
        root = root.display()
    );
    let config = crate::config::parse(&text, &root.join("t.toml")).unwrap();
    let cam = &config.cameras[0];
    assert_eq!(cam.prompts.len(), 6, "one plain prompt and five leaves");
    let towers = super::super::towers::Towers::load(
        &config,
        None,
        &crate::pipeline::start_cache::StartCache::off(),
    )
    .unwrap();
    let mut models = towers.prompt_models(cam).unwrap();
    let tree_model = models
        .iter_mut()
        .find(|m| m.prompts() == [1, 2, 3, 4, 5])
        .expect("the tree's model serves its five leaves");
    let image =
        crate::decode::read_image(&root.join("tests/fixtures/images/astronaut_portrait.png"))
            .unwrap();
    let frame = Frame {
        image: image.clone(),
        seq: 1,
        captured_at: SystemTime::now(),
        monotonic: Instant::now(),
    };
    let seen = tree_model.observe(&frame, None).unwrap();

    let tree = cam.prompts[1].tree.as_ref().unwrap().tree.clone();
    let mut own = Models::load(
        &tree,
        Some(&dir("owlvit")),
        Some(&dir("clip")),
        Precision::Fp32,
        None,
    )
    .unwrap();
    let want = tree
        .run(&mut own, &image, 0.725)
        .unwrap()
        .leaf_scores(&tree);
    for (k, leaf) in want.iter().enumerate() {
        let best = seen
            .iter()
            .filter(|o| o.prompt == k + 1)
            .map(|o| o.score)
            .fold(0f32, f32::max);
        assert!(
            (best - leaf.score).abs() < 1e-4,
            "{}: {best} vs {}",
            leaf.path,
            leaf.score
        );
    }
    // the plain prompts still run on their own models, not the tree's
    assert!(models.iter().any(|m| m.prompts() == [0]));
}
