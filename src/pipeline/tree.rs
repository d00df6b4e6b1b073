//! Tree prompts in the daemon: one run of a camera's tree per frame, one observation per chain
//! of each leaf path (`model::tree::leaves`), so that each leaf path is its own state with its
//! own threshold, smoothing, events and entities, and the camera keeps each leaf's best chain
//! whose box lies inside the region of interest. The tree's detector is the shared one of its
//! kind (its graph holds the tree's detection prompts next to the other cameras'), its
//! classifications run on the shared CLIP image tower with the text embeddings made at load.

use std::sync::Arc;

use anyhow::{Context, Result};
use image::RgbImage;

use super::{Observation, PromptModel};
use crate::frame::Frame;
use crate::model::clip::dot;
use crate::model::tree::{Op, Tree, TreeModels};
use crate::model::ModelKind;
use crate::model::{ClipImage, Detection, Detector};
use crate::preprocess::Preprocessor;

/// The shared models a tree runs on.
pub struct TreeBackends {
    /// The detector and, per detection text of the tree (`Tree::texts(Op::Detect)`), its query
    /// index in the detector.
    pub detector: Option<(Arc<Detector>, Vec<usize>)>,
    /// The CLIP image tower and, per classification text of the tree, its normalized embedding.
    pub clip: Option<(Arc<ClipImage>, Vec<Vec<f32>>)>,
}

struct Running {
    backends: TreeBackends,
    preprocess: Option<Preprocessor>,
}

impl TreeModels for Running {
    fn detect(
        &mut self,
        image: &RgbImage,
        threshold: f32,
        groups: &[&[usize]],
    ) -> Result<Vec<Vec<Detection>>> {
        let (detector, queries) = self
            .backends
            .detector
            .as_ref()
            .context("unable to run the tree: it has no detector")?;
        let mapped: Vec<Vec<usize>> = groups
            .iter()
            .map(|g| g.iter().map(|i| queries[*i]).collect())
            .collect();
        let refs: Vec<&[usize]> = mapped.iter().map(Vec::as_slice).collect();
        let found = detector.detect_groups(image, threshold, &refs)?;
        // back to the tree's text indices
        Ok(found
            .into_iter()
            .map(|dets| {
                dets.into_iter()
                    .filter_map(|mut d| {
                        d.prompt_index = queries.iter().position(|q| *q == d.prompt_index)?;
                        Some(d)
                    })
                    .collect()
            })
            .collect())
    }

    fn classify(&mut self, image: &RgbImage) -> Result<Vec<f32>> {
        let (tower, texts) = self
            .backends
            .clip
            .as_ref()
            .context("unable to run the tree: it has no CLIP model")?;
        let pre = self.preprocess.get_or_insert_with(|| tower.preprocessor());
        let emb = tower.embed_pixels(pre.run(image)?)?;
        Ok(texts
            .iter()
            .map(|t| dot(t, &emb) * tower.logit_scale)
            .collect())
    }
}

pub struct TreePrompts {
    kind: ModelKind,
    tree: Arc<Tree>,
    threshold: f32,
    /// Per leaf of the tree (tree order), the camera prompt that is its state.
    leaves: Vec<usize>,
    prompts: Vec<usize>,
    models: Running,
}

impl TreePrompts {
    /// `leaves[i]` is the camera prompt of the tree's i-th leaf; `threshold` is the detection
    /// threshold inside the tree (boxes under it are not looked into).
    pub fn new(
        kind: ModelKind,
        tree: Arc<Tree>,
        threshold: f32,
        leaves: Vec<usize>,
        backends: TreeBackends,
    ) -> Result<TreePrompts> {
        if leaves.len() != tree.leaves().len() {
            anyhow::bail!(
                "unable to serve the tree {:?}: {} leaf prompts for {} leaves",
                tree.source,
                leaves.len(),
                tree.leaves().len()
            );
        }
        if tree.detects() && backends.detector.is_none() {
            anyhow::bail!("unable to serve the tree {:?}: no detector", tree.source);
        }
        if tree.classifies() && backends.clip.is_none() {
            anyhow::bail!("unable to serve the tree {:?}: no CLIP model", tree.source);
        }
        let n = |op| tree.texts(op).len();
        if backends
            .detector
            .as_ref()
            .is_some_and(|d| d.1.len() != n(Op::Detect))
            || backends
                .clip
                .as_ref()
                .is_some_and(|c| c.1.len() != n(Op::Classify))
        {
            anyhow::bail!(
                "unable to serve the tree {:?}: the models hold other prompts",
                tree.source
            );
        }
        let mut prompts = leaves.clone();
        prompts.sort_unstable();
        prompts.dedup();
        Ok(TreePrompts {
            kind,
            tree,
            threshold,
            leaves,
            prompts,
            models: Running {
                backends,
                preprocess: None,
            },
        })
    }
}

impl PromptModel for TreePrompts {
    fn kind(&self) -> ModelKind {
        self.kind
    }

    fn prompts(&self) -> &[usize] {
        &self.prompts
    }

    /// Every chain of every leaf, as an observation of the leaf's prompt (a box when the chain
    /// has a detection; the whole frame for classification-only paths).
    fn observe(&mut self, frame: &Frame, _roi: Option<[u32; 4]>) -> Result<Vec<Observation>> {
        let out = self
            .tree
            .run(&mut self.models, &frame.image, self.threshold)?;
        Ok(out
            .leaf_chains(&self.tree)
            .into_iter()
            .zip(&self.leaves)
            .flat_map(|(chains, prompt)| {
                chains.into_iter().map(move |(score, bbox)| Observation {
                    prompt: *prompt,
                    score,
                    bbox,
                })
            })
            .collect())
    }
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
