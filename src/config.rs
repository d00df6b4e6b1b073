//! Config: the TOML file (`config/promptcam.example.toml` documents every key) parsed into raw
//! serde structs, then validated into the runtime [`Config`] the daemon runs on ("low args ->
//! high args"). Unknown keys, wrong types and out-of-range values are errors naming the key, its
//! line and column, and what is allowed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use toml::Spanned;

use crate::decide::DecideConfig;
use crate::model::Precision;
use crate::motion::MotionConfig;

const SEE: &str = "see config/promptcam.example.toml";

/// The largest pixel coordinate a region of interest may name (no camera frame is wider).
const MAX_ROI: u32 = 65535;

// ------------------------------------------------------------------------------------------ raw

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    models: RawModels,
    #[serde(default)]
    motion: RawMotion,
    #[serde(default)]
    cameras: Vec<RawCamera>,
    mqtt: Option<toml::Value>,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    history: RawHistory,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    stale_after: Option<Spanned<f64>>,
    idle_timeout: Option<Spanned<f64>>,
    max_connections: Option<Spanned<i64>>,
    token_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    enabled: Option<bool>,
    path: Option<Spanned<String>>,
    keep_days: Option<Spanned<f64>>,
    max_mb: Option<Spanned<i64>>,
    thumbnail_width: Option<Spanned<i64>>,
    thumbnail_interval: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    device_id: Option<Spanned<String>>,
    inference_threads: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawModels {
    clip: Option<RawModel>,
    owlvit: Option<RawModel>,
    clipseg: Option<RawModel>,
    owlv2: Option<RawModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    dir: String,
    #[serde(default)]
    quantized: bool,
    /// OWL-ViT / OWLv2: the square input size in pixels (default: the export's own).
    input_size: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMotion {
    enabled: Option<bool>,
    width: Option<Spanned<i64>>,
    pixel_delta: Option<Spanned<i64>>,
    min_changed: Option<Spanned<f64>>,
    refresh: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCamera {
    name: Spanned<String>,
    source: String,
    fps: Option<Spanned<f64>>,
    #[serde(rename = "loop", default)]
    looped: bool,
    roi: Option<Spanned<Vec<i64>>>,
    owlvit_when: Option<Spanned<String>>,
    motion_crops: Option<Spanned<bool>>,
    full_frame_every: Option<Spanned<f64>>,
    #[serde(default)]
    prompts: Vec<RawPrompt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrompt {
    text: Spanned<String>,
    model: Spanned<String>,
    name: Option<String>,
    threshold: Option<Spanned<f64>>,
    off_threshold: Option<Spanned<f64>>,
    #[serde(default)]
    negatives: Vec<String>,
    #[serde(default)]
    ensemble: Vec<Spanned<String>>,
    device_class: Option<String>,
    window: Option<Spanned<i64>>,
    min_frames: Option<Spanned<i64>>,
    off_delay: Option<Spanned<f64>>,
    cooldown: Option<Spanned<f64>>,
    mask_threshold: Option<Spanned<f64>>,
}

// ------------------------------------------------------------------------------------------ runtime

/// Which model a prompt runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelKind {
    /// Whole-frame states ("a garage door that is open").
    Clip,
    /// Boxed objects ("a person").
    OwlVit,
    /// Coverage of a masked stuff ("water on the floor"): score = covered fraction of the frame.
    ClipSeg,
    /// Boxed objects with OWLv2 (more accurate, slower).
    Owlv2,
}

impl ModelKind {
    /// How messages name it.
    pub fn title(self) -> &'static str {
        match self {
            ModelKind::Clip => "CLIP",
            ModelKind::OwlVit => "OWL-ViT",
            ModelKind::Owlv2 => "OWLv2",
            ModelKind::ClipSeg => "CLIPSeg",
        }
    }

    /// An open-vocabulary detector (its prompts' scores are boxes; `owlvit_when` gates it).
    pub fn is_detector(self) -> bool {
        matches!(self, ModelKind::OwlVit | ModelKind::Owlv2)
    }

    /// The name the config uses (`model = "..."`).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Clip => "clip",
            ModelKind::OwlVit => "owlvit",
            ModelKind::Owlv2 => "owlv2",
            ModelKind::ClipSeg => "clipseg",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub dir: PathBuf,
    pub precision: Precision,
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
}

#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub device_id: String,
    pub inference_threads: usize,
    pub clip: Option<ModelConfig>,
    pub owlvit: Option<ModelConfig>,
    pub clipseg: Option<ModelConfig>,
    pub owlv2: Option<ModelConfig>,
    pub motion: Option<MotionConfig>,
    pub cameras: Vec<CameraConfig>,
    /// The raw `[mqtt]` table, validated by the MQTT stage; None prints events on stdout.
    pub mqtt: Option<toml::Value>,
    /// The local HTTP endpoint (`[http]`); None when `enabled = false` (the default).
    pub http: Option<HttpConfig>,
    /// The history store (`[history]`); on by default when `[http]` is on.
    pub history: Option<crate::history::HistoryConfig>,
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
    /// Every request must carry this token (`Authorization: Bearer`, or the cookie the login
    /// page sets); required when `listen` is not a loopback address.
    pub token: Option<crate::mqtt::Secret>,
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
        let (line, col) = line_col(&String::from_utf8_lossy(&e.as_bytes()[..at]), at);
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
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        // quote the offending line: serde's type errors do not name the key
        let quoted = text
            .lines()
            .nth(line.saturating_sub(1))
            .map(str::trim)
            .unwrap_or("");
        anyhow::anyhow!(
            "unable to parse config {} at line {line}, column {col} (`{quoted}`): {}; {SEE}",
            path.display(),
            e.message()
        )
    })?;
    let v = Validator { text, path };
    v.validate(raw)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, col)
}

/// The longest camera or prompt id: ids end up in MQTT topics, Home Assistant unique ids and
/// event ids, which must stay short whatever the text.
pub const ID_MAX: usize = 64;

/// A camera's or prompt's id: its [`slug`] when that is non-empty and at most [`ID_MAX`] bytes
/// (so ASCII ids, and the Home Assistant unique ids built from them, stay what they always
/// were); a longer slug is cut and gets `_` and 8 hex digits of the text's SHA-256; a text with
/// nothing ASCII to keep (`猫`, `犬`) gets `id_` and those 8 hex digits, so different texts get
/// different ids.
pub fn make_id(text: &str) -> String {
    use sha2::Digest;
    let slug = slug(text);
    if !slug.is_empty() && slug.len() <= ID_MAX {
        return slug;
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    if slug.is_empty() {
        return format!("id_{hash}");
    }
    let cut = slug[..ID_MAX - hash.len() - 1].trim_end_matches('_');
    format!("{cut}_{hash}")
}

/// Lower-case words joined by dashes: a stable id for topics and unique ids.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        msg: impl std::fmt::Display,
    ) -> Result<T> {
        let (line, col) = line_col(self.text, span.start);
        bail!(
            "invalid `{key}` in {} at line {line}, column {col}: {msg}; {SEE}",
            self.path.display()
        )
    }

    fn float(
        &self,
        v: &Option<Spanned<f64>>,
        key: &str,
        default: f64,
        lo: f64,
        hi: f64,
    ) -> Result<f64> {
        match v {
            None => Ok(default),
            Some(s) if (lo..=hi).contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => self.err(
                s.span(),
                key,
                format!("{} is out of range; allowed {lo}..={hi}", s.get_ref()),
            ),
        }
    }

    fn int(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        default: i64,
        lo: i64,
        hi: i64,
    ) -> Result<i64> {
        match v {
            None => Ok(default),
            Some(s) if (lo..=hi).contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => self.err(
                s.span(),
                key,
                format!("{} is out of range; allowed {lo}..={hi}", s.get_ref()),
            ),
        }
    }

    fn relative(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            return p;
        }
        // relative paths are relative to the working directory when they exist there, else to
        // the config file's directory
        if p.exists() {
            return p;
        }
        self.path.parent().map(|d| d.join(&p)).unwrap_or(p)
    }

    fn validate(&self, raw: RawConfig) -> Result<Config> {
        let device_id = match &raw.daemon.device_id {
            None => "promptcam".to_string(),
            Some(s) if !slug(s.get_ref()).is_empty() && slug(s.get_ref()) == *s.get_ref() => {
                s.get_ref().clone()
            }
            Some(s) => {
                return self.err(
                    s.span(),
                    "daemon.device_id",
                    "use lower-case letters, digits and underscores",
                )
            }
        };
        let inference_threads = self.int(
            &raw.daemon.inference_threads,
            "daemon.inference_threads",
            0,
            0,
            256,
        )? as usize;
        let clip = self.model(&raw.models.clip, "clip")?;
        let owlvit = self.model(&raw.models.owlvit, "owlvit")?;
        let clipseg = self.model(&raw.models.clipseg, "clipseg")?;
        let owlv2 = self.model(&raw.models.owlv2, "owlv2")?;
        let m = &raw.motion;
        let motion = if m.enabled.unwrap_or(true) {
            Some(MotionConfig {
                width: self.int(&m.width, "motion.width", 64, 8, 1024)? as u32,
                pixel_delta: self.int(&m.pixel_delta, "motion.pixel_delta", 25, 0, 255)? as u8,
                min_changed: self.float(&m.min_changed, "motion.min_changed", 0.01, 0.0, 1.0)?
                    as f32,
                refresh: Duration::from_secs_f64(self.float(
                    &m.refresh,
                    "motion.refresh",
                    30.0,
                    0.0,
                    86400.0,
                )?),
            })
        } else {
            None
        };
        if raw.cameras.is_empty() {
            bail!("no cameras in {}: add a [[cameras]] table with a name, a source and prompts; {SEE}", self.path.display());
        }
        let mut cameras: Vec<CameraConfig> = vec![];
        for c in raw.cameras {
            let name = c.name.get_ref().trim().to_string();
            let id = make_id(&name);
            if !name.chars().any(char::is_alphanumeric) {
                return self.err(
                    c.name.span(),
                    "cameras.name",
                    "a camera needs a name with letters or digits",
                );
            }
            if cameras.iter().any(|o| o.id == id) {
                return self.err(
                    c.name.span(),
                    "cameras.name",
                    format!("camera {name:?} is defined twice"),
                );
            }
            let fps = self.float(&c.fps, "cameras.fps", 2.0, 0.01, 120.0)?;
            let roi = match &c.roi {
                None => None,
                Some(r) => {
                    let v = r.get_ref();
                    let pixel = |x: &i64| u32::try_from(*x).ok().filter(|x| *x <= MAX_ROI);
                    match v.iter().map(pixel).collect::<Option<Vec<u32>>>().as_deref() {
                        Some(&[x0, y0, x1, y1]) if x0 < x1 && y0 < y1 => Some([x0, y0, x1, y1]),
                        _ => {
                            return self.err(
                                r.span(),
                                "cameras.roi",
                                format!("expected [x0, y0, x1, y1] in pixels (0..={MAX_ROI}) with x0 < x1 and y0 < y1"),
                            )
                        }
                    }
                }
            };
            let owlvit_when = match c.owlvit_when.as_ref().map(|s| s.get_ref().as_str()) {
                None | Some("always") => OwlVitWhen::Always,
                Some("motion") => OwlVitWhen::Motion,
                Some("clip_on") => OwlVitWhen::ClipOn,
                Some(other) => {
                    let span = c
                        .owlvit_when
                        .as_ref()
                        .map(|s| s.span())
                        .unwrap_or(c.name.span());
                    return self.err(
                        span,
                        "cameras.owlvit_when",
                        format!(
                            "{other:?} is not allowed; use \"always\", \"motion\" or \"clip_on\""
                        ),
                    );
                }
            };
            let motion_crops = match &c.motion_crops {
                Some(on) if *on.get_ref() && motion.is_none() => {
                    return self.err(
                        on.span(),
                        "cameras.motion_crops",
                        "motion crops need the motion gate; remove `enabled = false` from [motion] or set motion_crops = false",
                    )
                }
                Some(on) if *on.get_ref() => Some(Duration::from_secs_f64(self.float(
                    &c.full_frame_every,
                    "cameras.full_frame_every",
                    30.0,
                    0.0,
                    86400.0,
                )?)),
                _ => None,
            };
            if c.prompts.is_empty() {
                return self.err(
                    c.name.span(),
                    "cameras.prompts",
                    format!("camera {name:?} has no [[cameras.prompts]]"),
                );
            }
            let mut prompts: Vec<PromptConfig> = vec![];
            for p in &c.prompts {
                prompts.push(self.prompt(
                    p,
                    clip.is_some(),
                    owlvit.is_some(),
                    clipseg.is_some(),
                    owlv2.is_some(),
                )?);
            }
            for (i, p) in prompts.iter().enumerate() {
                if prompts[..i].iter().any(|o| o.id == p.id) {
                    return self.err(
                        c.prompts[i].text.span(),
                        "cameras.prompts.text",
                        format!("prompt {:?} appears twice on camera {name:?}", p.text),
                    );
                }
            }
            let clip_prompts: Vec<&PromptConfig> = prompts
                .iter()
                .filter(|p| p.model == ModelKind::Clip)
                .collect();
            for (i, p) in prompts.iter().enumerate() {
                if p.model == ModelKind::Clip && p.negatives.is_empty() && clip_prompts.len() < 2 {
                    return self.err(
                        c.prompts[i].text.span(),
                        "cameras.prompts.negatives",
                        "a CLIP prompt needs something to beat: give `negatives` (e.g. [\"an empty driveway\"]) or a second CLIP prompt on this camera",
                    );
                }
            }
            if owlvit_when == OwlVitWhen::ClipOn
                && !prompts.iter().any(|p| p.model == ModelKind::Clip)
            {
                let span = c
                    .owlvit_when
                    .as_ref()
                    .map(|s| s.span())
                    .unwrap_or(c.name.span());
                return self.err(
                    span,
                    "cameras.owlvit_when",
                    "\"clip_on\" needs a CLIP prompt on this camera",
                );
            }
            cameras.push(CameraConfig {
                name,
                id,
                source: c.source.clone(),
                fps,
                looped: c.looped,
                roi,
                owlvit_when,
                motion_crops,
                prompts,
            });
        }
        let http = self.http(&raw.http)?;
        let history = self.history(&raw.history, http.is_some())?;
        Ok(Config {
            path: self.path.to_path_buf(),
            device_id,
            inference_threads,
            clip,
            owlvit,
            clipseg,
            owlv2,
            motion,
            cameras,
            mqtt: raw.mqtt,
            http,
            history,
        })
    }

    /// A `[models.<kind>]` table. `input_size` (OWL-ViT and OWLv2 only) must be a multiple of
    /// the model's patch size: checked here when the model's config.json is readable, else
    /// when the model loads.
    fn model(&self, m: &Option<RawModel>, kind: &str) -> Result<Option<ModelConfig>> {
        let Some(m) = m else { return Ok(None) };
        let dir = self.relative(&m.dir);
        let key = format!("models.{kind}.input_size");
        let input_size = match &m.input_size {
            None => None,
            Some(s) if !matches!(kind, "owlvit" | "owlv2") => {
                return self.err(
                    s.span(),
                    &key,
                    "input_size applies to [models.owlvit] and [models.owlv2] only",
                )
            }
            Some(s) => {
                let n = *s.get_ref();
                if !(16..=4096).contains(&n) {
                    return self.err(
                        s.span(),
                        &key,
                        format!("{n} is out of range; use a multiple of the model's patch size (OWL-ViT B/32: 32, e.g. 384, 480, 576 or 768)"),
                    );
                }
                if let Ok(g) = crate::model::ModelDir::open(&dir).and_then(|d| d.vision_geometry())
                {
                    if let Err(e) = crate::model::owlvit::check_input_size(
                        n as u32,
                        g.patch_size as u32,
                        g.image_size as u32,
                    ) {
                        return self.err(
                            s.span(),
                            &key,
                            format!("{n} does not fit {}: {e}", dir.display()),
                        );
                    }
                }
                Some(n as u32)
            }
        };
        Ok(Some(ModelConfig {
            dir,
            precision: if m.quantized {
                Precision::Quantized
            } else {
                Precision::Fp32
            },
            input_size,
        }))
    }

    fn http(&self, h: &RawHttp) -> Result<Option<HttpConfig>> {
        let listen = match &h.listen {
            None => std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
            Some(s) => match s.get_ref().parse() {
                Ok(a) => a,
                Err(_) => {
                    return self.err(
                        s.span(),
                        "http.listen",
                        format!(
                            "{:?} is not an address and port; use e.g. \"127.0.0.1:9464\"",
                            s.get_ref()
                        ),
                    )
                }
            },
        };
        let stale_after = Duration::from_secs_f64(self.float(
            &h.stale_after,
            "http.stale_after",
            30.0,
            0.5,
            86400.0,
        )?);
        let token = match &h.token_file {
            None => None,
            Some(f) => {
                let path = self.relative(f.get_ref());
                let text = std::fs::read_to_string(&path).or_else(|e| {
                    self.err(
                        f.span(),
                        "http.token_file",
                        format!(
                            "unable to read {}: {e}; make it readable by the daemon",
                            path.display()
                        ),
                    )
                })?;
                let token = text.trim().to_string();
                if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return self.err(
                        f.span(),
                        "http.token_file",
                        format!(
                            "{} must hold one token of at least 16 characters without spaces; \
                             make one with `head -c 24 /dev/urandom | base64 > {}`",
                            path.display(),
                            path.display()
                        ),
                    );
                }
                Some(crate::mqtt::Secret::new(token))
            }
        };
        let idle_timeout = Duration::from_secs_f64(self.float(
            &h.idle_timeout,
            "http.idle_timeout",
            10.0,
            0.5,
            3600.0,
        )?);
        let max_connections =
            self.int(&h.max_connections, "http.max_connections", 64, 1, 65536)? as usize;
        let enabled = h.enabled.unwrap_or(false);
        if enabled && token.is_none() && !listen.ip().is_loopback() {
            let span = h.listen.as_ref().map(|s| s.span()).unwrap_or(0..0);
            return self.err(
                span,
                "http.listen",
                format!(
                    "{listen} is reachable from the network, so every request needs a token: \
                     set `token_file` in [http] (or listen on 127.0.0.1)"
                ),
            );
        }
        Ok(enabled.then_some(HttpConfig {
            listen,
            stale_after,
            token,
            idle_timeout,
            max_connections,
        }))
    }

    /// `[history]`: on by default when `[http]` is; its directory defaults to `history` in
    /// systemd's state directory (`$STATE_DIRECTORY`), else next to the config file.
    fn history(
        &self,
        h: &RawHistory,
        http_on: bool,
    ) -> Result<Option<crate::history::HistoryConfig>> {
        let dir = match &h.path {
            Some(p) if p.get_ref().trim().is_empty() => {
                return self.err(
                    p.span(),
                    "history.path",
                    "a history path needs a directory name",
                )
            }
            Some(p) => {
                let p = PathBuf::from(p.get_ref());
                if p.is_absolute() {
                    p
                } else {
                    self.path.parent().map(|d| d.join(&p)).unwrap_or(p)
                }
            }
            None => match std::env::var_os("STATE_DIRECTORY").filter(|s| !s.is_empty()) {
                // systemd may list several state directories, separated by colons
                Some(s) => PathBuf::from(s.to_string_lossy().split(':').next().unwrap_or_default())
                    .join("history"),
                None => self
                    .path
                    .parent()
                    .map(|d| d.join("history"))
                    .unwrap_or_else(|| PathBuf::from("history")),
            },
        };
        let config = crate::history::HistoryConfig {
            dir,
            keep: Duration::from_secs_f64(
                self.float(&h.keep_days, "history.keep_days", 7.0, 0.01, 3650.0)? * 86400.0,
            ),
            max_bytes: self.int(&h.max_mb, "history.max_mb", 1024, 16, 1 << 20)? as u64
                * 1024
                * 1024,
            thumbnail_width: self.int(
                &h.thumbnail_width,
                "history.thumbnail_width",
                320,
                32,
                1920,
            )? as u32,
            thumbnail_interval: Duration::from_secs_f64(self.float(
                &h.thumbnail_interval,
                "history.thumbnail_interval",
                5.0,
                0.0,
                3600.0,
            )?),
        };
        Ok(h.enabled.unwrap_or(http_on).then_some(config))
    }

    fn prompt(
        &self,
        p: &RawPrompt,
        have_clip: bool,
        have_owl: bool,
        have_seg: bool,
        have_owlv2: bool,
    ) -> Result<PromptConfig> {
        let text = p.text.get_ref().trim().to_string();
        if text.is_empty() {
            return self.err(p.text.span(), "cameras.prompts.text", "a prompt needs text");
        }
        let model = match p.model.get_ref().as_str() {
            "clip" if have_clip => ModelKind::Clip,
            "owlvit" if have_owl => ModelKind::OwlVit,
            "clipseg" if have_seg => ModelKind::ClipSeg,
            "owlv2" if have_owlv2 => ModelKind::Owlv2,
            m @ ("clip" | "owlvit" | "clipseg" | "owlv2") => {
                return self.err(
                    p.model.span(),
                    "cameras.prompts.model",
                    format!("{m:?} needs a [models.{m}] table with its `dir`"),
                )
            }
            other => {
                return self.err(
                    p.model.span(),
                    "cameras.prompts.model",
                    format!(
                    "{other:?} is not a model; use \"clip\", \"owlvit\", \"owlv2\" or \"clipseg\""
                ),
                )
            }
        };
        if model != ModelKind::Clip && !p.negatives.is_empty() {
            return self.err(
                p.model.span(),
                "cameras.prompts.negatives",
                "negatives apply to CLIP prompts only",
            );
        }
        for e in &p.ensemble {
            if !e.get_ref().contains("{}") {
                return self.err(
                    e.span(),
                    "cameras.prompts.ensemble",
                    format!("template {:?} has no {{}} for the prompt text", e.get_ref()),
                );
            }
        }
        let d = DecideConfig::default();
        let threshold = self.float(
            &p.threshold,
            "cameras.prompts.threshold",
            d.threshold as f64,
            0.0,
            1.0,
        )? as f32;
        let off_threshold = self.float(
            &p.off_threshold,
            "cameras.prompts.off_threshold",
            // four fifths of the threshold, as in DecideConfig::default
            threshold as f64 * 0.8,
            0.0,
            1.0,
        )? as f32;
        if off_threshold > threshold {
            let span = p
                .off_threshold
                .as_ref()
                .map(|s| s.span())
                .unwrap_or(p.text.span());
            return self.err(span, "cameras.prompts.off_threshold", format!("{off_threshold} is above threshold {threshold}; hysteresis needs off_threshold <= threshold"));
        }
        let decide = DecideConfig {
            threshold,
            off_threshold,
            window: self.int(&p.window, "cameras.prompts.window", d.window as i64, 1, 100)?
                as usize,
            min_frames: self.int(
                &p.min_frames,
                "cameras.prompts.min_frames",
                d.min_frames as i64,
                1,
                1000,
            )? as usize,
            off_delay: Duration::from_secs_f64(self.float(
                &p.off_delay,
                "cameras.prompts.off_delay",
                d.off_delay.as_secs_f64(),
                0.0,
                86400.0,
            )?),
            cooldown: Duration::from_secs_f64(self.float(
                &p.cooldown,
                "cameras.prompts.cooldown",
                d.cooldown.as_secs_f64(),
                0.0,
                86400.0,
            )?),
        };
        Ok(PromptConfig {
            name: p.name.clone().unwrap_or_else(|| text.clone()),
            id: make_id(&text),
            text,
            model,
            negatives: p.negatives.clone(),
            ensemble: p.ensemble.iter().map(|e| e.get_ref().clone()).collect(),
            device_class: p.device_class.clone(),
            decide,
            mask_threshold: match (&p.mask_threshold, model) {
                (Some(s), m) if m != ModelKind::ClipSeg => {
                    return self.err(
                        s.span(),
                        "cameras.prompts.mask_threshold",
                        "mask_threshold applies to CLIPSeg prompts only",
                    )
                }
                (v, _) => self.float(v, "cameras.prompts.mask_threshold", 0.5, 0.0, 1.0)? as f32,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[models.clip]
dir = "models/tiny/clip"

[[cameras]]
name = "Driveway"
source = "tests/fixtures/images"

[[cameras.prompts]]
text = "a delivery van"
model = "clip"
negatives = ["an empty driveway"]
"#;

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            parse(text, Path::new("t.toml")).expect_err("should fail")
        )
    }

    #[test]
    fn a_small_config_gets_its_defaults() {
        let c = parse(GOOD, Path::new("t.toml")).unwrap();
        assert_eq!(c.device_id, "promptcam");
        let cam = &c.cameras[0];
        assert_eq!((cam.id.as_str(), cam.fps), ("driveway", 2.0));
        let p = &cam.prompts[0];
        assert_eq!(p.id, "a_delivery_van");
        assert_eq!((p.decide.threshold, p.decide.off_threshold), (0.5, 0.4));
        assert!(c.mqtt.is_none() && c.motion.is_some());
        assert!(c.http.is_none(), "the HTTP endpoint is off by default");
        let c = parse(
            &format!("{GOOD}[http]\nenabled = true\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        let h = c.http.expect("enabled");
        assert_eq!(
            (h.listen.to_string(), h.stale_after),
            ("127.0.0.1:9464".to_string(), Duration::from_secs(30))
        );
        assert_eq!(
            (h.idle_timeout, h.max_connections),
            (Duration::from_secs(10), 64)
        );
    }

    #[test]
    fn bad_configs_name_the_key_and_line() {
        let cases: &[(&str, &[&str])] = &[
            (
                &GOOD.replace("negatives =", "negatvies ="),
                &["negatvies", "line 12"],
            ),
            (
                &GOOD.replace("model = \"clip\"", "model = \"yolo\""),
                &["cameras.prompts.model", "line 11", "\"yolo\""],
            ),
            (
                &format!("{GOOD}threshold = 1.5\n"),
                &["cameras.prompts.threshold", "line 13", "1.5", "0..=1"],
            ),
            (
                &format!("{GOOD}threshold = \"high\"\n"),
                &["line 13", "threshold"],
            ),
            (
                &GOOD.replace("negatives = [\"an empty driveway\"]", ""),
                &["negatives", "line 10"],
            ),
            (
                &format!("{GOOD}off_threshold = 0.9\nthreshold = 0.6\n"),
                &["off_threshold", "hysteresis"],
            ),
            (
                &GOOD.replace("[models.clip]\ndir = \"models/tiny/clip\"", ""),
                &["[models.clip]"],
            ),
            (
                &format!("{GOOD}[motion]\nwidth = 2\n"),
                &["motion.width", "line 14"],
            ),
            (&GOOD.replace("source", "sorce"), &["sorce"]),
            (
                &GOOD
                    .replace("source =", "motion_crops = true\nsource =")
                    .replace("[models.clip]", "[motion]\nenabled = false\n[models.clip]"),
                &["cameras.motion_crops", "line 9", "[motion]"],
            ),
            (
                &GOOD.replace(
                    "source =",
                    "motion_crops = true\nfull_frame_every = -1\nsource =",
                ),
                &["cameras.full_frame_every", "line 8", "0..=86400"],
            ),
            (
                &GOOD.replace("source =", "owlvit_when = \"sometimes\"\nsource ="),
                &["cameras.owlvit_when", "line 7", "clip_on"],
            ),
            (
                &format!("{GOOD}[http]\nenabled = true\nlisten = \"localhost\"\n"),
                &["http.listen", "line 15", "127.0.0.1:9464"],
            ),
            (
                &format!("{GOOD}[http]\nlisten = 9464\n"),
                &["line 14", "listen"],
            ),
            (
                &format!("{GOOD}[http]\nstale_after = 0\n"),
                &["http.stale_after", "line 14"],
            ),
            (&format!("{GOOD}[http]\nport = 1\n"), &["port"]),
            (
                &GOOD.replace("source =", "roi = [0, 0, 4294967396, 100]\nsource ="),
                &["cameras.roi", "line 7", "0..=65535"],
            ),
            (
                &GOOD.replace("source =", "roi = [0, 0, 100]\nsource ="),
                &["cameras.roi", "line 7"],
            ),
            (
                &GOOD.replace("source =", "roi = [10, 0, 10, 100]\nsource ="),
                &["cameras.roi", "x0 < x1"],
            ),
            (
                &format!("{GOOD}[http]\nmax_connections = 0\n"),
                &["http.max_connections", "line 14", "1..=65536"],
            ),
            (
                &format!("{GOOD}[http]\nidle_timeout = 0\n"),
                &["http.idle_timeout", "line 14"],
            ),
        ];
        for (text, needles) in cases {
            let e = err(text);
            for n in *needles {
                assert!(e.contains(n), "expected {n:?} in: {e}");
            }
            assert!(e.contains("promptcam.example.toml"), "{e}");
        }
    }

    #[test]
    fn a_file_that_is_not_utf8_gets_a_position() {
        let dir = std::env::temp_dir().join(format!("promptcam-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latin1.toml");
        let mut bytes = GOOD.replace("Driveway", "Einfahrt").into_bytes();
        // name = "Einfahr\xeft": a Latin-1 byte, not UTF-8, on line 6, column 16
        let at = bytes.windows(5).position(|w| w == b"fahrt").unwrap() + 4;
        bytes.insert(at, 0xef);
        std::fs::write(&path, bytes).unwrap();
        let e = format!("{:#}", load(&path).expect_err("should fail"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            e.contains("line 6, column 16") && e.contains("not UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn owl_input_size_is_checked_against_the_model() {
        let owl = |size: &str| {
            format!("[models.owlvit]\ndir = \"models/tiny/owlvit\"\ninput_size = {size}\n{GOOD}")
        };
        let c = parse(&owl("384"), Path::new("t.toml")).unwrap();
        assert_eq!(c.owlvit.unwrap().input_size, Some(384));
        // the tiny OWL-ViT has 32 px patches
        let e = err(&owl("500"));
        for n in ["models.owlvit.input_size", "line 3", "480 or 512"] {
            assert!(e.contains(n), "expected {n:?} in: {e}");
        }
        let e = err(&owl("0"));
        assert!(e.contains("out of range"), "{e}");
        let e = err(&GOOD.replace(
            "dir = \"models/tiny/clip\"",
            "dir = \"models/tiny/clip\"\ninput_size = 384",
        ));
        assert!(
            e.contains("models.clip.input_size") && e.contains("[models.owlvit]"),
            "{e}"
        );
    }

    #[test]
    fn owlv2_prompts_need_their_model_table() {
        let prompt = "\n[[cameras.prompts]]\ntext = \"a person\"\nmodel = \"owlv2\"\n";
        let e = err(&format!("{GOOD}{prompt}"));
        assert!(e.contains("[models.owlv2]"), "{e}");
        let c = parse(
            &format!(
                "[models.owlv2]\ndir = \"models/tiny/owlv2\"\ninput_size = 480\n{GOOD}{prompt}"
            ),
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.cameras[0].prompts[1].model, ModelKind::Owlv2);
        assert_eq!(c.owlv2.unwrap().input_size, Some(480));
    }

    #[test]
    fn slugs_are_stable_ids() {
        assert_eq!(
            slug("A package on the doorstep!"),
            "a_package_on_the_doorstep"
        );
        assert_eq!(slug("  Front Door "), "front_door");
    }

    #[test]
    fn ids_are_bounded_never_empty_and_distinct() {
        // ASCII ids are their slugs, as before
        assert_eq!(
            make_id("A package on the doorstep!"),
            "a_package_on_the_doorstep"
        );
        let edge = "x".repeat(ID_MAX);
        assert_eq!(make_id(&edge), edge);
        // long texts: cut, with a hash of the whole text
        let long = "a cat ".repeat(2000);
        let (a, b) = (make_id(&long), make_id(&format!("{long} dog")));
        assert!(a.len() <= ID_MAX && b.len() <= ID_MAX, "{a} {b}");
        assert!(a.starts_with("a_cat_a_cat") && a != b, "{a} {b}");
        assert_eq!(a, make_id(&long), "stable");
        assert_eq!(slug(&a), a, "still a slug");
        // nothing ASCII: a hash id, different per text
        let (cat, dog) = (make_id("猫"), make_id("犬"));
        assert!(
            cat.starts_with("id_") && cat.len() == 11 && cat != dog,
            "{cat} {dog}"
        );
        assert_eq!(make_id("!!!").len(), 11);
    }
}
