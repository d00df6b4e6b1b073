//! The real models behind a tree: a detector loaded with the tree's detection prompts and CLIP
//! with its classification prompts, each only when the tree has such groups.

use anyhow::{bail, Context, Result};
use image::RgbImage;

use super::{Op, Tree, TreeModels};
use crate::model::{Clip, Detection, Detector, ModelDir, Precision};

pub struct Models {
    pub detector: Option<Detector>,
    pub clip: Option<Clip>,
}

/// The column of the first group of `op`, for error messages.
fn first_column(tree: &Tree, op: Op) -> usize {
    tree.nodes
        .iter()
        .find(|n| n.op == op)
        .map(|n| n.column)
        .unwrap_or(1)
}

impl Models {
    /// Loads what `tree` needs: `detector` (OWL-ViT or OWLv2) when it has `[...]` groups,
    /// `clip` when it has `(...)` groups; a model the tree does not need is not loaded.
    pub fn load(
        tree: &Tree,
        detector: Option<&ModelDir>,
        clip: Option<&ModelDir>,
        precision: Precision,
        input_size: Option<u32>,
    ) -> Result<Models> {
        let detector = match (tree.detects(), detector) {
            (false, _) => None,
            (true, None) => bail!(
                "unable to run the tree {:?}: its '[' group at column {} detects objects and needs a detector; pass --detector DIR (an OWL-ViT or OWLv2 model directory)",
                tree.source,
                first_column(tree, Op::Detect)
            ),
            (true, Some(dir)) => Some(
                Detector::load(dir, precision, &tree.texts(Op::Detect), input_size)
                    .context("unable to load the tree's detector")?,
            ),
        };
        let clip = match (tree.classifies(), clip) {
            (false, _) => None,
            (true, None) => bail!(
                "unable to run the tree {:?}: its '(' group at column {} classifies and needs CLIP; pass --clip DIR (a CLIP model directory)",
                tree.source,
                first_column(tree, Op::Classify)
            ),
            (true, Some(dir)) => Some(
                Clip::load(dir, precision, &tree.texts(Op::Classify))
                    .context("unable to load the tree's CLIP model")?,
            ),
        };
        Ok(Models { detector, clip })
    }
}

impl TreeModels for Models {
    fn detect(
        &mut self,
        image: &RgbImage,
        threshold: f32,
        groups: &[&[usize]],
    ) -> Result<Vec<Vec<Detection>>> {
        let Some(d) = self.detector.as_mut() else {
            bail!("unable to detect: the tree was loaded without a detector");
        };
        d.detect_groups(image, threshold, groups)
    }

    fn classify(&mut self, image: &RgbImage) -> Result<Vec<f32>> {
        let Some(c) = self.clip.as_mut() else {
            bail!("unable to classify: the tree was loaded without CLIP");
        };
        let emb = c.image_embedding(image)?;
        let scale = c.logit_scale;
        Ok(c.scores(&emb)
            .iter()
            .map(|s| s.similarity * scale)
            .collect())
    }
}

/// Counts and times the model runs of a tree (`promptcam tree --bench`).
pub struct Timed<'a> {
    pub inner: &'a mut dyn TreeModels,
    /// Detector runs and their total time.
    pub detect: (usize, std::time::Duration),
    /// CLIP runs and their total time.
    pub classify: (usize, std::time::Duration),
}

impl<'a> Timed<'a> {
    pub fn new(inner: &'a mut dyn TreeModels) -> Timed<'a> {
        Timed {
            inner,
            detect: Default::default(),
            classify: Default::default(),
        }
    }
}

impl TreeModels for Timed<'_> {
    fn detect(
        &mut self,
        image: &RgbImage,
        threshold: f32,
        groups: &[&[usize]],
    ) -> Result<Vec<Vec<Detection>>> {
        let t = std::time::Instant::now();
        let out = self.inner.detect(image, threshold, groups);
        self.detect.0 += 1;
        self.detect.1 += t.elapsed();
        out
    }

    fn classify(&mut self, image: &RgbImage) -> Result<Vec<f32>> {
        let t = std::time::Instant::now();
        let out = self.inner.classify(image);
        self.classify.0 += 1;
        self.classify.1 += t.elapsed();
        out
    }
}
