//! Search: a typed prompt scored on a camera's stored frames — what `/api/search`, the lab pages
//! and `promptcam search` share. The prompt is scored as the daemon would score a CLIP prompt with
//! the same settings on that camera: its class is the mean of its ensemble texts, each negative
//! is a class of its own, and without negatives it must beat the camera's CLIP prompts.

use anyhow::{bail, Result};
use serde::Serialize;

use crate::config::PromptConfig;
use crate::history::lab::QueryEmbeddings;
use crate::history::store::{FrameIndex, Store};
use crate::model::clip::{class_embedding, ensemble_texts};
use crate::model::ClipText;
use crate::model::ModelKind;

/// A query the user must change (the pages answer 400 with it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadQuery(pub String);

/// A prompt typed in the lab or given to `search`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    pub text: String,
    /// What it must beat; empty: the camera's CLIP prompts.
    pub negatives: Vec<String>,
    /// Ensemble templates with `{}` for the text.
    pub templates: Vec<String>,
}

/// Negatives a query may give, at most: each is a run of the CLIP text tower.
pub const MAX_NEGATIVES: usize = 16;
/// Ensemble templates a query may give, at most (each multiplies the text tower's runs).
pub const MAX_TEMPLATES: usize = 8;
/// Characters of the prompt, of a negative or of a template, at most: CLIP reads 77 tokens, and
/// a longer text is cut there anyway.
pub const MAX_TEXT_CHARS: usize = 300;

impl Query {
    /// Refuses a query over the caps, saying which and the limit.
    pub fn check(&self) -> std::result::Result<(), BadQuery> {
        let count = |n: usize, max: usize, what: &str| {
            (n > max).then(|| BadQuery(format!("at most {max} {what} values, got {n}")))
        };
        if let Some(e) = count(self.negatives.len(), MAX_NEGATIVES, "`negative`")
            .or_else(|| count(self.templates.len(), MAX_TEMPLATES, "`template`"))
        {
            return Err(e);
        }
        let texts = std::iter::once(("the prompt `q`", &self.text))
            .chain(self.negatives.iter().map(|n| ("a `negative`", n)))
            .chain(self.templates.iter().map(|t| ("a `template`", t)));
        for (what, t) in texts {
            let n = t.chars().count();
            if n > MAX_TEXT_CHARS {
                return Err(BadQuery(format!(
                    "{what} is {n} characters long; at most {MAX_TEXT_CHARS} (CLIP reads the first 77 tokens)"
                )));
            }
        }
        Ok(())
    }
}

/// A prompt's scores on every stored frame of a camera.
pub struct Scored {
    pub frames: FrameIndex,
    pub scores: Vec<f32>,
    /// The negatives the score was computed against (given, or the camera's prompts).
    pub negatives: Vec<String>,
}

impl Scored {
    /// The embedding of the `i`-th frame scored, read again from `store` (zeros, which nearly
    /// duplicate nothing, if retention took the frame since the scores were computed).
    pub fn row(&self, store: &Store, i: usize) -> Vec<f32> {
        store
            .embedding(self.frames.ids[i], self.frames.dim)
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0.0; self.frames.dim])
    }
}

/// One search hit.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Hit {
    /// RFC 3339 capture time of the frame.
    pub time: String,
    pub score: f32,
    /// `/history/thumb/<id>.jpg`: the frame's own thumbnail, if it has one.
    pub thumbnail: Option<String>,
    /// Extension: the frame's id (for marks).
    pub frame: i64,
}

/// The `/api/search` answer.
#[derive(Clone, Debug, Serialize)]
pub struct SearchResponse {
    pub camera: String,
    pub prompt: String,
    pub searched: usize,
    pub results: Vec<Hit>,
    /// Extension: what the prompt was scored against.
    pub negatives: Vec<String>,
}

/// The query's class embeddings, and the negative texts used.
pub fn query_embeddings(
    tower: &ClipText,
    q: &Query,
    camera_prompts: &[PromptConfig],
) -> Result<(QueryEmbeddings, Vec<String>)> {
    let text = q.text.trim();
    if text.is_empty() {
        bail!(BadQuery("type a prompt to score".into()));
    }
    if let Some(t) = q.templates.iter().find(|t| !t.contains("{}")) {
        bail!(BadQuery(format!(
            "ensemble template {t:?} has no {{}} for the prompt text"
        )));
    }
    let class = |text: &str, templates: &[String]| -> Result<Vec<f32>> {
        let rows = tower.embed(&ensemble_texts(text, templates))?;
        Ok(class_embedding(rows.iter().map(Vec::as_slice)))
    };
    let own = class(text, &q.templates)?;
    let given: Vec<&String> = q
        .negatives
        .iter()
        .filter(|n| !n.trim().is_empty())
        .collect();
    let (negatives, used) = if !given.is_empty() {
        let texts: Vec<String> = given.iter().map(|n| n.trim().to_string()).collect();
        (tower.embed(&texts)?, texts)
    } else {
        // as the daemon does for a CLIP prompt without negatives: the camera's other CLIP prompts
        let others: Vec<&PromptConfig> = camera_prompts
            .iter()
            .filter(|p| {
                p.model == ModelKind::Clip
                    && p.tree.is_none()
                    && p.examples.is_empty()
                    && p.text != text
            })
            .collect();
        if others.is_empty() {
            bail!(BadQuery(format!(
                "{text:?} needs something to beat: give a negative (e.g. \"an empty scene\"); \
                 this camera has no other CLIP prompt to compare with"
            )));
        }
        let mut embs = vec![];
        for p in &others {
            embs.push(class(&p.text, &p.ensemble)?);
        }
        (embs, others.iter().map(|p| p.text.clone()).collect())
    };
    Ok((QueryEmbeddings { own, negatives }, used))
}

/// Scores the query on the camera's frames since `since_ms`.
pub fn score(
    store: &Store,
    tower: &ClipText,
    camera: &str,
    q: &Query,
    camera_prompts: &[PromptConfig],
    since_ms: i64,
) -> Result<Scored> {
    let (qe, negatives) = query_embeddings(tower, q, camera_prompts)?;
    let (frames, scores) =
        store.score_embeddings(camera, since_ms, qe.own.len(), qe.scorer(tower.logit_scale))?;
    if frames.is_empty() && frames.other_model > 0 {
        bail!(
            "the {} stored frames of this period were embedded by another CLIP model (not {} values, \
             as the one in use makes): frames analysed from now on are searchable; the old ones \
             expire with the history's keep_days",
            frames.other_model,
            qe.own.len()
        );
    }
    Ok(Scored {
        frames,
        scores,
        negatives,
    })
}

/// A learned prompt's scores on the camera's frames since `since_ms` (those of its model's
/// size; the history's rows of another model are counted and left out).
pub fn score_learned(
    store: &Store,
    camera: &str,
    learned: &crate::learn::file::LearnedPrompt,
    since_ms: i64,
) -> Result<Scored> {
    let (frames, scores) =
        store.score_embeddings(camera, since_ms, learned.weights.len(), |row| {
            learned.score(row)
        })?;
    Ok(Scored {
        frames,
        scores,
        negatives: vec![],
    })
}

/// The hits for the frames at `indices` of a scored set, each with its own thumbnail if it has
/// one (thumbnails are taken every few seconds and on events, not on every frame).
pub fn hits(s: &Scored, indices: &[usize]) -> Vec<Hit> {
    indices
        .iter()
        .map(|&i| Hit {
            time: rfc3339_ms(s.frames.times[i]),
            score: s.scores[i],
            thumbnail: s.frames.thumbs[i].map(thumb_url),
            frame: s.frames.ids[i],
        })
        .collect()
}

pub fn thumb_url(id: i64) -> String {
    format!("/history/thumb/{id}.jpg")
}

/// The best `limit` frames for a query, highest score first.
pub fn search(
    store: &Store,
    tower: &ClipText,
    camera: &str,
    q: &Query,
    camera_prompts: &[PromptConfig],
    limit: usize,
) -> Result<SearchResponse> {
    let s = score(store, tower, camera, q, camera_prompts, 0)?;
    Ok(respond(camera, q.text.trim(), s, limit))
}

/// The best `limit` frames of a scored set, as `/api/search` answers.
pub fn respond(camera: &str, prompt: &str, s: Scored, limit: usize) -> SearchResponse {
    let top: Vec<usize> = crate::history::lab::ranked(&s.scores)
        .into_iter()
        .take(limit)
        .collect();
    SearchResponse {
        camera: camera.to_string(),
        prompt: prompt.to_string(),
        searched: s.scores.len(),
        results: hits(&s, &top),
        negatives: s.negatives,
    }
}

pub fn rfc3339_ms(ms: i64) -> String {
    crate::event::rfc3339(crate::history::from_unix_ms(ms))
}
