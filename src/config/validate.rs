//! Validate: the [`Validator`] that turns the raw file into the runtime [`Config`], with the
//! helpers every table uses (ranges with defaults, paths, errors that name the key, line and
//! column), the top-level walk and the `[models.*]` tables. Cameras, prompts, `[http]` and
//! `[history]` are checked in their own files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use toml::Spanned;

use super::raw::{RawConfig, RawModel, RawQuantized};
use super::syntax::line_col;
use super::{slug, CameraConfig, Config, ModelConfig, SEE};
use crate::model::device::DeviceChoice;
use crate::model::{ModelKind, PrecisionChoice};
use crate::motion::MotionConfig;

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a Path,
    /// What is validated when it is not the file at `path` (a run-time prompt's JSON): errors
    /// then name it instead of a line and column.
    pub(super) label: Option<&'a str>,
}

impl Validator<'_> {
    pub(super) fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        msg: impl std::fmt::Display,
    ) -> Result<T> {
        if let Some(label) = self.label {
            bail!("invalid `{key}` in {label}: {msg}");
        }
        let (line, col) = line_col(self.text, span.start);
        bail!(
            "invalid `{key}` in {} at line {line}, column {col}: {msg}; {SEE}",
            self.path.display()
        )
    }

    pub(super) fn float(
        &self,
        v: &Option<Spanned<f64>>,
        key: &str,
        default: f64,
        lo: f64,
        hi: f64,
    ) -> Result<f64> {
        self.in_range(v, key, default, lo, hi)
    }

    pub(super) fn int(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        default: i64,
        lo: i64,
        hi: i64,
    ) -> Result<i64> {
        self.in_range(v, key, default, lo, hi)
    }

    /// A number between `lo` and `hi` (inclusive), `default` when absent.
    fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
        &self,
        v: &Option<Spanned<T>>,
        key: &str,
        default: T,
        lo: T,
        hi: T,
    ) -> Result<T> {
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

    pub(super) fn relative(&self, p: &str) -> PathBuf {
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

    pub(super) fn validate(&self, raw: RawConfig) -> Result<Config> {
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
        let inference_workers = self.int(
            &raw.daemon.inference_workers,
            "daemon.inference_workers",
            0,
            0,
            64,
        )? as usize;
        let device = match &raw.models.device {
            None => DeviceChoice::Auto,
            Some(d) => match DeviceChoice::parse(d.get_ref()) {
                Some(c) => c,
                None => {
                    return self.err(
                        d.span(),
                        "models.device",
                        format!(
                            "{:?} is not a device; use {} (\"auto\": the GPU when this build has CUDA and one answers, else the CPU)",
                            d.get_ref(),
                            DeviceChoice::WORDS
                        ),
                    )
                }
            },
        };
        let mut models = BTreeMap::new();
        for (name, m) in &raw.models.kinds {
            let Some(kind) = ModelKind::from_name(name.get_ref()) else {
                return self.err(
                    name.span(),
                    &format!("models.{}", name.get_ref()),
                    format!(
                        "{:?} is not a model kind; use {}",
                        name.get_ref(),
                        ModelKind::names("or")
                    ),
                );
            };
            models.insert(kind, self.model(m, kind)?);
        }
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
        for c in &raw.cameras {
            let camera = self.camera(c, &cameras, &models, motion.is_some())?;
            cameras.push(camera);
        }
        let http = self.http(&raw.http)?;
        let history = self.history(&raw.history, http.is_some())?;
        let mqtt = match &raw.mqtt {
            Some(m) => Some(self.mqtt(m.get_ref(), m.span())?),
            None => None,
        };
        Ok(Config {
            path: self.path.to_path_buf(),
            device_id,
            inference_threads,
            inference_workers,
            device,
            models,
            motion,
            cameras,
            mqtt,
            http,
            history,
        })
    }

    /// A `[models.<kind>]` table. `input_size` (OWL-ViT and OWLv2 only) must be a multiple of
    /// the model's patch size: checked here when the model's config.json is readable, else
    /// when the model loads.
    fn model(&self, m: &RawModel, kind: ModelKind) -> Result<ModelConfig> {
        let dir = self.relative(&m.dir);
        let key = format!("models.{kind}.input_size");
        let input_size = match &m.input_size {
            None => None,
            Some(s) if !kind.has_input_size() => {
                let tables: Vec<String> = ModelKind::ALL
                    .iter()
                    .filter(|k| k.has_input_size())
                    .map(|k| format!("[models.{k}]"))
                    .collect();
                return self.err(
                    s.span(),
                    &key,
                    format!("input_size applies to {} only", tables.join(" and ")),
                );
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
        let precision = match &m.quantized {
            None => PrecisionChoice::Auto,
            Some(q) => match q.get_ref() {
                RawQuantized::Flag(true) => PrecisionChoice::Int8,
                RawQuantized::Flag(false) => PrecisionChoice::Fp32,
                RawQuantized::Word(w) if w == "auto" => PrecisionChoice::Auto,
                RawQuantized::Word(w) => {
                    return self.err(
                        q.span(),
                        &format!("models.{kind}.quantized"),
                        format!("{w:?} is not a choice; use true (the int8 *_quantized.onnx files), false (fp32) or \"auto\" (time both at start, keep the faster)"),
                    )
                }
            },
        };
        Ok(ModelConfig {
            dir,
            precision,
            input_size,
        })
    }
}
