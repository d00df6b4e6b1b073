//! Vision core parity: tokenization, preprocessing, CLIP and OWL-ViT against what Hugging Face
//! `transformers` (fp32) and onnxruntime (the same `_quantized.onnx` files) output for the tiny
//! random-weight fixture models (`models/make_fixtures.py` records both).

use promptcam::decode::read_image;
use promptcam::model::owlvit::{iou, post_process};
use promptcam::model::{Clip, Detection, ModelDir, OwlVit, Precision};
use promptcam::preprocess::{Preprocessor, ProcessorConfig};
use serde_json::Value;
use tract_onnx::prelude::{TValue, Tensor};

use crate::fixture::{self, floats, strings, TempDir};

fn clip_dir() -> ModelDir {
    ModelDir::open(&fixture::path("models/tiny/clip")).unwrap()
}

fn owl_dir() -> ModelDir {
    ModelDir::open(&fixture::path("models/tiny/owlvit")).unwrap()
}

#[test]
fn token_ids_match_the_reference_tokenizers_exactly() {
    let refs = fixture::reference("tokens.json");
    let clip = clip_dir().tokenizer().unwrap();
    let owl = owl_dir().tokenizer().unwrap();
    assert_eq!((clip.max_length, clip.pad_id), (77, 49407));
    assert_eq!((owl.max_length, owl.pad_id), (16, 0));
    for case in refs.as_array().unwrap() {
        let text = case["text"].as_str().unwrap().to_string();
        for (tok, key) in [(&clip, "clip"), (&owl, "owlvit")] {
            let got = tok.encode(std::slice::from_ref(&text)).unwrap();
            let ids: Vec<i64> = case[key]["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            let mask: Vec<i64> = case[key]["attention_mask"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(got.input_ids[0], ids, "{key} ids for {text:?}");
            assert_eq!(got.attention_mask[0], mask, "{key} mask for {text:?}");
        }
    }
}

/// Every fixture image, read as the file source and the CLI read files and decoded as camera
/// frames decode PNG bytes, gives exactly the RGB pixels transformers' `convert_to_rgb` gives:
/// transparency (RGBA, palette + tRNS, grayscale + alpha) composited onto white. Then every
/// (level, alpha) pair of `alpha_ramp.png` against transformers' conversion of it.
#[test]
fn images_convert_to_rgb_exactly_as_transformers_does() {
    let refs = fixture::reference("rgb.json");
    let mut transparent = 0;
    for im in refs["images"].as_array().unwrap() {
        let name = im["image"].as_str().unwrap();
        let path = fixture::image(name);
        let rgb = read_image(&path).unwrap();
        let size = [im["size"][0].as_u64(), im["size"][1].as_u64()];
        assert_eq!(
            [Some(rgb.width() as u64), Some(rgb.height() as u64)],
            size,
            "{name}: size"
        );
        let flat = rgb.as_raw();
        for (i, v) in im["indices"]
            .as_array()
            .unwrap()
            .iter()
            .zip(floats(&im["values"]))
        {
            let i = i.as_u64().unwrap() as usize;
            assert_eq!(
                flat[i] as f32,
                v,
                "{name}: sample {i} (pixel {}, channel {})",
                i / 3,
                i % 3
            );
        }
        let sum: u64 = flat.iter().map(|&v| v as u64).sum();
        assert_eq!(Some(sum), im["sum"].as_u64(), "{name}: sum of all samples");
        let frame = promptcam::decode::decode_image(&std::fs::read(&path).unwrap()).unwrap();
        assert!(
            frame.as_raw() == flat,
            "{name}: the frame decoder converts differently"
        );
        if im["differs_from_alpha_dropped"].as_u64().unwrap() > 0 {
            transparent += 1;
        }
    }
    assert!(
        transparent >= 3,
        "fixtures with real transparency: {transparent}"
    );
    let ramp = read_image(&fixture::path("tests/fixtures/reference/alpha_ramp.png")).unwrap();
    let want = image::open(fixture::path("tests/fixtures/reference/alpha_ramp_rgb.png"))
        .unwrap()
        .to_rgb8();
    let differ: Vec<(usize, u8, u8)> = (ramp.as_raw().iter().zip(want.as_raw()).enumerate())
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i, *a, *b))
        .collect();
    assert!(
        ramp.dimensions() == (256, 256) && differ.is_empty(),
        "{} of 196608 samples differ (index, ours, transformers'): {:?}",
        differ.len(),
        &differ[..differ.len().min(8)]
    );
}

/// Compares our pixel tensor with the reference sample. Both sides decode the same file (zune-jpeg
/// vs libjpeg-turbo) and resize it (fast_image_resize vs Pillow), each rounding to u8, so a few
/// samples may be a level or two apart; the bulk must agree exactly.
pub(crate) fn assert_pixels_match(
    config: ProcessorConfig,
    image: &str,
    reference: &Value,
    what: &str,
) {
    let std_min = config
        .normalize
        .map(|(_, s)| s.iter().copied().fold(f32::INFINITY, f32::min))
        .unwrap_or(1.0);
    let level = (config.rescale.unwrap_or(1.0) as f32) / std_min;
    let bilinear = config.resample == promptcam::preprocess::Resample::Bilinear;
    let mut p = Preprocessor::new(config);
    let t = p.run(&read_image(&fixture::image(image)).unwrap()).unwrap();
    let shape: Vec<usize> = reference["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(t.shape(), &shape[..], "{what} {image}: shape");
    let ours = t
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec();
    let values = floats(&reference["values"]);
    let mut worst = 0f32;
    let mut off = 0;
    for (ix, want) in reference["indices"].as_array().unwrap().iter().zip(&values) {
        let d = (ours[ix.as_u64().unwrap() as usize] - want).abs();
        worst = worst.max(d);
        if d > level * 0.5 {
            off += 1;
        }
    }
    let mean: f64 = ours.iter().map(|v| *v as f64).sum::<f64>() / ours.len() as f64;
    let ref_mean = reference["mean"].as_f64().unwrap();
    assert!(
        worst <= 3.0 * level,
        "{what} {image}: worst sample off by {:.2} levels",
        worst / level
    );
    // Pillow and fast_image_resize agree on bicubic to ~0.03% of pixels; their bilinear kernels
    // round a little differently (~3% of pixels a level apart)
    let allowed = if bilinear {
        values.len() / 25
    } else {
        values.len() / 200
    };
    assert!(
        off <= allowed,
        "{what} {image}: {off} of {} samples off by a level or more",
        values.len()
    );
    assert!(
        (mean - ref_mean).abs() < 0.002,
        "{what} {image}: tensor mean {mean} vs {ref_mean}"
    );
}

#[test]
fn pixel_tensors_match_transformers_for_both_fixture_models() {
    for (dir, name) in [(clip_dir(), "clip.json"), (owl_dir(), "owlvit.json")] {
        let refs = fixture::reference(name);
        for im in refs["images"].as_array().unwrap() {
            let image = im["image"].as_str().unwrap();
            assert_pixels_match(dir.processor().unwrap(), image, &im["pixel_values"], name);
        }
    }
}

#[test]
fn pixel_tensors_match_transformers_for_other_checkpoints_settings() {
    // ViT-L/14-336's shortest edge 336 + crop, a bilinear square resize with other mean/std,
    // and a crop smaller than the resize: nothing is tied to 224 or 768
    let refs = fixture::reference("preprocess.json");
    for (case, v) in refs.as_object().unwrap() {
        let config = ProcessorConfig::from_json(&v["config"], false).unwrap();
        for (image, sample) in v["images"].as_object().unwrap() {
            assert_pixels_match(config.clone(), image, sample, case);
        }
    }
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: {g} vs {w} (tolerance {tol})"
        );
    }
}

/// The pixel tensor `models/make_fixtures.py` computes bit-identically (`exact_input`): nearest
/// sampling with integer indices, then transformers' rescale and normalize. It feeds the quantized
/// models the same input onnxruntime had, because dynamic int8 quantization (activation scales
/// from each tensor's min and max) amplifies the one-level rounding differences two resamplers
/// leave on a few pixels.
pub(crate) fn exact_input(
    image: &str,
    width: usize,
    height: usize,
    config: &ProcessorConfig,
) -> TValue {
    let img = read_image(&fixture::image(image)).unwrap();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (mean, std) = config.normalize.unwrap();
    let mut t = Tensor::zero::<f32>(&[1, 3, height, width]).unwrap();
    let mut view = t.try_as_plain_ram_mut().unwrap();
    let out = view.as_slice_mut::<f32>().unwrap();
    for y in 0..height {
        for x in 0..width {
            let px = img
                .get_pixel(((x * w) / width) as u32, ((y * h) / height) as u32)
                .0;
            for c in 0..3 {
                let v = (px[c] as f64 * (1.0 / 255.0)) as f32;
                out[c * width * height + y * width + x] = (v - mean[c]) / std[c];
            }
        }
    }
    t.into()
}

/// Which input the CLIP check feeds: the real preprocessing, or the bit-identical tensor.
#[derive(Clone, Copy, PartialEq)]
enum Feed {
    Preprocessed,
    ExactInput,
}

fn check_clip(clip: &mut Clip, key: &str, feed: Feed, prob_tol: f32, sim_tol: f32) {
    let refs = fixture::reference("clip.json");
    let config = clip_dir().processor().unwrap();
    for im in refs["images"].as_array().unwrap() {
        let image = im["image"].as_str().unwrap();
        let scores = match feed {
            Feed::Preprocessed => clip
                .classify(&read_image(&fixture::image(image)).unwrap())
                .unwrap(),
            Feed::ExactInput => {
                let emb = clip
                    .embed_pixels(exact_input(image, 224, 224, &config))
                    .unwrap();
                clip.scores(&emb)
            }
        };
        let probs: Vec<f32> = scores.iter().map(|s| s.score).collect();
        let sims: Vec<f32> = scores.iter().map(|s| s.similarity).collect();
        assert_close(
            &probs,
            &floats(&im[key]["scores"]),
            prob_tol,
            &format!("{key} {image} probabilities"),
        );
        assert_close(
            &sims,
            &floats(&im[key]["similarities"]),
            sim_tol,
            &format!("{key} {image} similarities"),
        );
    }
}

#[test]
fn clip_fp32_towers_match_transformers() {
    let refs = fixture::reference("clip.json");
    let prompts = strings(&refs["prompts"]);
    let mut clip = Clip::load(&clip_dir(), Precision::Fp32, &prompts).unwrap();
    assert!(
        clip.files.iter().any(|f| f.ends_with("vision_model.onnx")),
        "{:?}",
        clip.files
    );
    assert!(
        clip.files.iter().any(|f| f.ends_with("text_model.onnx")),
        "{:?}",
        clip.files
    );
    // the learned scale from model.onnx (100), not config.json's init value (14.3)
    let want = refs["logit_scale"].as_f64().unwrap() as f32;
    assert!(
        (clip.logit_scale - want).abs() < 1e-3,
        "logit scale {} vs {want}",
        clip.logit_scale
    );
    assert!(
        (clip.logit_scale - refs["config_logit_scale_init"].as_f64().unwrap() as f32).abs() > 1.0
    );
    check_clip(&mut clip, "fp32", Feed::Preprocessed, 0.01, 0.005);
}

#[test]
fn clip_fp32_from_model_onnx_alone_matches_transformers() {
    let tmp = TempDir::new("clip-model-only");
    fixture::copy_model(&fixture::path("models/tiny/clip"), tmp.path(), |n| {
        n == "model.onnx"
    });
    let prompts = strings(&fixture::reference("clip.json")["prompts"]);
    let mut clip = Clip::load(
        &ModelDir::open(tmp.path()).unwrap(),
        Precision::Fp32,
        &prompts,
    )
    .unwrap();
    assert!(
        clip.files.iter().all(|f| f.ends_with("model.onnx")),
        "{:?}",
        clip.files
    );
    check_clip(&mut clip, "fp32", Feed::Preprocessed, 0.01, 0.005);
}

#[test]
fn clip_quantized_towers_match_onnxruntime_on_the_same_input() {
    let prompts = strings(&fixture::reference("clip.json")["prompts"]);
    let mut clip = Clip::load(&clip_dir(), Precision::Quantized, &prompts).unwrap();
    assert!(
        clip.files
            .iter()
            .all(|f| f.to_string_lossy().ends_with("_quantized.onnx")),
        "{:?}",
        clip.files
    );
    check_clip(
        &mut clip,
        "quantized_towers_exact_input",
        Feed::ExactInput,
        0.001,
        0.0002,
    );
}

#[test]
fn clip_quantized_model_onnx_alone_matches_onnxruntime_on_the_same_input() {
    let tmp = TempDir::new("clip-qmodel-only");
    fixture::copy_model(&fixture::path("models/tiny/clip"), tmp.path(), |n| {
        n == "model_quantized.onnx"
    });
    let prompts = strings(&fixture::reference("clip.json")["prompts"]);
    let mut clip = Clip::load(
        &ModelDir::open(tmp.path()).unwrap(),
        Precision::Quantized,
        &prompts,
    )
    .unwrap();
    check_clip(
        &mut clip,
        "quantized_model_exact_input",
        Feed::ExactInput,
        0.001,
        0.0002,
    );
}

#[test]
fn clip_quantized_end_to_end_stays_close_to_onnxruntime() {
    // real preprocessing on both sides: the int8 activations amplify resampler rounding, so
    // this bound is looser than the fp32 one (see exact_input)
    let prompts = strings(&fixture::reference("clip.json")["prompts"]);
    let mut clip = Clip::load(&clip_dir(), Precision::Quantized, &prompts).unwrap();
    check_clip(
        &mut clip,
        "quantized_towers",
        Feed::Preprocessed,
        0.03,
        0.01,
    );
}

#[test]
fn clip_towers_without_model_onnx_use_the_openai_scale() {
    let tmp = TempDir::new("clip-towers-only");
    fixture::copy_model(&fixture::path("models/tiny/clip"), tmp.path(), |n| {
        n.ends_with("_model.onnx")
    });
    let prompts = strings(&fixture::reference("clip.json")["prompts"]);
    let clip = Clip::load(
        &ModelDir::open(tmp.path()).unwrap(),
        Precision::Fp32,
        &prompts,
    )
    .unwrap();
    assert_eq!(clip.logit_scale, 100.0);
}

/// Every reference detection is matched by one of ours with the same prompt, IoU >= 0.9 and a
/// score within 0.01, and we have no extra ones.
pub(crate) fn assert_detections_match(
    ours: &[Detection],
    reference: &Value,
    what: &str,
    min_iou: f32,
    score_tol: f32,
) {
    let want = reference.as_array().unwrap();
    assert_eq!(
        ours.len(),
        want.len(),
        "{what}: {} detections, reference has {}",
        ours.len(),
        want.len()
    );
    let mut used = vec![false; ours.len()];
    for w in want {
        let prompt = w["prompt"].as_str().unwrap();
        let wb = floats(&w["box"]);
        let wb = [wb[0], wb[1], wb[2], wb[3]];
        let score = w["score"].as_f64().unwrap() as f32;
        let best = ours
            .iter()
            .enumerate()
            .filter(|(i, d)| !used[*i] && d.prompt == prompt)
            .max_by(|a, b| iou(&a.1.bbox, &wb).total_cmp(&iou(&b.1.bbox, &wb)));
        let (i, d) = best.unwrap_or_else(|| panic!("{what}: no detection of {prompt:?} for {w}"));
        assert!(
            iou(&d.bbox, &wb) >= min_iou,
            "{what}: {prompt:?} box {:?} vs {wb:?} (IoU {})",
            d.bbox,
            iou(&d.bbox, &wb)
        );
        assert!(
            (d.score - score).abs() <= score_tol,
            "{what}: {prompt:?} score {} vs {score}",
            d.score
        );
        used[i] = true;
    }
}

fn check_owl(precision: Precision, key: &str, feed: Feed, min_iou: f32, score_tol: f32) {
    let refs = fixture::reference("owlvit.json");
    let threshold = refs["threshold"].as_f64().unwrap() as f32;
    let prompts = strings(&refs["prompts"]);
    let owl = OwlVit::load(&owl_dir(), precision, &prompts, None).unwrap();
    let config = owl_dir().processor().unwrap();
    let mut total = 0;
    for im in refs["images"].as_array().unwrap() {
        let image = im["image"].as_str().unwrap();
        let img = read_image(&fixture::image(image)).unwrap();
        let dets = match feed {
            Feed::Preprocessed => owl.detect(&img, threshold).unwrap(),
            Feed::ExactInput => {
                let patches = owl
                    .patch_scores(exact_input(image, 768, 768, &config))
                    .unwrap();
                post_process(&patches, &prompts, threshold, img.width(), img.height())
            }
        };
        assert!(
            dets.windows(2).all(|w| w[0].score >= w[1].score),
            "sorted by score"
        );
        assert_detections_match(
            &dets,
            &im[key],
            &format!("{key} {image}"),
            min_iou,
            score_tol,
        );
        total += dets.len();
    }
    assert!(
        total >= 10,
        "the fixture should exercise several detections, got {total}"
    );
}

#[test]
fn owlvit_fp32_matches_transformers_post_processing() {
    check_owl(Precision::Fp32, "fp32", Feed::Preprocessed, 0.9, 0.01);
}

#[test]
fn owlvit_quantized_matches_onnxruntime_on_the_same_input() {
    check_owl(
        Precision::Quantized,
        "quantized_exact_input",
        Feed::ExactInput,
        0.95,
        0.005,
    );
}

#[test]
fn static_quantized_exports_are_refused_with_the_reason() {
    use promptcam::model::graph::OnnxGraph;
    for (file, needle) in [
        ("attention_block_qdq.onnx", "statically quantized (QDQ)"),
        ("attention_block_qoperator.onnx", "QOperator"),
    ] {
        let err = OnnxGraph::read(&fixture::path("tests/fixtures/onnx").join(file))
            .err()
            .expect(file);
        let msg = format!("{err:#}");
        assert!(
            msg.contains(needle) && msg.contains(file) && msg.contains("quantize_dynamic"),
            "{msg}"
        );
    }
    // and through a model directory, as a user meets it
    let tmp = TempDir::new("clip-qdq");
    fixture::copy_model(&fixture::path("models/tiny/clip"), tmp.path(), |n| {
        n.ends_with("_quantized.onnx")
    });
    std::fs::copy(
        fixture::path("tests/fixtures/onnx/attention_block_qdq.onnx"),
        tmp.path().join("onnx/vision_model_quantized.onnx"),
    )
    .unwrap();
    let err = Clip::load(
        &ModelDir::open(tmp.path()).unwrap(),
        Precision::Quantized,
        &["a cat".into()],
    )
    .err()
    .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("vision_model_quantized.onnx") && msg.contains("QDQ"),
        "{msg}"
    );
}

fn load_error(dir: &std::path::Path, precision: Precision, owl: bool) -> String {
    let prompts = vec!["a cat".to_string()];
    let res = ModelDir::open(dir).and_then(|d| {
        if owl {
            OwlVit::load(&d, precision, &prompts, None).map(|_| ())
        } else {
            Clip::load(&d, precision, &prompts).map(|_| ())
        }
    });
    format!("{:#}", res.expect_err("load should fail"))
}

#[test]
fn missing_and_mismatched_model_files_say_which_file_and_what_to_do() {
    let nowhere = fixture::path("models/tiny/does-not-exist");
    let msg = load_error(&nowhere, Precision::Fp32, false);
    assert!(
        msg.contains("does-not-exist") && msg.contains("models/fetch.sh"),
        "{msg}"
    );

    let tmp = TempDir::new("clip-no-onnx");
    fixture::copy_model(&fixture::path("models/tiny/clip"), tmp.path(), |_| false);
    let msg = load_error(tmp.path(), Precision::Fp32, false);
    assert!(
        msg.contains("onnx/vision_model.onnx or onnx/model.onnx")
            && msg.contains("models/fetch.sh"),
        "{msg}"
    );

    let tmp = TempDir::new("clip-fp32-only");
    fixture::copy_model(&fixture::path("models/tiny/clip"), tmp.path(), |n| {
        !n.contains("quantized")
    });
    let msg = load_error(tmp.path(), Precision::Quantized, false);
    assert!(msg.contains("vision_model_quantized.onnx"), "{msg}");

    let msg = load_error(&fixture::path("models/tiny/clip"), Precision::Fp32, true);
    assert!(msg.contains("OWL-ViT model directory"), "{msg}");

    // an export with the wrong graph in it: CLIP's image tower where OWL-ViT's model belongs
    let tmp = TempDir::new("owl-wrong-graph");
    fixture::copy_model(&fixture::path("models/tiny/owlvit"), tmp.path(), |_| false);
    std::fs::copy(
        fixture::path("models/tiny/clip/onnx/vision_model.onnx"),
        tmp.path().join("onnx/model.onnx"),
    )
    .unwrap();
    let msg = load_error(tmp.path(), Precision::Fp32, true);
    assert!(
        msg.contains("model.onnx") && msg.contains("has no input `input_ids`"),
        "{msg}"
    );

    let tmp = TempDir::new("clip-no-tokenizer");
    fixture::copy_model(&fixture::path("models/tiny/clip"), tmp.path(), |n| {
        n == "model.onnx"
    });
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    let msg = load_error(tmp.path(), Precision::Fp32, false);
    assert!(
        msg.contains("tokenizer.json") && msg.contains("models/fetch.sh"),
        "{msg}"
    );
}

const CLIP_PROMPTS: [&str; 3] = [
    "a photo of a cat",
    "a cup of coffee",
    "a rocket on the launch pad",
];

#[test]
fn classify_cli_prints_one_json_line_per_image_in_prompt_order() {
    let mut args = vec!["classify", "--model", "models/tiny/clip", "--json"];
    for p in CLIP_PROMPTS {
        args.extend(["--prompt", p]);
    }
    let a = fixture::image("chelsea.png");
    let b = fixture::image("logo_rgba.png");
    args.extend([a.to_str().unwrap(), b.to_str().unwrap()]);
    let model = fixture::path("models/tiny/clip");
    let args: Vec<&str> = args
        .iter()
        .map(|s| {
            if *s == "models/tiny/clip" {
                model.to_str().unwrap()
            } else {
                s
            }
        })
        .collect();
    let (code, out, err) = fixture::promptcam(&args);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["image"].as_str().unwrap().ends_with("chelsea.png"));
    let results = lines[0]["results"].as_array().unwrap();
    let prompts: Vec<&str> = results
        .iter()
        .map(|r| r["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, CLIP_PROMPTS);
    let sum: f64 = results.iter().map(|r| r["score"].as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    assert!(results
        .iter()
        .all(|r| r["similarity"].as_f64().unwrap().abs() <= 1.0));

    // and the same run as a readable table
    let args: Vec<&str> = args.into_iter().filter(|a| *a != "--json").collect();
    let (code, out, _) = fixture::promptcam(&args);
    assert_eq!(code, 0);
    assert!(
        out.contains("chelsea.png")
            && out.contains("a cup of coffee")
            && out.contains("similarity"),
        "{out}"
    );
}

#[test]
fn detect_cli_prints_sorted_boxes_in_image_pixels_and_draws_them() {
    let refs = fixture::reference("owlvit.json");
    let threshold = refs["threshold"].as_f64().unwrap().to_string();
    let model = fixture::path("models/tiny/owlvit");
    let image = fixture::image("astronaut_portrait.png");
    let tmp = TempDir::new("detect-out");
    let out_file = tmp.path().join("boxes.png");
    let mut args = vec![
        "detect",
        "--model",
        model.to_str().unwrap(),
        "--threshold",
        &threshold,
        "--json",
        "--out",
        out_file.to_str().unwrap(),
    ];
    let prompts = strings(&refs["prompts"]);
    for p in &prompts {
        args.extend(["--prompt", p.as_str()]);
    }
    args.push(image.to_str().unwrap());
    let (code, out, err) = fixture::promptcam(&args);
    assert_eq!(code, 0, "{err}");
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (line["width"].as_u64(), line["height"].as_u64()),
        (Some(300), Some(512))
    );
    let dets = line["detections"].as_array().unwrap();
    let want = refs["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image"] == "astronaut_portrait.png")
        .unwrap();
    assert_eq!(dets.len(), want["fp32"].as_array().unwrap().len());
    let scores: Vec<f64> = dets.iter().map(|d| d["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for d in dets {
        let b = floats(&d["box"]);
        assert!(
            b[0] < b[2] && b[1] < b[3] && b[2] <= 310.0 && b[3] <= 520.0,
            "{b:?}"
        );
        assert!(prompts.iter().any(|p| p == d["prompt"].as_str().unwrap()));
    }
    // the picture: same size as the input, changed along the first box's edge only
    let drawn = image::open(&out_file).unwrap().to_rgb8();
    let orig = read_image(&image).unwrap();
    assert_eq!(drawn.dimensions(), orig.dimensions());
    let b = floats(&dets[0]["box"]);
    let (x, y) = (((b[0] + b[2]) / 2.0) as u32, b[3].min(511.0) as u32);
    assert_ne!(
        drawn.get_pixel(x, y),
        orig.get_pixel(x, y),
        "box edge drawn at {x},{y}"
    );
    let changed = drawn
        .pixels()
        .zip(orig.pixels())
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        changed > 0 && changed < (300 * 512) / 4,
        "{changed} pixels changed"
    );

    // NMS never adds boxes
    let nms_args: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "--out" && *a != out_file.to_str().unwrap())
        .chain(["--nms", "0.1"])
        .collect();
    let (code, out, _) = fixture::promptcam(&nms_args);
    assert_eq!(code, 0);
    let kept: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(kept["detections"].as_array().unwrap().len() <= dets.len());
}

#[test]
fn cli_errors_name_the_file_and_exit_2() {
    let model = fixture::path("models/tiny/clip");
    let (code, _, err) = fixture::promptcam(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a cat",
        "/nonexistent/frame.jpg",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/frame.jpg"), "{err}");
    let (code, _, err) = fixture::promptcam(&[
        "detect",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a cat",
        "--threshold",
        "1.5",
        "x.jpg",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("outside 0..1"), "{err}");
}
