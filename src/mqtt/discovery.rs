//! Discovery: the topics this daemon publishes on and the Home Assistant MQTT discovery payloads
//! (per-entity topics, which every Home Assistant version accepts), as typed serde structs
//! (`payloads`). The daemon's device carries one connectivity `binary_sensor` fed by the
//! availability topic; each
//! camera is a device linked `via_device` to it, with a detection `event`, a last-detection
//! `image`, a pause `switch`, a stream `binary_sensor` and diagnostic `sensor`s, and per prompt a `binary_sensor` (ON/OFF),
//! a score `sensor` (in percent for CLIPSeg coverage), a snapshot `image` and a threshold `number`.

use crate::config::CameraConfig;

mod payloads;
pub use payloads::{
    BinarySensor, Common, Device, EventEntity, Image, Number, Origin, Sensor, Switch,
};

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
        format!(
            "{}/{}/{camera}/{prompt}/snapshot",
            self.prefix, self.device_id
        )
    }
    /// The camera's last detection: the snapshot of whichever prompt's event came last (retained).
    pub fn camera_snapshot(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/snapshot", self.prefix, self.device_id)
    }
    /// A prompt's `on` threshold in force (retained); commands go to `.../threshold/set`.
    pub fn threshold(&self, camera: &str, prompt: &str) -> String {
        format!(
            "{}/{}/{camera}/{prompt}/threshold",
            self.prefix, self.device_id
        )
    }
    /// `ON` while the camera's detection is paused (retained); commands go to `.../paused/set`.
    pub fn paused(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/paused", self.prefix, self.device_id)
    }
    /// The command topic of a state topic.
    pub fn set(&self, state_topic: &str) -> String {
        format!("{state_topic}/set")
    }
    /// The filters that match every command topic of this daemon.
    pub fn command_filters(&self) -> [String; 2] {
        [
            format!("{}/{}/+/paused/set", self.prefix, self.device_id),
            format!("{}/{}/+/+/threshold/set", self.prefix, self.device_id),
        ]
    }
    /// Home Assistant's event entity of a camera: `{"event_type": ..., ...}`, not retained.
    pub fn camera_event(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/event", self.prefix, self.device_id)
    }
    /// `online` while the camera delivers frames, else `offline` (retained).
    pub fn stream(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/stream", self.prefix, self.device_id)
    }
    /// The camera's counters as JSON (retained).
    pub fn diagnostics(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/diagnostics", self.prefix, self.device_id)
    }
    /// Home Assistant's birth/last-will topic.
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }
    fn config(&self, component: &str, object_id: &str) -> String {
        format!("{}/{component}/{object_id}/config", self.discovery_prefix)
    }
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

/// The event types of the per-camera `event` entity (the `type` of the events).
pub const EVENT_TYPES: [&str; 3] = ["start", "update", "end"];
/// One per-camera diagnostic sensor, read from the diagnostics JSON.
struct Diagnostic {
    /// Unique id suffix and JSON key.
    key: &'static str,
    name: &'static str,
    unit: Option<&'static str>,
    device_class: Option<&'static str>,
    state_class: &'static str,
    precision: Option<u8>,
}

const DIAGNOSTICS: [Diagnostic; 3] = [
    Diagnostic {
        key: "inference_ms",
        name: "Inference time",
        unit: Some("ms"),
        device_class: Some("duration"),
        state_class: "measurement",
        precision: Some(1),
    },
    Diagnostic {
        key: "analysed_fps",
        name: "Analysed fps",
        unit: Some("fps"),
        device_class: None,
        state_class: "measurement",
        precision: Some(2),
    },
    Diagnostic {
        key: "dropped_frames",
        name: "Dropped frames",
        unit: None,
        device_class: None,
        state_class: "total_increasing",
        precision: None,
    },
];

/// Every discovery message of this daemon, in a stable order: the daemon's connectivity sensor;
/// per camera its detection `event`, last-detection `image`, pause `switch`, stream `binary_sensor` and diagnostic
/// sensors; per prompt its state `binary_sensor`, score `sensor`, snapshot `image` and
/// threshold `number`.
pub fn messages(
    topics: &Topics,
    cameras: &[CameraConfig],
) -> Result<Vec<Message>, serde_json::Error> {
    let dev_id = &topics.device_id;
    let mut out = vec![];
    let common = |component: &str,
                  id: &str,
                  name: String,
                  dev: Device,
                  available: bool,
                  category: Option<&str>| Common {
        name,
        unique_id: id.to_string(),
        default_entity_id: format!("{component}.{id}"),
        object_id: id.to_string(),
        availability_topic: available.then(|| topics.availability()),
        payload_available: available.then(|| ONLINE.to_string()),
        payload_not_available: available.then(|| OFFLINE.to_string()),
        entity_category: category.map(str::to_string),
        qos: 1,
        dev,
        o: origin(),
    };
    let mut push = |component: &str, id: &str, payload: String| {
        out.push(Message {
            topic: topics.config(component, id),
            payload,
        })
    };
    let status_id = format!("{dev_id}_status");
    let status = BinarySensor {
        // the availability topic itself: no availability of its own, it shows `offline`
        common: common(
            "binary_sensor",
            &status_id,
            "Status".into(),
            daemon_device(dev_id),
            false,
            Some("diagnostic"),
        ),
        state_topic: topics.availability(),
        payload_on: ONLINE.into(),
        payload_off: OFFLINE.into(),
        device_class: Some("connectivity".into()),
    };
    push("binary_sensor", &status_id, serde_json::to_string(&status)?);
    for cam in cameras {
        let dev = || camera_device(dev_id, cam);
        let cam_id = format!("{dev_id}_{}", cam.id);
        let id = format!("{cam_id}_detection");
        let event = EventEntity {
            common: common("event", &id, "Detection".into(), dev(), true, None),
            state_topic: topics.camera_event(&cam.id),
            event_types: EVENT_TYPES.iter().map(|t| t.to_string()).collect(),
        };
        push("event", &id, serde_json::to_string(&event)?);
        let id = format!("{cam_id}_last_detection");
        let image = Image {
            common: common("image", &id, "Last detection".into(), dev(), true, None),
            image_topic: topics.camera_snapshot(&cam.id),
            content_type: "image/jpeg".into(),
        };
        push("image", &id, serde_json::to_string(&image)?);
        let id = format!("{cam_id}_paused");
        let pause = Switch {
            common: common(
                "switch",
                &id,
                "Pause detection".into(),
                dev(),
                true,
                Some("config"),
            ),
            state_topic: topics.paused(&cam.id),
            command_topic: topics.set(&topics.paused(&cam.id)),
            payload_on: ON.into(),
            payload_off: OFF.into(),
            icon: "mdi:pause-circle-outline".into(),
        };
        push("switch", &id, serde_json::to_string(&pause)?);
        let id = format!("{cam_id}_stream");
        let stream = BinarySensor {
            common: common(
                "binary_sensor",
                &id,
                "Stream".into(),
                dev(),
                true,
                Some("diagnostic"),
            ),
            state_topic: topics.stream(&cam.id),
            payload_on: ONLINE.into(),
            payload_off: OFFLINE.into(),
            device_class: Some("connectivity".into()),
        };
        push("binary_sensor", &id, serde_json::to_string(&stream)?);
        for d in &DIAGNOSTICS {
            let id = format!("{cam_id}_{}", d.key);
            let sensor = Sensor {
                common: common(
                    "sensor",
                    &id,
                    d.name.into(),
                    dev(),
                    true,
                    Some("diagnostic"),
                ),
                state_topic: topics.diagnostics(&cam.id),
                value_template: Some(format!("{{{{ value_json.{} }}}}", d.key)),
                state_class: d.state_class.into(),
                device_class: d.device_class.map(str::to_string),
                unit_of_measurement: d.unit.map(str::to_string),
                suggested_display_precision: d.precision,
            };
            push("sensor", &id, serde_json::to_string(&sensor)?);
        }
        for p in &cam.prompts {
            let id = format!("{cam_id}_{}", p.id);
            let state = BinarySensor {
                common: common("binary_sensor", &id, p.name.clone(), dev(), true, None),
                state_topic: topics.state(&cam.id, &p.id),
                payload_on: ON.into(),
                payload_off: OFF.into(),
                device_class: p.device_class.clone(),
            };
            push("binary_sensor", &id, serde_json::to_string(&state)?);
            let score_id = format!("{id}_score");
            // a CLIPSeg score is the fraction of the region its mask covers: shown as percent
            let coverage = p.model.has_masks();
            let score = Sensor {
                common: common(
                    "sensor",
                    &score_id,
                    format!("{} score", p.name),
                    dev(),
                    true,
                    None,
                ),
                state_topic: topics.score(&cam.id, &p.id),
                value_template: coverage
                    .then(|| "{{ (value | float * 100) | round(1) }}".to_string()),
                state_class: "measurement".into(),
                device_class: None,
                unit_of_measurement: coverage.then(|| "%".to_string()),
                suggested_display_precision: Some(if coverage { 1 } else { 2 }),
            };
            push("sensor", &score_id, serde_json::to_string(&score)?);
            let image_id = format!("{id}_snapshot");
            let image = Image {
                common: common(
                    "image",
                    &image_id,
                    format!("{} snapshot", p.name),
                    dev(),
                    true,
                    None,
                ),
                image_topic: topics.snapshot(&cam.id, &p.id),
                content_type: "image/jpeg".into(),
            };
            push("image", &image_id, serde_json::to_string(&image)?);
            let threshold_id = format!("{id}_threshold");
            let threshold = Number {
                common: common(
                    "number",
                    &threshold_id,
                    format!("{} threshold", p.name),
                    dev(),
                    true,
                    Some("config"),
                ),
                state_topic: topics.threshold(&cam.id, &p.id),
                command_topic: topics.set(&topics.threshold(&cam.id, &p.id)),
                min: 0.0,
                max: 1.0,
                step: 0.01,
                mode: "slider".into(),
            };
            push("number", &threshold_id, serde_json::to_string(&threshold)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
