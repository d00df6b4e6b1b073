//! Payloads: the Home Assistant discovery payloads as typed serde structs — the device and
//! origin blocks, the fields every entity carries, and one struct per entity kind.

use serde::Serialize;

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

/// What every discovery payload carries: names, ids, availability, device and origin.
#[derive(Clone, Debug, Serialize)]
pub struct Common {
    pub name: String,
    pub unique_id: String,
    /// `<component>.<object_id>`: Home Assistant 2025.10 and later.
    pub default_entity_id: String,
    /// Deprecated in Home Assistant 2025.10, still sent for older installations.
    pub object_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_available: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_not_available: Option<String>,
    /// `diagnostic` or `config`; None for primary entities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_category: Option<String>,
    pub qos: u8,
    pub dev: Device,
    pub o: Origin,
}

/// A `binary_sensor` discovery payload.
#[derive(Clone, Debug, Serialize)]
pub struct BinarySensor {
    #[serde(flatten)]
    pub common: Common,
    pub state_topic: String,
    pub payload_on: String,
    pub payload_off: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<String>,
}

/// A `sensor` discovery payload (a prompt's score, or a camera's diagnostic counter).
#[derive(Clone, Debug, Serialize)]
pub struct Sensor {
    #[serde(flatten)]
    pub common: Common,
    pub state_topic: String,
    /// Extracts the value from a JSON payload (the diagnostics topic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_template: Option<String>,
    pub state_class: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_of_measurement: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_display_precision: Option<u8>,
}

/// An `image` discovery payload: the JPEG published on `image_topic`.
#[derive(Clone, Debug, Serialize)]
pub struct Image {
    #[serde(flatten)]
    pub common: Common,
    pub image_topic: String,
    pub content_type: String,
}

/// An `event` discovery payload: JSON with an `event_type` key on `state_topic`; the other keys
/// become the event's attributes.
#[derive(Clone, Debug, Serialize)]
pub struct EventEntity {
    #[serde(flatten)]
    pub common: Common,
    pub state_topic: String,
    pub event_types: Vec<String>,
}

/// A `switch` discovery payload: Home Assistant sends `ON`/`OFF` on `command_topic`, the daemon
/// confirms on `state_topic`.
#[derive(Clone, Debug, Serialize)]
pub struct Switch {
    #[serde(flatten)]
    pub common: Common,
    pub state_topic: String,
    pub command_topic: String,
    pub payload_on: String,
    pub payload_off: String,
    pub icon: String,
}

/// A `number` discovery payload: Home Assistant sends the value on `command_topic`, the daemon
/// confirms the value in force on `state_topic`.
#[derive(Clone, Debug, Serialize)]
pub struct Number {
    #[serde(flatten)]
    pub common: Common,
    pub state_topic: String,
    pub command_topic: String,
    pub min: f64,
    pub max: f64,
    pub step: f64,
    pub mode: String,
}

/// A `text` discovery payload: Home Assistant sends what the user typed on `command_topic`.
#[derive(Clone, Debug, Serialize)]
pub struct Text {
    #[serde(flatten)]
    pub common: Common,
    pub state_topic: String,
    pub command_topic: String,
    pub min: u32,
    pub max: u32,
    pub mode: String,
    pub icon: String,
}

/// A `button` discovery payload: Home Assistant sends `payload_press` on `command_topic`.
#[derive(Clone, Debug, Serialize)]
pub struct Button {
    #[serde(flatten)]
    pub common: Common,
    pub command_topic: String,
    pub payload_press: String,
    pub icon: String,
}
