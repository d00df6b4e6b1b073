//! Pump: what the worker sends, in what order, within the in-flight window. Discovery and
//! availability first, then the retained states (each prompt's state and score coalesced with
//! the live status topics: a topic is sent again only when its payload changed, latest wins),
//! snapshots and the event entities' messages, all within their share of the window; then the
//! spooled events, in order, with every slot the others leave. A message the window cannot take
//! waits for the next PUBACK; one that can never be sent (larger than a packet may be) is set
//! aside with a warning instead of breaking the connection on every attempt.

use std::sync::Arc;

use rumqttc::{Client, QoS};

use super::discovery::{OFF, ON};
use super::shared::{SnapshotKey, OUTGOING_MAX};
use super::window::Tag;
use super::worker::Worker;

/// What became of a message offered to the window.
#[derive(PartialEq, Eq)]
enum Sent {
    Yes,
    /// No room now (window or request channel full, link down): offer it again later.
    NoRoom,
    /// It can never be sent: skipped (with a warning).
    Never,
}

/// Why a publish can never be sent, if it cannot: MQTT topics are at most 65535 bytes, and
/// rumqttc refuses (by dropping the connection) packets over its outgoing limit.
fn unsendable(topic: &str, payload: usize) -> Option<String> {
    if topic.len() > u16::MAX as usize {
        return Some(format!(
            "its topic has {} bytes, over MQTT's 65535",
            topic.len()
        ));
    }
    // fixed header (at most 5 bytes), topic length (2) and packet id (2)
    let size = 9 + topic.len() + payload;
    (size > OUTGOING_MAX)
        .then(|| format!("{size} bytes, over the {OUTGOING_MAX}-byte packet limit"))
}

impl Worker {
    /// Runs `f` on the client if the connection this thread saw come up is still up, holding
    /// the link lock.
    pub(super) fn with_link<T>(&self, f: impl FnOnce(&Client) -> T) -> Option<T> {
        let link = self.shared.link.lock().ok()?;
        if !link.up || link.epoch != self.epoch || !self.connected {
            return None;
        }
        Some(f(&self.client))
    }

    /// Hands one QoS-1 publish to rumqttc if the window and the link allow.
    fn send(&mut self, topic: &str, payload: Vec<u8>, retain: bool, tag: Tag) -> Sent {
        if !self.window.has_room(matches!(tag, Tag::Event(_))) {
            return Sent::NoRoom;
        }
        if let Some(why) = unsendable(topic, payload.len()) {
            if tag == Tag::Other {
                tracing::warn!("MQTT: not publishing on {topic:.200}: {why}");
            }
            return Sent::Never;
        }
        let ok = self.with_link(|c| {
            c.try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .is_ok()
        }) == Some(true);
        if ok {
            self.window.sent(tag);
            Sent::Yes
        } else {
            Sent::NoRoom
        }
    }

    /// Sends what is waiting: the other messages (if their share of the window allows), then,
    /// if `events`, spooled events in order. Returns true when nothing is left to send.
    pub(super) fn pump(&mut self, events: bool) -> bool {
        if !self.connected {
            return false;
        }
        let others = self.pump_others();
        if !events {
            return others;
        }
        self.pump_events() && others
    }

    fn pump_others(&mut self) -> bool {
        while let Some((topic, payload)) = self.control.front().cloned() {
            if self.send(&topic, payload, true, Tag::Other) == Sent::NoRoom {
                return false;
            }
            self.control.pop_front();
        }
        for ((cam, prompt), st) in self.shared.take_states() {
            // the end of a prompt that went: its topics were cleared
            if !self.running.contains(&(cam.clone(), prompt.clone())) {
                continue;
            }
            let state = if st.on { ON } else { OFF };
            self.live
                .set(self.topics.state(&cam, &prompt), state.as_bytes().to_vec());
            if let Some(score) = st.score {
                self.live.set(
                    self.topics.score(&cam, &prompt),
                    format!("{score:.3}").into_bytes(),
                );
            }
        }
        while let Some((topic, payload)) = self.live.next_pending() {
            if self.send(&topic, payload, true, Tag::Other) == Sent::NoRoom {
                return false;
            }
            self.live.sent(&topic);
        }
        let snapshots: Vec<(SnapshotKey, Arc<Vec<u8>>)> = match self.shared.snapshots.lock() {
            Ok(s) => s
                .iter()
                .filter(|(_, v)| v.1)
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
            Err(_) => vec![],
        };
        for ((cam, prompt), jpeg) in snapshots {
            let topic = match &prompt {
                Some(p) => self.topics.snapshot(&cam, p),
                None => self.topics.camera_snapshot(&cam),
            };
            if self.send(&topic, jpeg.to_vec(), true, Tag::Other) == Sent::NoRoom {
                return false;
            }
            if let Ok(mut s) = self.shared.snapshots.lock() {
                if let Some(v) = s.get_mut(&(cam, prompt)) {
                    if Arc::ptr_eq(&v.0, &jpeg) {
                        v.1 = false;
                    }
                }
            }
        }
        loop {
            let next = self
                .shared
                .camera_events
                .lock()
                .ok()
                .and_then(|q| q.front().cloned());
            let Some((topic, payload)) = next else {
                return true;
            };
            if self.send(&topic, payload, false, Tag::Other) == Sent::NoRoom {
                return false;
            }
            if let Ok(mut q) = self.shared.camera_events.lock() {
                q.pop_front();
            }
        }
    }

    fn pump_events(&mut self) -> bool {
        let events_topic = self.topics.events();
        loop {
            let next = self.shared.spool.lock().ok().and_then(|s| {
                s.next_from(self.cursor)
                    .map(|e| (e.seq, e.payload.clone().into_bytes()))
            });
            let Some((seq, payload)) = next else {
                return true;
            };
            let size = payload.len();
            match self.send(&events_topic, payload, false, Tag::Event(seq)) {
                Sent::NoRoom => return false,
                Sent::Yes => {}
                Sent::Never => {
                    let why = unsendable(&events_topic, size).unwrap_or_default();
                    if let Ok(mut spool) = self.shared.spool.lock() {
                        spool.set_aside(seq, &why);
                    }
                }
            }
            self.cursor = seq.saturating_add(1);
        }
    }
}
