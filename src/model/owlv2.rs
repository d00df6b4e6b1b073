//! OWLv2: open-vocabulary detection with OWL-ViT's design, trained further on self-labelled web
//! images (LVIS AP 43.9 for B/16 vs OWL-ViT B/32's 19.3, scenic's published figures). The export
//! has OWL-ViT's inputs and outputs (`logits`, `pred_boxes`, and `objectness_logits` when the
//! export keeps it), so it loads, folds prompts and resizes its grid as OWL-ViT does
//! (`owlvit::load_graph`); what differs is the preprocessing (pad to a square, then a
//! scikit-image-style resize: `preprocess::owlv2`) and that boxes are relative to the padded
//! square. Post-processing is transformers' `Owlv2ImageProcessor.post_process_object_detection`:
//! sigmoid of the best query logit per box, boxes scaled by the padded side.

use anyhow::{bail, Context, Result};
use image::RgbImage;
use tract_onnx::prelude::*;

use super::dir::{ModelDir, Precision};
use super::graph::{self, f32_output, Runnable};
use super::kind::ModelKind;
use super::owlvit::{
    load_graph, post_process_scaled, read_patches, sigmoid, Detection, PatchScores,
};
use crate::preprocess::owlv2::{Owlv2Config, Owlv2Preprocessor};
use crate::preprocess::Locked;

/// One frame's raw outputs: the per-patch best query, score and box, and when the export has
/// it, the probability that the patch holds an object at all (any prompt).
pub struct Owlv2Patches {
    pub patches: PatchScores,
    pub objectness: Option<Vec<f32>>,
}

pub struct Owlv2 {
    model: Runnable,
    preprocess: Locked<Owlv2Preprocessor>,
    prompts: Vec<String>,
    pub file: std::path::PathBuf,
    size: u32,
    objectness: bool,
}

impl Owlv2 {
    /// Loads an OWLv2 export with `prompts` folded in, at its native input size (960 for the
    /// published B/16) or at `input_size` pixels square.
    pub fn load(
        dir: &ModelDir,
        precision: Precision,
        prompts: &[String],
        input_size: Option<u32>,
    ) -> Result<Owlv2> {
        if dir.family != ModelKind::Owlv2 {
            bail!(
                "unable to detect with {} as OWLv2: it is a {} model{}",
                dir.root.display(),
                dir.family.title(),
                if dir.family == ModelKind::OwlVit {
                    " (OWL-ViT runs as model = \"owlvit\")"
                } else {
                    ""
                }
            );
        }
        let json = dir.processor_json()?;
        let mut config = Owlv2Config::from_json(&json).with_context(|| {
            format!(
                "unable to use the image processor settings in {}",
                dir.root.display()
            )
        })?;
        let loaded = load_graph(
            dir,
            precision,
            prompts,
            Some(config.size),
            input_size,
            &["logits", "pred_boxes"],
            &["objectness_logits"],
        )?;
        config.size = (loaded.size, loaded.size);
        Ok(Owlv2 {
            objectness: loaded.outputs.len() == 3,
            model: loaded.model,
            preprocess: Locked::new(Owlv2Preprocessor::new(config)),
            prompts: prompts.to_vec(),
            file: loaded.file,
            size: loaded.size,
        })
    }

    pub fn prompts(&self) -> &[String] {
        &self.prompts
    }

    /// The square input size the model runs at, in pixels.
    pub fn input_size(&self) -> u32 {
        self.size
    }

    /// The optimized model (prompts folded in), for profiling.
    pub fn runnable(&self) -> &Runnable {
        &self.model
    }

    pub fn preprocessor(&mut self) -> &mut Owlv2Preprocessor {
        self.preprocess.get_mut()
    }

    /// The pixel tensor of `image` (the preprocessor is held only while it fills it).
    pub fn pixels(&self, image: &RgbImage) -> Result<TValue> {
        self.preprocess.with(|p| p.run(image))
    }

    /// Where boxes of an image of `width` x `height` scale to (boxes are relative to the padded
    /// square).
    pub fn box_scale(&self, width: u32, height: u32) -> (f32, f32) {
        self.preprocess.with(|p| p.box_scale(width, height))
    }

    /// Runs the model on a preprocessed pixel tensor.
    pub fn patch_scores(&self, pixels: TValue) -> Result<Owlv2Patches> {
        let out =
            graph::run(&self.model, tvec![pixels]).context("unable to run the OWLv2 model")?;
        let patches = read_patches(&out[0], &out[1], self.prompts.len())?;
        let objectness = if self.objectness {
            let (shape, logits) = f32_output(&out[2])?;
            if logits.len() != patches.scores.len() {
                bail!(
                    "unable to read OWLv2 objectness_logits {shape:?}: expected one per patch ({})",
                    patches.scores.len()
                );
            }
            Some(logits.into_iter().map(sigmoid).collect())
        } else {
            None
        };
        Ok(Owlv2Patches {
            patches,
            objectness,
        })
    }

    /// Post-processing of one frame's outputs for an image of `width` x `height`.
    pub fn post_process(
        &self,
        p: &Owlv2Patches,
        threshold: f32,
        width: u32,
        height: u32,
    ) -> Vec<Detection> {
        let (sx, sy) = self.box_scale(width, height);
        post_process_scaled(&p.patches, &self.prompts, threshold, sx, sy)
    }

    /// Detections above `threshold` in an image, highest score first.
    pub fn detect(&self, image: &RgbImage, threshold: f32) -> Result<Vec<Detection>> {
        let pixels = self.pixels(image)?;
        let p = self.patch_scores(pixels)?;
        Ok(self.post_process(&p, threshold, image.width(), image.height()))
    }
}
