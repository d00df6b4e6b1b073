//! Detector prompts (OWL-ViT, OWLv2): a camera's detection prompts served by a detector shared
//! with the other cameras that detect with the same model (its graph holds all their prompts;
//! each camera's boxes are labelled among its own prompts only, so sharing changes no result).
//!
//! Motion crops (`motion_crops = true` on a camera): when the motion gate saw change in part of
//! the frame, the detector looks at a square around it instead of the whole frame, so a small
//! object keeps its pixels at a small input size; boxes come back in frame pixels. The camera
//! still sends a whole frame every `full_frame_every` seconds, so still objects are not forgotten.

use std::sync::Arc;

use anyhow::Result;

use super::{inside, Observation, PromptModel};
use crate::frame::Frame;
use crate::model::Detector;
use crate::model::ModelKind;

pub struct DetectPrompts {
    kind: ModelKind,
    detector: Arc<Detector>,
    /// The camera's prompts (indices) and, in the same order, their indices in the detector.
    prompts: Vec<usize>,
    queries: Vec<usize>,
    /// The square around the motion region the next frame is looked at in, when the camera
    /// crops to motion.
    focus: Option<[u32; 4]>,
    /// Each prompt's best box of the last pass (kept outside a motion crop).
    last: Vec<Option<Observation>>,
}

/// The square a detector looks at for a motion region: the region padded by a quarter of its
/// size on each side, at least `min_side` pixels (the detector's input size: a crop is never
/// enlarged), centred on the region and moved to lie inside the frame. None when no such square
/// fits in the frame: then the whole frame is the better view.
pub fn square_around(region: [u32; 4], (w, h): (u32, u32), min_side: u32) -> Option<[u32; 4]> {
    let [x0, y0, x1, y1] = region;
    let size = x1.saturating_sub(x0).max(y1.saturating_sub(y0));
    let side = (size + size / 2).max(min_side);
    if side >= w.min(h) {
        return None;
    }
    let place =
        |lo: u32, hi: u32, len: u32| ((lo + hi) / 2).saturating_sub(side / 2).min(len - side);
    let (sx, sy) = (place(x0, x1, w), place(y0, y1, h));
    Some([sx, sy, sx + side, sy + side])
}

impl DetectPrompts {
    pub fn new(
        kind: ModelKind,
        detector: Arc<Detector>,
        prompts: Vec<usize>,
        queries: Vec<usize>,
    ) -> DetectPrompts {
        let last = vec![None; prompts.len()];
        DetectPrompts {
            kind,
            detector,
            prompts,
            queries,
            focus: None,
            last,
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

    fn focus(&mut self, region: Option<[u32; 4]>, frame_size: (u32, u32)) -> bool {
        let side = self.detector.input_size();
        self.focus = region.and_then(|r| square_around(r, frame_size, side));
        self.focus.is_some()
    }

    /// Every box, best first, as an observation of the camera prompt it belongs to. With a
    /// motion focus, the boxes found in the square around it (in frame pixels), plus each
    /// prompt's last box when that lies outside the square: the crop did not look there, so
    /// what was seen there last still stands until the next whole-frame pass.
    fn observe(&mut self, frame: &Frame, _roi: Option<[u32; 4]>) -> Result<Vec<Observation>> {
        let crop = self.focus.take();
        let dets = match crop {
            Some(c) => {
                let image = super::crop(&frame.image, c);
                self.detector.detect_groups(&image, 0.0, &[&self.queries])?
            }
            None => self
                .detector
                .detect_groups(&frame.image, 0.0, &[&self.queries])?,
        };
        let (dx, dy) = crop.map_or((0.0, 0.0), |c| (c[0] as f32, c[1] as f32));
        let mut seen: Vec<Observation> = dets
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|d| {
                let k = self.queries.iter().position(|q| *q == d.prompt_index)?;
                let [x0, y0, x1, y1] = d.bbox;
                Some(Observation {
                    prompt: self.prompts[k],
                    score: d.score,
                    bbox: Some([x0 + dx, y0 + dy, x1 + dx, y1 + dy]),
                })
            })
            .collect();
        if let Some(c) = crop {
            let held = self
                .last
                .iter()
                .flatten()
                .filter(|o| o.bbox.is_some_and(|b| !inside(Some(c), &b)));
            seen.extend(held.cloned());
        }
        for (k, last) in self.last.iter_mut().enumerate() {
            let p = self.prompts[k];
            *last = seen
                .iter()
                .filter(|o| o.prompt == p)
                .max_by(|a, b| a.score.total_cmp(&b.score))
                .cloned();
        }
        Ok(seen)
    }
}
