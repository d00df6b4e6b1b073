//! OWL-ViT at input sizes other than its export's, and OWLv2: parity with transformers
//! (`interpolate_pos_encoding=True`, the OWLv2 processor and post-processing) for the tiny
//! fixtures, as recorded by `models/make_fixtures.py --owl-sizes` and `--owlv2`.

use promptcam::decode::read_image;
use promptcam::model::graph::{Input, OnnxGraph};
use promptcam::model::owlvit::post_process;
use promptcam::model::{ModelDir, OwlVit, Owlv2, Precision};
use promptcam::preprocess::owlv2::{Owlv2Config, Owlv2Preprocessor};
use serde_json::Value;
use tract_onnx::prelude::*;

use crate::fixture::{self, floats, strings, TempDir};
use crate::vision::{assert_detections_match, assert_pixels_match, exact_input};

fn owl_dir() -> ModelDir {
    ModelDir::open(&fixture::path("models/tiny/owlvit")).unwrap()
}

fn owlv2_dir() -> ModelDir {
    ModelDir::open(&fixture::path("models/tiny/owlv2")).unwrap()
}

/// The tiny OWL-ViT with another export of the same weights (`tests/fixtures/<fixture>`): same
/// reference outputs.
fn export_dir(tmp: &TempDir, fixture: &str) -> ModelDir {
    fixture::copy_model(&fixture::path("models/tiny/owlvit"), tmp.path(), |_| false);
    std::fs::copy(
        fixture::path(&format!("tests/fixtures/{fixture}/model.onnx")),
        tmp.path().join("onnx/model.onnx"),
    )
    .unwrap();
    ModelDir::open(tmp.path()).unwrap()
}

/// The export that computes its box bias in the graph (from the image's shape, with Range/Log
/// ops) instead of storing it.
fn graph_bias_dir(tmp: &TempDir) -> ModelDir {
    export_dir(tmp, "owlvit-graph-bias")
}

fn sizes(refs: &Value) -> Vec<(u32, &Value)> {
    let mut v: Vec<(u32, &Value)> = refs["sizes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v))
        .collect();
    v.sort_by_key(|(k, _)| *k);
    v
}

fn check_owlvit_sizes(dir: &ModelDir, what: &str) {
    let refs = fixture::reference("owlvit_sizes.json");
    let prompts = strings(&refs["prompts"]);
    let mut checked = 0;
    for (size, r) in sizes(&refs) {
        assert_ne!(
            size, 768,
            "the reference must be at other sizes than the native one"
        );
        let threshold = r["threshold"].as_f64().unwrap() as f32;
        let owl = OwlVit::load(dir, Precision::Fp32, &prompts, Some(size)).unwrap();
        assert_eq!(owl.input_size(), size);
        let mut total = 0;
        for im in r["images"].as_array().unwrap() {
            let image = im["image"].as_str().unwrap();
            let dets = owl
                .detect(&read_image(&fixture::image(image)).unwrap(), threshold)
                .unwrap();
            assert_detections_match(
                &dets,
                &im["fp32"],
                &format!("{what} at {size} {image}"),
                0.9,
                0.01,
            );
            total += dets.len();
        }
        assert!(total >= 10, "{what} at {size}: only {total} detections");
        checked += 1;
    }
    assert_eq!(checked, 2, "two sizes other than native");
}

/// Every patch's score and box on the bit-identical `exact_input`, against transformers: the
/// whole adapted graph, tightly (on this tiny model bilinear position embeddings instead of
/// bicubic move scores by ~0.006, inside the detection tolerance but not this one).
fn assert_raw_patches(scores: &[f32], boxes: &[[f32; 4]], reference: &Value, what: &str) {
    let want_scores = floats(&reference["scores"]);
    let want_boxes = floats(&reference["boxes"]);
    assert_eq!(scores.len(), want_scores.len(), "{what}: patches");
    let ds = scores
        .iter()
        .zip(&want_scores)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let db = boxes
        .iter()
        .flatten()
        .zip(&want_boxes)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        ds < 5e-4 && db < 5e-4,
        "{what}: scores off by {ds}, boxes by {db}"
    );
}

fn check_owlvit_raw_patches(dir: &ModelDir, what: &str) {
    let refs = fixture::reference("owlvit_sizes.json");
    let prompts = strings(&refs["prompts"]);
    let config = owl_dir().processor().unwrap();
    for (size, r) in sizes(&refs) {
        let owl = OwlVit::load(dir, Precision::Fp32, &prompts, Some(size)).unwrap();
        let e = &r["exact_input"];
        let image = e["image"].as_str().unwrap();
        let p = owl
            .patch_scores(exact_input(image, size as usize, size as usize, &config))
            .unwrap();
        assert_raw_patches(&p.scores, &p.boxes, e, &format!("{what} at {size}"));
    }
}

#[test]
fn owlvit_at_other_sizes_matches_transformers_interpolate_pos_encoding() {
    check_owlvit_sizes(&owl_dir(), "stored box bias");
    check_owlvit_raw_patches(&owl_dir(), "stored box bias");
}

#[test]
fn owlvit_export_computing_its_box_bias_in_the_graph_runs_at_other_sizes() {
    let tmp = TempDir::new("owl-graph-bias");
    let dir = graph_bias_dir(&tmp);
    check_owlvit_sizes(&dir, "box bias computed in the graph");
    check_owlvit_raw_patches(&dir, "box bias computed in the graph");
}

/// An export with a fixed image shape (no dynamic axes on `pixel_values`): the target shape of
/// the class token's broadcast is a constant holding the native patch count (issue 21: tract
/// refused it with "Reshape volume mismatch ... Broadcast([144, 576])" at 384 px).
#[test]
fn owlvit_export_with_a_fixed_image_shape_runs_at_other_sizes() {
    let tmp = TempDir::new("owl-static");
    let dir = export_dir(&tmp, "owlvit-static");
    check_owlvit_sizes(&dir, "fixed image shape");
    check_owlvit_raw_patches(&dir, "fixed image shape");
}

#[test]
fn interpolated_position_embeddings_match_torch_bicubic() {
    use promptcam::model::grid::{adapt, Grid};
    let refs = fixture::reference("owlvit_sizes.json");
    for (size, r) in sizes(&refs) {
        let mut proto =
            OnnxGraph::parse(&fixture::path("models/tiny/owlvit/onnx/model.onnx")).unwrap();
        let grid = Grid::square(size as usize / 32);
        adapt(&mut proto, Grid::square(24), grid, 32).unwrap();
        let g = proto.graph.unwrap();
        let t = g
            .initializer
            .iter()
            .find(|t| t.name.starts_with("promptcam.position_embedding"))
            .expect("the adapted graph holds the new table");
        assert_eq!(t.dims, vec![1, grid.patches() as i64 + 1, 32]);
        let ours: Vec<f32> = t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let sample = &r["position_embedding"];
        for (ix, want) in sample["indices"]
            .as_array()
            .unwrap()
            .iter()
            .zip(floats(&sample["values"]))
        {
            let got = ours[ix.as_u64().unwrap() as usize];
            assert!(
                (got - want).abs() < 1e-5,
                "at {size}[{ix}]: {got} vs {want}"
            );
        }
    }
}

#[test]
fn owlvit_pixel_tensors_at_other_sizes_match_transformers() {
    let refs = fixture::reference("owlvit_sizes.json");
    for (size, r) in sizes(&refs) {
        let mut config = owl_dir().processor().unwrap();
        config.resize = Some(promptcam::preprocess::Resize::Exact {
            width: size,
            height: size,
        });
        for im in r["images"].as_array().unwrap() {
            let image = im["image"].as_str().unwrap();
            assert_pixels_match(
                config.clone(),
                image,
                &im["pixel_values"],
                &format!("owlvit at {size}"),
            );
        }
    }
}

#[test]
fn owlvit_sizes_must_be_multiples_of_the_patch_size() {
    let prompts = vec!["a cat".to_string()];
    for (size, needles) in [
        (
            500,
            &["500x500", "multiple of the patch size 32", "480 or 512"][..],
        ),
        (16, &["from 32 to 1536", "use 32"][..]),
        (4096, &["from 32 to 1536", "use 1536"][..]),
    ] {
        let e = format!(
            "{:#}",
            OwlVit::load(&owl_dir(), Precision::Fp32, &prompts, Some(size))
                .err()
                .expect("should fail")
        );
        for n in needles {
            assert!(e.contains(n), "expected {n:?} in: {e}");
        }
    }
}

fn score_grid(owl: &OwlVit, size: usize) -> Vec<f32> {
    let config = owl_dir().processor().unwrap();
    owl.patch_scores(exact_input("rocket.png", size, size, &config))
        .unwrap()
        .scores
}

#[test]
fn owlvit_int8_adapts_like_fp32() {
    // the int8 export stores its position table quantized (Gather + DequantizeLinear): it is
    // dequantized, interpolated and fed as fp32, so int8 at 384 stays as close to fp32 at 384 as
    // int8 is to fp32 at the native size
    let prompts = strings(&fixture::reference("owlvit_sizes.json")["prompts"]);
    let gap = |size: u32| {
        let f = OwlVit::load(&owl_dir(), Precision::Fp32, &prompts, Some(size)).unwrap();
        let q = OwlVit::load(&owl_dir(), Precision::Quantized, &prompts, Some(size)).unwrap();
        let (a, b) = (score_grid(&f, size as usize), score_grid(&q, size as usize));
        assert_eq!(a.len(), (size as usize / 32).pow(2));
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let (native, small) = (gap(768), gap(384));
    assert!(
        small < 0.05 && small < 3.0 * native.max(0.005),
        "int8 vs fp32 sigmoid scores: {small} at 384, {native} at 768"
    );
}

#[test]
fn adapted_graph_is_written_for_other_runtimes() {
    // `promptcam bench --save-graph` writes the graph it runs at --size: a plain ONNX file with
    // the new input size, that runs without promptcam's own load-time rewrites
    let tmp = TempDir::new("owl-save-graph");
    let out = tmp.path().join("model_384.onnx");
    promptcam::model::owlvit::write_adapted(&owl_dir(), Precision::Quantized, Some(384), &out)
        .unwrap();
    let graph = OnnxGraph::read(&out).unwrap();
    let tokens = owl_dir()
        .tokenizer()
        .unwrap()
        .encode(&["a cat".to_string()])
        .unwrap();
    let model = graph
        .optimized(
            &[
                ("input_ids", Input::Const(tokens.ids_tensor().unwrap())),
                (
                    "pixel_values",
                    Input::Fed(f32::datum_type(), vec![1, 3, 384, 384]),
                ),
                (
                    "attention_mask",
                    Input::Const(tokens.mask_tensor().unwrap()),
                ),
            ],
            &["logits", "pred_boxes"],
        )
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = model
        .run(tvec![Tensor::zero::<f32>(&[1, 3, 384, 384])
            .unwrap()
            .into()])
        .unwrap();
    assert_eq!(out[1].shape(), &[1, 144, 4]);
    // the custom fused op promptcam registers is not in the written file
    let proto = OnnxGraph::parse(&tmp.path().join("model_384.onnx")).unwrap();
    let g = proto.graph.unwrap();
    assert!(g.node.iter().all(|n| !n.op_type.starts_with("Promptcam")));
    assert!(g.node.iter().any(|n| n.op_type == "DynamicQuantizeLinear"));
}

// ------------------------------------------------------------------------------------ OWLv2

/// The procedural image `make_fixtures.py` builds (`procedural_image`): detail at every scale,
/// larger than the model input, so the Gaussian blur and the zoom are exercised.
fn procedural(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        let (x, y) = (x as i64, y as i64);
        image::Rgb([
            ((x * 7 + y * 3 + (x * y) % 101) % 256) as u8,
            ((x * 2 + y * 11 + (x ^ y) % 53) % 256) as u8,
            (((x / 16 + y / 16) % 2) * 200 + (x + y) % 56) as u8,
        ])
    })
}

/// Our OWLv2 tensor against transformers' (same PNG pixels; scipy filters in f64, we in f32).
fn assert_owlv2_pixels(size: u32, image: &image::RgbImage, reference: &Value, what: &str) {
    let mut config = Owlv2Config::from_json(&owlv2_dir().processor_json().unwrap()).unwrap();
    config.size = (size, size);
    let mut p = Owlv2Preprocessor::new(config);
    let t = p.run(image).unwrap();
    let shape: Vec<usize> = reference["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(t.shape(), &shape[..], "{what}: shape");
    let ours = t.try_as_plain_ram().unwrap();
    let ours = ours.as_slice::<f32>().unwrap();
    let mut worst = 0f32;
    for (ix, want) in reference["indices"]
        .as_array()
        .unwrap()
        .iter()
        .zip(floats(&reference["values"]))
    {
        worst = worst.max((ours[ix.as_u64().unwrap() as usize] - want).abs());
    }
    // a level after normalization is ~0.015: the two agree to float rounding
    assert!(worst < 2e-4, "{what}: worst sample off by {worst}");
    let mean: f64 = ours.iter().map(|v| *v as f64).sum::<f64>() / ours.len() as f64;
    let want = reference["mean"].as_f64().unwrap();
    assert!((mean - want).abs() < 1e-5, "{what}: mean {mean} vs {want}");
}

#[test]
fn owlv2_pixel_tensors_match_transformers() {
    let refs = fixture::reference("owlv2.json");
    let [w, h] = [0, 1].map(|i| refs["procedural_size"][i].as_u64().unwrap() as u32);
    let big = procedural(w, h);
    for (size, r) in sizes(&refs) {
        for im in r["images"].as_array().unwrap() {
            let image = im["image"].as_str().unwrap();
            assert_owlv2_pixels(
                size,
                &read_image(&fixture::image(image)).unwrap(),
                &im["pixel_values"],
                &format!("owlv2 at {size} {image}"),
            );
        }
        assert_owlv2_pixels(
            size,
            &big,
            &r["procedural_pixel_values"],
            &format!("owlv2 at {size}, procedural {w}x{h}"),
        );
    }
}

#[test]
fn owlv2_matches_transformers_at_native_and_reduced_size() {
    let refs = fixture::reference("owlv2.json");
    let prompts = strings(&refs["prompts"]);
    let mut seen = vec![];
    for (size, r) in sizes(&refs) {
        let threshold = r["threshold"].as_f64().unwrap() as f32;
        let mut owl = Owlv2::load(&owlv2_dir(), Precision::Fp32, &prompts, Some(size)).unwrap();
        let mut total = 0;
        for im in r["images"].as_array().unwrap() {
            let image = im["image"].as_str().unwrap();
            let img = read_image(&fixture::image(image)).unwrap();
            let px = owl.preprocessor().run(&img).unwrap();
            let p = owl.patch_scores(px).unwrap();
            let objectness = p
                .objectness
                .as_ref()
                .expect("the export has objectness_logits");
            let mean = objectness.iter().sum::<f32>() / objectness.len() as f32;
            let want = im["objectness_mean"].as_f64().unwrap() as f32;
            assert!(
                (mean - want).abs() < 1e-3,
                "owlv2 at {size} {image}: objectness mean {mean} vs {want}"
            );
            let dets = owl.post_process(&p, threshold, img.width(), img.height());
            assert_detections_match(
                &dets,
                &im["fp32"],
                &format!("owlv2 at {size} {image}"),
                0.9,
                0.01,
            );
            // boxes are scaled by the padded square: OWL-ViT's scaling would differ here
            let plain = post_process(&p.patches, &prompts, threshold, img.width(), img.height());
            if img.width() != img.height() && !dets.is_empty() {
                assert_ne!(plain[0].bbox, dets[0].bbox);
            }
            total += dets.len();
        }
        assert!(total >= 10, "owlv2 at {size}: only {total} detections");
        let e = &r["exact_input"];
        let config = promptcam::preprocess::ProcessorConfig::from_json(
            &owlv2_dir().processor_json().unwrap(),
            true,
        )
        .unwrap();
        let image = e["image"].as_str().unwrap();
        let p = owl
            .patch_scores(exact_input(image, size as usize, size as usize, &config))
            .unwrap();
        assert_raw_patches(
            &p.patches.scores,
            &p.patches.boxes,
            e,
            &format!("owlv2 at {size}"),
        );
        seen.push(size);
    }
    assert_eq!(seen, vec![480, 960], "native 960 and a reduced size");
}

#[test]
fn detect_cli_runs_owlv2_and_other_sizes() {
    let refs = fixture::reference("owlvit_sizes.json");
    let r = &refs["sizes"]["384"];
    let threshold = r["threshold"].as_f64().unwrap().to_string();
    let mut args = vec![
        "detect",
        "--model",
        "models/tiny/owlvit",
        "--size",
        "384",
        "--threshold",
        &threshold,
        "--json",
    ];
    let prompts = strings(&refs["prompts"]);
    for p in &prompts {
        args.extend(["--prompt", p.as_str()]);
    }
    let image = fixture::image("rocket.png");
    let image = image.to_str().unwrap();
    args.push(image);
    let (code, out, err) = crate::fixture::promptcam(&args);
    assert_eq!(code, 0, "{err}");
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    let want = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image"] == "rocket.png")
        .unwrap();
    assert_eq!(
        line["detections"].as_array().unwrap().len(),
        want["fp32"].as_array().unwrap().len()
    );

    let (code, out, err) = crate::fixture::promptcam(&[
        "detect",
        "--model",
        "models/tiny/owlv2",
        "--prompt",
        "a rocket",
        "--threshold",
        "0.5",
        image,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rocket.png (640x427)"), "{out}");

    let (code, _, err) = crate::fixture::promptcam(&[
        "detect",
        "--model",
        "models/tiny/owlvit",
        "--prompt",
        "a cat",
        "--size",
        "100",
        image,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("use 96 or 128"), "{err}");
}

// ------------------------------------------------------------------------------ motion crops

/// A camera frame of the procedural image.
fn camera_frame(image: image::RgbImage) -> promptcam::frame::Frame {
    promptcam::frame::Frame {
        image,
        seq: 0,
        captured_at: std::time::SystemTime::now(),
        monotonic: std::time::Instant::now(),
    }
}

#[test]
fn a_motion_crop_detects_what_the_detector_finds_on_that_cropped_image() {
    use promptcam::model::Detector;
    use promptcam::pipeline::detect::{square_around, DetectPrompts};
    use promptcam::pipeline::PromptModel;
    use std::sync::Arc;

    let prompts = vec!["a cat".to_string(), "a dog".to_string()];
    let detector = Detector::load(&owl_dir(), Precision::Fp32, &prompts, Some(384)).unwrap();
    assert_eq!(detector.input_size(), 384);
    let detector = Arc::new(detector);
    let mut model = DetectPrompts::new(
        promptcam::model::ModelKind::OwlVit,
        detector.clone(),
        vec![0, 1],
        vec![0, 1],
    );
    let frame = camera_frame(procedural(1280, 720));

    // a 100x100 motion region off-centre: a 384-px square (the model's input, never less)
    // centred on it, moved inside the frame where it would cross the edge
    assert_eq!(
        square_around([900, 300, 1000, 400], (1280, 720), 384),
        Some([758, 158, 1142, 542])
    );
    assert_eq!(
        square_around([1200, 650, 1270, 715], (1280, 720), 384),
        Some([896, 336, 1280, 720])
    );
    // a large region: padded by half its size; none when that square exceeds the frame
    assert_eq!(
        square_around([100, 100, 400, 400], (1280, 720), 384),
        Some([25, 25, 475, 475])
    );
    assert_eq!(square_around([0, 0, 700, 500], (1280, 720), 384), None);

    // whole frame first: each prompt's best box is remembered
    assert!(!model.focus(None, (1280, 720)));
    let whole = model.observe(&frame, None).unwrap();
    assert!(!whole.is_empty());

    // then the crop: its boxes are the detector's on the cropped image, offset to the frame
    let square = [758u32, 158, 1142, 542];
    assert!(model.focus(Some([900, 300, 1000, 400]), (1280, 720)));
    let seen = model.observe(&frame, None).unwrap();
    let cropped = image::imageops::crop_imm(&frame.image, 758, 158, 384, 384).to_image();
    let want = detector
        .detect_groups(&cropped, 0.0, &[&[0, 1]])
        .unwrap()
        .remove(0);
    assert!(!want.is_empty());
    let inside = |b: &[f32; 4]| {
        let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        cx >= square[0] as f32
            && cx < square[2] as f32
            && cy >= square[1] as f32
            && cy < square[3] as f32
    };
    let (found, held): (Vec<_>, Vec<_>) = seen.iter().partition(|o| {
        want.iter().any(|d| {
            let b = o.bbox.unwrap();
            o.prompt == d.prompt_index
                && o.score == d.score
                && b == [
                    d.bbox[0] + 758.0,
                    d.bbox[1] + 158.0,
                    d.bbox[2] + 758.0,
                    d.bbox[3] + 158.0,
                ]
        })
    });
    assert_eq!(
        found.len(),
        want.len(),
        "every box of the cropped image, in frame pixels"
    );
    // what else it reports: each prompt's best box of the whole-frame pass, when that lies
    // outside the square (the crop did not look there)
    for p in 0..2 {
        let best = whole
            .iter()
            .filter(|o| o.prompt == p)
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .unwrap();
        let kept: Vec<_> = held.iter().filter(|o| o.prompt == p).collect();
        if inside(&best.bbox.unwrap()) {
            assert!(kept.is_empty(), "prompt {p}: {kept:?}");
        } else {
            assert_eq!(kept, [&best], "prompt {p}");
        }
    }
    assert!(!held.is_empty() && held.len() <= 2, "{held:?}");
}
