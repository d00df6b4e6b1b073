//! API: the JSON the pages fetch, also for scripts. Reads run on the blocking pool against a
//! read-only connection to the history; the lab's marks are the only writes, and threshold
//! changes go to the inference thread through the cameras' shared status, as MQTT's do.
//!
//! - `GET /api/status`: cameras, their prompts (state, score, settings) and the history's counters;
//! - `GET /api/history?camera=C[&hours=H]`: scores per prompt and events over the last H hours;
//! - `GET /api/search?camera=C&q=TEXT[&negative=TEXT]...[&template=T]...[&limit=N]`: the best frames;
//! - `GET /api/lab?...`: scores over time, histogram, top and bottom frames of a typed prompt;
//! - `GET /api/lab/replay?...&threshold=T[&off_threshold=..&window=..&min_frames=..&off_delay=..&cooldown=..]`;
//! - `POST /api/lab/mark` `{"camera","q","frame","yes": true|false|null}`, `GET /api/lab/suggest?...`;
//! - `POST /api/threshold` `{"camera","prompt","threshold"}`: applies it and answers the TOML to keep it.
//!
//! The lab's routes (`/api/lab...`) are in `prompt_lab`; the rest and their helpers are here.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::search::{self, Query};
use super::{work, Web};
use crate::config::PromptConfig;
use crate::decide::DecideConfig;
use crate::history::store::Store;
use crate::history::unix_ms;

mod learning;
mod prompt_lab;
mod runtime;
pub use learning::{evaluate, learn, learned_json, next, use_learned};
pub use prompt_lab::{examples, lab, mark, replay, suggest};
pub use runtime::{add_prompt, remove_prompt};

/// Points sent for a plot at most; longer series keep each bucket's highest score.
const PLOT_POINTS: usize = 1500;
const TOP: usize = 8;

/// An error with the status code it deserves. A 503 (busy, no history yet, cancelled) says
/// when to retry.
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError(status, msg.into())
    }

    pub fn busy(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.1 }).to_string();
        let json = (header::CONTENT_TYPE, "application/json");
        match self.0 {
            StatusCode::SERVICE_UNAVAILABLE => (
                self.0,
                [
                    json,
                    (header::RETRY_AFTER, &super::work::RETRY_AFTER_S.to_string()),
                ],
                body,
            )
                .into_response(),
            status => (status, [json], body).into_response(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        match e.downcast_ref::<search::BadQuery>() {
            Some(b) => ApiError(StatusCode::BAD_REQUEST, b.0.clone()),
            None => ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        }
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

type ApiResult = std::result::Result<Response, ApiError>;

/// Runs blocking work (SQLite, the text tower) off the runtime's thread.
async fn blocking(f: impl FnOnce() -> ApiResult + Send + 'static) -> ApiResult {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request failed: {e}"),
        ))
    })
}

/// A query string's pairs, repeated keys kept.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<String>) -> Params {
        let raw = raw.unwrap_or_default();
        Params(
            url::form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn number(&self, k: &str, lo: f64, hi: f64) -> std::result::Result<Option<f64>, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(Some(x)),
                _ => Err(bad(format!(
                    "`{k}` must be a number in {lo}..={hi}, got {v:?}"
                ))),
            },
        }
    }
    /// The typed prompt, its negatives and templates, within the caps of [`Query::check`]: each
    /// runs the CLIP text tower.
    fn query(&self) -> std::result::Result<Query, ApiError> {
        let q = Query {
            text: self.get("q").unwrap_or("").to_string(),
            negatives: self.all("negative"),
            templates: self
                .all("template")
                .into_iter()
                .filter(|t| !t.trim().is_empty())
                .collect(),
        };
        q.check().map_err(|e| bad(e.0))?;
        Ok(q)
    }
}

/// The camera a request names, with its prompts' settings.
fn camera(web: &Web, p: &Params) -> std::result::Result<(String, Vec<PromptConfig>), ApiError> {
    let id = p.get("camera").unwrap_or("");
    match web.status.camera(id) {
        Some(c) => Ok((c.id.clone(), c.prompt_configs())),
        None => {
            let ids: Vec<&str> = web.status.cameras.iter().map(|c| c.id.as_str()).collect();
            Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no camera {id:?}; cameras: {}", ids.join(", ")),
            ))
        }
    }
}

/// A read-only connection to the history; with a job, one that the job's cancellation
/// interrupts.
fn store(web: &Web, job: Option<&work::Job>) -> std::result::Result<Store, ApiError> {
    let cfg = web.history.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "the history is off: enable it with [history] enabled = true".into(),
        )
    })?;
    let path = cfg.db_path();
    if !path.exists() {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no history yet: it starts with the first analysed frame".into(),
        ));
    }
    let store = Store::open_read_only(&path)?;
    if let Some(job) = job {
        job.attach(&store);
    }
    Ok(store)
}

fn since(p: &Params, default_hours: f64) -> std::result::Result<(i64, f64), ApiError> {
    let hours = p
        .number("hours", 0.0, 24.0 * 3650.0)?
        .unwrap_or(default_hours);
    let now = unix_ms(SystemTime::now());
    Ok((
        if hours == 0.0 {
            0
        } else {
            now - (hours * 3_600_000.0) as i64
        },
        hours,
    ))
}

fn json_response(v: Value) -> ApiResult {
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        v.to_string(),
    )
        .into_response())
}

pub async fn status(State(web): State<Arc<Web>>) -> ApiResult {
    let cameras: Vec<Value> = web
        .status
        .cameras
        .iter()
        .map(|c| {
            let live = c.prompts();
            let prompts: Vec<Value> = c
                .prompt_configs()
                .iter()
                .map(|p| {
                    let l = live.iter().find(|l| l.id == p.id);
                    json!({
                        "id": p.id, "name": p.name, "text": p.text, "model": p.model.name(),
                        "on": l.is_some_and(|l| l.on), "score": l.map_or(0.0, |l| l.score),
                        "negatives": p.negatives, "ensemble": p.ensemble, "decide": decide_json(&p.decide),
                        "learned": p.learned.as_ref().map(|l| l.path.display().to_string()),
                        "runtime": p.runtime.is_some(),
                    })
                })
                .collect();
            json!({
                "id": c.id, "name": c.name, "paused": c.is_paused(), "prompts": prompts,
                "runtime_prompts": web.status.runtime.listing(&c.id),
            })
        })
        .collect();
    let history = web.history_stats.as_ref().map(|s| {
        use std::sync::atomic::Ordering::Relaxed;
        json!({ "frames": s.frames.load(Relaxed), "events": s.events.load(Relaxed),
                "dropped": s.dropped.load(Relaxed), "bytes": s.bytes.load(Relaxed) })
    });
    json_response(json!({ "cameras": cameras, "history": history }))
}

fn decide_json(d: &DecideConfig) -> Value {
    // f32 settings as the decimals they were written with, not 0.6000000238
    let r = |x: f32| (x as f64 * 1e6).round() / 1e6;
    json!({
        "threshold": r(d.threshold), "off_threshold": r(d.off_threshold), "window": d.window,
        "min_frames": d.min_frames, "off_delay": d.off_delay.as_secs_f64(), "cooldown": d.cooldown.as_secs_f64(),
    })
}

/// A plot's series downsampled while its rows stream by: `n` rows (counted first) fall into at
/// most [`PLOT_POINTS`] buckets of consecutive rows, each keeping its first time and every
/// series' highest value, so memory holds the buckets, not the rows (a year of frames is the
/// same ~1500 points per prompt).
struct Downsample {
    per: usize,
    times: Vec<i64>,
    series: Vec<Vec<f32>>,
    rows: usize,
}

impl Downsample {
    fn new(n: usize, series: usize) -> Downsample {
        Downsample {
            per: n.div_ceil(PLOT_POINTS).max(1),
            times: vec![],
            series: vec![vec![]; series],
            rows: 0,
        }
    }

    /// One series already in memory (the lab's scores), downsampled the same way.
    fn one_series(times: &[i64], values: &[f32]) -> Downsample {
        let mut d = Downsample::new(values.len(), 1);
        for (t, v) in times.iter().zip(values) {
            d.push(*t, std::iter::once(*v));
        }
        d
    }

    /// The next row: its time and each series' value.
    fn push(&mut self, t_ms: i64, values: impl Iterator<Item = f32>) {
        let first = self.rows % self.per == 0;
        if first {
            self.times.push(t_ms);
        }
        for (s, v) in self.series.iter_mut().zip(values) {
            match s.last_mut() {
                Some(m) if !first => *m = m.max(v),
                _ => s.push(v.max(f32::NEG_INFINITY)),
            }
        }
        self.rows += 1;
    }
}

pub async fn history(State(web): State<Arc<Web>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q);
    let (camera, prompts) = camera(&web, &p)?;
    let (since, hours) = since(&p, 1.0)?;
    let w = web.clone();
    w.gate.run(move |job| {
        let store = store(&web, Some(job))?;
        // rows up to now: the count and the stream see the same frames while the writer adds more
        let until = unix_ms(SystemTime::now()) + 1;
        let n = store.count_frames(&camera, since, until)?;
        let mut d = Downsample::new(n, prompts.len());
        store.each_frame(&camera, since, until, |f| {
            let value = |id: &str| f.scores.get(id).and_then(|v| v[0].as_f64()).unwrap_or(f64::NAN) as f32;
            d.push(f.t_ms, prompts.iter().map(|pc| value(&pc.id)));
            Ok(())
        })?;
        let events = store.events(&camera, since, until)?;
        let (frames, times) = (d.rows, d.times);
        let mut series = serde_json::Map::new();
        for (pc, s) in prompts.iter().zip(d.series) {
            series.insert(pc.id.clone(), json!(s));
        }
        let prompts: Vec<Value> = prompts
            .iter()
            .map(|p| json!({ "id": p.id, "name": p.name, "model": p.model.name(), "decide": decide_json(&p.decide) }))
            .collect();
        json_response(json!({
            "camera": camera, "hours": hours, "frames": frames, "t": times, "scores": series,
            "prompts": prompts, "events": events,
        }))
    })
    .await
}

pub async fn search(State(web): State<Arc<Web>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q);
    let (camera, prompts) = camera(&web, &p)?;
    let limit = p.number("limit", 1.0, 1000.0)?.unwrap_or(20.0) as usize;
    // `learned=NAME` ranks by a learned prompt instead of a text
    let learned = match p.get("learned").map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => {
            let state = web.history.as_ref().map(|h| h.state_dir());
            Some(super::teach::find_learned(name, &prompts, state.as_deref())?.0)
        }
        None => None,
    };
    let query = match learned {
        Some(_) => search::Query::default(),
        None => p.query()?,
    };
    let w = web.clone();
    w.gate
        .run(move |job| {
            let store = store(&web, Some(job))?;
            let r = match &learned {
                Some(l) => {
                    let model = web.clip_identity()?;
                    if l.model.sha256 != model.sha256 {
                        return Err(bad(format!("the learned prompt {:?} was taught on the CLIP model {}, and this config runs {}; teach it again", l.name, l.model, model)));
                    }
                    search::respond(&camera, &l.name, search::score_learned(&store, &camera, l, 0)?, limit)
                }
                None => {
                    let tower = web.text_tower()?;
                    job.check()?;
                    search::search(&store, &tower, &camera, &query, &prompts, limit)?
                }
            };
            // serialized as `promptcam search --json` prints it: f32 scores in their shortest form
            let text = serde_json::to_string(&r).context("unable to serialize the results")?;
            Ok((
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                text,
            )
                .into_response())
        })
        .await
}

#[derive(serde::Deserialize)]
pub struct SetThreshold {
    camera: String,
    prompt: String,
    threshold: f64,
}

pub async fn threshold(State(web): State<Arc<Web>>, body: axum::body::Bytes) -> ApiResult {
    let t: SetThreshold = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "expected {{\"camera\", \"prompt\", \"threshold\"}}: {e}"
        ))
    })?;
    if !t.threshold.is_finite() || !(0.0..=1.0).contains(&t.threshold) {
        return Err(bad(format!(
            "{} is out of range; a threshold is in 0..=1",
            t.threshold
        )));
    }
    // -0 is 0
    let value = (t.threshold as f32).abs();
    let cam = web
        .status
        .camera(&t.camera)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no camera {:?}", t.camera)))?;
    let configs = cam.prompt_configs();
    let p = configs.iter().find(|p| p.id == t.prompt).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("camera {:?} has no prompt {:?}", t.camera, t.prompt),
        )
    })?;
    if !cam.request_threshold(&t.prompt, value) {
        return Err(bad("the threshold was refused"));
    }
    tracing::info!(
        "HTTP: threshold of {}/{} set to {value}",
        t.camera,
        t.prompt
    );
    // the inference thread applies it between frames, with the prompt's hysteresis: wait for it
    // to say what the `off` threshold became (a paused or slow camera may take longer)
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    let applied = loop {
        let now = cam.prompt_configs();
        if let Some(d) = now
            .iter()
            .find(|c| c.id == t.prompt)
            .map(|c| c.decide.clone())
        {
            if d.threshold == value {
                break Some(d);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let head = keep_lines(&cam.name, p, value);
    let (toml, off) = match &applied {
        Some(d) => (format!("{head}off_threshold = {}\n", round3(d.off_threshold)), Some(round3(d.off_threshold))),
        None => (format!("{head}# (not applied yet: the camera analyses no frames now; off_threshold follows it)\n"), None),
    };
    json_response(json!({
        "camera": t.camera, "prompt": t.prompt, "threshold": round3(value), "off_threshold": off,
        "applied": applied.is_some(), "toml": toml,
    }))
}

/// The TOML that keeps a threshold set at run time: the prompt's table as the config names it
/// (by `text`, by `name` and `examples` for a picture prompt, by `tree` for a tree's leaf, whose
/// leaves share their table's threshold), so pasting it over the table changes that prompt and
/// never adds a text prompt.
fn keep_lines(camera: &str, p: &PromptConfig, value: f32) -> String {
    let (what, key) = if let Some(leaf) = &p.tree {
        (
            format!(
                "the tree prompt's table (its leaves, {:?} among them, share its threshold)",
                p.text
            ),
            format!("tree = {}\n", toml_string(&leaf.tree.source)),
        )
    } else if !p.examples.is_empty() {
        (
            "the example-picture prompt's table".to_string(),
            format!(
                "name = {}\nexamples = {}\n",
                toml_string(&p.text),
                toml_list(&p.examples)
            ),
        )
    } else {
        (
            "the prompt's table".to_string(),
            format!("text = {}\n", toml_string(&p.text)),
        )
    };
    format!(
        "# camera {camera:?}: keep the new threshold after a restart in {what}\n[[cameras.prompts]]\n{key}threshold = {}\n",
        round3(value)
    )
}

fn round3(x: f32) -> f64 {
    (x as f64 * 1000.0).round() / 1000.0
}

/// A TOML basic string.
pub(crate) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML array of basic strings, on one line.
fn toml_list<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_string(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// A stored picture. Its URL holds a row id, which SQLite may hand out again once the table has
/// emptied, so the browser revalidates (`no-cache`) against an `ETag` of the bytes: an unchanged
/// picture costs a 304, a reused id never shows the old one.
fn jpeg(bytes: Option<Vec<u8>>, what: &str, if_none_match: Option<String>) -> ApiResult {
    let Some(b) = bytes else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no {what}: it may have expired"),
        ));
    };
    let etag = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        b.hash(&mut h);
        format!("\"{:016x}\"", h.finish())
    };
    let headers = [
        (header::CACHE_CONTROL, "private, no-cache".to_string()),
        (header::ETAG, etag.clone()),
    ];
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    let jpeg = (header::CONTENT_TYPE, "image/jpeg".to_string());
    Ok(([jpeg, headers[0].clone(), headers[1].clone()], b).into_response())
}

fn id_of(file: &str) -> std::result::Result<i64, ApiError> {
    file.strip_suffix(".jpg")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no such image {file:?}")))
}

fn if_none_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A stored picture by the id in its file name (`<id>.jpg`), read by `fetch`.
async fn stored_picture(
    web: Arc<Web>,
    file: &str,
    headers: &HeaderMap,
    what: &'static str,
    fetch: fn(&Store, i64) -> anyhow::Result<Option<Vec<u8>>>,
) -> ApiResult {
    let id = id_of(file)?;
    let tag = if_none_match(headers);
    blocking(move || jpeg(fetch(&store(&web, None)?, id)?, what, tag)).await
}

pub async fn thumbnail(
    State(web): State<Arc<Web>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    stored_picture(web, &file, &headers, "thumbnail", Store::thumbnail).await
}

pub async fn event_snapshot(
    State(web): State<Arc<Web>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    stored_picture(web, &file, &headers, "snapshot", Store::event_snapshot).await
}

/// A mark's own thumbnail, kept after its frame went.
pub async fn marked_thumbnail(
    State(web): State<Arc<Web>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let what = "marked frame's thumbnail";
    stored_picture(web, &file, &headers, what, Store::mark_thumbnail).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The materialised downsampling the streamed one must equal: the rows' index ranges, and
    /// each range's highest value.
    fn buckets(n: usize) -> Vec<std::ops::Range<usize>> {
        let per = n.div_ceil(PLOT_POINTS).max(1);
        (0..n).step_by(per).map(|s| s..(s + per).min(n)).collect()
    }

    fn bucket_max(values: &[f32], b: &[std::ops::Range<usize>]) -> Vec<f32> {
        b.iter()
            .map(|r| {
                values[r.clone()]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .collect()
    }

    #[test]
    fn streamed_downsampling_equals_the_materialised_one() {
        for n in [0, 1, 7, 1499, 1500, 1501, 4000, 10007] {
            let rows: Vec<(i64, [f32; 2])> = (0..n)
                .map(|i| {
                    let x = ((i * 7919) % 1000) as f32 / 1000.0;
                    (
                        i as i64 * 500,
                        [x, if i % 3 == 0 { f32::NAN } else { 1.0 - x }],
                    )
                })
                .collect();
            let mut d = Downsample::new(n, 2);
            for (t, v) in &rows {
                d.push(*t, v.iter().copied());
            }
            let b = buckets(n);
            assert!(b.len() <= PLOT_POINTS);
            assert_eq!(d.rows, n);
            assert_eq!(
                d.times,
                b.iter().map(|r| rows[r.start].0).collect::<Vec<_>>(),
                "{n}"
            );
            for k in 0..2 {
                let col: Vec<f32> = rows.iter().map(|(_, v)| v[k]).collect();
                assert_eq!(d.series[k], bucket_max(&col, &b), "{n} series {k}");
            }
        }
    }

    #[test]
    fn kept_thresholds_name_each_kind_of_prompt_as_its_table_does() {
        let text = "[models.clip]\ndir = \"models/tiny/clip\"\n[models.owlvit]\ndir = \"models/tiny/owlvit\"\n\
            [[cameras]]\nname = \"Drive\"\nsource = \"tests/fixtures/images\"\n\
            [[cameras.prompts]]\ntext = \"a van\"\nmodel = \"clip\"\nnegatives = [\"a road\"]\n\
            [[cameras.prompts]]\nname = \"Our car\"\nexamples = [\"cars/*.jpg\"]\nmodel = \"clip\"\nnegatives = [\"a road\"]\n\
            [[cameras.prompts]]\ntree = \"[a person (a hard hat, no hard hat)]\"\nmodel = \"owlvit\"\n";
        let c = crate::config::parse(text, std::path::Path::new("t.toml")).unwrap();
        let p = &c.cameras[0].prompts;
        let lines = |i: usize| keep_lines("Drive", &p[i], 0.4567);
        let parsed = |i: usize| -> toml::Table {
            toml::from_str::<toml::Table>(&lines(i)).unwrap_or_else(|e| panic!("{}: {e}", lines(i)))
        };
        let table = |i: usize| {
            parsed(i)["cameras"]["prompts"][0]
                .as_table()
                .unwrap()
                .clone()
        };
        assert_eq!(table(0)["text"].as_str(), Some("a van"));
        assert_eq!(table(0)["threshold"].as_float(), Some(0.457));
        // a picture prompt is named by its name and pictures, never as a text prompt
        let t = table(1);
        assert!(!t.contains_key("text"), "{}", lines(1));
        assert_eq!(t["name"].as_str(), Some("Our car"));
        assert_eq!(t["examples"][0].as_str(), Some("cars/*.jpg"));
        // a tree leaf by its tree
        let leaf = p.iter().position(|p| p.tree.is_some()).unwrap();
        let t = table(leaf);
        assert!(!t.contains_key("text"), "{}", lines(leaf));
        assert_eq!(
            t["tree"].as_str(),
            Some("[a person (a hard hat, no hard hat)]")
        );
    }
}
