//! MQTT: the `[mqtt]` table and its `tls` key (`tls = true`, or a `[mqtt.tls]` table) validated
//! into [`MqttConfig`] and [`TlsConfig`], plain data the MQTT stage runs on (`src/mqtt/`, which
//! also builds the rustls configuration from a `TlsConfig`). Relative paths are relative to the
//! config file's directory.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use toml::Spanned;

use super::raw::{RawMqtt, RawTls, RawTlsTable};
use super::validate::Validator;
use super::Secret;

/// Environment variable read for the broker password when the config names none.
pub const PASSWORD_ENV: &str = "PROMPTCAM_MQTT_PASSWORD";

/// The validated `[mqtt]` table.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    pub host: String,
    /// Default 1883 (8883 with `tls = true`).
    pub port: u16,
    pub username: Option<String>,
    /// From `password`, `password_file` or the `PROMPTCAM_MQTT_PASSWORD` environment variable.
    pub password: Option<Secret>,
    /// Default `promptcam-<device_id>` (resolved by the publisher).
    pub client_id: Option<String>,
    /// Default `promptcam`.
    pub topic_prefix: String,
    /// Default `homeassistant`.
    pub discovery_prefix: String,
    /// Default `/var/lib/promptcam/spool`; relative paths are relative to the config file.
    pub spool_dir: PathBuf,
    /// Default 10000.
    pub spool_max_events: usize,
    /// TLS (rustls): `tls = true` trusts the system's root certificates, a `[mqtt.tls]` table
    /// names a CA file, a client certificate and key, or `insecure`; default none.
    pub tls: Option<TlsConfig>,
    /// How often per-camera diagnostics (inference ms, analysed fps, dropped frames) are
    /// published; default 15 s.
    pub diagnostics_interval: Duration,
    /// How Home Assistant discovery is published (`discovery`): one retained config per device
    /// (Home Assistant 2024.12 and later, the default) or one per entity (any version).
    pub discovery: DiscoveryForm,
}

/// `discovery = "device" | "entity"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryForm {
    Device,
    Entity,
}

/// The validated TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that signed the broker's certificate; default: the
    /// system's root certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and its private key, for brokers that require one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any broker certificate (no verification at all): only by explicit choice.
    pub insecure: bool,
}

/// Parses and validates the body of an `[mqtt]` table on its own (tools and tests); `path` names
/// the file in messages and anchors relative paths, as in a whole config file.
pub fn parse_mqtt(text: &str, path: &Path) -> Result<MqttConfig> {
    let raw: RawMqtt = super::syntax::from_toml(text, path, "mqtt")?;
    Validator {
        text,
        path,
        label: None,
    }
    .mqtt(&raw, 0..0)
}

impl Validator<'_> {
    /// A non-empty string, if set.
    fn text(&self, v: &Option<Spanned<String>>, key: &str) -> Result<Option<String>> {
        match v {
            None => Ok(None),
            Some(s) if !s.get_ref().trim().is_empty() => Ok(Some(s.get_ref().clone())),
            Some(s) => self.err(s.span(), key, "expected a non-empty string"),
        }
    }

    fn topic_prefix(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: &str,
    ) -> Result<String> {
        let p = self.text(v, key)?.unwrap_or_else(|| default.to_string());
        if p.contains(['+', '#'])
            || p.starts_with('/')
            || p.ends_with('/')
            || p.contains(char::is_whitespace)
        {
            let span = v.as_ref().map(|s| s.span()).unwrap_or(0..0);
            return self.err(
                span,
                key,
                "a topic prefix has no `+`, `#`, spaces, or leading/trailing `/`",
            );
        }
        Ok(p)
    }

    /// `[mqtt]`; `span` is the table's, for what is missing from it.
    pub(super) fn mqtt(&self, m: &RawMqtt, span: Range<usize>) -> Result<MqttConfig> {
        let base = self.path.parent().unwrap_or(Path::new("."));
        let tls = match &m.tls {
            None => None,
            Some(t) => match t.get_ref() {
                RawTls::Enabled(false) => None,
                RawTls::Enabled(true) => Some(TlsConfig::default()),
                RawTls::Table(table) => Some(self.tls(table, t.span(), base)?),
            },
        };
        let host = match self.text(&m.host, "mqtt.host")? {
            Some(h) => h,
            None => {
                return self.err(
                    span,
                    "mqtt.host",
                    "missing: name the broker, e.g. host = \"localhost\"",
                )
            }
        };
        let default_port = if tls.is_some() { 8883 } else { 1883 };
        let port = self.int(&m.port, "mqtt.port", default_port, 1, 65535)? as u16;
        let diagnostics_interval = Duration::from_secs_f64(self.float(
            &m.diagnostics_interval,
            "mqtt.diagnostics_interval",
            15.0,
            1.0,
            3600.0,
        )?);
        let discovery = match m.discovery.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("device", _)) => DiscoveryForm::Device,
            Some(("entity", _)) => DiscoveryForm::Entity,
            Some((other, span)) => {
                return self.err(
                    span,
                    "mqtt.discovery",
                    format!("{other:?} is not a form; use \"device\" (one config per device, Home Assistant 2024.12 and later) or \"entity\" (one per entity, older versions)"),
                )
            }
        };
        let password = match (self.text(&m.password, "mqtt.password")?, &m.password_file) {
            (Some(_), Some(f)) => {
                return self.err(
                    f.span(),
                    "mqtt.password_file",
                    "set either `password` or `password_file`, not both",
                )
            }
            (Some(p), None) => Some(Secret::new(p)),
            (None, Some(f)) => Some(self.password_file(f, base)?),
            (None, None) => std::env::var(PASSWORD_ENV)
                .ok()
                .filter(|p| !p.is_empty())
                .map(Secret::new),
        };
        let username = self.text(&m.username, "mqtt.username")?;
        if password.is_some() && username.is_none() {
            let span = m
                .password
                .as_ref()
                .or(m.password_file.as_ref())
                .map(|s| s.span())
                .unwrap_or(span);
            return self.err(
                span,
                "mqtt.username",
                "a password needs a username (MQTT 3.1.1)",
            );
        }
        let client_id = self.text(&m.client_id, "mqtt.client_id")?;
        if let (Some(c), Some(s)) = (&client_id, &m.client_id) {
            if c.contains(['+', '#', '/']) {
                return self.err(
                    s.span(),
                    "mqtt.client_id",
                    "use letters, digits, `-` and `_`",
                );
            }
        }
        Ok(MqttConfig {
            host,
            port,
            username,
            password,
            client_id,
            topic_prefix: self.topic_prefix(&m.topic_prefix, "mqtt.topic_prefix", "promptcam")?,
            discovery_prefix: self.topic_prefix(
                &m.discovery_prefix,
                "mqtt.discovery_prefix",
                "homeassistant",
            )?,
            spool_dir: self
                .text(&m.spool_dir, "mqtt.spool_dir")?
                .map(|d| base.join(d))
                .unwrap_or_else(|| PathBuf::from("/var/lib/promptcam/spool")),
            spool_max_events: self.int(
                &m.spool_max_events,
                "mqtt.spool_max_events",
                10_000,
                1,
                10_000_000,
            )? as usize,
            tls,
            diagnostics_interval,
            discovery,
        })
    }

    /// `password_file`: its first line (without the line break), never shown in messages.
    fn password_file(&self, f: &Spanned<String>, base: &Path) -> Result<Secret> {
        let key = "mqtt.password_file";
        if f.get_ref().trim().is_empty() {
            return self.err(f.span(), key, "expected a non-empty string");
        }
        let path = base.join(f.get_ref());
        let text = std::fs::read_to_string(&path).or_else(|e| {
            self.err(
                f.span(),
                key,
                format!(
                    "unable to read {}: {e}; make it readable by the daemon",
                    path.display()
                ),
            )
        })?;
        let p = text.trim_end_matches(['\r', '\n']).to_string();
        if p.is_empty() {
            return self.err(f.span(), key, format!("{} is empty", path.display()));
        }
        Ok(Secret::new(p))
    }

    /// A `[mqtt.tls]` table; `span` is the table's.
    fn tls(&self, t: &RawTlsTable, span: Range<usize>, base: &Path) -> Result<TlsConfig> {
        let path = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<PathBuf>> {
            match v {
                None => Ok(None),
                Some(s) if !s.get_ref().trim().is_empty() => Ok(Some(base.join(s.get_ref()))),
                Some(s) => self.err(s.span(), key, "expected a file name, found \"\""),
            }
        };
        let c = TlsConfig {
            ca_file: path(&t.ca_file, "mqtt.tls.ca_file")?,
            cert_file: path(&t.cert_file, "mqtt.tls.cert_file")?,
            key_file: path(&t.key_file, "mqtt.tls.key_file")?,
            insecure: t.insecure.unwrap_or(false),
        };
        if c.cert_file.is_some() != c.key_file.is_some() {
            let span = t
                .cert_file
                .as_ref()
                .or(t.key_file.as_ref())
                .map(|s| s.span())
                .unwrap_or(span);
            return self.err(
                span,
                "mqtt.tls.key_file",
                "a client certificate needs both `cert_file` and `key_file`",
            );
        }
        if c.insecure && c.ca_file.is_some() {
            let span = t.ca_file.as_ref().map(|s| s.span()).unwrap_or(span);
            return self.err(
                span,
                "mqtt.tls.insecure",
                "`insecure = true` verifies nothing, so `ca_file` would be ignored: set one of them",
            );
        }
        Ok(c)
    }
}

#[cfg(test)]
#[path = "mqtt_tests.rs"]
mod tests;
