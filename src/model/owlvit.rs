//! OWL-ViT: open-vocabulary detection of prompted objects, with boxes.
//!
//! The published export is one graph (`input_ids`, `pixel_values`, `attention_mask` ->
//! `logits`, `pred_boxes`, ...). The prompt tokens are folded into it as constants when it is
//! loaded, so tract's optimizer computes the text side once and only the image side runs per
//! frame. Post-processing follows transformers' `post_process_object_detection`: score = sigmoid
//! of the best query logit per box, label = that query, boxes from center to corners scaled to
//! the original image, kept when score > threshold. Non-maximum suppression only when asked.

use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde::Serialize;
use tract_onnx::prelude::*;

use super::dir::{ModelDir, Precision};
use super::graph::{self, f32_output, runnable, Input, OnnxGraph, Runnable};
use super::grid::{self, Grid};
use super::kind::ModelKind;
use crate::preprocess::{Locked, Preprocessor};

/// One detected object, in original-image pixels.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    pub prompt: String,
    #[serde(skip)]
    pub prompt_index: usize,
    pub score: f32,
    /// `[x0, y0, x1, y1]`
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// Raw per-patch outputs for one frame: the best query and its sigmoid score, and the box
/// (relative center-size) of every patch.
pub struct PatchScores {
    pub best_query: Vec<usize>,
    pub scores: Vec<f32>,
    pub boxes: Vec<[f32; 4]>,
}

pub struct OwlVit {
    model: Runnable,
    preprocess: Locked<Preprocessor>,
    prompts: Vec<String>,
    pub file: std::path::PathBuf,
    size: u32,
}

/// An OWL-family graph loaded for one prompt set and input size.
pub(super) struct LoadedGraph {
    pub model: Runnable,
    pub file: std::path::PathBuf,
    /// The square input size, in pixels.
    pub size: u32,
    /// The outputs kept, in the model's output order.
    pub outputs: Vec<String>,
}

/// Loads `onnx/model[_quantized].onnx` of an OWL-ViT or OWLv2 directory with the prompt tokens
/// folded in and `outputs` kept, at `input_size` (adapting the graph when it is not the native
/// size) or the processor's size. `processor_size` is the processor config's output size.
pub(super) fn load_graph(
    dir: &ModelDir,
    precision: Precision,
    prompts: &[String],
    processor_size: Option<(u32, u32)>,
    input_size: Option<u32>,
    outputs: &[&str],
    optional: &[&str],
) -> Result<LoadedGraph> {
    let what = dir.family.title();
    if prompts.is_empty() {
        bail!("unable to detect without prompts; give at least one");
    }
    let geometry = dir.vision_geometry()?;
    let native = geometry.image_size as u32;
    let (w, h) = processor_size.with_context(|| {
        format!(
            "unable to use {}: its processor config has no fixed output size",
            dir.root.display()
        )
    })?;
    if (w, h) != (native, native) {
        bail!(
            "unable to use {}: its processor resizes to {w}x{h} but config.json's vision_config.image_size is {native}; the files do not belong together",
            dir.root.display()
        );
    }
    let size = input_size.unwrap_or(native);
    check_input_size(size, geometry.patch_size as u32, native)
        .with_context(|| format!("unable to run {what} at {size}x{size}"))?;
    let tokens = dir.tokenizer()?.encode(prompts)?;
    let path = dir.onnx_path("model", precision);
    if !path.is_file() {
        bail!(
            "unable to find {}: an {what} directory needs onnx/model{}.onnx (found {}); {}",
            path.display(),
            if precision == Precision::Quantized {
                "_quantized"
            } else {
                ""
            },
            dir.onnx_listing(),
            super::dir::FETCH_HINT
        );
    }
    let graph = OnnxGraph::read_with(&path, |proto| {
        if size != native {
            adapt_to(proto, geometry, size).with_context(|| {
                format!(
                    "unable to adapt {} from {native} to {size} px",
                    path.display()
                )
            })?;
        }
        Ok(())
    })?;
    let mut wanted: Vec<&str> = outputs.to_vec();
    wanted.extend(optional.iter().filter(|o| graph.has_output(o)));
    let model = graph.into_optimized(
        &[
            ("input_ids", Input::Const(tokens.ids_tensor()?)),
            (
                "pixel_values",
                Input::Fed(f32::datum_type(), vec![1, 3, size as usize, size as usize]),
            ),
            ("attention_mask", Input::Const(tokens.mask_tensor()?)),
        ],
        &wanted,
    )?;
    Ok(LoadedGraph {
        model: runnable(model)?,
        file: path,
        size,
        outputs: wanted.iter().map(|o| o.to_string()).collect(),
    })
}

/// Writes the ONNX file an OWL-ViT / OWLv2 directory's model runs at `size` (adapted as
/// [`load_graph`] adapts it, without promptcam's own load-time rewrites), so that another runtime
/// can run the same graph.
pub fn write_adapted(
    dir: &ModelDir,
    precision: Precision,
    size: Option<u32>,
    out: &std::path::Path,
) -> Result<()> {
    use prost::Message;
    if !dir.family.is_detector() {
        bail!(
            "unable to write an adapted graph for {}: it is a {} model; only OWL-ViT and OWLv2 graphs are adapted",
            dir.root.display(),
            dir.family.title()
        );
    }
    let geometry = dir.vision_geometry()?;
    let path = dir.onnx_path("model", precision);
    let mut proto = OnnxGraph::parse(&path)?;
    if let Some(size) = size.filter(|s| *s as usize != geometry.image_size) {
        check_input_size(size, geometry.patch_size as u32, geometry.image_size as u32)?;
        adapt_to(&mut proto, geometry, size)
            .with_context(|| format!("unable to adapt {} to {size} px", path.display()))?;
    }
    std::fs::write(out, proto.encode_to_vec())
        .with_context(|| format!("unable to write {}", out.display()))
}

/// Rewrites a parsed OWL-family export for a `size` px square input (`grid/`).
pub fn adapt_to(
    proto: &mut tract_onnx::pb::ModelProto,
    geometry: super::dir::VisionGeometry,
    size: u32,
) -> Result<()> {
    let patch = geometry.patch_size;
    let native = Grid::square(geometry.image_size / patch);
    let target = Grid::square(size as usize / patch);
    let adapted = grid::adapt(proto, native, target, geometry.hidden_size)?;
    grid::set_input_size(proto, "pixel_values", size as usize, size as usize);
    tracing::debug!("adapted to {size} px: {}", adapted.changes.join("; "));
    Ok(())
}

/// Input sizes an OWL-family model runs at: multiples of its patch size from one patch to twice
/// its native size. The error names the nearest allowed sizes.
pub fn check_input_size(size: u32, patch: u32, native: u32) -> Result<()> {
    let max = 2 * native;
    if size % patch == 0 && (patch..=max).contains(&size) {
        return Ok(());
    }
    let below = (size / patch * patch).clamp(patch, max);
    let above = (size.div_ceil(patch) * patch).clamp(patch, max);
    let near = if below == above {
        format!("{below}")
    } else {
        format!("{below} or {above}")
    };
    bail!(
        "the input size must be a multiple of the patch size {patch} from {patch} to {max} (the native size is {native}); use {near}"
    )
}

impl OwlVit {
    /// Loads an OWL-ViT export with `prompts` folded in, at its native input size or, with
    /// `input_size`, at that many pixels square (a multiple of the patch size: see `grid/`).
    pub fn load(
        dir: &ModelDir,
        precision: Precision,
        prompts: &[String],
        input_size: Option<u32>,
    ) -> Result<OwlVit> {
        if dir.family != ModelKind::OwlVit {
            bail!("unable to detect with {}: it is a {} model; detection needs an OWL-ViT model directory{}", dir.root.display(), dir.family.title(),
                if dir.family == ModelKind::Owlv2 { " (OWLv2 runs as model = \"owlv2\")" } else { "" });
        }
        let mut processor = dir.processor()?;
        let loaded = load_graph(
            dir,
            precision,
            prompts,
            processor.output_size(),
            input_size,
            &["logits", "pred_boxes"],
            &[],
        )?;
        processor.resize = Some(crate::preprocess::Resize::Exact {
            width: loaded.size,
            height: loaded.size,
        });
        processor.crop = None;
        Ok(OwlVit {
            model: loaded.model,
            preprocess: Locked::new(Preprocessor::new(processor)),
            prompts: prompts.to_vec(),
            file: loaded.file,
            size: loaded.size,
        })
    }

    /// The square input size the model runs at, in pixels.
    pub fn input_size(&self) -> u32 {
        self.size
    }

    pub fn prompts(&self) -> &[String] {
        &self.prompts
    }

    /// The optimized model (prompts folded in), for profiling.
    pub fn runnable(&self) -> &super::graph::Runnable {
        &self.model
    }

    pub fn preprocessor(&mut self) -> &mut Preprocessor {
        self.preprocess.get_mut()
    }

    /// The pixel tensor of `image` (the preprocessor is held only while it fills it).
    pub fn pixels(&self, image: &RgbImage) -> Result<TValue> {
        self.preprocess.with(|p| p.run(image))
    }

    /// Runs the model on a preprocessed pixel tensor.
    pub fn patch_scores(&self, pixels: TValue) -> Result<PatchScores> {
        let out =
            graph::run(&self.model, tvec![pixels]).context("unable to run the OWL-ViT model")?;
        read_patches(&out[0], &out[1], self.prompts.len())
    }

    /// Detections above `threshold` in an image, highest score first.
    pub fn detect(&self, image: &RgbImage, threshold: f32) -> Result<Vec<Detection>> {
        let pixels = self.pixels(image)?;
        let patches = self.patch_scores(pixels)?;
        Ok(post_process(
            &patches,
            &self.prompts,
            threshold,
            image.width(),
            image.height(),
        ))
    }
}

/// Reads the `logits` `[1, P, Q]` and `pred_boxes` `[1, P, 4]` outputs.
pub fn read_patches(logits: &TValue, boxes: &TValue, q: usize) -> Result<PatchScores> {
    read_patches_among(logits, boxes, q, None)
}

/// [`read_patches`] where each patch's best query is chosen among `among` only (all when None):
/// one run of a graph holding several cameras' prompts, post-processed per camera exactly as if
/// the graph held that camera's prompts alone.
pub fn read_patches_among(
    logits: &TValue,
    boxes: &TValue,
    q: usize,
    among: Option<&[usize]>,
) -> Result<PatchScores> {
    let (lshape, logits) = f32_output(logits)?;
    let (bshape, boxes) = f32_output(boxes)?;
    if lshape.len() != 3
        || lshape[2] != q
        || bshape.len() != 3
        || bshape[2] != 4
        || bshape[1] != lshape[1]
    {
        bail!("unable to read OWL-ViT outputs: logits {lshape:?}, pred_boxes {bshape:?}; expected [1, P, {q}] and [1, P, 4]");
    }
    let mut best_query = Vec::with_capacity(lshape[1]);
    let mut scores = Vec::with_capacity(lshape[1]);
    let all: Vec<usize> = (0..q).collect();
    let among = among.unwrap_or(&all);
    if among.iter().any(|i| *i >= q) {
        bail!("unable to read OWL-ViT outputs: a query index is beyond the {q} prompts");
    }
    for row in logits.chunks(q) {
        let (ix, best) = among.iter().fold(
            (among.first().copied().unwrap_or(0), f32::NEG_INFINITY),
            |a, &i| {
                if row[i] > a.1 {
                    (i, row[i])
                } else {
                    a
                }
            },
        );
        best_query.push(ix);
        scores.push(sigmoid(best));
    }
    let boxes = boxes.chunks(4).map(|b| [b[0], b[1], b[2], b[3]]).collect();
    Ok(PatchScores {
        best_query,
        scores,
        boxes,
    })
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// transformers' `post_process_object_detection`, sorted by score (highest first).
pub fn post_process(
    p: &PatchScores,
    prompts: &[String],
    threshold: f32,
    width: u32,
    height: u32,
) -> Vec<Detection> {
    post_process_scaled(p, prompts, threshold, width as f32, height as f32)
}

/// [`post_process`] with relative boxes scaled by `w` and `h` (OWLv2: the padded square's side).
pub fn post_process_scaled(
    p: &PatchScores,
    prompts: &[String],
    threshold: f32,
    w: f32,
    h: f32,
) -> Vec<Detection> {
    let mut out: Vec<Detection> = p
        .scores
        .iter()
        .enumerate()
        .filter(|(_, s)| **s > threshold)
        .map(|(i, s)| {
            let [cx, cy, bw, bh] = p.boxes[i];
            let q = p.best_query[i];
            Detection {
                prompt: prompts[q].clone(),
                prompt_index: q,
                score: *s,
                bbox: [
                    (cx - 0.5 * bw) * w,
                    (cy - 0.5 * bh) * h,
                    (cx + 0.5 * bw) * w,
                    (cy + 0.5 * bh) * h,
                ],
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Per-prompt non-maximum suppression: drops a box overlapping a higher-scored box of the same
/// prompt by more than `max_iou`. Input and output are sorted by score.
pub fn nms(dets: Vec<Detection>, max_iou: f32) -> Vec<Detection> {
    let mut kept: Vec<Detection> = Vec::with_capacity(dets.len());
    for d in dets {
        if !kept
            .iter()
            .any(|k| k.prompt_index == d.prompt_index && iou(&k.bbox, &d.bbox) > max_iou)
        {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
#[path = "owlvit_tests.rs"]
mod tests;
