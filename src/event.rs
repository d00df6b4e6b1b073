//! Event: what the decide stage emits when a prompted state starts, improves or ends — the flow
//! that is published (MQTT) or printed (stdout JSON lines when no broker is configured).

use std::time::SystemTime;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Start,
    Update,
    End,
}

/// One event, serialized as `{type, camera, prompt, score, box?, started_at, ended_at?, id}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub camera: String,
    pub prompt: String,
    /// The smoothed score that caused the event.
    pub score: f32,
    /// Best box of an OWL-ViT prompt, in frame pixels.
    #[serde(rename = "box", skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    /// RFC 3339, UTC.
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Stable across the start/update/end of one event, unique across events and restarts.
    pub id: String,
    /// start/update: the frame with the prompt's box drawn, as JPEG (published on the prompt's
    /// snapshot topic, not in the event JSON).
    #[serde(skip)]
    pub snapshot: Option<std::sync::Arc<Vec<u8>>>,
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// An event id: start time in ms, camera and prompt ids — unique per (camera, prompt) since one
/// prompt has at most one open event, and readable in logs.
pub fn event_id(started: SystemTime, camera: &str, prompt: &str) -> String {
    let ms = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms}-{camera}-{prompt}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn serializes_the_documented_shape() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let e = Event {
            kind: EventKind::Start,
            camera: "driveway".into(),
            prompt: "a_person".into(),
            score: 0.75,
            bbox: Some([1.0, 2.0, 3.0, 4.0]),
            started_at: rfc3339(t),
            ended_at: None,
            id: event_id(t, "driveway", "a_person"),
            snapshot: Some(std::sync::Arc::new(vec![0xff, 0xd8])),
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "start");
        assert_eq!(v["box"], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
        assert_eq!(v["started_at"], "2023-11-14T22:13:20.123Z");
        assert!(v.get("ended_at").is_none() && v.get("snapshot").is_none());
        assert_eq!(v["id"], "1700000000123-driveway-a_person");
    }
}
