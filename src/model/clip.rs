//! CLIP: zero-shot classification of a whole frame against a set of prompts.
//!
//! The prompt embeddings are computed once per prompt set (text tower, then dropped); per frame
//! only the image tower runs. Scores are the softmax over the prompt set of the cosine
//! similarities times the model's *learned* logit scale (100 for the OpenAI checkpoints), which is
//! read from `model.onnx` — not `logit_scale_init_value` from config.json, which real checkpoints
//! do not follow. See [`learned_logit_scale`].

use anyhow::{bail, Context, Result};
use image::RgbImage;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use super::clip_image::ClipImage;
use super::dir::{ModelDir, Precision};
use super::graph::{f32_output, runnable, Input, OnnxGraph, Runnable};
use super::kind::ModelKind;
use crate::preprocess::Preprocessor;

/// The scale used when the directory has no `model.onnx` to read it from: what OpenAI's (and
/// most other) CLIP checkpoints learned.
pub const DEFAULT_LOGIT_SCALE: f32 = 100.0;

/// One prompt's result on one image.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClipScore {
    pub prompt: String,
    /// Softmax probability over the prompt set.
    pub score: f32,
    /// Cosine similarity of the image and prompt embeddings.
    pub similarity: f32,
}

/// A prompt set with the image side it scores frames through.
pub struct Clip {
    image: std::sync::Arc<ClipImage>,
    preprocess: Preprocessor,
    prompts: Vec<String>,
    text_embeds: Vec<Vec<f32>>,
    pub logit_scale: f32,
    /// Which files serve the image and text sides, for `check` and logs.
    pub files: Vec<std::path::PathBuf>,
}

impl Clip {
    pub fn load(dir: &ModelDir, precision: Precision, prompts: &[String]) -> Result<Clip> {
        if prompts.is_empty() {
            bail!("unable to classify without prompts; give at least one");
        }
        let classes: Vec<Vec<String>> = prompts.iter().map(|p| vec![p.clone()]).collect();
        Clip::load_classes(dir, precision, &classes)
    }

    /// Like [`Clip::load`], with each class described by several texts (a prompt ensemble such
    /// as "a photo of a {}", "a {} in the wild"): their normalized embeddings are averaged into
    /// the class embedding. Classes are reported under their first text.
    pub fn load_classes(
        dir: &ModelDir,
        precision: Precision,
        classes: &[Vec<String>],
    ) -> Result<Clip> {
        if classes.iter().any(|c| c.is_empty()) {
            bail!("unable to classify with an empty prompt ensemble");
        }
        let prompts: Vec<String> = classes.iter().map(|c| c[0].clone()).collect();
        let texts: Vec<String> = classes.iter().flatten().cloned().collect();
        if dir.family != ModelKind::Clip {
            bail!("unable to classify with {}: it is an {} model; classification needs a CLIP model directory", dir.root.display(), dir.family.title());
        }
        let (w, h) = dir.processor()?.output_size().with_context(|| {
            format!("unable to use {}: its processor config has no fixed output size (center crop or square resize)", dir.root.display())
        })?;
        let tokenizer = dir.tokenizer()?;
        // without classes only image embeddings are wanted (the history of a camera without CLIP
        // prompts); model.onnx still needs some tokens to fold into its text inputs
        let tokens = match texts.is_empty() {
            true => tokenizer.encode(&[String::new()])?,
            false => tokenizer.encode(&texts)?,
        };

        // model.onnx is parsed whole only when a tower file is missing: it holds both towers
        let towers =
            dir.has_onnx("vision_model", precision) && dir.has_onnx("text_model", precision);
        let full = (!towers && dir.has_onnx("model", precision))
            .then(|| OnnxGraph::read(&dir.onnx_path("model", precision)))
            .transpose()?;
        let mut files = vec![];

        if !dir.has_onnx("vision_model", precision) && full.is_none() {
            return Err(missing_tower(dir, precision, "image", "vision_model"));
        }
        // the text side first: its weights are gone before the image tower's are loaded
        let per_text = match texts.is_empty() {
            true => vec![],
            false => text_embeddings(dir, precision, full.as_ref(), &tokens, (w, h), &mut files)?,
        };

        // image side: vision_model.onnx, else model.onnx with the token inputs folded in
        let image = ClipImage::build(dir, precision, full.as_ref(), &tokens, &mut files)?;
        let mut rows = per_text.iter();
        let text_embeds = classes
            .iter()
            .map(|class| class_embedding(rows.by_ref().take(class.len()).map(Vec::as_slice)))
            .collect();
        Ok(Clip {
            preprocess: image.preprocessor(),
            logit_scale: image.logit_scale,
            image: std::sync::Arc::new(image),
            prompts,
            text_embeds,
            files,
        })
    }

    pub fn prompts(&self) -> &[String] {
        &self.prompts
    }

    /// Adds a class scored like the others from a ready embedding (L2-normalized), e.g. one made
    /// of example images (`examples.rs`).
    pub fn push_class(&mut self, name: String, embedding: Vec<f32>) {
        self.prompts.push(name);
        self.text_embeds.push(embedding);
    }

    /// The L2-normalized image embedding of a frame.
    pub fn image_embedding(&mut self, image: &RgbImage) -> Result<Vec<f32>> {
        let pixels = self.preprocess.run(image)?;
        self.embed_pixels(pixels)
    }

    /// Runs the image tower on an already preprocessed pixel tensor.
    pub fn embed_pixels(&self, pixels: TValue) -> Result<Vec<f32>> {
        self.image.embed_pixels(pixels)
    }

    /// The image tower, for profiling.
    pub fn image_tower(&self) -> &Runnable {
        self.image.tower()
    }

    pub fn preprocessor(&mut self) -> &mut Preprocessor {
        &mut self.preprocess
    }

    pub fn classify(&mut self, image: &RgbImage) -> Result<Vec<ClipScore>> {
        let emb = self.image_embedding(image)?;
        Ok(self.scores(&emb))
    }

    /// Similarities and softmax scores of an image embedding against the prompt set.
    pub fn scores(&self, image_embedding: &[f32]) -> Vec<ClipScore> {
        let sims: Vec<f32> = self
            .text_embeds
            .iter()
            .map(|t| dot(t, image_embedding))
            .collect();
        let probs = softmax(
            &sims
                .iter()
                .map(|s| s * self.logit_scale)
                .collect::<Vec<_>>(),
        );
        self.prompts
            .iter()
            .zip(sims.iter().zip(probs))
            .map(|(p, (s, pr))| ClipScore {
                prompt: p.clone(),
                score: pr,
                similarity: *s,
            })
            .collect()
    }
}

/// Neither the single tower nor model.onnx is there: say which files were looked for.
pub(super) fn missing_tower(
    dir: &ModelDir,
    precision: Precision,
    side: &str,
    stem: &str,
) -> anyhow::Error {
    let s = suffix(precision);
    anyhow::anyhow!(
        "unable to find a CLIP {side} tower in {}: expected onnx/{stem}{s}.onnx or onnx/model{s}.onnx, found {}; {}",
        dir.root.display(),
        dir.onnx_listing(),
        super::dir::FETCH_HINT
    )
}

pub(super) fn suffix(p: Precision) -> &'static str {
    match p {
        Precision::Fp32 => "",
        Precision::Quantized => "_quantized",
    }
}

/// Prompt embeddings, L2-normalized: from text_model.onnx, else from model.onnx (whose image
/// input is then a constant, so tract prunes the image tower).
fn text_embeddings(
    dir: &ModelDir,
    precision: Precision,
    full: Option<&OnnxGraph>,
    tokens: &super::tokenize::Tokens,
    (w, h): (u32, u32),
    files: &mut Vec<std::path::PathBuf>,
) -> Result<Vec<Vec<f32>>> {
    let ids = tokens.ids_tensor()?;
    let mask = tokens.mask_tensor()?;
    let (model, graph_path) = if dir.has_onnx("text_model", precision) {
        let path = dir.onnx_path("text_model", precision);
        let m = OnnxGraph::read(&path)?.into_optimized(
            &[
                ("input_ids", Input::Const(ids)),
                ("attention_mask", Input::Const(mask)),
            ],
            &["text_embeds"],
        )?;
        (m, path)
    } else if let Some(g) = full {
        let zeros = Tensor::zero::<f32>(&[1, 3, h as usize, w as usize])?;
        let m = g.optimized(
            &[
                ("input_ids", Input::Const(ids)),
                ("attention_mask", Input::Const(mask)),
                ("pixel_values", Input::Const(zeros)),
            ],
            &["text_embeds"],
        )?;
        (m, g.path.clone())
    } else {
        return Err(missing_tower(dir, precision, "text", "text_model"));
    };
    files.push(graph_path);
    let out = runnable(model)?
        .run(tvec![])
        .context("unable to run the CLIP text tower")?;
    let (shape, flat) = f32_output(&out[0])?;
    let dim = *shape.last().context("text embeddings have no dimension")?;
    if shape.len() != 2 || shape[0] != tokens.input_ids.len() {
        bail!(
            "unable to use the CLIP text tower output: shape {shape:?}, expected [{}, D]",
            tokens.input_ids.len()
        );
    }
    Ok(flat
        .chunks(dim)
        .map(|c| {
            let mut v = c.to_vec();
            normalize(&mut v);
            v
        })
        .collect())
}

/// Reads the learned logit scale from a CLIP `model.onnx`: the scalar that multiplies the
/// similarity matrix into `logits_per_text`, usually `Exp(logit_scale)` of an initializer, or an
/// already folded constant. Falls back to running the graph (one prompt, a blank image) and
/// dividing a logit by its cosine similarity.
pub fn learned_logit_scale(graph: &OnnxGraph) -> Result<f32> {
    if let Some(s) = scale_from_graph(graph.proto_graph()) {
        return Ok(s);
    }
    tracing::debug!(
        "logit scale not found by graph walk in {}; running the graph",
        graph.path.display()
    );
    scale_by_running(graph)
}

/// Like [`learned_logit_scale`] for a file not loaded yet: skims its structure (no weights) and
/// loads the whole graph only if the scale must be found by running it.
pub fn learned_logit_scale_of(path: &std::path::Path) -> Result<f32> {
    if let Some(s) = scale_from_graph(&super::skim::graph_skeleton(path)?) {
        return Ok(s);
    }
    learned_logit_scale(&OnnxGraph::read(path)?)
}

fn scale_from_graph(g: &pb::GraphProto) -> Option<f32> {
    let producer = |name: &str| g.node.iter().find(|n| n.output.iter().any(|o| o == name));
    // logits_per_image = Transpose(logits_per_text); logits_per_text = Mul(MatMul(..), scale)
    let mut node = producer("logits_per_text").or_else(|| producer("logits_per_image"))?;
    for _ in 0..4 {
        if node.op_type == "Mul" {
            break;
        }
        node = producer(node.input.first()?)?;
    }
    if node.op_type != "Mul" {
        return None;
    }
    node.input.iter().find_map(|i| scalar_value(g, i, 0))
}

/// Evaluates a scalar built from constants through Exp / Cast / Identity, if it is one.
fn scalar_value(g: &pb::GraphProto, name: &str, depth: usize) -> Option<f32> {
    if depth > 6 {
        return None;
    }
    if let Some(init) = g.initializer.iter().find(|i| i.name == name) {
        return tensor_scalar(init);
    }
    let node = g.node.iter().find(|n| n.output.iter().any(|o| o == name))?;
    match node.op_type.as_str() {
        "Exp" => scalar_value(g, node.input.first()?, depth + 1).map(f32::exp),
        "Cast" | "Identity" => scalar_value(g, node.input.first()?, depth + 1),
        "Constant" => node
            .attribute
            .iter()
            .find(|a| a.name == "value")
            .and_then(|a| a.t.as_ref())
            .and_then(tensor_scalar),
        _ => None,
    }
}

fn tensor_scalar(t: &pb::TensorProto) -> Option<f32> {
    if t.dims.iter().product::<i64>() != 1 {
        return None;
    }
    // float32 = 1
    if t.data_type != 1 {
        return None;
    }
    if let Some(v) = t.float_data.first() {
        return Some(*v);
    }
    let raw: &[u8] = t.raw_data.as_ref();
    (raw.len() == 4).then(|| f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

fn scale_by_running(graph: &OnnxGraph) -> Result<f32> {
    let ids = tract_ndarray::arr2(&[[49406i64, 49407]]).into_tensor();
    let mask = tract_ndarray::arr2(&[[1i64, 1]]).into_tensor();
    // any image works: the scale is logit / similarity
    let shape = graph_pixel_shape(graph).unwrap_or(vec![1, 3, 224, 224]);
    let mut pixels = Tensor::zero::<f32>(&shape)?;
    for (i, v) in pixels
        .try_as_plain_ram_mut()?
        .as_slice_mut::<f32>()?
        .iter_mut()
        .enumerate()
    {
        *v = ((i % 97) as f32 / 97.0) - 0.5;
    }
    let m = graph.optimized(
        &[
            ("input_ids", Input::Const(ids)),
            ("attention_mask", Input::Const(mask)),
            ("pixel_values", Input::Const(pixels)),
        ],
        &["logits_per_image", "text_embeds", "image_embeds"],
    )?;
    let out = runnable(m)?.run(tvec![])?;
    let (_, logit) = f32_output(&out[0])?;
    let (_, t) = f32_output(&out[1])?;
    let (_, i) = f32_output(&out[2])?;
    let cos = dot(&t, &i) / (dot(&t, &t).sqrt() * dot(&i, &i).sqrt());
    if cos.abs() < 1e-4 {
        bail!(
            "unable to read the logit scale of {}: the probe similarity is zero",
            graph.path.display()
        );
    }
    Ok(logit[0] / cos)
}

fn graph_pixel_shape(graph: &OnnxGraph) -> Option<Vec<usize>> {
    let input = graph
        .proto_graph()
        .input
        .iter()
        .find(|i| i.name == "pixel_values")?;
    let t = match input.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => t,
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let dims = &t.shape.as_ref()?.dim;
    let mut out = vec![];
    for (ix, d) in dims.iter().enumerate() {
        match &d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v > 0 => {
                out.push(*v as usize)
            }
            _ if ix == 0 => out.push(1),
            _ => return None,
        }
    }
    Some(out)
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

pub fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// A CLIP prompt's score on a frame, as the daemon and the prompt lab compute it: the softmax
/// probability of the prompt's class against the classes it must beat (its negatives, or the
/// camera's other CLIP prompts), over cosine similarities times the learned logit scale.
pub fn prompt_score(own: f32, negatives: impl IntoIterator<Item = f32>, logit_scale: f32) -> f32 {
    let mut logits = vec![own * logit_scale];
    logits.extend(negatives.into_iter().map(|n| n * logit_scale));
    softmax(&logits)[0]
}

/// A class embedding from the embeddings of its texts (a prompt ensemble, or one text): the
/// normalized mean of the normalized rows.
pub fn class_embedding<'a>(rows: impl IntoIterator<Item = &'a [f32]>) -> Vec<f32> {
    let mut mean: Vec<f32> = vec![];
    for row in rows {
        if mean.is_empty() {
            mean = vec![0.0; row.len()];
        }
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    normalize(&mut mean);
    mean
}

/// The texts of a prompt's class: the prompt itself, or each ensemble template with `{}`
/// replaced by it.
pub fn ensemble_texts(text: &str, templates: &[String]) -> Vec<String> {
    if templates.is_empty() {
        vec![text.to_string()]
    } else {
        templates.iter().map(|t| t.replace("{}", text)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }
}
