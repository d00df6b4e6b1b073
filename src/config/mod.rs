//! Config: the TOML file (`config/promptcam.example.toml` documents every key) parsed into raw
//! serde structs (`raw`), then validated into the runtime [`Config`] the daemon runs on ("low
//! args -> high args"): `validate` walks the file, `camera`, `prompt`, `http` and `history`
//! check their tables, `mqtt` the broker's, `ids` makes the slugs that name cameras and prompts, `syntax`
//! places serde's errors. Unknown keys, wrong types and
//! out-of-range values are errors naming the key, its line and column, and what is allowed.

mod camera;
mod history;
mod http;
mod ids;
mod mqtt;
mod prompt;
mod raw;
mod runtime;
mod secret;
mod syntax;
mod tree;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::decide::DecideConfig;
use crate::model::device::DeviceChoice;
use crate::model::{ModelKind, PrecisionChoice};
use crate::motion::MotionConfig;

pub use camera::MAX_RUNTIME_PROMPTS;
pub use history::HistoryConfig;
pub use ids::{make_id, slug, ID_MAX};
pub use mqtt::{parse_mqtt, DiscoveryForm, MqttConfig, TlsConfig, PASSWORD_ENV};
pub use runtime::{check_camera, runtime_prompt, MAX_TEXT};
pub use secret::Secret;
pub use tree::{tree_texts, TreeLeaf};

const SEE: &str = "see config/promptcam.example.toml";

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub dir: PathBuf,
    /// `quantized`: fp32, int8, or "auto" (resolved when the models load: `pipeline::precision`).
    pub precision: PrecisionChoice,
    /// OWL-ViT / OWLv2 only: run at this many pixels square instead of the export's size.
    pub input_size: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct PromptConfig {
    pub text: String,
    pub name: String,
    /// Stable slug for topics and ids.
    pub id: String,
    pub model: ModelKind,
    /// CLIP only: what the prompt must beat; empty means the camera's other CLIP prompts.
    pub negatives: Vec<String>,
    /// CLIP only: templates such as "a photo of {}", averaged into one embedding.
    pub ensemble: Vec<String>,
    pub device_class: Option<String>,
    pub decide: DecideConfig,
    /// CLIPSeg only: a pixel is covered when its mask probability exceeds this.
    pub mask_threshold: f32,
    /// A leaf path of a tree prompt (`tree = "..."`), whose state this prompt is; its `text` is
    /// then the path ("a person > no hard hat").
    pub tree: Option<TreeLeaf>,
    /// CLIP: pictures (directories or globs) whose mean image embedding is the prompt's, instead
    /// of its text's; `text` is then its name.
    pub examples: Vec<String>,
    /// CLIP: pictures of what the prompt must beat, one class per entry (next to `negatives`).
    pub negative_examples: Vec<String>,
    /// CLIP: a prompt learned from marks (`learned = "PATH"`): scored by its weights on the
    /// image embedding, instead of by a text; `text` is then its name.
    pub learned: Option<Learned>,
    /// Set on prompts added while the daemon runs (MQTT, Home Assistant, the prompt lab).
    pub runtime: Option<Arc<crate::runtime::Meta>>,
}

/// A learned prompt's file, read at validation.
#[derive(Clone, Debug)]
pub struct Learned {
    pub path: std::path::PathBuf,
    pub prompt: std::sync::Arc<crate::learn::file::LearnedPrompt>,
}

impl PromptConfig {
    /// A learned prompt with the settings a `[[cameras.prompts]] learned = PATH` table without
    /// other keys gets (the prompt lab adds it to a running camera so).
    pub fn from_learned(learned: Learned) -> PromptConfig {
        let name = learned.prompt.name.clone();
        let threshold = learned.prompt.threshold;
        PromptConfig {
            text: name.clone(),
            id: make_id(&name),
            name,
            model: ModelKind::Clip,
            negatives: vec![],
            ensemble: vec![],
            device_class: None,
            decide: DecideConfig {
                threshold,
                off_threshold: threshold * 0.8,
                ..DecideConfig::default()
            },
            mask_threshold: 0.5,
            tree: None,
            examples: vec![],
            negative_examples: vec![],
            learned: Some(learned),
            runtime: None,
        }
    }

    /// Whether `other` needs the same model as this prompt: the same text, model and what the
    /// score depends on, apart from the decision settings (thresholds, window, delays).
    pub fn same_model(&self, other: &PromptConfig) -> bool {
        let (p, q) = (self, other);
        (
            &p.text,
            p.model,
            &p.negatives,
            &p.ensemble,
            p.mask_threshold,
        ) == (
            &q.text,
            q.model,
            &q.negatives,
            &q.ensemble,
            q.mask_threshold,
        ) && (&p.tree, &p.examples, &p.negative_examples)
            == (&q.tree, &q.examples, &q.negative_examples)
            // a learned prompt taught again (new weights in the same file) is a new model
            && p.learned.as_ref().map(|l| &*l.prompt) == q.learned.as_ref().map(|l| &*l.prompt)
    }

    /// A CLIP prompt scored against text classes (its own, negatives, other prompts): not a
    /// tree leaf and not a learned prompt.
    pub fn is_clip_class(&self) -> bool {
        self.model == ModelKind::Clip && self.tree.is_none() && self.learned.is_none()
    }
}

/// When a camera runs OWL-ViT (the expensive model): every analysed frame, only on motion
/// (not on the periodic refresh), or only while one of its CLIP prompts is ON (a cascade:
/// "a delivery van" from CLIP, then "a package" boxed by OWL-ViT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwlVitWhen {
    Always,
    Motion,
    ClipOn,
}

#[derive(Clone, Debug)]
pub struct CameraConfig {
    pub name: String,
    pub id: String,
    pub source: String,
    pub fps: f64,
    pub looped: bool,
    pub roi: Option<[u32; 4]>,
    pub owlvit_when: OwlVitWhen,
    /// Detectors look at a square around the motion region instead of the whole frame
    /// (`motion_crops`), except for one whole frame every `full_frame_every`.
    pub motion_crops: Option<Duration>,
    pub prompts: Vec<PromptConfig>,
    /// What Home Assistant's "Watch for" adds (`[cameras.watch]`).
    pub watch: WatchConfig,
}

/// `[cameras.watch]`: the prompt a phrase typed into Home Assistant's "Watch for" text entity
/// becomes, and how many run-time prompts the camera takes.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchConfig {
    /// Default "clip" when there is a `[models.clip]` table, else the first model's kind.
    pub model: ModelKind,
    /// CLIP: what the phrase must beat; empty: the camera's other CLIP prompts.
    pub negatives: Vec<String>,
    /// Default: the prompt's default.
    pub threshold: Option<f32>,
    /// Run-time prompts (from MQTT, Home Assistant and the lab) on this camera, at most;
    /// default 8.
    pub max_prompts: usize,
}

impl WatchConfig {
    pub fn default_for(models: &BTreeMap<ModelKind, ModelConfig>) -> WatchConfig {
        WatchConfig {
            model: if models.contains_key(&ModelKind::Clip) {
                ModelKind::Clip
            } else {
                models.keys().next().copied().unwrap_or(ModelKind::Clip)
            },
            negatives: vec![],
            threshold: None,
            max_prompts: 8,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub device_id: String,
    /// Matrix-product threads of each inference worker (0: measured at start).
    pub inference_threads: usize,
    /// Inference workers that analyse cameras' frames side by side (0: measured at start when
    /// there are several cameras; at most one per camera).
    pub inference_workers: usize,
    /// `[models] device`: where the models run (selected at start: `model::device`).
    pub device: DeviceChoice,
    /// The `[models.<kind>]` tables.
    pub models: BTreeMap<ModelKind, ModelConfig>,
    pub motion: Option<MotionConfig>,
    pub cameras: Vec<CameraConfig>,
    /// The MQTT broker (`[mqtt]`); None prints events on stdout.
    pub mqtt: Option<MqttConfig>,
    /// The local HTTP endpoint (`[http]`); None when `enabled = false` (the default).
    pub http: Option<HttpConfig>,
    /// The history store (`[history]`); on by default when `[http]` is on.
    pub history: Option<HistoryConfig>,
}

/// systemd's state directory from `$STATE_DIRECTORY`'s value: the first of the colon-separated
/// directories systemd may list; None when unset or empty.
fn systemd_state_dir(var: Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = var.filter(|s| !s.is_empty())?;
    Some(PathBuf::from(
        var.to_string_lossy().split(':').next().unwrap_or_default(),
    ))
}

impl Config {
    /// The `[models.<kind>]` table of a kind, if the file has one.
    pub fn model(&self, kind: ModelKind) -> Option<&ModelConfig> {
        self.models.get(&kind)
    }

    /// Where the daemon keeps what it writes besides the history and the spool (run-time
    /// prompts, the record of published discovery, the start cache): the history's state
    /// directory, else the directory above the MQTT spool, else systemd's state directory
    /// (`$STATE_DIRECTORY`: under the unit's ProtectSystem=strict, /etc is read-only), else the
    /// config file's directory.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir_with(std::env::var_os("STATE_DIRECTORY"))
    }

    /// [`Config::state_dir`] with systemd's `$STATE_DIRECTORY` given.
    pub fn state_dir_with(&self, systemd: Option<std::ffi::OsString>) -> PathBuf {
        if let Some(h) = &self.history {
            return h.state_dir();
        }
        let dir = match (&self.mqtt, systemd_state_dir(systemd)) {
            (Some(m), _) => m.spool_dir.parent().unwrap_or(&m.spool_dir).to_path_buf(),
            (None, Some(s)) => s,
            (None, None) => self
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        std::path::absolute(&dir).unwrap_or(dir)
    }
}

/// The `[http]` table: `/healthz`, `/metrics` and `/snapshot/<camera>.jpg` (src/endpoint.rs).
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Default 127.0.0.1:9464.
    pub listen: std::net::SocketAddr,
    /// `/healthz` fails when a running camera made no progress for this long (or three frame
    /// intervals, if longer). Default 30 s.
    pub stale_after: Duration,
    /// A connection is closed when its request head takes longer than this, when it stays idle
    /// this long between requests, or when its client stops reading for this long. Default 10 s.
    pub idle_timeout: Duration,
    /// Connections open at once, at most (lowered to a quarter of the open-file limit). Default 64.
    pub max_connections: usize,
    /// A request not answered within this is stopped and answered 503 (a stalled upload, a query
    /// past its turn). Default 90 s: above the lab's own 60 s limit and its queue.
    pub request_timeout: Duration,
    /// Lab and history queries (`/api/lab...`, `/api/search`, `/api/history`) run at once, at
    /// most; others wait briefly, then get 503 with Retry-After. Default 1.
    pub lab_queries: usize,
    /// Every request must carry this token (`Authorization: Bearer`, or the cookie the login
    /// page sets); required when `listen` is not a loopback address.
    pub token: Option<Secret>,
    /// HTTPS instead of HTTP (`tls_cert` and `tls_key`).
    pub tls: Option<HttpTls>,
}

/// The endpoint's certificate chain and key, PEM files (`[http] tls_cert`, `tls_key`).
#[derive(Clone, Debug)]
pub struct HttpTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "unable to read config {}; {SEE} for a starting point",
            path.display()
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let (line, col) = syntax::line_col(&String::from_utf8_lossy(&e.as_bytes()[..at]), at);
        anyhow::anyhow!(
            "unable to read config {} at line {line}, column {col}: the file is not UTF-8 text (byte {at}); save it as UTF-8",
            path.display()
        )
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `path` names the file in messages and anchors relative
/// model and source paths.
pub fn parse(text: &str, path: &Path) -> Result<Config> {
    let raw: raw::RawConfig = syntax::from_toml(text, path, "")?;
    let v = validate::Validator {
        text,
        path,
        label: None,
    };
    v.validate(raw)
}

#[cfg(test)]
mod tests;
