//! The lab's learning routes: a prompt measured on the marked frames (`/api/lab/evaluate`), a
//! prompt taught from them (`/api/lab/learn`), the frames worth marking next (`/api/lab/next`);
//! the marked frames' kept thumbnails are served with the other stored pictures, in `api`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use serde_json::{json, Value};

use super::prompt_lab::known_camera;
use super::{bad, blocking, camera, json_response, since, store, ApiError, ApiResult, Params, Web};
use crate::config::PromptConfig;
use crate::decide::DecideConfig;
use crate::learn::file::LearnedPrompt;
use crate::learn::select;
use crate::web::search::{self, Query};
use crate::web::teach;

/// The threshold a measurement uses: the one given, else the running prompt's, else the
/// learned prompt's own, else the config default.
fn threshold_of(
    p: &Params,
    prompts: &[PromptConfig],
    text: &str,
    own: Option<f32>,
) -> std::result::Result<f32, ApiError> {
    let running = prompts
        .iter()
        .find(|c| c.text == text.trim() || c.name == text.trim())
        .map(|c| c.decide.threshold);
    Ok(p.number("threshold", 0.0, 1.0)?.map_or_else(
        || running.or(own).unwrap_or(DecideConfig::default().threshold),
        |t| t as f32,
    ))
}

/// `learned=NAME` of a request: the prompt and the threshold it runs with, if running.
fn learned_of(
    web: &Web,
    name: &str,
    prompts: &[PromptConfig],
) -> std::result::Result<(LearnedPrompt, Option<f32>), ApiError> {
    let state = web.history.as_ref().map(|h| h.state_dir());
    Ok(teach::find_learned(name, prompts, state.as_deref())?)
}

pub async fn evaluate(State(web): State<Arc<Web>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q);
    let (camera, prompts) = camera(&web, &p)?;
    let learned = p.get("learned").map(str::trim).filter(|n| !n.is_empty());
    let w = web.clone();
    match learned {
        Some(name) => {
            let (l, running) = learned_of(&web, name, &prompts)?;
            let threshold = p
                .number("threshold", 0.0, 1.0)?
                .map_or(running.unwrap_or(l.threshold), |t| t as f32);
            w.gate
                .run(move |job| {
                    let store = store(&web, Some(job))?;
                    let model = web.clip_identity()?;
                    let e = teach::evaluate_learned(&store, &model, &camera, &l, threshold)?;
                    json_response(serde_json::to_value(e).map_err(anyhow::Error::from)?)
                })
                .await
        }
        None => {
            let query = p.query()?;
            let threshold = threshold_of(&p, &prompts, &query.text, None)?;
            // a running prompt made of pictures, named by `q`: its classes as the daemon made them
            let pictures = prompts
                .iter()
                .find(|c| !c.examples.is_empty() && c.name == query.text.trim())
                .and_then(|c| web.status.camera(&camera)?.class_of(&c.id));
            w.gate
                .run(move |job| {
                    let store = store(&web, Some(job))?;
                    let model = web.clip_identity()?;
                    let e = match pictures {
                        Some((qe, scale)) => teach::evaluate_class(
                            &store,
                            &model,
                            &camera,
                            query.text.trim(),
                            &qe,
                            scale,
                            threshold,
                        )?,
                        None => {
                            let tower = web.text_tower()?;
                            job.check()?;
                            teach::evaluate_text(
                                &store, &tower, &model, &camera, &prompts, &query, threshold,
                            )?
                        }
                    };
                    json_response(serde_json::to_value(e).map_err(anyhow::Error::from)?)
                })
                .await
        }
    }
}

#[derive(serde::Deserialize)]
pub struct Learn {
    camera: String,
    q: String,
    name: String,
    #[serde(default)]
    negatives: Vec<String>,
    #[serde(default)]
    templates: Vec<String>,
}

pub async fn learn(State(web): State<Arc<Web>>, body: axum::body::Bytes) -> ApiResult {
    let l: Learn = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("expected {{\"camera\", \"q\", \"name\"}}: {e}")))?;
    known_camera(&web, &l.camera)?;
    let prompts = web
        .status
        .camera(&l.camera)
        .map(|c| c.prompt_configs())
        .unwrap_or_default();
    let query = Query {
        text: l.q.clone(),
        negatives: l.negatives.clone(),
        templates: l.templates.clone(),
    };
    query.check().map_err(|e| bad(e.0))?;
    let w = web.clone();
    w.gate
        .run(move |job| {
            let cfg = web
                .history
                .as_ref()
                .ok_or_else(|| bad("the history is off"))?;
            let store = store(&web, Some(job))?;
            let model = web.clip_identity()?;
            let tower = web.text_tower()?;
            job.check()?;
            let r = teach::learn(
                &store,
                Some(&tower),
                &model,
                &l.camera,
                &prompts,
                &query,
                &l.name,
                &cfg.state_dir(),
                std::time::SystemTime::now(),
            )?;
            json_response(learned_json(&r))
        })
        .await
}

#[derive(serde::Deserialize)]
pub struct Use {
    camera: String,
    /// The learned prompt's name (its file under the state directory).
    name: String,
}

/// `POST /api/lab/use`: adds a learned prompt to the running camera without a restart, by the
/// path a SIGHUP reload takes (its model is built in the background; the prompt starts when it
/// is in). It stays until the daemon stops: the answer holds the TOML lines that keep it.
pub async fn use_learned(State(web): State<Arc<Web>>, body: axum::body::Bytes) -> ApiResult {
    let u: Use = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("expected {{\"camera\", \"name\"}}: {e}")))?;
    known_camera(&web, &u.camera)?;
    let cfg = web
        .history
        .as_ref()
        .ok_or_else(|| bad("the history is off"))?;
    let path = crate::learn::file::path_in(&cfg.state_dir(), u.name.trim());
    blocking(move || {
        if !path.exists() {
            return Err(bad(format!(
                "no learned prompt {:?}: {} does not exist; teach it first",
                u.name,
                path.display()
            )));
        }
        let prompt = LearnedPrompt::load(&path)?;
        let model = web.clip_identity()?;
        crate::learn::file::check_model(&prompt, &path, &model)
            .map_err(|e| bad(format!("{e:#}")))?;
        let name = prompt.name.clone();
        let running = web.status.camera(&u.camera).is_some_and(|c| {
            c.prompt_configs()
                .iter()
                .any(|q| q.id == crate::config::make_id(&name) && q.runtime.is_none())
        });
        let id = match running {
            // the config file has it already
            true => crate::config::make_id(&name),
            false => {
                let payload = json!({ "learned": path.display().to_string() }).to_string();
                web.status
                    .runtime
                    .add(
                        &u.camera,
                        payload.as_bytes(),
                        "lab",
                        std::time::SystemTime::now(),
                    )
                    .map_err(bad)?
            }
        };
        json_response(json!({
            "camera": u.camera, "prompt": id, "running": running,
            "toml": teach::learned_toml(&u.camera, &path),
        }))
    })
    .await
}

/// The answer of `/api/lab/learn` and `promptcam learn --json`.
pub fn learned_json(r: &teach::Learned) -> Value {
    let p = &r.prompt;
    json!({
        "name": p.name, "file": r.file.display().to_string(), "marks": p.marks,
        "cv": {
            "precision": p.cv.precision, "recall": p.cv.recall, "f1": p.cv.f1,
            "folds": p.cv.folds, "alpha": p.cv.alpha, "scores": p.cv_scores,
        },
        "threshold": p.threshold,
        "toml": teach::learned_toml(&p.camera, &r.file),
        "model": p.model, "prior": p.prior, "left_out": r.data.left_out,
    })
}

/// How far apart in time the frames offered for marking are, at least (less in a short period).
const NEXT_GAP_MS: i64 = 60_000;
/// Frames offered for marking at a time.
const NEXT: usize = 12;

/// Frames worth marking next for a question: stored frames with a thumbnail, not yet marked,
/// whose score (the text query's, or `learned=NAME`'s) is closest to the threshold, spread over
/// time and scenes.
pub async fn next(State(web): State<Arc<Web>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q);
    let (camera, prompts) = camera(&web, &p)?;
    let (since, _) = since(&p, 24.0 * 7.0)?;
    let learned = p
        .get("learned")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| learned_of(&web, n, &prompts))
        .transpose()?;
    let query = match &learned {
        Some((l, _)) => Query {
            text: l.question.clone(),
            ..Query::default()
        },
        None => p.query()?,
    };
    let threshold = match &learned {
        Some((l, running)) => p
            .number("threshold", 0.0, 1.0)?
            .map_or(running.unwrap_or(l.threshold), |t| t as f32),
        None => threshold_of(&p, &prompts, &query.text, None)?,
    };
    let w = web.clone();
    w.gate
        .run(move |job| {
            let store = store(&web, Some(job))?;
            job.check()?;
            let s = match &learned {
                Some((l, _)) => search::score_learned(&store, &camera, l, since)?,
                None => {
                    let tower = web.text_tower()?;
                    search::score(&store, &tower, &camera, &query, &prompts, since)?
                }
            };
            let marks = store.marked(&camera, query.text.trim(), false)?;
            let marked: std::collections::HashSet<i64> = marks.iter().map(|m| m.frame).collect();
            // the scenes the marks already show, in the space of the model in use
            let model = web.clip_identity().ok();
            let known = crate::web::teach::known_scenes(&marks, s.frames.dim, model.as_ref());
            let candidates: Vec<usize> = (0..s.scores.len())
                .filter(|&i| s.frames.thumbs[i].is_some() && !marked.contains(&s.frames.ids[i]))
                .collect();
            // spread over the period: a minute apart, or closer when the period is short
            let span = s.frames.times.last().unwrap_or(&0) - s.frames.times.first().unwrap_or(&0);
            let gap = NEXT_GAP_MS.min(span / (4 * NEXT as i64));
            let picked = select::mark_next(
                &candidates,
                &s.scores,
                threshold,
                |i| s.row(&store, i),
                &s.frames.times,
                &known,
                select::Spread {
                    gap_ms: gap,
                    n: NEXT,
                },
            );
            json_response(json!({
                "camera": camera, "prompt": query.text.trim(), "threshold": threshold,
                "searched": s.scores.len(), "frames": search::hits(&s, &picked),
            }))
        })
        .await
}

/// The galleries of `/api/lab`: near-duplicates folded, each tile with its count.
pub fn tiles(
    store: &crate::history::store::Store,
    s: &search::Scored,
    order: &[usize],
    n: usize,
) -> Vec<Value> {
    select::group(order, |i| s.row(store, i), &s.frames.times, n)
        .into_iter()
        .map(|t| {
            let mut hit = serde_json::to_value(&search::hits(s, &[t.index])[0]).unwrap_or_default();
            hit["count"] = json!(t.count);
            hit
        })
        .collect()
}
