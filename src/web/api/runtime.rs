//! The lab's run-time prompt routes: `POST /api/lab/add` runs the prompt being tried on the
//! running camera (`{"camera", "prompt": {...the keys of [[cameras.prompts]], expires, once}}`),
//! `POST /api/lab/remove` ends one (`{"camera", "prompt": id}`). Both go through the same
//! path as MQTT's `prompts/add` and `prompts/remove` (`crate::runtime`): the same checks and
//! errors, kept in the state directory across restarts, seen on MQTT and in Home Assistant.

use std::sync::Arc;

use axum::extract::State;
use serde_json::{json, Value};

use super::prompt_lab::known_camera;
use super::{bad, json_response, ApiResult, Web};

#[derive(serde::Deserialize)]
pub struct Change {
    camera: String,
    /// The prompt's keys (add), or its id (remove).
    prompt: Value,
}

fn change(body: &[u8], shape: &str) -> Result<Change, super::ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("expected {shape}: {e}")))
}

/// `POST /api/lab/add`.
pub async fn add_prompt(State(web): State<Arc<Web>>, body: axum::body::Bytes) -> ApiResult {
    let c = change(&body, "{\"camera\", \"prompt\": {\"text\", ...}}")?;
    known_camera(&web, &c.camera)?;
    let payload = match &c.prompt {
        Value::String(text) => text.clone(),
        v => v.to_string(),
    };
    let now = std::time::SystemTime::now();
    let runtime = &web.status.runtime;
    let id = runtime
        .add(&c.camera, payload.as_bytes(), "lab", now)
        .map_err(bad)?;
    tracing::info!(
        "camera {}: run-time prompt {id} added in the prompt lab",
        c.camera
    );
    json_response(
        json!({ "camera": c.camera, "prompt": id, "runtime": runtime.listing(&c.camera) }),
    )
}

/// `POST /api/lab/remove`.
pub async fn remove_prompt(State(web): State<Arc<Web>>, body: axum::body::Bytes) -> ApiResult {
    let c = change(&body, "{\"camera\", \"prompt\": \"<id>\"}")?;
    known_camera(&web, &c.camera)?;
    let id = c
        .prompt
        .as_str()
        .ok_or_else(|| bad("`prompt` is the id of the prompt to remove"))?;
    let runtime = &web.status.runtime;
    runtime
        .remove(&c.camera, id, crate::runtime::REMOVED)
        .map_err(bad)?;
    tracing::info!(
        "camera {}: run-time prompt {id} removed in the prompt lab",
        c.camera
    );
    json_response(
        json!({ "camera": c.camera, "prompt": id, "runtime": runtime.listing(&c.camera) }),
    )
}
