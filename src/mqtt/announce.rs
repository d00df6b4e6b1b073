//! Announce: the discovery messages that take Home Assistant from what it was last told to what
//! runs now — after a (re)connect or Home Assistant's birth (everything again), when run-time
//! prompts come and go (what changed, with removed entities cleared as Home Assistant
//! documents: an empty config in the per-entity form, `{"p": platform}` in the device form), and
//! when the form changed since the last run (`migrate_discovery` on the old topics, the new
//! configs, then the old topics cleared, so that no entity is duplicated or orphaned). What was
//! published is recorded next to the spool (`discovery-published`), so a restart knows.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::discovery::{device_messages, entity_messages, Component, Topics};
use crate::config::DiscoveryForm;

/// The record's file name in the spool directory (not `*.json`: the spool owns those).
const RECORD: &str = "discovery-published";

/// What Home Assistant was told: the form and the entities.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub form: DiscoveryForm,
    pub components: Vec<Component>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    form: DiscoveryForm,
    /// (platform, object id, device).
    components: Vec<(String, String, String)>,
}

/// The record's path in a spool directory.
pub fn record_path(spool: &Path) -> PathBuf {
    spool.join(RECORD)
}

/// Reads what an earlier run published; None when it left no readable record.
pub fn load(path: &Path) -> Option<Published> {
    let r: Record = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let components = r
        .components
        .into_iter()
        .filter_map(|(platform, id, device)| {
            Some(Component {
                platform: platform_name(&platform)?,
                id,
                device,
                config: serde_json::Value::Null,
            })
        })
        .collect();
    Some(Published {
        form: r.form,
        components,
    })
}

/// Records what was published (a failure is logged: the next start then clears less).
pub fn save(path: &Path, p: &Published) {
    let r = Record {
        form: p.form,
        components: p
            .components
            .iter()
            .map(|c| (c.platform.to_string(), c.id.clone(), c.device.clone()))
            .collect(),
    };
    let result = serde_json::to_vec(&r)
        .map_err(anyhow::Error::from)
        .and_then(|b| crate::model::identity::write_atomically(path, &b));
    if let Err(e) = result {
        tracing::warn!("unable to record the discovery published: {e:#}; a restart may leave removed entities in Home Assistant");
    }
}

/// The platforms this daemon publishes (a record names them as text).
fn platform_name(s: &str) -> Option<&'static str> {
    [
        "binary_sensor",
        "sensor",
        "image",
        "event",
        "switch",
        "number",
        "text",
        "button",
    ]
    .into_iter()
    .find(|p| *p == s)
}

fn same_entity(a: &Component, b: &Component) -> bool {
    a.platform == b.platform && a.id == b.id
}

/// The topics a set of entities lives on in a form.
fn topics_of(topics: &Topics, p: &Published) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for c in &p.components {
        let t = match p.form {
            DiscoveryForm::Entity => topics.config(c.platform, &c.id),
            DiscoveryForm::Device => topics.device_config(&c.device),
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// The retained messages (topic, payload) that take Home Assistant from `before` to `now`;
/// with `full`, every config is sent again, else only those that changed.
pub fn transition(
    topics: &Topics,
    before: Option<&Published>,
    now: &Published,
    full: bool,
) -> Vec<(String, Vec<u8>)> {
    let render = |p: &Published, gone: &[Component]| match p.form {
        DiscoveryForm::Entity => entity_messages(topics, &p.components),
        DiscoveryForm::Device => device_messages(topics, &p.components, gone),
    };
    let mut out: Vec<(String, Vec<u8>)> = vec![];
    match before {
        Some(b) if b.form != now.form => {
            let old = topics_of(topics, b);
            for t in &old {
                out.push((t.clone(), br#"{"migrate_discovery": true}"#.to_vec()));
            }
            let new = render(now, &[]);
            for m in &new {
                out.push((m.topic.clone(), m.payload.clone().into_bytes()));
            }
            for t in old {
                if !new.iter().any(|m| m.topic == t) {
                    out.push((t, vec![]));
                }
            }
        }
        _ => {
            let gone: Vec<Component> = before
                .map(|b| {
                    b.components
                        .iter()
                        .filter(|c| !now.components.iter().any(|n| same_entity(c, n)))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let earlier = before.map(|b| render(b, &[])).unwrap_or_default();
            for m in render(now, &gone) {
                let unchanged = earlier
                    .iter()
                    .any(|e| e.topic == m.topic && e.payload == m.payload);
                if full || !unchanged {
                    out.push((m.topic, m.payload.into_bytes()));
                }
            }
            if now.form == DiscoveryForm::Entity {
                for c in &gone {
                    out.push((topics.config(c.platform, &c.id), vec![]));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topics() -> Topics {
        Topics {
            prefix: "promptcam".into(),
            device_id: "pi".into(),
            discovery_prefix: "homeassistant".into(),
        }
    }

    fn comp(platform: &'static str, id: &str, device: &str) -> Component {
        Component {
            platform,
            id: id.into(),
            device: device.into(),
            config: json!({"name": id, "dev": {"identifiers": [device]}, "o": {"name": "promptcam"}}),
        }
    }

    fn published(form: DiscoveryForm, c: &[Component]) -> Published {
        Published {
            form,
            components: c.to_vec(),
        }
    }

    #[test]
    fn a_removed_entity_is_cleared_in_either_form() {
        let t = topics();
        let (a, b) = (
            comp("binary_sensor", "cam_a", "cam"),
            comp("button", "cam_a_stop", "cam"),
        );
        let before = published(DiscoveryForm::Device, &[a.clone(), b.clone()]);
        let now = published(DiscoveryForm::Device, std::slice::from_ref(&a));
        let out = transition(&t, Some(&before), &now, false);
        assert_eq!(out.len(), 1, "one device config");
        assert_eq!(out[0].0, "homeassistant/device/cam/config");
        let v: serde_json::Value = serde_json::from_slice(&out[0].1).unwrap();
        assert_eq!(v["cmps"]["cam_a_stop"], json!({"p": "button"}), "{v}");
        assert_eq!(v["cmps"]["cam_a"]["p"], "binary_sensor");
        assert!(v["cmps"]["cam_a"].get("dev").is_none() && v["dev"]["identifiers"][0] == "cam");
        // unchanged: nothing to send, unless everything is sent again
        assert!(transition(&t, Some(&now), &now, false).is_empty());
        let again = transition(&t, Some(&now), &now, true);
        assert_eq!(again.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&again[0].1).unwrap();
        assert!(
            v["cmps"].get("cam_a_stop").is_none(),
            "no tombstone twice: {v}"
        );

        let before = published(DiscoveryForm::Entity, &[a.clone(), b.clone()]);
        let now = published(DiscoveryForm::Entity, std::slice::from_ref(&a));
        let out = transition(&t, Some(&before), &now, false);
        assert_eq!(
            out,
            vec![("homeassistant/button/cam_a_stop/config".to_string(), vec![])]
        );
    }

    #[test]
    fn switching_forms_migrates_then_clears_the_old_topics() {
        let t = topics();
        let c = [
            comp("binary_sensor", "cam_a", "cam"),
            comp("sensor", "pi_x", "pi"),
        ];
        let before = published(DiscoveryForm::Entity, &c);
        let now = published(DiscoveryForm::Device, &c);
        let out = transition(&t, Some(&before), &now, true);
        let topics: Vec<(&str, usize)> = out.iter().map(|(t, p)| (t.as_str(), p.len())).collect();
        assert_eq!(topics[0].0, "homeassistant/binary_sensor/cam_a/config");
        assert_eq!(out[0].1, br#"{"migrate_discovery": true}"#.to_vec());
        assert_eq!(topics[1].0, "homeassistant/sensor/pi_x/config");
        assert_eq!(
            (topics[2].0, topics[3].0),
            (
                "homeassistant/device/cam/config",
                "homeassistant/device/pi/config"
            )
        );
        assert_eq!(
            &topics[4..],
            &[
                ("homeassistant/binary_sensor/cam_a/config", 0),
                ("homeassistant/sensor/pi_x/config", 0)
            ]
        );
        // and back
        let out = transition(&t, Some(&now), &before, true);
        assert_eq!(out[0].0, "homeassistant/device/cam/config");
        assert_eq!(
            out.last().unwrap(),
            &("homeassistant/device/pi/config".to_string(), vec![])
        );
    }

    #[test]
    fn the_record_survives_a_restart() {
        let d = std::env::temp_dir().join(format!("promptcam-announce-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let p = published(DiscoveryForm::Device, &[comp("text", "cam_watch", "cam")]);
        save(&record_path(&d), &p);
        let back = load(&record_path(&d)).expect("a record");
        assert_eq!(
            (back.form, back.components[0].platform),
            (DiscoveryForm::Device, "text")
        );
        assert_eq!(back.components[0].id, "cam_watch");
        let _ = std::fs::remove_dir_all(&d);
    }
}
