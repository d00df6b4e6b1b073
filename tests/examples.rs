//! Example-image prompts (issue 15): the CLIP prompt made of pictures (the normalized mean of
//! their normalized image embeddings, scored like a text prompt) against transformers
//! (`models/make_fixtures.py --tree` writes clip_examples.json), through `promptcam classify
//! --example`; and the detector's refusal, which names what an export must have.

use std::path::{Path, PathBuf};

use promptcam::model::examples::{example_embedding, example_files};
use promptcam::model::{Clip, ModelDir, Precision};
use serde_json::Value;

use crate::fixture::{self, floats, strings, TempDir};

/// Copies the set's pictures into `dir` (under other names: only the pixels may matter).
fn example_dir(refs: &Value, set: &str, dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    strings(&refs["sets"][set]["files"])
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let to = dir.join(format!("{set}-{i}.png"));
            std::fs::copy(fixture::image(f), &to).unwrap();
            to
        })
        .collect()
}

#[test]
fn an_example_embedding_is_the_normalized_mean_of_the_image_embeddings() {
    let refs = fixture::reference("clip_examples.json");
    let dir = ModelDir::open(&fixture::path("models/tiny/clip")).unwrap();
    let mut clip = Clip::load(&dir, Precision::Fp32, &strings(&refs["texts"])).unwrap();
    let tmp = TempDir::new("examples-embed");
    for set in ["pets", "launch"] {
        let files = example_dir(&refs, set, &tmp.path().join(set));
        let got = example_embedding(&mut clip, &files).unwrap();
        let want = floats(&refs["sets"][set]["embedding"]);
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 2e-3, "{set}: embedding off by {worst}");
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{set}: norm {norm}");
    }
}

#[test]
fn classify_with_example_prompts_matches_transformers() {
    let refs = fixture::reference("clip_examples.json");
    let tmp = TempDir::new("examples-cli");
    example_dir(&refs, "pets", &tmp.path().join("pets"));
    example_dir(&refs, "launch", &tmp.path().join("launch"));
    // one set as a directory (with a file that is not an image), one as a glob
    std::fs::write(tmp.path().join("pets/notes.txt"), "not a picture").unwrap();
    let pets = tmp.path().join("pets").to_string_lossy().into_owned();
    let launch = tmp
        .path()
        .join("launch/*.png")
        .to_string_lossy()
        .into_owned();
    let model = fixture::path("models/tiny/clip");
    let texts = strings(&refs["texts"]);
    let images: Vec<String> = refs["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            fixture::image(i["image"].as_str().unwrap())
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut args = vec!["classify", "--model", model.to_str().unwrap(), "--json"];
    for t in &texts {
        args.extend(["--prompt", t]);
    }
    args.extend(["--example", &pets, "--example", &launch]);
    args.extend(images.iter().map(String::as_str));
    let (code, stdout, stderr) = fixture::promptcam(&args);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), images.len());
    let mut undecided = 0;
    for (line, want) in lines.iter().zip(refs["images"].as_array().unwrap()) {
        let results = line["results"].as_array().unwrap();
        let names: Vec<&str> = results
            .iter()
            .map(|r| r["prompt"].as_str().unwrap())
            .collect();
        assert_eq!(names, [&texts[0], &texts[1], &pets, &launch]);
        let what = want["image"].as_str().unwrap();
        let (scores, sims) = (floats(&want["scores"]), floats(&want["similarities"]));
        for (i, r) in results.iter().enumerate() {
            let (s, sim) = (
                r["score"].as_f64().unwrap() as f32,
                r["similarity"].as_f64().unwrap() as f32,
            );
            assert!(
                (s - scores[i]).abs() <= 0.01,
                "{what} {}: score {s} vs {}",
                names[i],
                scores[i]
            );
            assert!(
                (sim - sims[i]).abs() <= 0.005,
                "{what} {}: similarity {sim} vs {}",
                names[i],
                sims[i]
            );
        }
        undecided += scores.iter().filter(|s| (0.05..0.95).contains(*s)).count();
    }
    // the scores are not all saturated, or the comparison would say little
    assert!(undecided >= 2, "{undecided} scores between 0.05 and 0.95");
}

#[test]
fn examples_that_name_no_picture_are_an_error() {
    let tmp = TempDir::new("examples-none");
    let spec = tmp.path().join("*.jpg").to_string_lossy().into_owned();
    assert!(example_files(&spec).is_err());
    let model = fixture::path("models/tiny/clip");
    let image = fixture::image("chelsea.png");
    let (code, _, stderr) = fixture::promptcam(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--example",
        &spec,
        image.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no image files there"), "{stderr}");
}

#[test]
fn detect_with_an_example_names_the_export_it_needs() {
    for (dir, family) in [("owlvit", "OWL-ViT"), ("owlv2", "OWLv2")] {
        let model = fixture::path(&format!("models/tiny/{dir}"));
        let image = fixture::image("chelsea.png");
        let (code, stdout, stderr) = fixture::promptcam(&[
            "detect",
            "--model",
            model.to_str().unwrap(),
            "--example",
            image.to_str().unwrap(),
            image.to_str().unwrap(),
        ]);
        assert_ne!(code, 0);
        assert!(stdout.is_empty(), "{stdout}");
        for needle in [family, "class_embeds", "query_embeds", "models/README.md"] {
            assert!(stderr.contains(needle), "{needle}: {stderr}");
        }
    }
}

#[test]
fn the_daemon_scores_an_example_prompt_against_negative_examples_as_transformers() {
    use promptcam::frame::Frame;
    use promptcam::pipeline::towers::Towers;
    use std::time::{Instant, SystemTime};

    let refs = fixture::reference("clip_examples.json");
    let tmp = TempDir::new("examples-daemon");
    example_dir(&refs, "pets", &tmp.path().join("pets"));
    example_dir(&refs, "launch", &tmp.path().join("launch"));
    let text = format!(
        r#"
[models.clip]
dir = "{clip}"
quantized = false

[[cameras]]
name = "Yard"
source = "{images}"

[[cameras.prompts]]
examples = ["{pets}"]
negative_examples = ["{launch}/*.png"]
name = "Our pets"
model = "clip"
"#,
        clip = fixture::path("models/tiny/clip").display(),
        images = fixture::path("tests/fixtures/images").display(),
        pets = tmp.path().join("pets").display(),
        launch = tmp.path().join("launch").display(),
    );
    let config = promptcam::config::parse(&text, &tmp.path().join("t.toml")).unwrap();
    let towers = Towers::load(
        &config,
        None,
        &promptcam::pipeline::start_cache::StartCache::off(),
    )
    .unwrap();
    let mut models = towers.prompt_models(&config.cameras[0]).unwrap();
    let scale = refs["logit_scale"].as_f64().unwrap() as f32;
    let mut undecided = 0;
    for want in refs["images"].as_array().unwrap() {
        let name = want["image"].as_str().unwrap();
        let frame = Frame {
            image: promptcam::decode::read_image(&fixture::image(name)).unwrap(),
            seq: 1,
            captured_at: SystemTime::now(),
            monotonic: Instant::now(),
        };
        let seen = models[0].observe(&frame, None).unwrap();
        assert_eq!(seen.len(), 1);
        // the reference's similarities to the two sets (after the two texts)
        let sims = floats(&want["similarities"]);
        let expected = 1.0 / (1.0 + ((sims[3] - sims[2]) * scale).exp());
        assert!(
            (seen[0].score - expected).abs() <= 0.01,
            "{name}: {} vs {expected}",
            seen[0].score
        );
        undecided += usize::from((0.05..0.95).contains(&expected));
    }
    assert!(undecided >= 1, "every expected score is saturated");
}
