//! CLIP text: the text tower kept loaded, for prompts typed at run time (the prompt lab and
//! `promptcam search`). Unlike [`super::Clip`], which folds a fixed prompt set into the graph
//! and drops the tower, this one feeds token ids per call, so any text can be embedded.
//!
//! The embeddings equal the ones the daemon computes for the same text (same file, same
//! tokenizer, same padding), so a prompt scored here scores as it would in the daemon.

use anyhow::{bail, Context, Result};
use tract_onnx::prelude::*;

use super::clip::{learned_logit_scale, learned_logit_scale_of, normalize, DEFAULT_LOGIT_SCALE};
use super::dir::{ModelDir, Precision};
use super::graph::{self, f32_output, runnable, Input, OnnxGraph, Runnable};
use super::kind::ModelKind;
use super::tokenize::PromptTokenizer;

pub struct ClipText {
    tower: Runnable,
    tokenizer: PromptTokenizer,
    /// Texts embedded before: the lab asks for the same prompts and negatives again and again.
    cache: std::sync::Mutex<std::collections::HashMap<String, Vec<f32>>>,
    /// `model.onnx`'s learned scale (see [`super::clip::learned_logit_scale`]).
    pub logit_scale: f32,
}

impl ClipText {
    /// Loads `text_model.onnx` (else the text side of `model.onnx`) with the token inputs fed.
    pub fn load(dir: &ModelDir, precision: Precision) -> Result<ClipText> {
        if dir.family != ModelKind::Clip {
            bail!(
                "unable to embed prompts with {}: it is an {} model; this needs a CLIP model directory",
                dir.root.display(),
                dir.family.title()
            );
        }
        let tokenizer = dir.tokenizer()?;
        let len = tokenizer.max_length;
        let ids = || Input::Fed(i64::datum_type(), vec![1, len]);
        let (tower, logit_scale) = if dir.has_onnx("text_model", precision) {
            let g = OnnxGraph::read(&dir.onnx_path("text_model", precision))?;
            let tower = g.into_optimized(
                &[("input_ids", ids()), ("attention_mask", ids())],
                &["text_embeds"],
            )?;
            let scale = match dir.has_onnx("model", precision) {
                true => learned_logit_scale_of(&dir.onnx_path("model", precision))?,
                false => DEFAULT_LOGIT_SCALE,
            };
            (tower, scale)
        } else if dir.has_onnx("model", precision) {
            let g = OnnxGraph::read(&dir.onnx_path("model", precision))?;
            let processor = dir.processor()?;
            let (w, h) = processor
                .output_size()
                .context("unable to size the image input of model.onnx")?;
            let zeros = Tensor::zero::<f32>(&[1, 3, h as usize, w as usize])?;
            let tower = g.optimized(
                &[
                    ("input_ids", ids()),
                    ("attention_mask", ids()),
                    ("pixel_values", Input::Const(zeros)),
                ],
                &["text_embeds"],
            )?;
            (tower, learned_logit_scale(&g)?)
        } else {
            bail!(
                "unable to find a CLIP text tower in {}: expected onnx/text_model{s}.onnx or onnx/model{s}.onnx, found {}; {}",
                dir.root.display(),
                dir.onnx_listing(),
                super::dir::FETCH_HINT,
                s = if precision == Precision::Quantized { "_quantized" } else { "" }
            );
        };
        Ok(ClipText {
            tower: runnable(tower)?,
            tokenizer,
            cache: Default::default(),
            logit_scale,
        })
    }

    /// The L2-normalized embedding of each text.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![];
        for text in texts {
            let known = self.cache.lock().ok().and_then(|c| c.get(text).cloned());
            let v = match known {
                Some(v) => v,
                None => {
                    let v = self.run(text)?;
                    if let Ok(mut c) = self.cache.lock() {
                        if c.len() >= CACHED {
                            c.clear();
                        }
                        c.insert(text.clone(), v.clone());
                    }
                    v
                }
            };
            out.push(v);
        }
        Ok(out)
    }

    fn run(&self, text: &str) -> Result<Vec<f32>> {
        let tokens = self.tokenizer.encode(&[text.to_string()])?;
        let row = |v: &[Vec<i64>]| -> Result<Tensor> {
            let r = v.first().context("the tokenizer returned no row")?;
            Ok(tract_ndarray::Array2::from_shape_vec((1, r.len()), r.clone())?.into_tensor())
        };
        let inputs = tvec![
            row(&tokens.input_ids)?.into(),
            row(&tokens.attention_mask)?.into()
        ];
        let result =
            graph::run(&self.tower, inputs).context("unable to run the CLIP text tower")?;
        let (_, mut v) = f32_output(&result[0])?;
        normalize(&mut v);
        Ok(v)
    }
}

/// Text embeddings kept at most (a few hundred kilobytes).
const CACHED: usize = 256;
