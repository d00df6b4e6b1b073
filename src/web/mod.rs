//! Web: the pages and the JSON API on the `[http]` listener, next to `/healthz`, `/metrics`
//! and `/snapshot` (src/endpoint.rs, which serves them all).
//!
//! - `/`: every camera's latest annotated frame and each prompt's state and score;
//! - `/camera/<camera>`: each prompt's score over the last hour or day with its thresholds and
//!   ON periods, and the events with their snapshots;
//! - `/lab/<camera>`: the prompt lab (type a prompt, see its score on every stored frame, replay
//!   the decider, mark frames, pick and apply a threshold);
//! - `/api/...`: what the pages use, also for scripts (`api`).
//!
//! Access (`auth`): beyond 127.0.0.1 every request needs the token of `[http] token_file`; on
//! loopback the Host header must name loopback (against DNS rebinding); requests that change
//! state are POSTs; and nothing but a link to a page may come from another site (GETs included). Pages are static shells whose script fetches the API;
//! the charts are uPlot, vendored into the binary (`assets/`), so nothing loads from elsewhere.

mod api;
pub use api::learned_json;
pub mod auth;
mod pages;
pub mod search;
pub mod teach;
mod work;

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use axum::routing::{get, post};
use axum::Router;

use crate::config::HistoryConfig;
use crate::config::ModelConfig;
use crate::history::HistoryStats;
use crate::model::identity::ModelIdentity;
use crate::model::{ClipText, ModelDir};
use crate::status::Status;

/// What the pages and the API need from the daemon.
pub struct Web {
    pub status: Status,
    pub history: Option<HistoryConfig>,
    pub history_stats: Option<Arc<HistoryStats>>,
    clip: Option<ModelConfig>,
    /// The CLIP text tower, loaded at the first lab query and kept.
    text: Mutex<Option<Arc<ClipText>>>,
    /// The identity of the CLIP model in use (the daemon hashed it at start: memoized).
    identity: Mutex<Option<ModelIdentity>>,
    /// How many lab and history queries run at once.
    gate: work::Gate,
}

impl Web {
    pub fn new(
        lab_queries: usize,
        status: Status,
        history: Option<HistoryConfig>,
        clip: Option<ModelConfig>,
        history_stats: Option<Arc<HistoryStats>>,
    ) -> Web {
        Web {
            status,
            history,
            history_stats,
            clip,
            text: Mutex::new(None),
            identity: Mutex::new(None),
            gate: work::Gate::new(lab_queries, work::QUEUE_WAIT, work::DEADLINE),
        }
    }

    /// The CLIP text tower, loaded on first use (a few seconds for a full-size model).
    pub fn text_tower(&self) -> Result<Arc<ClipText>> {
        let mut slot = self.text.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let m = self.clip.as_ref().context(
            "the prompt lab scores CLIP embeddings and needs a [models.clip] table in the config",
        )?;
        let dir = ModelDir::open(&m.dir)?;
        let t = Arc::new(ClipText::load(
            &dir,
            m.precision.offline(&dir, "text_model"),
        )?);
        *slot = Some(t.clone());
        Ok(t)
    }
}

impl Web {
    /// The identity of the CLIP model whose embeddings the history holds now.
    pub fn clip_identity(&self) -> Result<ModelIdentity> {
        let mut slot = self.identity.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = slot.as_ref() {
            return Ok(i.clone());
        }
        let m = self.clip.as_ref().context(
            "learning from marks reads CLIP embeddings and needs a [models.clip] table in the config",
        )?;
        let cache = self
            .history
            .as_ref()
            .map(|h| h.state_dir().join("model-hashes.json"));
        let i = ModelIdentity::of(&ModelDir::open(&m.dir)?, cache.as_deref())?;
        *slot = Some(i.clone());
        Ok(i)
    }
}

/// The pages, the API and the vendored assets.
pub fn routes(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/camera/{camera}", get(pages::camera))
        .route("/lab/{camera}", get(pages::lab))
        .route("/assets/{file}", get(pages::asset))
        .route("/api/status", get(api::status))
        .route("/api/history", get(api::history))
        .route("/api/search", get(api::search))
        .route("/api/lab", get(api::lab))
        .route("/api/lab/replay", get(api::replay))
        .route("/api/lab/mark", post(api::mark))
        .route("/api/lab/suggest", get(api::suggest))
        .route("/api/lab/examples", post(api::examples))
        .route("/api/lab/evaluate", get(api::evaluate))
        .route("/api/lab/learn", post(api::learn))
        .route("/api/lab/next", get(api::next))
        .route("/api/lab/use", post(api::use_learned))
        .route("/api/lab/add", post(api::add_prompt))
        .route("/api/lab/remove", post(api::remove_prompt))
        .route("/api/threshold", post(api::threshold))
        .route("/history/thumb/{file}", get(api::thumbnail))
        .route("/history/event/{file}", get(api::event_snapshot))
        .route("/history/marked/{file}", get(api::marked_thumbnail))
        .with_state(web)
}
