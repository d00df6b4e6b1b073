//! Discovery: the topics this daemon publishes on and the Home Assistant MQTT discovery payloads
//! (per-entity topics, which every Home Assistant version accepts), as typed serde structs. Per
//! camera and prompt: a `binary_sensor` (the ON/OFF state) and a `sensor` (the smoothed score),
//! both on a device per camera linked `via_device` to the daemon's device, which carries one
//! connectivity `binary_sensor` fed by the availability topic.

use serde::Serialize;

use crate::config::CameraConfig;

/// Payload of the availability topic while connected (and of the `connectivity` sensor).
pub const ONLINE: &str = "online";
/// Payload of the last will and of a graceful stop.
pub const OFFLINE: &str = "offline";
pub const ON: &str = "ON";
pub const OFF: &str = "OFF";

/// Where everything of one daemon goes: `<prefix>/<device_id>/...`.
#[derive(Clone, Debug)]
pub struct Topics {
    pub prefix: String,
    pub device_id: String,
    pub discovery_prefix: String,
}

impl Topics {
    pub fn availability(&self) -> String {
        format!("{}/{}/availability", self.prefix, self.device_id)
    }
    pub fn events(&self) -> String {
        format!("{}/{}/events", self.prefix, self.device_id)
    }
    pub fn state(&self, camera: &str, prompt: &str) -> String {
        format!("{}/{}/{camera}/{prompt}/state", self.prefix, self.device_id)
    }
    pub fn score(&self, camera: &str, prompt: &str) -> String {
        format!("{}/{}/{camera}/{prompt}/score", self.prefix, self.device_id)
    }
    /// The annotated JPEG of the frame that started (or best updated) the prompt's event.
    pub fn snapshot(&self, camera: &str, prompt: &str) -> String {
        format!("{}/{}/{camera}/{prompt}/snapshot", self.prefix, self.device_id)
    }
    /// Home Assistant's birth/last-will topic.
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }
    fn config(&self, component: &str, object_id: &str) -> String {
        format!("{}/{component}/{object_id}/config", self.discovery_prefix)
    }
}

/// The `dev` block: which Home Assistant device an entity belongs to.
#[derive(Clone, Debug, Serialize)]
pub struct Device {
    pub identifiers: Vec<String>,
    pub name: String,
    pub manufacturer: String,
    pub model: String,
    pub sw_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_device: Option<String>,
}

/// The origin block `o`: who published the discovery message.
#[derive(Clone, Debug, Serialize)]
pub struct Origin {
    pub name: String,
    pub sw_version: String,
}

/// A `binary_sensor` discovery payload.
#[derive(Clone, Debug, Serialize)]
pub struct BinarySensor {
    pub name: String,
    pub unique_id: String,
    /// `binary_sensor.<object_id>`: Home Assistant 2025.10 and later.
    pub default_entity_id: String,
    /// Deprecated in Home Assistant 2025.10, still sent for older installations.
    pub object_id: String,
    pub state_topic: String,
    pub payload_on: String,
    pub payload_off: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_available: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_not_available: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_category: Option<String>,
    pub qos: u8,
    pub dev: Device,
    pub o: Origin,
}

/// A `sensor` discovery payload (the score).
#[derive(Clone, Debug, Serialize)]
pub struct Sensor {
    pub name: String,
    pub unique_id: String,
    pub default_entity_id: String,
    pub object_id: String,
    pub state_topic: String,
    pub state_class: String,
    pub suggested_display_precision: u8,
    pub availability_topic: String,
    pub payload_available: String,
    pub payload_not_available: String,
    pub qos: u8,
    pub dev: Device,
    pub o: Origin,
}

/// One retained discovery message: topic and JSON payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: String,
}

fn origin() -> Origin {
    Origin {
        name: "promptcam".into(),
        sw_version: env!("CARGO_PKG_VERSION").into(),
    }
}

fn daemon_device(device_id: &str) -> Device {
    Device {
        identifiers: vec![device_id.to_string()],
        name: format!("promptcam {device_id}"),
        manufacturer: "promptcam".into(),
        model: "promptcam daemon".into(),
        sw_version: env!("CARGO_PKG_VERSION").into(),
        via_device: None,
    }
}

fn camera_device(device_id: &str, camera: &CameraConfig) -> Device {
    Device {
        identifiers: vec![format!("{device_id}_{}", camera.id)],
        name: camera.name.clone(),
        manufacturer: "promptcam".into(),
        model: "promptcam camera".into(),
        sw_version: env!("CARGO_PKG_VERSION").into(),
        via_device: Some(device_id.to_string()),
    }
}

/// Every discovery message of this daemon, in a stable order: the daemon's connectivity sensor,
/// then per camera and prompt the state `binary_sensor` and the score `sensor`.
pub fn messages(topics: &Topics, cameras: &[CameraConfig]) -> Result<Vec<Message>, serde_json::Error> {
    let dev_id = &topics.device_id;
    let mut out = vec![];
    let status_id = format!("{dev_id}_status");
    let status = BinarySensor {
        name: "Status".into(),
        unique_id: status_id.clone(),
        default_entity_id: format!("binary_sensor.{status_id}"),
        object_id: status_id.clone(),
        state_topic: topics.availability(),
        payload_on: ONLINE.into(),
        payload_off: OFFLINE.into(),
        device_class: Some("connectivity".into()),
        availability_topic: None,
        payload_available: None,
        payload_not_available: None,
        entity_category: Some("diagnostic".into()),
        qos: 1,
        dev: daemon_device(dev_id),
        o: origin(),
    };
    out.push(Message { topic: topics.config("binary_sensor", &status_id), payload: serde_json::to_string(&status)? });
    for cam in cameras {
        for p in &cam.prompts {
            let id = format!("{dev_id}_{}_{}", cam.id, p.id);
            let state = BinarySensor {
                name: p.name.clone(),
                unique_id: id.clone(),
                default_entity_id: format!("binary_sensor.{id}"),
                object_id: id.clone(),
                state_topic: topics.state(&cam.id, &p.id),
                payload_on: ON.into(),
                payload_off: OFF.into(),
                device_class: p.device_class.clone(),
                availability_topic: Some(topics.availability()),
                payload_available: Some(ONLINE.into()),
                payload_not_available: Some(OFFLINE.into()),
                entity_category: None,
                qos: 1,
                dev: camera_device(dev_id, cam),
                o: origin(),
            };
            out.push(Message { topic: topics.config("binary_sensor", &id), payload: serde_json::to_string(&state)? });
            let score_id = format!("{id}_score");
            let score = Sensor {
                name: format!("{} score", p.name),
                unique_id: score_id.clone(),
                default_entity_id: format!("sensor.{score_id}"),
                object_id: score_id.clone(),
                state_topic: topics.score(&cam.id, &p.id),
                state_class: "measurement".into(),
                suggested_display_precision: 2,
                availability_topic: topics.availability(),
                payload_available: ONLINE.into(),
                payload_not_available: OFFLINE.into(),
                qos: 1,
                dev: camera_device(dev_id, cam),
                o: origin(),
            };
            out.push(Message { topic: topics.config("sensor", &score_id), payload: serde_json::to_string(&score)? });
        }
    }
    Ok(out)
}
