//! Tree execution: NanoOWL's rules, with transformers' pre- and post-processing on crops.
//!
//! A region is the frame or a detected box. Each region carries labels: the one that made it
//! (the frame, or the box's detection prompt) and the winner of each classification group run
//! on it. A node runs on every region carrying its input label: a classification runs CLIP on
//! the region's crop (softmax over the group; the winner is added to the region's labels, so the
//! nodes nested under it apply there), a detection runs the detector on the crop and each box
//! above the threshold becomes a new region, labelled by its best prompt of the group. Crops
//! are the pixel rectangle `[floor(x0), floor(y0), ceil(x1), ceil(y1)]` clamped to the frame;
//! boxes found in a crop are shifted back to frame pixels. A region whose crop is empty (a box
//! wholly outside the frame) gets no nested results; a box no node applies to is not cropped.
//!
//! The models sit behind [`TreeModels`] so that the rules are tested without weights.

use anyhow::Result;
use image::RgbImage;
use serde::Serialize;

use super::{Op, Tree};
use crate::model::clip::softmax;
use crate::model::Detection;

/// What a tree needs from the models, for one image (the frame or a crop).
pub trait TreeModels {
    /// Per group of detector prompt indices (into `Tree::texts(Op::Detect)`), the detections
    /// above `threshold`, each box labelled by its best prompt of that group, in `image`'s pixels.
    fn detect(
        &mut self,
        image: &RgbImage,
        threshold: f32,
        groups: &[&[usize]],
    ) -> Result<Vec<Vec<Detection>>>;
    /// The logits (cosine similarity times the logit scale) of `image` against each CLIP prompt
    /// (`Tree::texts(Op::Classify)`).
    fn classify(&mut self, image: &RgbImage) -> Result<Vec<f32>>;
}

/// At most this many boxes of one frame get nested model runs: a low threshold under a nested
/// group would otherwise run the models once per patch.
pub const MAX_CROPS: usize = 128;

/// One alternative of a classification group and its softmax probability within the group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    pub prompt: String,
    pub score: f32,
    /// The tree label (index into `Tree::labels`).
    #[serde(skip)]
    pub label: usize,
    /// Whether it won its group.
    #[serde(skip)]
    pub won: bool,
}

/// One box of the tree's output, in frame pixels.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TreeDetection {
    pub prompt: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The detection (index into the same list) whose crop this box was found in; None: the frame.
    pub parent: Option<usize>,
    /// Each classification group applied to this box, all alternatives, in tree order.
    pub classes: Vec<ClassScore>,
    /// The tree label of its detection prompt.
    #[serde(skip)]
    pub label: usize,
}

/// A tree's result on one frame.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TreeOutput {
    /// The classification groups applied to the whole frame, all alternatives, in tree order.
    pub classes: Vec<ClassScore>,
    /// Parents come before their children.
    pub detections: Vec<TreeDetection>,
}

/// The pixel rectangle `[floor(x0), floor(y0), ceil(x1), ceil(y1)]` clamped to a `w` x `h`
/// image, as `(x, y, width, height)`; None when nothing is left.
pub fn crop_rect(bbox: [f32; 4], w: u32, h: u32) -> Option<(u32, u32, u32, u32)> {
    let clamp = |v: f32, max: u32| (v.max(0.0) as u32).min(max);
    let x0 = clamp(bbox[0].floor(), w);
    let y0 = clamp(bbox[1].floor(), h);
    let x1 = clamp(bbox[2].ceil(), w);
    let y1 = clamp(bbox[3].ceil(), h);
    (x1 > x0 && y1 > y0).then(|| (x0, y0, x1 - x0, y1 - y0))
}

impl Tree {
    /// Runs the tree on `frame`; `threshold` applies to every detection node.
    pub fn run(
        &self,
        models: &mut dyn TreeModels,
        frame: &RgbImage,
        threshold: f32,
    ) -> Result<TreeOutput> {
        let det_texts = self.texts(Op::Detect);
        let clip_texts = self.texts(Op::Classify);
        let index_in = |texts: &[String], l: usize| {
            texts
                .iter()
                .position(|t| *t == self.labels[l].text)
                .unwrap_or(0)
        };
        // per node, its outputs as model prompt indices
        let groups: Vec<Vec<usize>> = self
            .nodes
            .iter()
            .map(|n| {
                let texts = match n.op {
                    Op::Detect => &det_texts,
                    Op::Classify => &clip_texts,
                };
                n.outputs.iter().map(|l| index_in(texts, *l)).collect()
            })
            .collect();

        let mut out = TreeOutput::default();
        // regions to process: None = the frame, Some(i) = out.detections[i]
        let mut queue: std::collections::VecDeque<Option<usize>> = [None].into();
        let mut crops = 0;
        while let Some(region) = queue.pop_front() {
            let (label, offset, image) = match region {
                None => (0, (0, 0), std::borrow::Cow::Borrowed(frame)),
                Some(i) => {
                    let d = &out.detections[i];
                    if self.nodes_on(d.label).next().is_none() {
                        continue;
                    }
                    let Some((x, y, w, h)) = crop_rect(d.bbox, frame.width(), frame.height())
                    else {
                        continue;
                    };
                    crops += 1;
                    if crops > MAX_CROPS {
                        anyhow::bail!(
                            "unable to run the tree {:?}: more than {MAX_CROPS} boxes of one frame need nested model runs; raise the threshold (now {threshold}) so that fewer boxes pass",
                            self.source
                        );
                    }
                    let crop = image::imageops::crop_imm(frame, x, y, w, h).to_image();
                    (d.label, (x, y), std::borrow::Cow::Owned(crop))
                }
            };
            // classification first: each winner may enable more nodes on this region
            let mut labels = vec![label];
            let mut classes: Vec<(usize, Vec<ClassScore>)> = vec![];
            let mut logits: Option<Vec<f32>> = None;
            let mut next = 0;
            while next < labels.len() {
                let on = labels[next];
                next += 1;
                for (n, node) in self.nodes_on(on).filter(|(_, n)| n.op == Op::Classify) {
                    if logits.is_none() {
                        logits = Some(models.classify(&image)?);
                    }
                    let all: &[f32] = logits.as_deref().unwrap_or_default();
                    let group: Vec<f32> = groups[n]
                        .iter()
                        .map(|i| all.get(*i).copied().unwrap_or(f32::NEG_INFINITY))
                        .collect();
                    let probs = softmax(&group);
                    let best =
                        (0..probs.len()).fold(0, |b, i| if probs[i] > probs[b] { i } else { b });
                    classes.push((
                        n,
                        node.outputs
                            .iter()
                            .zip(&probs)
                            .enumerate()
                            .map(|(i, (l, p))| ClassScore {
                                prompt: self.labels[*l].text.clone(),
                                score: *p,
                                label: *l,
                                won: i == best,
                            })
                            .collect(),
                    ));
                    labels.push(node.outputs[best]);
                }
            }
            classes.sort_by_key(|(n, _)| *n);
            let classes: Vec<ClassScore> = classes.into_iter().flat_map(|(_, c)| c).collect();
            match region {
                None => out.classes = classes,
                Some(i) => out.detections[i].classes = classes,
            }

            // then one detector run for every detection node on the region's labels
            let nodes: Vec<usize> = (0..self.nodes.len())
                .filter(|n| {
                    self.nodes[*n].op == Op::Detect && labels.contains(&self.nodes[*n].input)
                })
                .collect();
            if nodes.is_empty() {
                continue;
            }
            let wanted: Vec<&[usize]> = nodes.iter().map(|n| groups[*n].as_slice()).collect();
            let found = models.detect(&image, threshold, &wanted)?;
            for (n, dets) in nodes.iter().zip(found) {
                let node = &self.nodes[*n];
                for d in dets {
                    let Some(pos) = groups[*n].iter().position(|i| *i == d.prompt_index) else {
                        continue;
                    };
                    let l = node.outputs[pos];
                    let (dx, dy) = (offset.0 as f32, offset.1 as f32);
                    let b = d.bbox;
                    out.detections.push(TreeDetection {
                        prompt: self.labels[l].text.clone(),
                        score: d.score,
                        bbox: [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy],
                        parent: region,
                        classes: vec![],
                        label: l,
                    });
                    queue.push_back(Some(out.detections.len() - 1));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
