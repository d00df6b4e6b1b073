//! Pipeline: what the inference thread does with a camera's frames, as values in and values out.
//!
//! frame -> motion gate -> prompt models -> deciders -> event trackers -> events (+ the history's
//! record and the latest-frame labels). A [`Camera`] holds its prompt models, each a
//! [`PromptModel`] that turns a frame (and the region of interest) into [`Observation`]s for its
//! prompts; the loaded image sides behind them are shared by every camera that uses them
//! ([`towers::Towers`]). [`Inference`] serves the cameras in turn; the daemon only wires it to
//! the threads, signals and sinks.
//!
//! Adding a model kind: its module in `model/`, an adapter implementing [`PromptModel`] here,
//! and one line in [`towers::Towers::prompt_models`].

mod camera;
mod clip;
pub mod detect;
pub mod precision;
mod segment;
pub mod start_cache;
pub mod towers;
pub mod tree;
pub mod worker;

#[cfg(test)]
mod tests;

pub use camera::{Analysis, Camera};
pub use worker::Inference;

use anyhow::Result;

use crate::annotate::Overlay;
use crate::frame::Frame;
use crate::model::ModelKind;

/// One score of one prompt on one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The prompt's index among its camera's prompts.
    pub prompt: usize,
    pub score: f32,
    /// Where, for a detection (frame pixels). A detector reports every box; the camera keeps each
    /// prompt's best one inside its region of interest.
    pub bbox: Option<[f32; 4]>,
}

/// A zero-shot model serving some of a camera's prompts.
pub trait PromptModel: Send {
    fn kind(&self) -> ModelKind;

    /// The camera prompts (indices) this model scores.
    fn prompts(&self) -> &[usize];

    /// Scores `frame` for its prompts. `roi` is the camera's region of interest: a classifier
    /// looks only inside it, a segmenter counts coverage inside it; a detector may report boxes
    /// anywhere (the camera drops those whose center is outside).
    fn observe(&mut self, frame: &Frame, roi: Option<[u32; 4]>) -> Result<Vec<Observation>>;

    /// Where the motion gate saw change on the frame about to be observed (frame pixels), when
    /// the camera crops to motion; None: look at the whole frame. Detectors look at a square
    /// around it (see [`detect::square_around`]); other models ignore it. True when the next
    /// `observe` will look at a crop only (false: the whole frame).
    fn focus(&mut self, _region: Option<[u32; 4]>, _frame_size: (u32, u32)) -> bool {
        false
    }

    /// The class embeddings of the prompts made of pictures (prompt index, own and beaten
    /// classes, logit scale), for the prompt lab's measurements.
    fn picture_classes(&self) -> Vec<(usize, crate::history::lab::QueryEmbeddings, f32)> {
        vec![]
    }

    /// The frame's CLIP image embedding, when this model computed one on the last frame.
    fn embedding(
        &self,
    ) -> Option<(
        &std::sync::Arc<crate::model::identity::ModelIdentity>,
        &[f32],
    )> {
        None
    }

    /// What a snapshot of `prompt` draws after the last frame; `bbox` is its event's best box.
    fn overlay(&self, _prompt: usize, bbox: Option<[f32; 4]>) -> Overlay {
        bbox.map_or(Overlay::Whole, Overlay::Box)
    }
}

/// Whether a box's center lies inside the region of interest (everywhere when there is none).
pub fn inside(roi: Option<[u32; 4]>, b: &[f32; 4]) -> bool {
    match roi {
        None => true,
        Some(r) => {
            let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
            cx >= r[0] as f32 && cx < r[2] as f32 && cy >= r[1] as f32 && cy < r[3] as f32
        }
    }
}

/// The region of interest cut out of the frame (clamped to it, at least one pixel).
pub fn crop(image: &image::RgbImage, r: [u32; 4]) -> image::RgbImage {
    let (w, h) = image.dimensions();
    let (x0, y0) = (r[0].min(w.saturating_sub(1)), r[1].min(h.saturating_sub(1)));
    let (x1, y1) = (r[2].min(w).max(x0 + 1), r[3].min(h).max(y0 + 1));
    image::imageops::crop_imm(image, x0, y0, x1 - x0, y1 - y0).to_image()
}
