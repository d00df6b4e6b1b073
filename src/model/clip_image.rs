//! CLIP image: the image side of a CLIP model (tower, preprocessing settings, learned logit
//! scale), loaded once and shared (`Arc`) by everything that embeds frames with that model: the
//! daemon's cameras each keep their own prompts' text embeddings and their own preprocessing
//! buffers, but not their own copy of the weights.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tract_onnx::prelude::*;

use super::clip::{learned_logit_scale, learned_logit_scale_of, normalize, DEFAULT_LOGIT_SCALE};
use super::dir::{ModelDir, Precision};
use super::graph::{f32_output, run, runnable, Input, OnnxGraph, Runnable};
use super::kind::ModelKind;
use super::tokenize::Tokens;
use crate::preprocess::{Preprocessor, ProcessorConfig};

pub struct ClipImage {
    tower: Runnable,
    processor: ProcessorConfig,
    /// Cosine similarities are multiplied by this before the softmax (what the checkpoint
    /// learned, read from `model.onnx`; see [`super::clip::learned_logit_scale`]).
    pub logit_scale: f32,
    /// Which files serve the image side (and the logit scale), for `check` and logs.
    pub files: Vec<PathBuf>,
}

impl ClipImage {
    /// Loads the image tower of a CLIP directory: `vision_model.onnx`, else `model.onnx` with
    /// its text inputs folded to a constant.
    pub fn load(dir: &ModelDir, precision: Precision) -> Result<Arc<ClipImage>> {
        if dir.family != ModelKind::Clip {
            bail!(
                "unable to embed frames with {}: it is an {} model; this needs a CLIP model directory",
                dir.root.display(),
                dir.family.title()
            );
        }
        let full = (!dir.has_onnx("vision_model", precision) && dir.has_onnx("model", precision))
            .then(|| OnnxGraph::read(&dir.onnx_path("model", precision)))
            .transpose()?;
        let tokens = dir.tokenizer()?.encode(&[String::new()])?;
        let mut files = vec![];
        Ok(Arc::new(ClipImage::build(
            dir,
            precision,
            full.as_ref(),
            &tokens,
            &mut files,
        )?))
    }

    /// The image side from its file; `full` is `model.onnx` when it was parsed already (it holds
    /// both towers), `tokens` what to fold into its text inputs then.
    pub(super) fn build(
        dir: &ModelDir,
        precision: Precision,
        full: Option<&OnnxGraph>,
        tokens: &Tokens,
        files: &mut Vec<PathBuf>,
    ) -> Result<ClipImage> {
        let processor = dir.processor()?;
        let (w, h) = processor.output_size().with_context(|| {
            format!("unable to use {}: its processor config has no fixed output size (center crop or square resize)", dir.root.display())
        })?;
        let pixels = Input::Fed(f32::datum_type(), vec![1, 3, h as usize, w as usize]);
        let tower = if dir.has_onnx("vision_model", precision) {
            let g = OnnxGraph::read(&dir.onnx_path("vision_model", precision))?;
            files.push(g.path.clone());
            g.into_optimized(&[("pixel_values", pixels)], &["image_embeds"])?
        } else if let Some(g) = full {
            files.push(g.path.clone());
            g.optimized(
                &[
                    ("input_ids", Input::Const(tokens.ids_tensor()?)),
                    ("attention_mask", Input::Const(tokens.mask_tensor()?)),
                    ("pixel_values", pixels),
                ],
                &["image_embeds"],
            )?
        } else {
            return Err(super::clip::missing_tower(
                dir,
                precision,
                "image",
                "vision_model",
            ));
        };
        let logit_scale = match (full, dir.has_onnx("model", precision)) {
            (Some(g), _) => learned_logit_scale(g)?,
            (None, true) => learned_logit_scale_of(&dir.onnx_path("model", precision))?,
            (None, false) => {
                tracing::warn!(
                    "{} has no onnx/model{}.onnx to read the learned logit scale from; using {DEFAULT_LOGIT_SCALE}",
                    dir.root.display(),
                    super::clip::suffix(precision)
                );
                DEFAULT_LOGIT_SCALE
            }
        };
        Ok(ClipImage {
            tower: runnable(tower)?,
            processor,
            logit_scale,
            files: files.clone(),
        })
    }

    /// A preprocessor for this tower's input (each user keeps its own: it holds buffers).
    pub fn preprocessor(&self) -> Preprocessor {
        Preprocessor::new(self.processor.clone())
    }

    /// Runs the tower on a preprocessed pixel tensor: the L2-normalized image embedding.
    pub fn embed_pixels(&self, pixels: TValue) -> Result<Vec<f32>> {
        let out = run(&self.tower, tvec![pixels]).context("unable to run the CLIP image tower")?;
        let (_, mut v) = f32_output(&out[0])?;
        normalize(&mut v);
        Ok(v)
    }

    /// The tower, for profiling.
    pub fn tower(&self) -> &Runnable {
        &self.tower
    }
}
