//! Raw: the config file as serde reads it, before validation. Values keep their spans (so a
//! validation error names the line and column); unknown keys are refused here.

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    #[serde(default)]
    pub(super) models: RawModels,
    #[serde(default)]
    pub(super) motion: RawMotion,
    #[serde(default)]
    pub(super) cameras: Vec<RawCamera>,
    pub(super) mqtt: Option<toml::Value>,
    #[serde(default)]
    pub(super) http: RawHttp,
    #[serde(default)]
    pub(super) history: RawHistory,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<Spanned<String>>,
    pub(super) stale_after: Option<Spanned<f64>>,
    pub(super) idle_timeout: Option<Spanned<f64>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) token_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    pub(super) enabled: Option<bool>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) keep_days: Option<Spanned<f64>>,
    pub(super) max_mb: Option<Spanned<i64>>,
    pub(super) thumbnail_width: Option<Spanned<i64>>,
    pub(super) thumbnail_interval: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) device_id: Option<Spanned<String>>,
    pub(super) inference_threads: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModels {
    pub(super) clip: Option<RawModel>,
    pub(super) owlvit: Option<RawModel>,
    pub(super) clipseg: Option<RawModel>,
    pub(super) owlv2: Option<RawModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub(super) dir: String,
    #[serde(default)]
    pub(super) quantized: bool,
    /// OWL-ViT / OWLv2: the square input size in pixels (default: the export's own).
    pub(super) input_size: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMotion {
    pub(super) enabled: Option<bool>,
    pub(super) width: Option<Spanned<i64>>,
    pub(super) pixel_delta: Option<Spanned<i64>>,
    pub(super) min_changed: Option<Spanned<f64>>,
    pub(super) refresh: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCamera {
    pub(super) name: Spanned<String>,
    pub(super) source: String,
    pub(super) fps: Option<Spanned<f64>>,
    #[serde(rename = "loop", default)]
    pub(super) looped: bool,
    pub(super) roi: Option<Spanned<Vec<i64>>>,
    pub(super) owlvit_when: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) prompts: Vec<RawPrompt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrompt {
    pub(super) text: Spanned<String>,
    pub(super) model: Spanned<String>,
    pub(super) name: Option<String>,
    pub(super) threshold: Option<Spanned<f64>>,
    pub(super) off_threshold: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) negatives: Vec<String>,
    #[serde(default)]
    pub(super) ensemble: Vec<Spanned<String>>,
    pub(super) device_class: Option<String>,
    pub(super) window: Option<Spanned<i64>>,
    pub(super) min_frames: Option<Spanned<i64>>,
    pub(super) off_delay: Option<Spanned<f64>>,
    pub(super) cooldown: Option<Spanned<f64>>,
    pub(super) mask_threshold: Option<Spanned<f64>>,
}
