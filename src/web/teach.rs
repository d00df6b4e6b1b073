//! Teach: learned prompts and evaluations from a question's marks — what `/api/lab/learn`,
//! `/api/lab/evaluate`, `promptcam learn` and `promptcam evaluate` share. The marks keep their
//! frames' embeddings (`history::store::marks`), so nothing here reads the frames themselves:
//! the work is bounded by the number of marks, not by the size of the history.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use super::search::{self, BadQuery, Query};
use crate::config::PromptConfig;
use crate::history::lab::score_all;
use crate::history::store::{decode_f16, Embeddings, Marked, Store};
use crate::learn::evaluate::{self, Point};
use crate::learn::file::{self, Counts, CvFigures, HeldOut, LearnedPrompt};
use crate::learn::{select, train, Training};
use crate::model::identity::ModelIdentity;
use crate::model::ClipText;

/// A question's marks that this model's embeddings can teach or measure, as rows.
pub struct DataSet {
    pub frames: Vec<i64>,
    pub yes: Vec<bool>,
    pub times: Vec<i64>,
    pub pictured: Vec<bool>,
    pub dim: usize,
    /// Row-major, `dim` values per mark (decoded from the stored f16).
    pub x: Vec<f32>,
    /// Marks left out: made with another model, before models were recorded, or without an
    /// embedding.
    pub left_out: usize,
}

impl DataSet {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }
    pub fn counts(&self) -> Counts {
        let yes = self.yes.iter().filter(|y| **y).count();
        Counts {
            yes,
            no: self.yes.len() - yes,
        }
    }
    fn as_embeddings(&self) -> Embeddings {
        Embeddings::from_f32(
            self.frames.clone(),
            self.times.clone(),
            vec![None; self.frames.len()],
            self.dim,
            &self.x,
        )
    }
}

/// The marks of `camera`'s `question` whose embeddings `model` made.
pub fn dataset(
    store: &Store,
    camera: &str,
    question: &str,
    model: &ModelIdentity,
) -> Result<DataSet> {
    let marks = store.marked(camera, question, false)?;
    let dim = marks
        .iter()
        .filter(|m| m.model.as_ref().is_some_and(|i| i.sha256 == model.sha256))
        .find_map(|m| m.v.as_ref().map(|v| v.len() / 2))
        .unwrap_or(0);
    let mut d = DataSet {
        frames: vec![],
        yes: vec![],
        times: vec![],
        pictured: vec![],
        dim,
        x: vec![],
        left_out: 0,
    };
    let mut row = vec![0.0; dim];
    for m in &marks {
        let ours = m.model.as_ref().is_some_and(|i| i.sha256 == model.sha256);
        match (&m.v, ours) {
            (Some(v), true) if v.len() == dim * 2 && dim > 0 => {
                decode_f16(v, &mut row);
                d.x.extend_from_slice(&row);
                d.frames.push(m.frame);
                d.yes.push(m.yes);
                d.times.push(m.t_ms.unwrap_or(0));
                d.pictured.push(m.pictured);
            }
            _ => d.left_out += 1,
        }
    }
    Ok(d)
}

/// The scenes marks already show, as embeddings of `dim` values made by `model` (the CLIP model
/// in use; `None` when it is unknown: then by size alone). `/api/lab/next` offers frames unlike
/// them. A mark made with another model says nothing of this one's space, even at the same size.
pub fn known_scenes(marks: &[Marked], dim: usize, model: Option<&ModelIdentity>) -> Vec<Vec<f32>> {
    marks
        .iter()
        .filter(|m| match (model, &m.model) {
            (None, _) => true,
            (Some(ours), Some(made)) => made.sha256 == ours.sha256,
            (Some(_), None) => false,
        })
        .filter_map(|m| m.v.as_ref().filter(|v| v.len() == dim * 2))
        .map(|v| {
            let mut row = vec![0.0; dim];
            decode_f16(v, &mut row);
            row
        })
        .collect()
}

/// Why a question has nothing to learn from or measure, said so the user knows what to do.
fn no_marks(question: &str, d: &DataSet, model: &ModelIdentity) -> BadQuery {
    let mut msg = format!("no frame is marked for {question:?} with the CLIP model {model} in use");
    if d.left_out > 0 {
        msg += &format!(
            " ({} mark(s) were made with another model or before promptcam recorded models; mark frames again)",
            d.left_out
        );
    } else {
        msg += ": mark frames yes and no in the prompt lab first";
    }
    BadQuery(msg)
}

/// The zero-shot direction of a text question, scaled like the daemon's scores (the logit
/// scale times its class embedding minus the mean of what it beats): a learned prompt starts
/// from the text's own score, so a few marks correct it rather than replace it.
pub fn text_prior(
    tower: &ClipText,
    query: &Query,
    camera_prompts: &[PromptConfig],
) -> Result<Vec<f32>> {
    let (q, _) = match search::query_embeddings(tower, query, camera_prompts) {
        Ok(q) => q,
        // nothing to beat: the text's own direction (centering removes what all frames share)
        Err(e) if e.downcast_ref::<BadQuery>().is_some() && !query.text.trim().is_empty() => {
            let own = Query {
                negatives: vec![],
                ..query.clone()
            };
            let rows = tower.embed(&crate::model::clip::ensemble_texts(
                own.text.trim(),
                &own.templates,
            ))?;
            let class = crate::model::clip::class_embedding(rows.iter().map(Vec::as_slice));
            (
                crate::history::lab::QueryEmbeddings {
                    own: class,
                    negatives: vec![],
                },
                vec![],
            )
        }
        Err(e) => return Err(e),
    };
    let n = q.negatives.len().max(1) as f32;
    Ok(q.own
        .iter()
        .enumerate()
        .map(|(j, o)| {
            let neg: f32 = q.negatives.iter().map(|v| v[j]).sum::<f32>() / n;
            tower.logit_scale * (o - neg)
        })
        .collect())
}

/// What `learn` made.
pub struct Learned {
    pub prompt: LearnedPrompt,
    pub file: PathBuf,
    pub training: Training,
    pub data: DataSet,
}

/// Teaches `name` from the marks of `camera`'s `query` and writes it under `state`
/// (`learned/<name>.json`). `tower` embeds the question's text for the prior (`None`: no prior).
#[allow(clippy::too_many_arguments)]
pub fn learn(
    store: &Store,
    tower: Option<&ClipText>,
    model: &ModelIdentity,
    camera: &str,
    camera_prompts: &[PromptConfig],
    query: &Query,
    name: &str,
    state: &Path,
    now: std::time::SystemTime,
) -> Result<Learned> {
    let question = query.text.trim();
    let name = name.trim();
    if name.is_empty() {
        bail!(BadQuery("give the learned prompt a name".into()));
    }
    let data = dataset(store, camera, question, model)?;
    if data.frames.is_empty() {
        bail!(no_marks(question, &data, model));
    }
    let prior = match tower {
        Some(t) if !question.is_empty() => Some(text_prior(t, query, camera_prompts)?),
        _ => None,
    }
    .filter(|p| p.len() == data.dim);
    let zeros = vec![0.0; data.dim];
    let training = train(
        &data.x,
        data.dim,
        &data.yes,
        prior.as_deref().unwrap_or(&zeros),
    )
    .map_err(|e| BadQuery(e.to_string()))?;
    let prompt = LearnedPrompt {
        format: file::FORMAT,
        name: name.to_string(),
        camera: camera.to_string(),
        question: question.to_string(),
        model: model.clone(),
        weights: training.model.w.clone(),
        bias: training.model.b,
        threshold: training.threshold,
        marks: data.counts(),
        cv: CvFigures {
            precision: training.cv.precision,
            recall: training.cv.recall,
            f1: training.cv.f1,
            folds: training.folds,
            alpha: training.alpha,
        },
        prior: if prior.is_some() { "text" } else { "none" }.into(),
        trained_on: data.frames.clone(),
        cv_scores: data
            .frames
            .iter()
            .zip(&data.yes)
            .zip(&training.out_of_fold)
            .map(|((frame, yes), score)| HeldOut {
                frame: *frame,
                yes: *yes,
                score: *score,
            })
            .collect(),
        created: crate::event::rfc3339(now),
    };
    let file = file::path_in(state, name);
    prompt.save(&file)?;
    Ok(Learned {
        prompt,
        file,
        training,
        data,
    })
}

/// The config lines that run a learned prompt.
pub fn learned_toml(camera: &str, file: &Path) -> String {
    format!(
        "# on camera {camera:?}:\n[[cameras.prompts]]\nlearned = {}\n",
        super::api::toml_string(&file.display().to_string())
    )
}

/// A marked frame in an evaluation's galleries.
#[derive(Clone, Debug, Serialize)]
pub struct MarkHit {
    pub frame: i64,
    pub time: String,
    pub score: f32,
    pub thumbnail: Option<String>,
    /// Extension: near-duplicates folded into this tile (itself included).
    pub count: usize,
}

/// The `/api/lab/evaluate` answer.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub camera: String,
    pub prompt: String,
    pub marked: Counts,
    pub threshold: f32,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub curve: Vec<Point>,
    pub missed: Vec<MarkHit>,
    pub false_alarms: Vec<MarkHit>,
    /// Extension: what was measured — "marks" (every mark), "held-out" (a learned prompt's
    /// marks it was not trained on) or "cross-validation" (its out-of-fold scores).
    pub on: &'static str,
    /// Extension: the best F1 over every threshold, and where.
    pub best: Option<evaluate::Measure>,
    /// Extension: marks left out (another model's embeddings).
    pub left_out: usize,
}

/// The URL of a marked frame's kept thumbnail.
pub fn marked_url(frame: i64) -> String {
    format!("/history/marked/{frame}.jpg")
}

/// Gallery tiles in display order: near-duplicates folded.
const GALLERY: usize = 12;

fn gallery(d: &DataSet, scores: &[f32], order: Vec<usize>) -> Vec<MarkHit> {
    select::group(&order, |i| d.row(i).to_vec(), &d.times, GALLERY)
        .into_iter()
        .map(|t| MarkHit {
            frame: d.frames[t.index],
            time: search::rfc3339_ms(d.times[t.index]),
            score: scores[t.index],
            thumbnail: d.pictured[t.index].then(|| marked_url(d.frames[t.index])),
            count: t.count,
        })
        .collect()
}

/// Precision, recall, F1 and the curve of `scores` (one per mark of `d`, or of the rows in
/// `which`) at `threshold`, with the missed "yes" frames and the "no" frames that would fire.
fn measure(
    camera: &str,
    prompt: &str,
    d: &DataSet,
    scores: &[f32],
    which: &[usize],
    threshold: f32,
    on: &'static str,
) -> Evaluation {
    let scored: Vec<(f32, bool)> = which.iter().map(|&i| (scores[i], d.yes[i])).collect();
    let m = evaluate::at(&scored, threshold);
    let mut missed: Vec<usize> = which
        .iter()
        .copied()
        .filter(|&i| d.yes[i] && scores[i] < threshold)
        .collect();
    missed.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut alarms: Vec<usize> = which
        .iter()
        .copied()
        .filter(|&i| !d.yes[i] && scores[i] >= threshold)
        .collect();
    alarms.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let yes = scored.iter().filter(|s| s.1).count();
    Evaluation {
        camera: camera.to_string(),
        prompt: prompt.to_string(),
        marked: Counts {
            yes,
            no: scored.len() - yes,
        },
        threshold,
        precision: m.precision,
        recall: m.recall,
        f1: m.f1,
        curve: evaluate::curve(&scored),
        missed: gallery(d, scores, missed),
        false_alarms: gallery(d, scores, alarms),
        on,
        best: evaluate::best_f1(&scored),
        left_out: d.left_out,
    }
}

/// A text query measured on its marks, at `threshold`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_text(
    store: &Store,
    tower: &ClipText,
    model: &ModelIdentity,
    camera: &str,
    camera_prompts: &[PromptConfig],
    query: &Query,
    threshold: f32,
) -> Result<Evaluation> {
    let (qe, _) = search::query_embeddings(tower, query, camera_prompts)?;
    evaluate_class(
        store,
        model,
        camera,
        query.text.trim(),
        &qe,
        tower.logit_scale,
        threshold,
    )
}

/// A prompt given by its class embeddings (a text's, or a picture prompt's as the daemon made
/// them) measured on the marks of `question`, at `threshold`.
pub fn evaluate_class(
    store: &Store,
    model: &ModelIdentity,
    camera: &str,
    question: &str,
    qe: &crate::history::lab::QueryEmbeddings,
    logit_scale: f32,
    threshold: f32,
) -> Result<Evaluation> {
    let d = dataset(store, camera, question, model)?;
    if d.frames.is_empty() {
        bail!(no_marks(question, &d, model));
    }
    if qe.own.len() != d.dim {
        bail!(
            "the marks' embeddings have {} values, the prompt's {}; they come from other models",
            d.dim,
            qe.own.len()
        );
    }
    let scores = score_all(&d.as_embeddings(), qe, logit_scale);
    let all: Vec<usize> = (0..d.frames.len()).collect();
    Ok(measure(
        camera, question, &d, &scores, &all, threshold, "marks",
    ))
}

/// A learned prompt measured on the marks of its question it was not trained on; when those
/// lack a kind, on its cross-validated scores.
pub fn evaluate_learned(
    store: &Store,
    model: &ModelIdentity,
    camera: &str,
    learned: &LearnedPrompt,
    threshold: f32,
) -> Result<Evaluation> {
    let d = dataset(store, camera, &learned.question, model)?;
    if learned.model.sha256 != model.sha256 {
        bail!(BadQuery(format!(
            "the learned prompt {:?} was taught on the CLIP model {}, and this config runs {}; teach it again",
            learned.name, learned.model, model
        )));
    }
    let held: Vec<usize> = (0..d.frames.len())
        .filter(|&i| !learned.trained_on.contains(&d.frames[i]))
        .collect();
    let kinds = |rows: &[usize]| rows.iter().any(|&i| d.yes[i]) && rows.iter().any(|&i| !d.yes[i]);
    if kinds(&held) {
        let scores: Vec<f32> = (0..d.frames.len())
            .map(|i| learned.score(d.row(i)))
            .collect();
        return Ok(measure(
            camera,
            &learned.name,
            &d,
            &scores,
            &held,
            threshold,
            "held-out",
        ));
    }
    // every mark was trained on: the scores each got from the fold that did not see it
    let mut scores = vec![f32::NAN; d.frames.len()];
    let mut which = vec![];
    for h in &learned.cv_scores {
        if let Some(i) = d.frames.iter().position(|f| *f == h.frame) {
            scores[i] = h.score;
            which.push(i);
        }
    }
    if which.is_empty() {
        bail!(no_marks(&learned.question, &d, model));
    }
    Ok(measure(
        camera,
        &learned.name,
        &d,
        &scores,
        &which,
        threshold,
        "cross-validation",
    ))
}

/// A learned prompt by name: the running camera's prompt of that name, else the file under the
/// state directory.
pub fn find_learned(
    name: &str,
    camera_prompts: &[PromptConfig],
    state: Option<&Path>,
) -> Result<(LearnedPrompt, Option<f32>)> {
    if let Some((p, l)) = camera_prompts.iter().find_map(|p| {
        Some((p, p.learned.as_ref()?)).filter(|(p, l)| p.name == name || l.prompt.name == name)
    }) {
        return Ok(((*l.prompt).clone(), Some(p.decide.threshold)));
    }
    let Some(state) = state else {
        bail!(BadQuery(format!(
            "no learned prompt {name:?}: the history (and its state directory) is off"
        )));
    };
    let path = file::path_in(state, name);
    if !path.exists() {
        bail!(BadQuery(format!(
            "no learned prompt {name:?}: {} does not exist; teach it in the prompt lab or with `promptcam learn`",
            path.display()
        )));
    }
    Ok((LearnedPrompt::load(&path)?, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(frame: i64, sha: Option<&str>, v: &[f32]) -> Marked {
        let bytes: Vec<u8> = v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect();
        Marked {
            frame,
            yes: true,
            t_ms: Some(frame),
            model: sha.map(|s| ModelIdentity {
                name: "clip".into(),
                sha256: s.into(),
            }),
            v: Some(bytes),
            jpeg: None,
            pictured: false,
        }
    }

    #[test]
    fn known_scenes_are_the_running_models_own() {
        let ours = ModelIdentity {
            name: "clip".into(),
            sha256: "aaa".into(),
        };
        let marks = [
            mark(1, Some("aaa"), &[1.0, 0.0]),
            // another model of the same size: its space is another
            mark(2, Some("bbb"), &[0.0, 1.0]),
            // made before models were recorded
            mark(3, None, &[0.5, 0.5]),
            // ours, but of another size
            mark(4, Some("aaa"), &[1.0, 0.0, 0.0]),
        ];
        assert_eq!(known_scenes(&marks, 2, Some(&ours)), vec![vec![1.0, 0.0]]);
        // the model unknown: by size alone, as before
        assert_eq!(known_scenes(&marks, 2, None).len(), 3);
    }
}
