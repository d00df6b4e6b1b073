//! CLIPSeg: zero-shot segmentation — per prompt, a probability mask over the frame, summarised as
//! the fraction of the frame (or of its region of interest) the prompt covers.
//!
//! Two layouts load. The split export (`models/make_fixtures.py`: `text_model.onnx` ->
//! conditional embeddings, `vision_model.onnx` -> the CLIP activations the decoder reads,
//! `decoder_model.onnx` -> logits) runs the text side once at load, folds its embeddings into the
//! decoder as constants, and per frame runs the image side once for all prompts. The published
//! whole-model export (`model.onnx`: `input_ids`, `pixel_values`, `attention_mask` -> `logits`)
//! gets the prompt tokens folded in; it is fed one image, which its decoder broadcasts over the
//! prompts, or, for an export that does not broadcast, the image repeated once per prompt.
//!
//! Post-processing: the logits `[prompts, 352, 352]` are resized to the original image by
//! bilinear interpolation (PyTorch's `interpolate(mode="bilinear", align_corners=False)`, no
//! antialias), then a pixel counts when its sigmoid probability exceeds the threshold. Coverage is
//! the fraction of counted pixels (inside the region of interest when one is given); `max` is the
//! highest probability there.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde::Serialize;
use tract_onnx::prelude::*;

use super::dir::{ModelDir, Precision, FETCH_HINT};
use super::graph::{f32_output, run, runnable, Input, OnnxGraph, Runnable};
use super::kind::ModelKind;
use crate::preprocess::{Locked, Preprocessor};

mod masks;
pub use masks::{overlay, sigmoid, Layer};

/// One prompt's result on one image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Coverage {
    pub prompt: String,
    /// Fraction of pixels (of the region of interest) whose probability exceeds the threshold.
    pub coverage: f32,
    /// The highest pixel probability (in the region of interest).
    pub max: f32,
}

/// Which graphs serve a loaded model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `vision_model` once per frame, then `decoder_model` with the prompt embeddings folded in.
    Split,
    /// `model.onnx` with the tokens folded in, fed the image once (its decoder broadcasts).
    Whole,
    /// `model.onnx` fed the image once per prompt, as the stock graph is meant to be fed.
    WholeRepeated,
}

/// The logits of one frame, `[prompts, height, width]` at the model's resolution.
#[derive(Clone, Debug)]
pub struct Masks {
    pub prompts: usize,
    pub width: usize,
    pub height: usize,
    logits: Vec<f32>,
}

enum Graphs {
    Split { vision: Runnable, decoder: Runnable },
    Whole { model: Runnable, repeat: bool },
}

pub struct ClipSeg {
    graphs: Graphs,
    preprocess: Locked<Preprocessor>,
    prompts: Vec<String>,
    size: (usize, usize),
    last: Option<Masks>,
    /// The files that serve the model, for `check` and logs.
    pub files: Vec<PathBuf>,
}

fn suffix(p: Precision) -> &'static str {
    match p {
        Precision::Fp32 => "",
        Precision::Quantized => "_quantized",
    }
}

impl ClipSeg {
    /// Loads the split graphs when the directory has them, else the whole model.
    pub fn load(dir: &ModelDir, precision: Precision, prompts: &[String]) -> Result<ClipSeg> {
        ClipSeg::load_layout(dir, precision, prompts, None)
    }

    /// Like [`ClipSeg::load`], forcing a layout (for benchmarks and tests).
    pub fn load_layout(
        dir: &ModelDir,
        precision: Precision,
        prompts: &[String],
        layout: Option<Layout>,
    ) -> Result<ClipSeg> {
        if dir.family != ModelKind::ClipSeg {
            bail!(
                "unable to segment with {}: it is a {} model; segmentation needs a CLIPSeg model directory",
                dir.root.display(),
                dir.family.title()
            );
        }
        if prompts.is_empty() {
            bail!("unable to segment without prompts; give at least one");
        }
        let processor = dir.processor()?;
        let (w, h) = processor.output_size().with_context(|| {
            format!("unable to use {}: its processor config has no fixed output size (CLIPSeg resizes to 352x352)", dir.root.display())
        })?;
        let (w, h) = (w as usize, h as usize);
        let tokens = dir.tokenizer()?.encode(prompts)?;
        let sfx = suffix(precision);
        let split_files = ["vision_model", "decoder_model"]
            .iter()
            .all(|s| dir.has_onnx(s, precision))
            && (dir.has_onnx("text_model", precision)
                || dir.has_onnx("text_model", Precision::Fp32));
        let layout = match layout {
            Some(l) => l,
            None if split_files => Layout::Split,
            None if dir.has_onnx("model", precision) => Layout::Whole,
            None => bail!(
                "unable to find the CLIPSeg graphs in {}: it needs onnx/vision_model{sfx}.onnx, onnx/decoder_model{sfx}.onnx and \
                 onnx/text_model.onnx (the split export of models/make_fixtures.py) or onnx/model{sfx}.onnx (the published \
                 export); found {}; {FETCH_HINT}",
                dir.root.display(),
                dir.onnx_listing()
            ),
        };
        let n = prompts.len();
        let mut files = vec![];
        let graphs = match layout {
            Layout::Split => {
                let text_precision = if dir.has_onnx("text_model", precision) {
                    precision
                } else {
                    Precision::Fp32
                };
                let text = OnnxGraph::read(&dir.onnx_path("text_model", text_precision))?;
                let vision = OnnxGraph::read(&dir.onnx_path("vision_model", precision))?;
                let decoder = OnnxGraph::read(&dir.onnx_path("decoder_model", precision))?;
                files.extend([text.path.clone(), vision.path.clone(), decoder.path.clone()]);
                let embeddings = text_embeddings(&text, &tokens)?;
                let vision = vision.optimized(
                    &[(
                        "pixel_values",
                        Input::Fed(f32::datum_type(), vec![1, 3, h, w]),
                    )],
                    &["activations"],
                )?;
                let acts = vision
                    .output_fact(0)?
                    .shape
                    .as_concrete()
                    .map(<[usize]>::to_vec)
                    .with_context(|| {
                        format!(
                            "unable to use {}: its activations have no fixed shape",
                            dir.onnx_path("vision_model", precision).display()
                        )
                    })?;
                let decoder = decoder.optimized(
                    &[
                        ("activations", Input::Fed(f32::datum_type(), acts)),
                        ("conditional_embeddings", Input::Const(embeddings)),
                    ],
                    &["logits"],
                )?;
                Graphs::Split {
                    vision: runnable(vision)?,
                    decoder: runnable(decoder)?,
                }
            }
            Layout::Whole | Layout::WholeRepeated => {
                let graph = OnnxGraph::read(&dir.onnx_path("model", precision))?;
                files.push(graph.path.clone());
                let inputs = |batch: usize| -> Result<Vec<(&'static str, Input)>> {
                    Ok(vec![
                        ("input_ids", Input::Const(tokens.ids_tensor()?)),
                        (
                            "pixel_values",
                            Input::Fed(f32::datum_type(), vec![batch, 3, h, w]),
                        ),
                        ("attention_mask", Input::Const(tokens.mask_tensor()?)),
                    ])
                };
                let once = if layout == Layout::Whole && n > 1 {
                    match graph.optimized(&inputs(1)?, &["logits"]) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            tracing::debug!("{}: one image for {n} prompts does not broadcast ({e:#}); feeding it once per prompt", graph.path.display());
                            None
                        }
                    }
                } else {
                    None
                };
                match once {
                    Some(m) => Graphs::Whole {
                        model: runnable(m)?,
                        repeat: false,
                    },
                    None => Graphs::Whole {
                        model: runnable(graph.optimized(&inputs(n)?, &["logits"])?)?,
                        repeat: n > 1,
                    },
                }
            }
        };
        Ok(ClipSeg {
            graphs,
            preprocess: Locked::new(Preprocessor::new(processor)),
            prompts: prompts.to_vec(),
            size: (w, h),
            last: None,
            files,
        })
    }

    pub fn prompts(&self) -> &[String] {
        &self.prompts
    }

    /// The image-side graph: the vision tower of the split layout, or the whole model.
    pub fn image_graph(&self) -> &Runnable {
        match &self.graphs {
            Graphs::Split { vision, .. } => vision,
            Graphs::Whole { model, .. } => model,
        }
    }

    pub fn layout(&self) -> Layout {
        match &self.graphs {
            Graphs::Split { .. } => Layout::Split,
            Graphs::Whole { repeat: false, .. } => Layout::Whole,
            Graphs::Whole { repeat: true, .. } => Layout::WholeRepeated,
        }
    }

    pub fn preprocessor(&mut self) -> &mut Preprocessor {
        self.preprocess.get_mut()
    }

    /// The masks of the last frame [`ClipSeg::masks`] ran on (for event snapshots).
    pub fn last_masks(&self) -> Option<&Masks> {
        self.last.as_ref()
    }

    /// Runs the model on a preprocessed pixel tensor `[1, 3, H, W]`.
    pub fn run_pixels(&self, pixels: TValue) -> Result<Masks> {
        let out = match &self.graphs {
            Graphs::Split { vision, decoder } => {
                let acts =
                    run(vision, tvec![pixels]).context("unable to run the CLIPSeg image side")?;
                run(decoder, acts).context("unable to run the CLIPSeg decoder")?
            }
            Graphs::Whole { model, repeat } => {
                let input = if *repeat {
                    repeat_batch(&pixels, self.prompts.len())?
                } else {
                    pixels
                };
                run(model, tvec![input]).context("unable to run the CLIPSeg model")?
            }
        };
        let (shape, logits) = f32_output(&out[0])?;
        let n = self.prompts.len();
        let (hh, ww) = match shape[..] {
            [p, hh, ww] if p == n => (hh, ww),
            [p, 1, hh, ww] if p == n => (hh, ww),
            [hh, ww] if n == 1 => (hh, ww),
            _ => bail!("unable to read CLIPSeg logits of shape {shape:?}; expected [{n}, H, W] for {n} prompt(s)"),
        };
        if (ww, hh) != self.size {
            tracing::debug!(
                "CLIPSeg logits are {ww}x{hh} for {}x{} pixels",
                self.size.0,
                self.size.1
            );
        }
        Ok(Masks {
            prompts: n,
            width: ww,
            height: hh,
            logits,
        })
    }

    /// The masks of an image; also kept as the last masks.
    pub fn masks(&mut self, image: &RgbImage) -> Result<&Masks> {
        let masks = self.masks_of(image)?;
        Ok(self.last.insert(masks))
    }

    /// The masks of an image, not kept (threads that share the model call this; the
    /// preprocessor is held only while it fills the input).
    pub fn masks_of(&self, image: &RgbImage) -> Result<Masks> {
        let pixels = self.preprocess.with(|p| p.run(image))?;
        self.run_pixels(pixels)
    }

    /// Per prompt, the coverage above `threshold` and the maximum probability, on the image (or
    /// its region of interest `[x0, y0, x1, y1]`).
    pub fn segment(
        &mut self,
        image: &RgbImage,
        threshold: f32,
        roi: Option<[u32; 4]>,
    ) -> Result<Vec<Coverage>> {
        let (w, h) = image.dimensions();
        let masks = self.masks(image)?;
        let stats: Vec<(f32, f32)> = (0..masks.prompts)
            .map(|q| masks.coverage(q, w, h, roi, threshold))
            .collect();
        Ok(self
            .prompts
            .iter()
            .zip(stats)
            .map(|(p, (coverage, max))| Coverage {
                prompt: p.clone(),
                coverage,
                max,
            })
            .collect())
    }
}

/// Runs the text graph once: the conditional embeddings `[prompts, dim]` of the prompt set.
fn text_embeddings(graph: &OnnxGraph, tokens: &super::tokenize::Tokens) -> Result<Tensor> {
    let ids = tokens.ids_tensor()?;
    let mask = tokens.mask_tensor()?;
    let shape = ids.shape().to_vec();
    let model = graph.optimized(
        &[
            ("input_ids", Input::Fed(i64::datum_type(), shape.clone())),
            ("attention_mask", Input::Fed(i64::datum_type(), shape)),
        ],
        &["conditional_embeddings"],
    )?;
    let out = run(&runnable(model)?, tvec![ids.into(), mask.into()]).with_context(|| {
        format!(
            "unable to run the CLIPSeg text side {}",
            graph.path.display()
        )
    })?;
    let (shape, v) = f32_output(&out[0])?;
    if shape.len() != 2 || shape[0] != tokens.input_ids.len() {
        bail!(
            "unable to use {}: conditional embeddings of shape {shape:?}, expected [{}, D]",
            graph.path.display(),
            tokens.input_ids.len()
        );
    }
    Ok(tract_ndarray::Array2::from_shape_vec((shape[0], shape[1]), v)?.into_tensor())
}

/// The pixel tensor `[1, 3, H, W]` repeated `n` times along the batch.
fn repeat_batch(pixels: &TValue, n: usize) -> Result<TValue> {
    let one = pixels.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let mut shape = pixels.shape().to_vec();
    shape[0] = n;
    let mut t = Tensor::zero::<f32>(&shape)?;
    {
        let mut view = t.try_as_plain_ram_mut()?;
        let out = view.as_slice_mut::<f32>()?;
        for chunk in out.chunks_mut(one.len()) {
            chunk.copy_from_slice(&one);
        }
    }
    Ok(t.into())
}

#[cfg(test)]
mod tests;
