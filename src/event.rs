//! Event: what the decide stage emits when a prompted state starts, improves or ends — the flow
//! that goes to the sinks (MQTT, stdout JSON lines, the history) — and [`EventTracker`], the
//! lifecycle of one prompt's events: it turns the decider's transitions into events with a
//! stable id, the best box so far and the times they happened. Pure: time is an argument.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::annotate::Snapshot;
use crate::decide::Transition;

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
    /// A prompt added while the daemon runs (MQTT, Home Assistant, the prompt lab).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub runtime: bool,
    /// Why an `end` came without the score falling: "once", "expired", "removed", "changed".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// A `once` prompt: its first `start` ends it (not in the JSON).
    #[serde(skip)]
    pub once: bool,
    /// start/update: the frame with the prompt's box (or mask) to draw, rendered as JPEG once,
    /// on the event thread, when a sink asks for it (MQTT's snapshot topic, the history); not in
    /// the event JSON.
    #[serde(skip)]
    pub snapshot: Option<Arc<Snapshot>>,
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

struct Open {
    id: String,
    started: SystemTime,
    bbox: Option<[f32; 4]>,
}

/// One prompt's events: at most one open at a time.
#[derive(Default)]
pub struct EventTracker {
    open: Option<Open>,
}

impl EventTracker {
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The open event's best box so far.
    pub fn bbox(&self) -> Option<[f32; 4]> {
        self.open.as_ref().and_then(|o| o.bbox)
    }

    /// The event a decider's transition means, if any: `Started` opens one (its id from `at`,
    /// the time of the frame that started it), `Updated` carries the better frame's box,
    /// `Ended` closes it at `at`. `score` is the smoothed score behind the transition, `bbox`
    /// the frame's best box for the prompt.
    pub fn follow(
        &mut self,
        camera: &str,
        prompt: &str,
        t: Transition,
        score: f32,
        bbox: Option<[f32; 4]>,
        at: SystemTime,
    ) -> Option<Event> {
        let kind = match t {
            Transition::Started => {
                self.open = Some(Open {
                    id: event_id(at, camera, prompt),
                    started: at,
                    bbox,
                });
                EventKind::Start
            }
            Transition::Updated => {
                let open = self.open.as_mut()?;
                if bbox.is_some() {
                    open.bbox = bbox;
                }
                EventKind::Update
            }
            Transition::Ended => EventKind::End,
            Transition::None => return None,
        };
        let open = match kind {
            EventKind::End => self.open.take()?,
            _ => self.open.as_ref().map(|o| Open {
                id: o.id.clone(),
                started: o.started,
                bbox: o.bbox,
            })?,
        };
        Some(Event {
            kind,
            camera: camera.to_string(),
            prompt: prompt.to_string(),
            score,
            bbox: open.bbox,
            started_at: rfc3339(open.started),
            ended_at: (kind == EventKind::End).then(|| rfc3339(at)),
            id: open.id,
            runtime: false,
            reason: None,
            once: false,
            snapshot: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_prompts_events_share_an_id_carry_the_best_box_and_close_once() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut e = EventTracker::default();
        let f = |e: &mut EventTracker, t, s, b, ms| e.follow("porch", "a_person", t, s, b, at(ms));
        assert!(f(&mut e, Transition::None, 0.2, None, 0).is_none());
        assert!(
            f(&mut e, Transition::Updated, 0.9, None, 10).is_none(),
            "nothing open to update"
        );
        assert!(
            f(&mut e, Transition::Ended, 0.1, None, 20).is_none(),
            "nothing open to end"
        );
        let start = f(
            &mut e,
            Transition::Started,
            0.7,
            Some([1.0, 1.0, 5.0, 5.0]),
            100,
        )
        .unwrap();
        assert_eq!(
            (start.kind, start.id.as_str()),
            (EventKind::Start, "1700000000100-porch-a_person")
        );
        assert_eq!(
            (start.started_at.as_str(), start.ended_at.as_deref()),
            ("2023-11-14T22:13:20.100Z", None)
        );
        assert!(e.is_open());
        // an update without a box keeps the last one; with one, takes it
        let up = f(&mut e, Transition::Updated, 0.8, None, 200).unwrap();
        assert_eq!(
            (up.kind, up.bbox, up.id.as_str()),
            (
                EventKind::Update,
                Some([1.0, 1.0, 5.0, 5.0]),
                start.id.as_str()
            )
        );
        let up = f(
            &mut e,
            Transition::Updated,
            0.9,
            Some([2.0, 2.0, 6.0, 6.0]),
            300,
        )
        .unwrap();
        assert_eq!(up.bbox, Some([2.0, 2.0, 6.0, 6.0]));
        let end = f(&mut e, Transition::Ended, 0.1, None, 900).unwrap();
        assert_eq!(
            (end.kind, end.score, end.bbox),
            (EventKind::End, 0.1, Some([2.0, 2.0, 6.0, 6.0]))
        );
        assert_eq!(
            (end.started_at.as_str(), end.ended_at.as_deref()),
            ("2023-11-14T22:13:20.100Z", Some("2023-11-14T22:13:20.900Z"))
        );
        assert!(!e.is_open() && f(&mut e, Transition::Ended, 0.1, None, 950).is_none());
        // the next event gets its own id
        let again = f(&mut e, Transition::Started, 0.7, None, 2000).unwrap();
        assert_ne!(again.id, start.id);
    }

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
            runtime: false,
            reason: None,
            once: false,
            snapshot: Some(Arc::new(Snapshot::jpeg_only(vec![0xff, 0xd8]))),
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "start");
        assert_eq!(v["box"], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
        assert_eq!(v["started_at"], "2023-11-14T22:13:20.123Z");
        assert!(v.get("ended_at").is_none() && v.get("snapshot").is_none());
        assert_eq!(v["id"], "1700000000123-driveway-a_person");
        assert!(v.get("runtime").is_none() && v.get("reason").is_none());
        let v = serde_json::to_value(Event {
            runtime: true,
            reason: Some("once"),
            ..e
        })
        .unwrap();
        assert_eq!(
            (&v["runtime"], &v["reason"]),
            (&serde_json::json!(true), &serde_json::json!("once"))
        );
    }
}
