//! Detector prompts (OWL-ViT, OWLv2): a camera's detection prompts served by a detector shared
//! with the other cameras that detect with the same model (its graph holds all their prompts;
//! each camera's boxes are labelled among its own prompts only, so sharing changes no result).

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;

use super::{Observation, PromptModel};
use crate::frame::Frame;
use crate::model::Detector;
use crate::model::ModelKind;

pub struct DetectPrompts {
    kind: ModelKind,
    detector: Arc<Mutex<Detector>>,
    /// The camera's prompts (indices) and, in the same order, their indices in the detector.
    prompts: Vec<usize>,
    queries: Vec<usize>,
}

impl DetectPrompts {
    pub fn new(
        kind: ModelKind,
        detector: Arc<Mutex<Detector>>,
        prompts: Vec<usize>,
        queries: Vec<usize>,
    ) -> DetectPrompts {
        DetectPrompts {
            kind,
            detector,
            prompts,
            queries,
        }
    }
}

impl PromptModel for DetectPrompts {
    fn kind(&self) -> ModelKind {
        self.kind
    }

    fn prompts(&self) -> &[usize] {
        &self.prompts
    }

    /// Every box, best first, as an observation of the camera prompt it belongs to.
    fn observe(&mut self, frame: &Frame, _roi: Option<[u32; 4]>) -> Result<Vec<Observation>> {
        let mut detector = self.detector.lock().unwrap_or_else(PoisonError::into_inner);
        let dets = detector.detect_groups(&frame.image, 0.0, &[&self.queries])?;
        let dets = dets.into_iter().next().unwrap_or_default();
        Ok(dets
            .into_iter()
            .filter_map(|d| {
                let k = self.queries.iter().position(|q| *q == d.prompt_index)?;
                Some(Observation {
                    prompt: self.prompts[k],
                    score: d.score,
                    bbox: Some(d.bbox),
                })
            })
            .collect())
    }
}
