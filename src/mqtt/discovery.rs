//! Discovery: the topics this daemon publishes on and the Home Assistant MQTT discovery payloads
//! as typed serde structs (`payloads`), in both forms: one config per device (`cmps`, Home
//! Assistant 2024.12 and later, the default) or one per entity (every version). The daemon's device carries one connectivity `binary_sensor` fed by the
//! availability topic; each
//! camera is a device linked `via_device` to it, with a detection `event`, a last-detection
//! `image`, a pause `switch`, a stream `binary_sensor` and diagnostic `sensor`s, and per prompt a `binary_sensor` (ON/OFF),
//! a score `sensor` (in percent for CLIPSeg coverage), a snapshot `image` and a threshold `number`;
//! a camera's "Watch for" `text` adds run-time prompts, each with a "Stop watching" `button`.

use crate::config::CameraConfig;

mod payloads;
pub use payloads::{
    BinarySensor, Button, Common, Device, EventEntity, Image, Number, Origin, Sensor, Switch, Text,
};

/// Payload of the availability topic while connected (and of the `connectivity` sensor).
pub const ONLINE: &str = "online";
/// Payload of the last will and of a graceful stop.
pub const OFFLINE: &str = "offline";
pub const ON: &str = "ON";
pub const OFF: &str = "OFF";
/// What a `button` sends when pressed.
pub const PRESS: &str = "PRESS";

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
    pub fn command_filters(&self) -> [String; 6] {
        let base = format!("{}/{}", self.prefix, self.device_id);
        [
            format!("{base}/+/paused/set"),
            format!("{base}/+/+/threshold/set"),
            format!("{base}/+/prompts/add"),
            format!("{base}/+/prompts/remove"),
            format!("{base}/+/watch/set"),
            format!("{base}/+/+/stop"),
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
    /// A per-entity discovery config.
    pub fn config(&self, component: &str, object_id: &str) -> String {
        format!("{}/{component}/{object_id}/config", self.discovery_prefix)
    }
    /// A device's discovery config (the device form).
    pub fn device_config(&self, device: &str) -> String {
        format!("{}/device/{device}/config", self.discovery_prefix)
    }
    /// The phrase last typed into a camera's "Watch for" (retained); typing goes to `.../watch/set`.
    pub fn watch(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/watch", self.prefix, self.device_id)
    }
    /// A run-time prompt's "Stop watching" button presses.
    pub fn stop(&self, camera: &str, prompt: &str) -> String {
        format!("{}/{}/{camera}/{prompt}/stop", self.prefix, self.device_id)
    }
    /// Adds a run-time prompt to a camera (JSON, or a prompt's text).
    pub fn prompts_add(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/prompts/add", self.prefix, self.device_id)
    }
    /// The camera's run-time prompts, as JSON (retained).
    pub fn prompts(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/prompts", self.prefix, self.device_id)
    }
    /// Why a run-time prompt change was refused (JSON, not retained).
    pub fn prompts_error(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/prompts/error", self.prefix, self.device_id)
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

/// Every discovery message of this daemon in the per-entity form, in a stable order.
pub fn messages(
    topics: &Topics,
    cameras: &[CameraConfig],
) -> Result<Vec<Message>, serde_json::Error> {
    Ok(entity_messages(topics, &components(topics, cameras)?))
}

/// One entity of the discovery: its platform, object id, the device it belongs to (the `dev`
/// block's first identifier) and its per-entity payload (with `dev` and `o`).
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    pub platform: &'static str,
    pub id: String,
    pub device: String,
    pub config: serde_json::Value,
}

/// Every entity of this daemon, in a stable order: the daemon's connectivity sensor; per
/// camera its detection `event`, last-detection `image`, pause `switch`, stream
/// `binary_sensor`, diagnostic sensors and "Watch for" `text`; per prompt its state
/// `binary_sensor`, score `sensor`, snapshot `image` and threshold `number`, and for a
/// run-time prompt its "Stop watching" `button`.
pub fn components(
    topics: &Topics,
    cameras: &[CameraConfig],
) -> Result<Vec<Component>, serde_json::Error> {
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
    let mut push = |platform: &'static str, id: &str, payload: serde_json::Value| {
        let device = payload["dev"]["identifiers"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.push(Component {
            platform,
            id: id.to_string(),
            device,
            config: payload,
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
    push("binary_sensor", &status_id, serde_json::to_value(&status)?);
    for cam in cameras {
        let dev = || camera_device(dev_id, cam);
        let cam_id = format!("{dev_id}_{}", cam.id);
        let id = format!("{cam_id}_detection");
        let event = EventEntity {
            common: common("event", &id, "Detection".into(), dev(), true, None),
            state_topic: topics.camera_event(&cam.id),
            event_types: EVENT_TYPES.iter().map(|t| t.to_string()).collect(),
        };
        push("event", &id, serde_json::to_value(&event)?);
        let id = format!("{cam_id}_last_detection");
        let image = Image {
            common: common("image", &id, "Last detection".into(), dev(), true, None),
            image_topic: topics.camera_snapshot(&cam.id),
            content_type: "image/jpeg".into(),
        };
        push("image", &id, serde_json::to_value(&image)?);
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
        push("switch", &id, serde_json::to_value(&pause)?);
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
        push("binary_sensor", &id, serde_json::to_value(&stream)?);
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
            push("sensor", &id, serde_json::to_value(&sensor)?);
        }
        let id = format!("{cam_id}_watch");
        let watch = Text {
            common: common("text", &id, "Watch for".into(), dev(), true, None),
            state_topic: topics.watch(&cam.id),
            command_topic: topics.set(&topics.watch(&cam.id)),
            min: 0,
            max: 255,
            mode: "text".into(),
            icon: "mdi:eye-plus-outline".into(),
        };
        push("text", &id, serde_json::to_value(&watch)?);
        for p in &cam.prompts {
            let id = format!("{cam_id}_{}", p.id);
            let state = BinarySensor {
                common: common("binary_sensor", &id, p.name.clone(), dev(), true, None),
                state_topic: topics.state(&cam.id, &p.id),
                payload_on: ON.into(),
                payload_off: OFF.into(),
                device_class: p.device_class.clone(),
            };
            push("binary_sensor", &id, serde_json::to_value(&state)?);
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
            push("sensor", &score_id, serde_json::to_value(&score)?);
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
            push("image", &image_id, serde_json::to_value(&image)?);
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
            push("number", &threshold_id, serde_json::to_value(&threshold)?);
            if p.runtime.is_some() {
                let stop_id = format!("{id}_stop");
                let stop = Button {
                    common: common(
                        "button",
                        &stop_id,
                        format!("Stop watching {}", p.name),
                        dev(),
                        true,
                        None,
                    ),
                    command_topic: topics.stop(&cam.id, &p.id),
                    payload_press: PRESS.into(),
                    icon: "mdi:eye-off-outline".into(),
                };
                push("button", &stop_id, serde_json::to_value(&stop)?);
            }
        }
    }
    Ok(out)
}

/// The per-entity form: one retained config per entity at
/// `<discovery_prefix>/<platform>/<object_id>/config` (every Home Assistant version).
pub fn entity_messages(topics: &Topics, components: &[Component]) -> Vec<Message> {
    components
        .iter()
        .map(|c| Message {
            topic: topics.config(c.platform, &c.id),
            payload: c.config.to_string(),
        })
        .collect()
}

/// The device form (Home Assistant 2024.12 and later): one retained config per device at
/// `<discovery_prefix>/device/<device>/config` with `dev`, `o` and its components in `cmps`.
/// Each of `gone` (entities published before and not now) is sent once as `{"p": platform}`,
/// which removes it, as Home Assistant documents; a device with nothing left is cleared.
pub fn device_messages(
    topics: &Topics,
    components: &[Component],
    gone: &[Component],
) -> Vec<Message> {
    let mut devices: Vec<&str> = vec![];
    for c in components.iter().chain(gone) {
        if !devices.contains(&c.device.as_str()) {
            devices.push(&c.device);
        }
    }
    devices
        .into_iter()
        .map(|device| {
            let topic = topics.device_config(device);
            let mine: Vec<&Component> = components.iter().filter(|c| c.device == device).collect();
            let Some(first) = mine.first() else {
                // every entity of the device went: clearing its config removes the device
                return Message {
                    topic,
                    payload: String::new(),
                };
            };
            let mut cmps = serde_json::Map::new();
            for c in &mine {
                let mut config = c.config.clone();
                if let Some(o) = config.as_object_mut() {
                    o.remove("dev");
                    o.remove("o");
                    o.insert("p".into(), c.platform.into());
                }
                cmps.insert(c.id.clone(), config);
            }
            for c in gone.iter().filter(|c| c.device == device) {
                if !cmps.contains_key(&c.id) {
                    cmps.insert(c.id.clone(), serde_json::json!({ "p": c.platform }));
                }
            }
            let payload = serde_json::json!({
                "dev": first.config["dev"],
                "o": first.config["o"],
                "cmps": cmps,
                "qos": 1,
            });
            Message {
                topic,
                payload: payload.to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
