//! Raw: the config file as serde reads it, before validation. Values keep their spans (so a
//! validation error names the line and column); unknown keys are refused here.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    #[serde(default)]
    /// `[models]`: `device`, and the `[models.<kind>]` tables.
    pub(super) models: RawModels,
    #[serde(default)]
    pub(super) motion: RawMotion,
    #[serde(default)]
    pub(super) cameras: Vec<RawCamera>,
    pub(super) mqtt: Option<Spanned<RawMqtt>>,
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
    pub(super) request_timeout: Option<Spanned<f64>>,
    pub(super) lab_queries: Option<Spanned<i64>>,
    pub(super) token_file: Option<Spanned<String>>,
    pub(super) tls_cert: Option<Spanned<String>>,
    pub(super) tls_key: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    pub(super) enabled: Option<bool>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) keep_days: Option<Spanned<f64>>,
    pub(super) max_mb: Option<Spanned<i64>>,
    pub(super) min_free_mb: Option<Spanned<i64>>,
    pub(super) thumbnail_width: Option<Spanned<i64>>,
    pub(super) thumbnail_interval: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) device_id: Option<Spanned<String>>,
    pub(super) inference_threads: Option<Spanned<i64>>,
    pub(super) inference_workers: Option<Spanned<i64>>,
}

/// `[models]`: the `device` key beside the `[models.<kind>]` tables. Read key by key (serde's
/// `flatten` would lose the spans that errors cite).
#[derive(Default)]
pub(super) struct RawModels {
    pub(super) device: Option<Spanned<String>>,
    /// `[models.<kind>]`, by the kind's name (checked by the validator).
    pub(super) kinds: BTreeMap<Spanned<String>, RawModel>,
}

impl<'de> Deserialize<'de> for RawModels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Tables;
        impl<'de> serde::de::Visitor<'de> for Tables {
            type Value = RawModels;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of `device` and [models.<kind>] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawModels, A::Error> {
                let mut out = RawModels::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    if key.get_ref() == "device" {
                        out.device = Some(map.next_value()?);
                    } else {
                        let table = map.next_value()?;
                        out.kinds.insert(key, table);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(Tables)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub(super) dir: String,
    /// `true`, `false` or `"auto"` (absent: `"auto"`).
    pub(super) quantized: Option<Spanned<RawQuantized>>,
    /// OWL-ViT / OWLv2: the square input size in pixels (default: the export's own).
    pub(super) input_size: Option<Spanned<i64>>,
}

/// `quantized = true | false | "auto"`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawQuantized {
    Flag(bool),
    Word(String),
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
    pub(super) motion_crops: Option<Spanned<bool>>,
    pub(super) full_frame_every: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) prompts: Vec<RawPrompt>,
    pub(super) watch: Option<RawWatch>,
}

/// `[cameras.watch]`: what Home Assistant's "Watch for" adds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    pub(super) model: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) negatives: Vec<String>,
    pub(super) threshold: Option<Spanned<f64>>,
    pub(super) max_prompts: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrompt {
    pub(super) text: Option<Spanned<String>>,
    /// A tree prompt instead of `text` (`config/tree.rs`).
    pub(super) tree: Option<Spanned<String>>,
    pub(super) tree_threshold: Option<Spanned<f64>>,
    /// CLIP: a prompt made of pictures (directories or globs), instead of `text`.
    #[serde(default)]
    pub(super) examples: Vec<Spanned<String>>,
    /// CLIP: pictures of what the prompt must beat, one class per entry.
    #[serde(default)]
    pub(super) negative_examples: Vec<Spanned<String>>,
    /// Required, except for a `learned` prompt (always CLIP).
    pub(super) model: Option<Spanned<String>>,
    /// A learned prompt's file (`promptcam learn`), instead of `text`.
    pub(super) learned: Option<Spanned<String>>,
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

impl RawPrompt {
    /// Where the prompt's errors point: its `text`, else its `tree`, its first example, its
    /// learned file, its `model`.
    pub(super) fn span(&self) -> std::ops::Range<usize> {
        self.text
            .as_ref()
            .or(self.tree.as_ref())
            .or(self.examples.first())
            .or(self.learned.as_ref())
            .or(self.model.as_ref())
            .map_or(0..0, |t| t.span())
    }

    /// Where errors about the model point: `model`, else the prompt.
    pub(super) fn model_span(&self) -> std::ops::Range<usize> {
        self.model
            .as_ref()
            .map_or_else(|| self.span(), |m| m.span())
    }
}

/// `[mqtt]`. No `Debug`: it holds the password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMqtt {
    pub(super) host: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<i64>>,
    pub(super) username: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) client_id: Option<Spanned<String>>,
    pub(super) topic_prefix: Option<Spanned<String>>,
    pub(super) discovery_prefix: Option<Spanned<String>>,
    pub(super) spool_dir: Option<Spanned<String>>,
    pub(super) spool_max_events: Option<Spanned<i64>>,
    pub(super) tls: Option<Spanned<RawTls>>,
    pub(super) diagnostics_interval: Option<Spanned<f64>>,
    pub(super) discovery: Option<Spanned<String>>,
}

/// `tls = true|false`, or a `[mqtt.tls]` table.
pub(super) enum RawTls {
    Enabled(bool),
    Table(RawTlsTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTlsTable {
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) cert_file: Option<Spanned<String>>,
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) insecure: Option<bool>,
}

impl<'de> Deserialize<'de> for RawTls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawTls, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = RawTls;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a [mqtt.tls] table")
            }
            fn visit_bool<E>(self, b: bool) -> Result<RawTls, E> {
                Ok(RawTls::Enabled(b))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawTls, A::Error> {
                // the table's own errors (unknown keys, wrong types) pass through unchanged
                RawTlsTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawTls::Table)
            }
        }
        d.deserialize_any(Either)
    }
}
