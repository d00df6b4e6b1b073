//! MQTT: the `[mqtt]` config table ([`parse_config`] -> [`MqttConfig`]) and the [`Publisher`]
//! that sends events, retained per-prompt states and scores, availability and Home Assistant
//! discovery to a broker. Events are spooled on disk until the broker acknowledges them
//! (`spool`), discovery payloads live in `discovery`, the connection threads in `worker`.
//!
//! Topics (`<prefix>` = `topic_prefix`, default `promptcam`):
//! - `<prefix>/<device_id>/availability`: `online` / `offline`, retained, with a last will;
//! - `<prefix>/<device_id>/events`: event JSON, QoS 1, not retained;
//! - `<prefix>/<device_id>/<camera>/<prompt>/state` and `.../score`: retained, latest wins;
//! - `<prefix>/<device_id>/<camera>/<prompt>/snapshot`: annotated JPEG of the event, retained;
//! - `<prefix>/<device_id>/<camera>/<prompt>/threshold` (+ `/set`): the prompt's `on` threshold;
//! - `<prefix>/<device_id>/<camera>/paused` (+ `/set`): `ON` while detection is paused;
//! - `<prefix>/<device_id>/<camera>/event`: `{"event_type": "start", ...}` for Home Assistant;
//! - `<prefix>/<device_id>/<camera>/stream`: `online` / `offline`, retained;
//! - `<prefix>/<device_id>/<camera>/diagnostics`: JSON counters every `diagnostics_interval`;
//! - `<discovery_prefix>/<component>/<unique_id>/config`: retained discovery.
//!
//! Commands (`.../set`) are checked in `commands`, TLS settings become a rustls config in `tls`;
//! the `Publisher` handle is in `publisher`, what its threads share in `shared`, the in-flight
//! bookkeeping in `window`, the record of open events in `open`.

mod commands;
pub mod discovery;
mod live;
mod net;
mod open;
mod publisher;
mod pump;
mod shared;
pub mod spool;
mod tls;
mod window;
mod worker;

pub use publisher::{Publisher, Stats, StatsHandle};
pub use tls::TlsConfig;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

const SEE: &str = "see config/promptcam.example.toml";
/// Environment variable read for the broker password when the config names none.
pub const PASSWORD_ENV: &str = "PROMPTCAM_MQTT_PASSWORD";

/// A password: never printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The validated `[mqtt]` table.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    pub host: String,
    /// Default 1883 (8883 with `tls = true`).
    pub port: u16,
    pub username: Option<String>,
    /// From `password`, `password_file` or the `PROMPTCAM_MQTT_PASSWORD` environment variable.
    pub password: Option<Secret>,
    /// Default `promptcam-<device_id>` (resolved by [`Publisher::start`]).
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
}

const KEYS: &[&str] = &[
    "host",
    "port",
    "username",
    "password",
    "password_file",
    "client_id",
    "topic_prefix",
    "discovery_prefix",
    "spool_dir",
    "spool_max_events",
    "tls",
    "diagnostics_interval",
];

/// Validates the raw `[mqtt]` table; `config_path` names the file in messages and anchors
/// relative paths. Unknown keys and wrong types are errors naming the key.
pub fn parse_config(raw: &toml::Value, config_path: &Path) -> Result<MqttConfig> {
    let file = config_path.display();
    let Some(table) = raw.as_table() else {
        bail!("invalid `mqtt` in {file}: expected a table; {SEE}")
    };
    for k in table.keys() {
        if !KEYS.contains(&k.as_str()) {
            bail!(
                "unknown key `mqtt.{k}` in {file}: allowed keys are {}; {SEE}",
                KEYS.join(", ")
            );
        }
    }
    let bad = |key: &str, what: &str| -> anyhow::Error {
        anyhow::anyhow!("invalid `mqtt.{key}` in {file}: {what}; {SEE}")
    };
    let string = |key: &str| -> Result<Option<String>> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(toml::Value::String(_)) => Err(bad(key, "expected a non-empty string")),
            Some(v) => Err(bad(
                key,
                &format!("expected a string, found a {}", v.type_str()),
            )),
        }
    };
    let int = |key: &str, lo: i64, hi: i64| -> Result<Option<i64>> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if (lo..=hi).contains(i) => Ok(Some(*i)),
            Some(toml::Value::Integer(i)) => Err(bad(
                key,
                &format!("{i} is out of range; allowed {lo}..={hi}"),
            )),
            Some(v) => Err(bad(
                key,
                &format!("expected an integer, found a {}", v.type_str()),
            )),
        }
    };
    let prefix = |key: &str, default: &str| -> Result<String> {
        let p = string(key)?.unwrap_or_else(|| default.to_string());
        if p.contains(['+', '#'])
            || p.starts_with('/')
            || p.ends_with('/')
            || p.contains(char::is_whitespace)
        {
            return Err(bad(
                key,
                "a topic prefix has no `+`, `#`, spaces, or leading/trailing `/`",
            ));
        }
        Ok(p)
    };
    let base = config_path.parent().unwrap_or(Path::new("."));
    let tls = match table.get("tls") {
        None => None,
        Some(v) => tls::parse(v, base, &file.to_string())?,
    };
    let host = string("host")?.ok_or_else(|| {
        bad(
            "host",
            "missing: name the broker, e.g. host = \"localhost\"",
        )
    })?;
    let port = int("port", 1, 65535)?
        .map(|p| p as u16)
        .unwrap_or(if tls.is_some() { 8883 } else { 1883 });
    let diagnostics_interval = match table.get("diagnostics_interval") {
        None => Duration::from_secs(15),
        Some(v) => match v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) {
            Some(s) if (1.0..=3600.0).contains(&s) => Duration::from_secs_f64(s),
            Some(s) => {
                return Err(bad(
                    "diagnostics_interval",
                    &format!("{s} is out of range; allowed 1..=3600 seconds"),
                ))
            }
            None => {
                return Err(bad(
                    "diagnostics_interval",
                    &format!("expected seconds, found a {}", v.type_str()),
                ))
            }
        },
    };
    let password = match (string("password")?, string("password_file")?) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "password_file",
                "set either `password` or `password_file`, not both",
            ))
        }
        (Some(p), None) => Some(Secret(p)),
        (None, Some(f)) => {
            let path = base.join(f);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!("unable to read `mqtt.password_file` {} named in {file}: {e}; make it readable by the daemon", path.display())
            })?;
            let p = text.trim_end_matches(['\r', '\n']).to_string();
            if p.is_empty() {
                return Err(bad(
                    "password_file",
                    &format!("{} is empty", path.display()),
                ));
            }
            Some(Secret(p))
        }
        (None, None) => std::env::var(PASSWORD_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .map(Secret),
    };
    let username = string("username")?;
    if password.is_some() && username.is_none() {
        return Err(bad("username", "a password needs a username (MQTT 3.1.1)"));
    }
    let client_id = string("client_id")?;
    if client_id
        .as_deref()
        .is_some_and(|c| c.contains(['+', '#', '/']))
    {
        return Err(bad("client_id", "use letters, digits, `-` and `_`"));
    }
    Ok(MqttConfig {
        host,
        port,
        username,
        password,
        client_id,
        topic_prefix: prefix("topic_prefix", "promptcam")?,
        discovery_prefix: prefix("discovery_prefix", "homeassistant")?,
        spool_dir: string("spool_dir")?
            .map(|d| base.join(d))
            .unwrap_or_else(|| PathBuf::from("/var/lib/promptcam/spool")),
        spool_max_events: int("spool_max_events", 1, 10_000_000)?.unwrap_or(10_000) as usize,
        tls,
        diagnostics_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MqttConfig> {
        let v: toml::Value = toml::from_str(text).unwrap();
        parse_config(&v, Path::new("/etc/promptcam/promptcam.toml"))
    }

    #[test]
    fn defaults_and_errors() {
        let c = parse("host = \"broker\"").unwrap();
        assert_eq!(
            (c.port, c.topic_prefix.as_str(), c.discovery_prefix.as_str()),
            (1883, "promptcam", "homeassistant")
        );
        assert_eq!(c.spool_dir, PathBuf::from("/var/lib/promptcam/spool"));
        assert_eq!(c.spool_max_events, 10_000);
        let e = parse("host = \"b\"\nhots = 1").unwrap_err().to_string();
        assert!(e.contains("mqtt.hots") && e.contains(SEE), "{e}");
        let e = parse("host = \"b\"\nport = \"x\"").unwrap_err().to_string();
        assert!(e.contains("mqtt.port") && e.contains(SEE), "{e}");
        let e =
            parse("host = \"b\"\nusername = \"u\"\npassword = \"hunter2\"\npassword_file = \"p\"")
                .unwrap_err()
                .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let c = parse("host = \"b\"\nusername = \"u\"\npassword = \"hunter2\"").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let c = parse("host = \"b\"\nspool_dir = \"spool\"").unwrap();
        assert_eq!(c.spool_dir, PathBuf::from("/etc/promptcam/spool"));
    }

    #[test]
    fn password_file_is_read_and_never_shown() {
        let dir = std::env::temp_dir().join(format!("promptcam-mqtt-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "s3cret-pw\n").unwrap();
        let v: toml::Value =
            toml::from_str("host = \"b\"\nusername = \"u\"\npassword_file = \"pw\"").unwrap();
        let c = parse_config(&v, &dir.join("promptcam.toml")).unwrap();
        assert_eq!(c.password.as_ref().map(|p| p.expose()), Some("s3cret-pw"));
        let v: toml::Value =
            toml::from_str("host = \"b\"\nusername = \"u\"\npassword_file = \"missing\"").unwrap();
        let e = format!(
            "{:#}",
            parse_config(&v, &dir.join("promptcam.toml")).unwrap_err()
        );
        assert!(
            e.contains("mqtt.password_file") && e.contains("missing"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
