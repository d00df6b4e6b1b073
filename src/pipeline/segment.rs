//! Segmentation prompts (CLIPSeg): a prompt's score is the fraction of the region of interest
//! its mask covers. The model (its image side runs once per frame for all its prompts) is shared
//! with the other cameras that segment; the last masks are kept for the snapshots.

use std::sync::Arc;

use anyhow::Result;

use super::{Observation, PromptModel};
use crate::annotate::Overlay;
use crate::frame::Frame;
use crate::model::ModelKind;
use crate::model::{ClipSeg, Masks};

pub struct SegPrompts {
    model: Arc<ClipSeg>,
    /// The camera's prompts (indices), their indices in the model, their mask thresholds.
    prompts: Vec<usize>,
    queries: Vec<usize>,
    thresholds: Vec<f32>,
    last: Option<Arc<Masks>>,
}

impl SegPrompts {
    pub fn new(
        model: Arc<ClipSeg>,
        prompts: Vec<usize>,
        queries: Vec<usize>,
        thresholds: Vec<f32>,
    ) -> SegPrompts {
        SegPrompts {
            model,
            prompts,
            queries,
            thresholds,
            last: None,
        }
    }
}

impl PromptModel for SegPrompts {
    fn kind(&self) -> ModelKind {
        ModelKind::ClipSeg
    }

    fn prompts(&self) -> &[usize] {
        &self.prompts
    }

    fn observe(&mut self, frame: &Frame, roi: Option<[u32; 4]>) -> Result<Vec<Observation>> {
        let masks = Arc::new(self.model.masks_of(&frame.image)?);
        let (w, h) = frame.image.dimensions();
        let out = (0..self.prompts.len())
            .map(|k| Observation {
                prompt: self.prompts[k],
                score: masks
                    .coverage(self.queries[k], w, h, roi, self.thresholds[k])
                    .0,
                bbox: None,
            })
            .collect();
        self.last = Some(masks);
        Ok(out)
    }

    fn overlay(&self, prompt: usize, bbox: Option<[f32; 4]>) -> Overlay {
        let k = self.prompts.iter().position(|p| *p == prompt);
        match (k, &self.last) {
            (Some(k), Some(masks)) => Overlay::Mask {
                masks: masks.clone(),
                prompt: self.queries[k],
                threshold: self.thresholds[k],
            },
            _ => bbox.map_or(Overlay::Whole, Overlay::Box),
        }
    }
}
