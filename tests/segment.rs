//! CLIPSeg: mask probabilities and coverages against what Hugging Face `transformers`
//! (`CLIPSegProcessor` + `CLIPSegForImageSegmentation`, fp32) outputs for the tiny random-weight
//! fixture (`models/make_fixtures.py --clipseg` records them), the split and whole-model layouts
//! against each other, `promptcam segment`, and a daemon run with a coverage sensor.

use promptcam::decode::read_image;
use promptcam::model::clipseg::Layout;
use promptcam::model::{ClipSeg, Masks, ModelDir, Precision};
use serde_json::Value;

use crate::fixture::{self, floats, strings, TempDir};

const MODEL: &str = "models/tiny/clipseg";

fn dir() -> ModelDir {
    ModelDir::open(&fixture::path(MODEL)).unwrap()
}

fn reference() -> Value {
    fixture::reference("clipseg.json")
}

fn load(layout: Option<Layout>, precision: Precision) -> ClipSeg {
    ClipSeg::load_layout(&dir(), precision, &strings(&reference()["prompts"]), layout).unwrap()
}

/// Runs the model on a fixture image: the masks and the image size.
fn masks(seg: &mut ClipSeg, image: &str) -> (Masks, u32, u32) {
    let img = read_image(&fixture::image(image)).unwrap();
    (seg.masks(&img).unwrap().clone(), img.width(), img.height())
}

/// Worst differences of one image's masks against its reference: (probability, coverage, max).
fn compare(m: &Masks, width: u32, height: u32, image: &Value) -> (f32, f32, f32) {
    let (mut prob, mut cov, mut max) = (0f32, 0f32, 0f32);
    for (q, r) in image["results"].as_array().unwrap().iter().enumerate() {
        let shape: Vec<usize> = r["mask_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, vec![m.height, m.width], "mask shape");
        let p = m.probabilities(q);
        for (ix, want) in r["mask_indices"]
            .as_array()
            .unwrap()
            .iter()
            .zip(floats(&r["mask_values"]))
        {
            prob = prob.max((p[ix.as_u64().unwrap() as usize] - want).abs());
        }
        let mean = p.iter().map(|v| *v as f64).sum::<f64>() / p.len() as f64;
        assert!(
            (mean - r["mask_mean"].as_f64().unwrap()).abs() < 0.002,
            "mask mean {mean} vs {}",
            r["mask_mean"]
        );
        let mut check = |roi: Option<[u32; 4]>, want: &Value| {
            for (t, c) in want["coverage"].as_object().unwrap() {
                let (got, got_max) = m.coverage(q, width, height, roi, t.parse().unwrap());
                cov = cov.max((got - c.as_f64().unwrap() as f32).abs());
                max = max.max((got_max - want["max"].as_f64().unwrap() as f32).abs());
            }
        };
        check(None, r);
        if let Some(roi) = r.get("roi") {
            let b: Vec<u32> = roi["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            check(Some([b[0], b[1], b[2], b[3]]), roi);
        }
    }
    (prob, cov, max)
}

#[test]
fn masks_and_coverage_match_transformers() {
    let refs = reference();
    let mut seg = load(None, Precision::Fp32);
    assert_eq!(
        seg.layout(),
        Layout::Split,
        "the fixture ships the split graphs; they are preferred"
    );
    // the references must be worth checking: coverages differ across prompts and images
    let covs: Vec<f64> = refs["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            i["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["coverage"]["0.5"].as_f64().unwrap())
        })
        .collect();
    assert!(
        covs.iter().any(|c| (c - covs[0]).abs() > 0.02),
        "reference coverages all alike: {covs:?}"
    );
    for image in refs["images"].as_array().unwrap() {
        let name = image["image"].as_str().unwrap();
        let (m, w, h) = masks(&mut seg, name);
        assert_eq!(
            [w, h],
            [
                image["size"][0].as_u64().unwrap() as u32,
                image["size"][1].as_u64().unwrap() as u32
            ]
        );
        let (prob, cov, max) = compare(&m, w, h, image);
        eprintln!("{name}: mask probability max diff {prob:.5}, coverage max diff {cov:.5}, max diff {max:.5}");
        assert!(prob <= 0.01, "{name}: mask probabilities off by {prob}");
        assert!(cov <= 0.005, "{name}: coverage off by {cov}");
        assert!(max <= 0.01, "{name}: max probability off by {max}");
    }
}

/// The terms of the reductions chained from pixels to a mask logit in the tiny fixture
/// (`models/tiny/clipseg/config.json`), along one path: the 16x16x3 patch embedding (768); per
/// vision layer (3) a projection (32), attention scores (16 per head), their mix over the 50
/// tokens, the out projection (32) and the MLP (32, 64); the decoder's reduction of an extracted
/// layer (32) and its two layers (projection 16, scores 8, mix 50, out 16, MLP 16 and 32); the
/// transposed convolutions up to the mask (16 x 4 x 4 and 8 x 4 x 4).
const REDUCTIONS: usize =
    768 + 3 * (32 + 16 + 50 + 32 + 32 + 64) + 32 + 2 * (16 + 8 + 50 + 16 + 16 + 32) + 256 + 128;

#[test]
fn whole_model_layouts_agree_with_the_split_graphs() {
    let image = "astronaut_portrait.png";
    let (split, ..) = masks(&mut load(Some(Layout::Split), Precision::Fp32), image);
    for layout in [Layout::Whole, Layout::WholeRepeated] {
        let mut seg = load(Some(layout), Precision::Fp32);
        assert_eq!(
            seg.layout(),
            layout,
            "the fixture's model.onnx broadcasts one image over the prompts"
        );
        let (m, w, h) = masks(&mut seg, image);
        let worst = (0..m.prompts)
            .flat_map(|q| {
                split
                    .logits(q)
                    .iter()
                    .zip(m.logits(q))
                    .map(|(a, b)| (a - b).abs())
                    .collect::<Vec<_>>()
            })
            .fold(0f32, f32::max);
        // The layouts run the same weights through differently shaped graphs, so tract sums in
        // other orders (and, per CPU, with other kernels): the logits may differ by rounding
        // only, which scales with the logits. Bound: f32's unit roundoff u = 2^-24 times the
        // terms of the sums chained from pixels to logits (`REDUCTIONS`), the standard
        // forward-error bound of a sum, times the logits' scale, and a factor 4 for the
        // normalisations (layer norms, softmax) that can amplify it. A layout bug (a prompt's
        // mask on another prompt, a broadcast over the wrong axis) moves logits by a good part
        // of their range, hundreds of times this bound.
        let scale = (0..split.prompts)
            .flat_map(|q| split.logits(q).iter().copied())
            .fold(0f32, |a, v| a.max(v.abs()));
        let bound = 4.0 * REDUCTIONS as f32 * f32::EPSILON / 2.0 * scale;
        eprintln!("{layout:?}: worst logit difference {worst} (scale {scale}, bound {bound})");
        assert!(
            worst <= bound,
            "{layout:?}: logits differ from the split graphs by {worst}, over the rounding bound {bound} (scale {scale})"
        );
        let image_ref = reference()["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["image"] == image)
            .unwrap()
            .clone();
        let (prob, cov, _) = compare(&m, w, h, &image_ref);
        assert!(
            prob <= 0.01 && cov <= 0.005,
            "{layout:?}: probability {prob}, coverage {cov}"
        );
    }
}

#[test]
fn quantized_graphs_stay_close_to_fp32() {
    let mut q = load(None, Precision::Quantized);
    assert!(
        q.files
            .iter()
            .any(|f| f.to_string_lossy().ends_with("vision_model_quantized.onnx")),
        "{:?}",
        q.files
    );
    let (fp, w, h) = masks(&mut load(None, Precision::Fp32), "chelsea.png");
    let (qm, ..) = masks(&mut q, "chelsea.png");
    for p in 0..fp.prompts {
        let (a, b) = (
            fp.coverage(p, w, h, None, 0.5).0,
            qm.coverage(p, w, h, None, 0.5).0,
        );
        eprintln!("prompt {p}: coverage fp32 {a:.4}, int8 {b:.4}");
        assert!(
            (a - b).abs() < 0.05,
            "prompt {p}: int8 coverage {b} vs fp32 {a}"
        );
    }
}

#[test]
fn a_directory_without_graphs_says_which_files_and_how_to_get_them() {
    let tmp = TempDir::new("clipseg-empty");
    fixture::copy_model(&fixture::path(MODEL), tmp.path(), |_| false);
    let dir = ModelDir::open(tmp.path()).unwrap();
    let err = ClipSeg::load(&dir, Precision::Fp32, &["water".to_string()])
        .err()
        .expect("should fail");
    let msg = format!("{err:#}");
    for needle in [
        "vision_model.onnx",
        "decoder_model.onnx",
        "model.onnx",
        "models/fetch.sh",
    ] {
        assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
    }
    // a CLIP directory is refused by name
    let clip = ModelDir::open(&fixture::path("models/tiny/clip")).unwrap();
    let msg = format!(
        "{:#}",
        ClipSeg::load(&clip, Precision::Fp32, &["water".to_string()])
            .err()
            .expect("should fail")
    );
    assert!(msg.contains("CLIPSeg model directory"), "{msg}");
}

#[test]
fn segment_json_prints_one_line_per_image_with_reference_coverages() {
    let refs = reference();
    let prompts = strings(&refs["prompts"]);
    let images: Vec<&Value> = refs["images"].as_array().unwrap().iter().take(2).collect();
    let model = fixture::path(MODEL);
    let mut args = vec![
        "segment".to_string(),
        "--model".into(),
        model.display().to_string(),
        "--threshold".into(),
        "0.3".into(),
        "--json".into(),
    ];
    for p in &prompts {
        args.extend(["--prompt".to_string(), p.clone()]);
    }
    let paths: Vec<String> = images
        .iter()
        .map(|i| {
            fixture::image(i["image"].as_str().unwrap())
                .display()
                .to_string()
        })
        .collect();
    args.extend(paths.iter().cloned());
    let (code, out, err) = fixture::promptcam(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    for ((line, image), path) in lines.iter().zip(&images).zip(&paths) {
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4, "{line}");
        assert_eq!(line["image"], path.as_str());
        assert_eq!(line["width"], image["size"][0]);
        assert_eq!(line["height"], image["size"][1]);
        let results = line["results"].as_array().unwrap();
        assert_eq!(results.len(), prompts.len());
        for ((r, want), prompt) in results
            .iter()
            .zip(image["results"].as_array().unwrap())
            .zip(&prompts)
        {
            assert_eq!(r.as_object().unwrap().len(), 3, "{r}");
            assert_eq!(r["prompt"], prompt.as_str());
            let cov = r["coverage"].as_f64().unwrap();
            assert!(
                (cov - want["coverage"]["0.3"].as_f64().unwrap()).abs() <= 0.005,
                "{r} vs {want}"
            );
            assert!(
                (r["max"].as_f64().unwrap() - want["max"].as_f64().unwrap()).abs() <= 0.01,
                "{r}"
            );
        }
    }
}

#[test]
fn segment_out_writes_the_overlay_at_the_image_size() {
    let tmp = TempDir::new("clipseg-out");
    let out = tmp.path().join("overlay.png");
    let input = fixture::image("chelsea.png");
    let model = fixture::path(MODEL);
    let (code, stdout, err) = fixture::promptcam(&[
        "segment",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a cat",
        "--out",
        out.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("a cat") && stdout.contains('%'), "{stdout}");
    let drawn = image::open(&out).unwrap().to_rgb8();
    let original = read_image(&input).unwrap();
    assert_eq!(drawn.dimensions(), original.dimensions());
    let changed = drawn
        .pixels()
        .zip(original.pixels())
        .filter(|(a, b)| a != b)
        .count();
    let total = (drawn.width() * drawn.height()) as usize;
    // the tiny model covers 30..70% of the photo: about that much is tinted, the rest untouched
    assert!(
        changed > total / 5 && changed < total * 9 / 10,
        "{changed} of {total} pixels changed"
    );
}

#[test]
fn a_clipseg_prompt_in_the_daemon_is_a_coverage_sensor() {
    let refs = reference();
    let coverage = |image: &str| {
        refs["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["image"] == image)
            .unwrap()["results"][0]["coverage"]["0.5"]
            .as_f64()
            .unwrap()
    };
    // "a cat" covers more of the camera photo than of the cat photo (tiny random model): a
    // coverage threshold between the two turns the sensor on for the camera frames only
    let (low, high) = (coverage("chelsea.png"), coverage("camera_gray.png"));
    assert!(
        high - low > 0.05,
        "reference coverages {low} and {high} too close for this test"
    );
    let threshold = (low + high) / 2.0;
    let tmp = TempDir::new("clipseg-daemon");
    let frames = tmp.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for (i, f) in [
        "chelsea.png",
        "camera_gray.png",
        "camera_gray.png",
        "camera_gray.png",
        "chelsea.png",
        "chelsea.png",
    ]
    .iter()
    .enumerate()
    {
        std::fs::copy(fixture::image(f), frames.join(format!("{i:03}.png"))).unwrap();
    }
    let config = tmp.path().join("promptcam.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[models.clipseg]
dir = "{model}"
quantized = false

[motion]
enabled = false

[[cameras]]
name = "Floor"
source = "{frames}"
fps = 4

[[cameras.prompts]]
text = "a cat"
model = "clipseg"
mask_threshold = 0.5
threshold = {threshold}
off_threshold = {threshold}
window = 1
min_frames = 2
off_delay = 0
"#,
            model = fixture::path(MODEL).display(),
            frames = frames.display(),
        ),
    )
    .unwrap();
    // the file source ends after its six frames, and the daemon with it
    let (code, out, err) = fixture::promptcam(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "daemon failed: {err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["start", "end"], "{events:?}");
    assert_eq!(events[0]["prompt"], "a_cat");
    let score = events[0]["score"].as_f64().unwrap();
    assert!(
        (score - high).abs() <= 0.005,
        "start score {score} is not the camera photo's coverage {high}"
    );
    assert!(
        events[0].get("box").is_none_or(Value::is_null),
        "a coverage sensor has no box: {}",
        events[0]
    );
}

#[test]
fn config_keys_for_clipseg_prompts_are_validated() {
    let base = r#"
[models.clipseg]
dir = "models/tiny/clipseg"

[[cameras]]
name = "Floor"
source = "tests/fixtures/images"

[[cameras.prompts]]
text = "water on the floor"
model = "clipseg"
"#;
    let c = promptcam::config::parse(base, std::path::Path::new("t.toml")).unwrap();
    let p = &c.cameras[0].prompts[0];
    assert_eq!(
        (p.model, p.mask_threshold),
        (promptcam::model::ModelKind::ClipSeg, 0.5)
    );
    let err = |text: &str| {
        format!(
            "{:#}",
            promptcam::config::parse(text, std::path::Path::new("t.toml"))
                .expect_err("should fail")
        )
    };
    let e = err(&format!("{base}mask_threshold = 1.5\n"));
    assert!(
        e.contains("cameras.prompts.mask_threshold") && e.contains("line 12"),
        "{e}"
    );
    let e = err(&base.replace("[models.clipseg]\ndir = \"models/tiny/clipseg\"", ""));
    assert!(e.contains("[models.clipseg]"), "{e}");
    let e = err(&format!("{base}negatives = [\"a dry floor\"]\n"));
    assert!(e.contains("negatives"), "{e}");
}

#[test]
fn pixel_tensors_match_the_clipseg_processor() {
    // ViT processor: 352x352 without crop, bilinear, ImageNet mean/std. Pillow's and
    // fast_image_resize's bilinear round ~3% of pixels a level apart; the masks above absorb that
    let mut seg = load(None, Precision::Fp32);
    let config = seg.preprocessor().config().clone();
    let level = config.rescale.unwrap() as f32
        / config
            .normalize
            .unwrap()
            .1
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
    for image in reference()["images"].as_array().unwrap() {
        let name = image["image"].as_str().unwrap();
        let want = &image["pixel_values"];
        let t = seg
            .preprocessor()
            .run(&read_image(&fixture::image(name)).unwrap())
            .unwrap();
        assert_eq!(t.shape(), &[1, 3, 352, 352], "{name}");
        let ours = t
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let values = floats(&want["values"]);
        let diffs: Vec<f32> = want["indices"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&values)
            .map(|(i, v)| (ours[i.as_u64().unwrap() as usize] - v).abs())
            .collect();
        let off = diffs.iter().filter(|d| **d > level * 0.5).count();
        let worst = diffs.iter().copied().fold(0f32, f32::max);
        assert!(
            worst <= 3.0 * level,
            "{name}: worst sample {:.2} levels off",
            worst / level
        );
        assert!(
            off <= values.len() / 20,
            "{name}: {off} of {} samples a level or more off",
            values.len()
        );
        let mean = ours.iter().map(|v| *v as f64).sum::<f64>() / ours.len() as f64;
        assert!(
            (mean - want["mean"].as_f64().unwrap()).abs() < 0.002,
            "{name}: mean {mean} vs {}",
            want["mean"]
        );
    }
}

/// Per-frame model time of each layout on the full-size random-weight rd64-refined
/// (`models/make_fixtures.py --clipseg --full`), 1 and 2 threads, three prompts:
/// `PROMPTCAM_CLIPSEG_FULL=target/full-models/clipseg-rd64-refined cargo test --test tests segment::full -- --ignored --nocapture`
#[test]
#[ignore]
fn full_size_layout_timings() {
    let Ok(path) = std::env::var("PROMPTCAM_CLIPSEG_FULL") else {
        return eprintln!("PROMPTCAM_CLIPSEG_FULL not set");
    };
    let dir = ModelDir::open(std::path::Path::new(&path)).unwrap();
    let prompts: Vec<String> = ["water on the floor", "smoke", "snow"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let img = read_image(&fixture::image("rocket.png")).unwrap();
    for threads in [1, 2] {
        promptcam::threads::set_threads(threads);
        for layout in [Layout::Split, Layout::Whole, Layout::WholeRepeated] {
            let t = std::time::Instant::now();
            let mut seg =
                ClipSeg::load_layout(&dir, Precision::Fp32, &prompts, Some(layout)).unwrap();
            let load = t.elapsed();
            let mut times = vec![];
            for _ in 0..4 {
                let px = seg.preprocessor().run(&img).unwrap();
                let t = std::time::Instant::now();
                std::hint::black_box(seg.run_pixels(px).unwrap());
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            eprintln!(
                "{threads} thread(s) {:?}: load {:.0} ms, model median {:.0} ms ({times:.0?})",
                seg.layout(),
                load.as_secs_f64() * 1000.0,
                times[times.len() / 2]
            );
        }
    }
}
