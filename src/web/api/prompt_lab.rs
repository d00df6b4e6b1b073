//! The prompt lab's API: a typed prompt's scores over the history (`/api/lab`), the decision
//! rules replayed on them (`/api/lab/replay`), the yes/no marks (`/api/lab/mark`), the
//! threshold suggested from them (`/api/lab/suggest`) and an example prompt made of the frames
//! marked yes (`/api/lab/examples`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Value};

use super::search;
use super::{
    bad, blocking, camera, decide_json, json_response, since, store, toml_list, toml_string,
    ApiError, ApiResult, Downsample, Params, Web, TOP,
};
use crate::config::PromptConfig;
use crate::decide::DecideConfig;
use crate::history::lab;
use crate::history::store::Store;

pub async fn lab(State(web): State<Arc<Web>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q);
    let (camera, prompts) = camera(&web, &p)?;
    let (since, hours) = since(&p, 24.0)?;
    let query = p.query()?;
    let w = web.clone();
    w.gate.run(move |job| {
        let store = store(&web, Some(job))?;
        let tower = web.text_tower()?;
        job.check()?;
        let s = search::score(&store, &tower, &camera, &query, &prompts, since)?;
        let order = lab::ranked(&s.scores);
        // the galleries rank the frames that have a picture (thumbnails are taken every few
        // seconds and on events); scores and the histogram cover every frame
        let pictured: Vec<usize> = order.iter().copied().filter(|&i| s.frames.thumbs[i].is_some()).collect();
        let pool = if pictured.is_empty() { &order } else { &pictured };
        // near-duplicates fold into one tile with a count: TOP tiles are TOP different moments
        let top = super::learning::tiles(&store, &s, pool, TOP);
        let shown: Vec<i64> = top.iter().filter_map(|t| t["frame"].as_i64()).collect();
        let rest: Vec<usize> = pool.iter().rev().copied().filter(|i| !shown.contains(&s.frames.ids[*i])).collect();
        let bottom = super::learning::tiles(&store, &s, &rest, TOP);
        let plot = Downsample::one_series(&s.frames.times, &s.scores);
        let same = prompts.iter().find(|c| c.text == query.text.trim());
        json_response(json!({
            "camera": camera, "prompt": query.text.trim(), "hours": hours, "searched": s.scores.len(),
            "negatives": s.negatives,
            "series": { "t": plot.times, "score": plot.series[0] },
            "histogram": lab::histogram(&s.scores, 20),
            "top": top,
            "bottom": bottom,
            "marks": store.marks(&camera, query.text.trim())?,
            "running": same.map(|c| c.id.clone()),
        }))
    })
    .await
}

/// The decision settings a replay uses: those given, else the running prompt's with the same
/// text, else the config defaults.
fn decide_params(
    p: &Params,
    prompts: &[PromptConfig],
    text: &str,
) -> std::result::Result<DecideConfig, ApiError> {
    let base = prompts
        .iter()
        .find(|c| c.text == text.trim())
        .map(|c| c.decide.clone())
        .unwrap_or_default();
    let threshold = p
        .number("threshold", 0.0, 1.0)?
        .map_or(base.threshold, |v| v as f32);
    let gap = base.threshold - base.off_threshold;
    let off = p
        .number("off_threshold", 0.0, 1.0)?
        .map_or((threshold - gap).max(0.0), |v| v as f32);
    if off > threshold {
        return Err(bad(format!("off_threshold {off} is above threshold {threshold}; hysteresis needs off_threshold <= threshold")));
    }
    Ok(DecideConfig {
        threshold,
        off_threshold: off,
        window: p
            .number("window", 1.0, 100.0)?
            .map_or(base.window, |v| v as usize),
        min_frames: p
            .number("min_frames", 1.0, 1000.0)?
            .map_or(base.min_frames, |v| v as usize),
        off_delay: p
            .number("off_delay", 0.0, 86400.0)?
            .map_or(base.off_delay, Duration::from_secs_f64),
        cooldown: p
            .number("cooldown", 0.0, 86400.0)?
            .map_or(base.cooldown, Duration::from_secs_f64),
    })
}

/// The fires as JSON, each with the thumbnail of its best-scoring frame that has one.
fn fires_json(s: &search::Scored, fires: &[lab::Fire]) -> Vec<Value> {
    fires
        .iter()
        .take(100)
        .map(|f| {
            let end = f.end_ms.unwrap_or(i64::MAX);
            let shown = (f.start_index..s.scores.len())
                .take_while(|&i| s.frames.times[i] <= end)
                .filter(|&i| s.frames.thumbs[i].is_some())
                .max_by(|&a, &b| s.scores[a].total_cmp(&s.scores[b]));
            json!({
                "start": search::rfc3339_ms(f.start_ms), "end": f.end_ms.map(search::rfc3339_ms), "best": f.best,
                "frame": s.frames.ids[shown.unwrap_or(f.best_index)],
                "thumbnail": shown.and_then(|i| s.frames.thumbs[i]).map(search::thumb_url),
            })
        })
        .collect()
}

/// What the replay and suggestion requests share: the query, its camera and time span, and
/// the decision settings to replay with.
struct Replay {
    query: search::Query,
    camera: String,
    prompts: Vec<PromptConfig>,
    since: i64,
    hours: f64,
    decide: DecideConfig,
}

impl Replay {
    fn parse(web: &Web, q: Option<String>) -> std::result::Result<Replay, ApiError> {
        let p = Params::parse(q);
        let (camera, prompts) = camera(web, &p)?;
        let (since, hours) = since(&p, 24.0)?;
        let decide = decide_params(&p, &prompts, p.get("q").unwrap_or(""))?;
        Ok(Replay {
            query: p.query()?,
            camera,
            prompts,
            since,
            hours,
            decide,
        })
    }
}

/// A replay-style request (`replay`, `suggest`) parsed, then `f` in its turn with the history
/// and the text tower.
async fn with_replay(
    web: Arc<Web>,
    q: Option<String>,
    f: impl FnOnce(Store, Arc<crate::model::ClipText>, Replay) -> ApiResult + Send + 'static,
) -> ApiResult {
    let r = Replay::parse(&web, q)?;
    let w = web.clone();
    w.gate
        .run(move |job| {
            let (store, tower) = (store(&web, Some(job))?, web.text_tower()?);
            job.check()?;
            f(store, tower, r)
        })
        .await
}

pub async fn replay(State(web): State<Arc<Web>>, RawQuery(q): RawQuery) -> ApiResult {
    with_replay(web, q, |store, tower, r| {
        let s = search::score(&store, &tower, &r.camera, &r.query, &r.prompts, r.since)?;
        let fires = lab::replay(&s.frames.times, &s.scores, &r.decide);
        json_response(json!({
            "camera": r.camera, "hours": r.hours, "searched": s.scores.len(), "fired": fires.len(),
            "decide": decide_json(&r.decide), "fires": fires_json(&s, &fires),
        }))
    })
    .await
}

pub async fn suggest(State(web): State<Arc<Web>>, RawQuery(q): RawQuery) -> ApiResult {
    with_replay(web, q, |store, tower, r| {
        let Replay {
            query,
            camera,
            prompts,
            since,
            hours,
            decide,
        } = r;
        // marks count wherever they are, not only in the replayed window
        let all = search::score(&store, &tower, &camera, &query, &prompts, 0)?;
        let marks = store.marks(&camera, query.text.trim())?;
        let marked: Vec<(f32, bool)> = marks
            .iter()
            .filter_map(|(frame, yes)| {
                all.frames
                    .ids
                    .binary_search(frame)
                    .ok()
                    .map(|i| (all.scores[i], *yes))
            })
            .collect();
        let Some(sug) = lab::suggest_threshold(&marked) else {
            return json_response(json!({ "suggestion": null, "marked": marked.len(),
                "message": "mark at least one frame yes and one no" }));
        };
        let gap = decide.threshold - decide.off_threshold;
        let at = DecideConfig {
            threshold: sug.threshold as f32,
            off_threshold: (sug.threshold as f32 - gap).max(0.0),
            ..decide
        };
        let first = all.frames.times.partition_point(|t| *t < since);
        let fires = lab::replay(&all.frames.times[first..], &all.scores[first..], &at);
        json_response(
            json!({ "suggestion": sug, "marked": marked.len(), "hours": hours, "fired": fires.len(),
            "decide": decide_json(&at) }),
        )
    })
    .await
}

/// A camera a request body names must be one the daemon runs.
pub(super) fn known_camera(web: &Web, id: &str) -> std::result::Result<(), ApiError> {
    match web.status.camera(id) {
        Some(_) => Ok(()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no camera {id:?}"))),
    }
}

#[derive(serde::Deserialize)]
pub struct Mark {
    camera: String,
    q: String,
    frame: i64,
    yes: Option<bool>,
}

pub async fn mark(State(web): State<Arc<Web>>, body: axum::body::Bytes) -> ApiResult {
    let m: Mark = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "expected {{\"camera\", \"q\", \"frame\", \"yes\"}}: {e}"
        ))
    })?;
    known_camera(&web, &m.camera)?;
    blocking(move || {
        let cfg = web
            .history
            .as_ref()
            .ok_or_else(|| bad("the history is off"))?;
        let mut store = Store::open_existing(&cfg.db_path())?;
        if !store.set_mark(&m.camera, m.q.trim(), m.frame, m.yes)? {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "frame {} of camera {:?} is not in the history (it may have expired); mark a newer one",
                    m.frame, m.camera
                ),
            ));
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

#[derive(serde::Deserialize)]
pub struct Examples {
    camera: String,
    q: String,
    /// The new prompt's name (default: the question).
    name: Option<String>,
    /// The text negatives the lab scored the question against (kept for the new prompt).
    #[serde(default)]
    negatives: Vec<String>,
}

/// An example-image prompt from a lab question's marks: the thumbnails of the frames marked yes
/// are saved under the state directory (`examples/<camera>/<name>/`, next to the history's
/// directory; `<name>` is the name's id, capped like a config id), those marked no under
/// `examples/<camera>/<name>-not/` as its negative examples, and the TOML lines of the prompt
/// are returned for the config. Files already there are kept (a frame's file is named by its
/// id, so asking again rewrites the same pictures), except a frame's picture in the other
/// directory: a frame re-marked from yes to no (or back) moves.
pub async fn examples(State(web): State<Arc<Web>>, body: axum::body::Bytes) -> ApiResult {
    let e: Examples = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("expected {{\"camera\", \"q\", \"name\"}}: {e}")))?;
    known_camera(&web, &e.camera)?;
    let q = e.q.trim().to_string();
    let name = e.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let name = name.unwrap_or(&q).to_string();
    if name.is_empty() {
        return Err(bad("give the prompt a name"));
    }
    // the directory is the name's id: capped in length, and never empty (a name without ASCII
    // letters or digits gets a hash)
    let slug = crate::config::make_id(&name);
    blocking(move || {
        let store = store(&web, None)?;
        let cfg = web
            .history
            .as_ref()
            .ok_or_else(|| bad("the history is off"))?;
        let marks = store.marks(&e.camera, &q)?;
        if !marks.iter().any(|(_, yes)| *yes) {
            return Err(bad(format!(
                "no frame is marked yes for {q:?}: mark the frames that show it first"
            )));
        }
        let camera_dir = cfg.state_dir().join("examples").join(&e.camera);
        let dirs = [
            camera_dir.join(&slug),
            camera_dir.join(format!("{slug}-not")),
        ];
        let mut saved = [0usize; 2];
        for (frame, yes) in &marks {
            let Some(jpeg) = store.frame_thumbnail(*frame)? else {
                continue; // marked in the lab, whose frames all have thumbnails; gone since
            };
            let dir = &dirs[usize::from(!*yes)];
            let name = format!("frame-{frame}.jpg");
            let file = dir.join(&name);
            // re-marked since the last time: the picture leaves the other directory
            let other = dirs[usize::from(*yes)].join(&name);
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&file, jpeg))
                .and_then(|()| match std::fs::remove_file(&other) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                })
                .map_err(|err| {
                    ApiError(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("unable to write {}: {err}", file.display()),
                    )
                })?;
            saved[usize::from(!*yes)] += 1;
        }
        if saved[0] == 0 {
            return Err(bad("the frames marked yes have no thumbnails left (the history deleted them); mark newer frames"));
        }
        let glob = |d: &std::path::Path| toml_string(&format!("{}/*.jpg", d.display()));
        let mut toml = format!(
            "[[cameras.prompts]]\nname = {}\nmodel = \"clip\"\nexamples = [{}]\n",
            toml_string(&name),
            glob(&dirs[0])
        );
        let negatives: Vec<&str> = e
            .negatives
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .collect();
        if !negatives.is_empty() {
            toml += &format!("negatives = {}\n", toml_list(&negatives));
        }
        if saved[1] > 0 {
            toml += &format!("negative_examples = [{}]\n", glob(&dirs[1]));
        }
        if negatives.is_empty() && saved[1] == 0 {
            toml += "# it needs something to beat: negatives = [\"...\"], frames marked no, or another\n\
                     # CLIP prompt on the camera\n";
        }
        // the same prompt as the keys `/api/lab/add` takes (to run it without editing the file)
        let mut prompt = json!({
            "name": name, "model": "clip",
            "examples": [format!("{}/*.jpg", dirs[0].display())], "negatives": negatives,
        });
        if saved[1] > 0 {
            prompt["negative_examples"] = json!([format!("{}/*.jpg", dirs[1].display())]);
        }
        json_response(json!({
            "name": name, "examples": saved[0], "negative_examples": saved[1],
            "dir": dirs[0].display().to_string(), "toml": toml, "prompt": prompt,
        }))
    })
    .await
}
