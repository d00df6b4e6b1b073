//! Runtime: prompts added, changed and removed while the daemon runs — from MQTT
//! (`<prefix>/<device>/<camera>/prompts/add` and `.../remove`), Home Assistant's "Watch for"
//! text entity and per-prompt stop button, and the prompt lab. All three come through
//! [`Runtime::add`] and [`Runtime::remove`]: one code path, validated by the config validator as
//! one more `[[cameras.prompts]]` table of the camera (`crate::config::runtime_prompt`), so
//! the same keys, errors and limits hold. A change is kept in the state directory (`file`) and
//! asks the inference thread to reload, which merges the run-time prompts into the config file's
//! and builds the models they need in the background (`daemon::reload`). Prompts end when they
//! are removed, when their `expires` time passes, or (`once`) after their first `start` event;
//! the reason goes on the `end` event.

pub mod file;
pub mod request;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::{check_camera, make_id, runtime_prompt, CameraConfig, Config, PromptConfig};

/// What a run-time prompt was added as: its keys (as given, with the camera's watch defaults
/// filled in), when, until when, and from where. Kept in the state directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The prompt's id (a tree's leaves share their tree's).
    pub id: String,
    pub keys: Map<String, Value>,
    /// Milliseconds since the Unix epoch.
    pub added_ms: u64,
    #[serde(default)]
    pub expires_ms: Option<u64>,
    #[serde(default)]
    pub once: bool,
    /// "mqtt", "home assistant" or "lab".
    pub source: String,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl Meta {
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires_ms.map(time)
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires().is_some_and(|t| t <= now)
    }
}

/// One run-time prompt of a camera: a tree gives several prompts (its leaves).
#[derive(Clone, Debug)]
pub struct Entry {
    pub camera: String,
    pub meta: Arc<Meta>,
    pub prompts: Vec<PromptConfig>,
}

/// Why a run-time prompt's open event ended.
pub const REMOVED: &str = "removed";
pub const EXPIRED: &str = "expired";
pub const ONCE: &str = "once";
pub const CHANGED: &str = "changed";

#[derive(Default)]
struct Inner {
    /// The config file in force (without run-time prompts); None until the daemon started.
    base: Option<Arc<Config>>,
    /// Where the files are kept; None: not kept (tests).
    state: Option<PathBuf>,
    entries: Vec<Entry>,
    /// Prompts removed whose open events end at the next swap: (camera, prompt id, reason).
    reasons: Vec<(String, String, &'static str)>,
    /// Refusals found after the request was answered (models that failed to load), for
    /// `prompts/error`: (camera, message).
    errors: VecDeque<(String, String)>,
    version: u64,
}

/// The run-time prompts, shared by the MQTT worker, the HTTP edge and the inference thread.
#[derive(Clone, Default)]
pub struct Runtime {
    inner: Arc<Mutex<Inner>>,
    /// Set by a change: the inference thread reloads at its next turn.
    asked: Arc<AtomicBool>,
}

/// Validates a camera's saved run-time prompts against `config` in order; expired ones are
/// dropped, invalid ones reported.
fn validate_saved(
    config: &Config,
    cam: &CameraConfig,
    saved: Vec<Meta>,
    now: SystemTime,
    problems: &mut Vec<String>,
) -> Vec<Entry> {
    let mut kept: Vec<Entry> = vec![];
    for meta in saved {
        if meta.expired(now) {
            tracing::info!(
                "camera {}: run-time prompt {} expired while the daemon was stopped",
                cam.id,
                meta.id
            );
            continue;
        }
        let checked = runtime_prompt(config, &meta.keys)
            .and_then(|p| check_with(cam, kept.iter().flat_map(|e| &e.prompts), p));
        match checked {
            Ok(prompts) => {
                let meta = Arc::new(meta);
                kept.push(Entry {
                    camera: cam.id.clone(),
                    prompts: tag(prompts, &meta),
                    meta,
                })
            }
            Err(e) => problems.push(format!(
                "camera {}: run-time prompt {:?} dropped: {e:#}",
                cam.id, meta.id
            )),
        }
    }
    kept
}

/// Checks `prompts` with the rest of a camera's: its file's and the run-time `others`.
fn check_with<'a>(
    cam: &CameraConfig,
    others: impl Iterator<Item = &'a PromptConfig>,
    prompts: Vec<PromptConfig>,
) -> anyhow::Result<Vec<PromptConfig>> {
    let all: Vec<PromptConfig> = cam
        .prompts
        .iter()
        .cloned()
        .chain(others.cloned())
        .chain(prompts.iter().cloned())
        .collect();
    check_camera(cam, &all)?;
    Ok(prompts)
}

fn tag(prompts: Vec<PromptConfig>, meta: &Arc<Meta>) -> Vec<PromptConfig> {
    prompts
        .into_iter()
        .map(|p| PromptConfig {
            runtime: Some(meta.clone()),
            ..p
        })
        .collect()
}

/// Reads and validates every camera's saved run-time prompts (for `run` and `check`): the
/// entries that hold, and what is wrong with the others.
pub fn read(config: &Config, now: SystemTime) -> (Vec<Entry>, Vec<String>) {
    let state = config.state_dir();
    let (mut entries, mut problems) = (vec![], vec![]);
    for cam in &config.cameras {
        match file::load(&state, &cam.id) {
            Ok(saved) => entries.extend(validate_saved(config, cam, saved, now, &mut problems)),
            Err(e) => problems.push(format!("camera {}: {e:#}", cam.id)),
        }
    }
    (entries, problems)
}

impl Runtime {
    /// At start: the saved run-time prompts that still hold (problems logged; the files are
    /// rewritten without what was dropped).
    pub fn start(config: &Config, now: SystemTime) -> Runtime {
        let (entries, problems) = read(config, now);
        for p in &problems {
            tracing::warn!("{p}");
        }
        let state = config.state_dir();
        if !entries.is_empty() {
            let dir = state.join(file::DIR);
            tracing::info!(
                "{} run-time prompt(s) back from {}",
                entries.len(),
                dir.display()
            );
        }
        let rt = Runtime::default();
        {
            let mut inner = rt.lock();
            inner.state = Some(state);
            inner.base = Some(Arc::new(config.clone()));
            inner.entries = entries;
            for cam in &config.cameras {
                save(&inner, &cam.id);
            }
        }
        rt
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a change asked for a reload since the last call.
    pub fn take_asked(&self) -> bool {
        self.asked.swap(false, Ordering::Relaxed)
    }

    /// Bumped on every change (the MQTT worker republishes the list when it moves).
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Adds (or, with the id of one it has, changes) a run-time prompt of `camera`. `Err` says
    /// why it was refused; nothing changed then.
    pub fn add(
        &self,
        camera: &str,
        payload: &[u8],
        source: &str,
        now: SystemTime,
    ) -> Result<String, String> {
        let mut inner = self.lock();
        let base = inner
            .base
            .clone()
            .ok_or("the daemon is still starting; try again in a moment")?;
        let cam = camera_of(&base, camera)?;
        let req = request::parse(payload, &cam.watch, now)?;
        let prompts = runtime_prompt(&base, &req.keys).map_err(|e| format!("{e:#}"))?;
        let id = match prompts.as_slice() {
            [one] => one.id.clone(),
            _ => make_id(
                req.keys
                    .get("name")
                    .or(req.keys.get("tree"))
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
        };
        if let Some(p) = cam
            .prompts
            .iter()
            .find(|p| prompts.iter().any(|q| q.id == p.id))
        {
            return Err(format!(
                "camera {camera:?} has a prompt {:?} in the config file; change it there, or give this one another `name`",
                p.id
            ));
        }
        let replaced = inner
            .entries
            .iter()
            .position(|e| e.camera == camera && e.meta.id == id);
        let others = inner
            .entries
            .iter()
            .enumerate()
            .filter(|(i, e)| e.camera == camera && Some(*i) != replaced)
            .flat_map(|(_, e)| &e.prompts);
        let prompts = check_with(cam, others, prompts).map_err(|e| format!("{e:#}"))?;
        let count = inner.entries.iter().filter(|e| e.camera == camera).count();
        if replaced.is_none() && count >= cam.watch.max_prompts {
            return Err(format!(
                "camera {camera:?} has {count} run-time prompt(s), its most (`[cameras.watch] max_prompts = {}`); remove one first",
                cam.watch.max_prompts
            ));
        }
        let meta = Arc::new(Meta {
            id: id.clone(),
            keys: req.keys,
            added_ms: ms(now),
            expires_ms: req.expires.map(ms),
            once: req.once,
            source: source.to_string(),
        });
        let entry = Entry {
            camera: camera.to_string(),
            prompts: tag(prompts, &meta),
            meta,
        };
        match replaced {
            Some(i) => {
                let old = std::mem::replace(&mut inner.entries[i], entry);
                end(&mut inner, &old, CHANGED);
            }
            None => inner.entries.push(entry),
        }
        self.changed(&mut inner, camera);
        Ok(id)
    }

    /// Removes a run-time prompt of `camera` by its id (or a tree leaf's); `reason` goes on the
    /// end of its open event.
    pub fn remove(&self, camera: &str, id: &str, reason: &'static str) -> Result<(), String> {
        let mut inner = self.lock();
        let id = id.trim();
        let at = inner.entries.iter().position(|e| {
            e.camera == camera && (e.meta.id == id || e.prompts.iter().any(|p| p.id == id))
        });
        let Some(at) = at else {
            let base = inner.base.clone();
            let cam = base.as_deref().map(|b| camera_of(b, camera)).transpose()?;
            if cam.is_some_and(|c| c.prompts.iter().any(|p| p.id == id)) {
                return Err(format!(
                    "prompt {id:?} of camera {camera:?} is in the config file; remove it there"
                ));
            }
            let ids: Vec<&str> = inner
                .entries
                .iter()
                .filter(|e| e.camera == camera)
                .map(|e| e.meta.id.as_str())
                .collect();
            return Err(format!(
                "camera {camera:?} has no run-time prompt {id:?}; it has {}",
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.join(", ")
                }
            ));
        };
        let old = inner.entries.remove(at);
        end(&mut inner, &old, reason);
        self.changed(&mut inner, camera);
        Ok(())
    }

    /// Removes the prompts whose `expires` time has passed; how many.
    pub fn expire(&self, now: SystemTime) -> usize {
        let mut inner = self.lock();
        let expired: Vec<Entry> = inner
            .entries
            .iter()
            .filter(|e| e.meta.expired(now))
            .cloned()
            .collect();
        inner.entries.retain(|e| !e.meta.expired(now));
        for e in &expired {
            tracing::info!("camera {}: run-time prompt {} expired", e.camera, e.meta.id);
            end(&mut inner, e, EXPIRED);
            self.changed(&mut inner, &e.camera);
        }
        expired.len()
    }

    /// A new config file in force (a SIGHUP): the run-time prompts are checked against it, and
    /// those it no longer allows are removed (with the reason logged and on `prompts/error`).
    pub fn set_base(&self, config: &Config) {
        let mut inner = self.lock();
        inner.base = Some(Arc::new(config.clone()));
        let entries = std::mem::take(&mut inner.entries);
        for cam in &config.cameras {
            let saved: Vec<Meta> = entries
                .iter()
                .filter(|e| e.camera == cam.id)
                .map(|e| (*e.meta).clone())
                .collect();
            let mut problems = vec![];
            let kept = validate_saved(config, cam, saved, SystemTime::now(), &mut problems);
            for p in problems {
                tracing::warn!("{p}");
                inner.errors.push_back((cam.id.clone(), p));
            }
            for old in entries.iter().filter(|e| e.camera == cam.id) {
                if !kept.iter().any(|k| k.meta.id == old.meta.id) {
                    end(&mut inner, old, REMOVED);
                }
            }
            inner.entries.extend(kept);
            save(&inner, &cam.id);
        }
        inner.version += 1;
    }

    /// Adds the run-time prompts to the cameras of `config` (the file's); returns how many.
    pub fn merge(&self, config: &mut Config) -> usize {
        merge(&self.lock().entries, config)
    }

    /// Why a prompt that is going away ends (taken once); None: not a run-time removal.
    pub fn take_reason(&self, camera: &str, prompt: &str) -> Option<&'static str> {
        let mut inner = self.lock();
        let at = inner
            .reasons
            .iter()
            .position(|(c, p, _)| c == camera && p == prompt)?;
        Some(inner.reasons.remove(at).2)
    }

    /// Models for new run-time prompts failed to load: the prompts not running on any of the
    /// `running` cameras (their configs in force) are removed, and `why` reported.
    pub fn reject_unloaded<'a>(
        &self,
        running: impl IntoIterator<Item = &'a CameraConfig>,
        why: &str,
    ) {
        let running: Vec<&CameraConfig> = running.into_iter().collect();
        let mut inner = self.lock();
        let is_running = |e: &Entry| {
            running.iter().any(|c| {
                c.id == e.camera
                    && e.prompts
                        .iter()
                        .all(|p| c.prompts.iter().any(|q| q.id == p.id))
            })
        };
        let (keep, drop): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut inner.entries)
            .into_iter()
            .partition(is_running);
        inner.entries = keep;
        for e in drop {
            let msg = format!(
                "run-time prompt {:?} removed: its models failed to load: {why}",
                e.meta.id
            );
            tracing::error!("camera {}: {msg}", e.camera);
            inner.errors.push_back((e.camera.clone(), msg));
            self.changed(&mut inner, &e.camera);
        }
    }

    /// Refusals found after the fact, for `prompts/error`: (camera, message).
    pub fn take_errors(&self) -> Vec<(String, String)> {
        self.lock().errors.drain(..).collect()
    }

    /// The run-time prompts of a camera (the retained `prompts` topic, the lab).
    pub fn list(&self, camera: &str) -> Vec<Entry> {
        self.lock()
            .entries
            .iter()
            .filter(|e| e.camera == camera)
            .cloned()
            .collect()
    }

    /// The payload of the retained `prompts` topic: the camera's run-time prompts, in the
    /// order they were added.
    pub fn listing(&self, camera: &str) -> Value {
        Value::Array(self.list(camera).iter().map(entry_json).collect())
    }

    /// After a change: the file is saved, the version moves, a reload is asked for.
    fn changed(&self, inner: &mut Inner, camera: &str) {
        save(inner, camera);
        inner.version += 1;
        self.asked.store(true, Ordering::Relaxed);
    }
}

/// Adds `entries` to the cameras of `config`; returns how many prompts.
pub fn merge(entries: &[Entry], config: &mut Config) -> usize {
    let mut n = 0;
    for e in entries {
        let Some(c) = config.cameras.iter_mut().find(|c| c.id == e.camera) else {
            continue;
        };
        for p in &e.prompts {
            if !c.prompts.iter().any(|q| q.id == p.id) {
                c.prompts.push(p.clone());
                n += 1;
            }
        }
    }
    n
}

/// One run-time prompt as JSON: `{id, text, model, expires, once, source, added, prompts}`.
pub fn entry_json(e: &Entry) -> Value {
    let m = &e.meta;
    let first = e.prompts.first();
    json!({
        "id": m.id,
        "name": first.map(|p| p.name.clone()),
        "text": m.keys.get("text").or(m.keys.get("tree")).cloned().unwrap_or(Value::Null),
        "model": first.map(|p| p.model.name()),
        "expires": m.expires().map(crate::event::rfc3339),
        "once": m.once,
        "source": m.source,
        "added": crate::event::rfc3339(time(m.added_ms)),
        "prompts": e.prompts.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        "keys": m.keys,
    })
}

fn camera_of<'a>(base: &'a Config, camera: &str) -> Result<&'a CameraConfig, String> {
    base.cameras.iter().find(|c| c.id == camera).ok_or_else(|| {
        let ids: Vec<&str> = base.cameras.iter().map(|c| c.id.as_str()).collect();
        format!("there is no camera {camera:?}; cameras: {}", ids.join(", "))
    })
}

/// Records why an entry's prompts end.
fn end(inner: &mut Inner, e: &Entry, reason: &'static str) {
    for p in &e.prompts {
        inner
            .reasons
            .retain(|(c, q, _)| !(*c == e.camera && *q == p.id));
        inner.reasons.push((e.camera.clone(), p.id.clone(), reason));
    }
}

/// Writes a camera's file (a failure is logged: the prompt still runs until the daemon stops).
fn save(inner: &Inner, camera: &str) {
    let Some(state) = &inner.state else {
        return;
    };
    let metas: Vec<Meta> = inner
        .entries
        .iter()
        .filter(|e| e.camera == camera)
        .map(|e| (*e.meta).clone())
        .collect();
    if let Err(e) = file::save(state, camera, &metas) {
        tracing::error!(
            "{e:#}; camera {camera}'s run-time prompts will not come back after a restart"
        );
    }
}

#[cfg(test)]
mod tests;
