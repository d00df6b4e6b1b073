//! Runtime: a prompt added while the daemon runs (MQTT's `prompts/add`, Home Assistant's "Watch
//! for", the prompt lab) validated as one more `[[cameras.prompts]]` table of its camera — the
//! same keys, errors and limits as the file's — then checked with the camera's other prompts.

use anyhow::{anyhow, bail, Result};
use serde_json::{Map, Value};

use super::camera::check_prompts;
use super::raw::RawPrompt;
use super::validate::Validator;
use super::{CameraConfig, Config, PromptConfig};

/// The longest prompt text, name or negative, in characters (a config file's too).
pub const MAX_TEXT: usize = 500;
/// Negatives of one prompt, at most.
pub(super) const MAX_NEGATIVES: usize = 64;

/// What run-time prompts are called in errors.
const LABEL: &str = "the run-time prompt";

/// Validates `keys` (a JSON object with the keys of `[[cameras.prompts]]`) as a prompt of the
/// config's cameras; a tree gives one prompt per leaf. Relative paths are relative to the config
/// file. [`check_camera`] then checks it with the camera's other prompts.
pub fn runtime_prompt(config: &Config, keys: &Map<String, Value>) -> Result<Vec<PromptConfig>> {
    // null is "not given"; the rest becomes the TOML table the file would hold
    let keys: Map<String, Value> = keys
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let table =
        toml::Value::try_from(Value::Object(keys)).map_err(|e| anyhow!("invalid {LABEL}: {e}"))?;
    let text = toml::to_string(&table).map_err(|e| anyhow!("invalid {LABEL}: {e}"))?;
    let raw: RawPrompt = toml::from_str(&text).map_err(|e| {
        anyhow!(
            "invalid {LABEL}: {}; use the keys of [[cameras.prompts]] (text, model, negatives, threshold, learned, tree, ...)",
            e.message().trim_end_matches('\n')
        )
    })?;
    let v = Validator {
        text: &text,
        path: &config.path,
        label: Some(LABEL),
    };
    v.prompt(&raw, &config.models)
}

/// The checks that span a camera's prompts (distinct ids, something for each CLIP prompt to
/// beat), on all of them: its file's and the run-time ones.
pub fn check_camera(camera: &CameraConfig, prompts: &[PromptConfig]) -> Result<()> {
    if let Err((_, key, msg)) = check_prompts(&camera.name, prompts, camera.owlvit_when) {
        bail!("invalid `{key}` in {LABEL}: {msg}");
    }
    Ok(())
}
