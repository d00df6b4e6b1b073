//! File: a learned prompt as JSON (`learned/<name>.json` under the state directory) — its
//! weights and bias over the CLIP image embedding, its threshold, the identity of the CLIP model
//! whose embeddings it reads, what it was trained on and how it did in cross-validation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::logistic::Linear;
use crate::model::identity::ModelIdentity;

/// The file format's version.
pub const FORMAT: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub yes: usize,
    pub no: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CvFigures {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub folds: usize,
    /// The regularisation strength cross-validation chose.
    pub alpha: f64,
}

/// One mark's score from the fold that did not see it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    pub frame: i64,
    pub yes: bool,
    pub score: f32,
}

/// A learned prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedPrompt {
    pub format: u32,
    pub name: String,
    pub camera: String,
    /// The lab question whose marks taught it.
    pub question: String,
    /// The CLIP model whose image embeddings it scores.
    pub model: ModelIdentity,
    pub weights: Vec<f32>,
    pub bias: f32,
    pub threshold: f32,
    pub marks: Counts,
    pub cv: CvFigures,
    /// "text": pulled towards the question's zero-shot text direction; "none": towards zero.
    pub prior: String,
    /// The frames of the marks it was trained on (an evaluation uses the others).
    pub trained_on: Vec<i64>,
    pub cv_scores: Vec<HeldOut>,
    /// When it was made (RFC 3339).
    pub created: String,
}

impl LearnedPrompt {
    pub fn linear(&self) -> Linear {
        Linear {
            w: self.weights.clone(),
            b: self.bias,
        }
    }

    /// The prompt's score of an L2-normalized CLIP image embedding.
    pub fn score(&self, embedding: &[f32]) -> f32 {
        super::logistic::sigmoid(
            crate::history::lab::dot_lanes(&self.weights, embedding) + self.bias,
        )
    }

    /// Reads and checks a learned prompt file.
    pub fn load(path: &Path) -> Result<LearnedPrompt> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "unable to read the learned prompt {}; teach it in the prompt lab or with `promptcam learn`",
                path.display()
            )
        })?;
        let p: LearnedPrompt = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "unable to parse the learned prompt {}: it is not a file `promptcam learn` wrote; teach it again",
                path.display()
            )
        })?;
        p.check()
            .with_context(|| format!("unable to use the learned prompt {}", path.display()))?;
        Ok(p)
    }

    fn check(&self) -> Result<()> {
        if self.format != FORMAT {
            bail!(
                "it has format {}, this promptcam reads format {FORMAT}; teach it again",
                self.format
            );
        }
        if self.weights.is_empty() || !self.weights.iter().all(|w| w.is_finite()) {
            bail!("its weights are empty or not finite; teach it again");
        }
        if !self.bias.is_finite() || !(0.0..=1.0).contains(&self.threshold) {
            bail!("its bias or threshold is out of range; teach it again");
        }
        if self.name.trim().is_empty() {
            bail!("it has no name; teach it again");
        }
        Ok(())
    }

    /// Writes the file (atomically: a reader sees the old one or the new one).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::model::identity::write_atomically(path, &serde_json::to_vec_pretty(self)?)
    }
}

/// Where a learned prompt's file goes: `<state>/learned/<id of the name>.json`.
pub fn path_in(state: &Path, name: &str) -> PathBuf {
    state
        .join("learned")
        .join(format!("{}.json", crate::config::make_id(name)))
}

/// Refuses a learned prompt made with another CLIP model than `running`, naming both.
pub fn check_model(p: &LearnedPrompt, path: &Path, running: &ModelIdentity) -> Result<()> {
    if p.model.sha256 != running.sha256 {
        bail!(
            "unable to use the learned prompt {}: it was taught on embeddings of the CLIP model {}, \
             and this config runs {}; teach it again with this model's frames, or run the model it \
             was taught with",
            path.display(),
            p.model,
            running
        );
    }
    Ok(())
}
