//! Shared: what the publisher handle (the daemon's event thread) and the two MQTT threads hold in
//! common — the spool and the record of open events, the counters, whether the link is up (and
//! which connection it is), and the latest-wins states, snapshots and Home Assistant event
//! messages waiting for the worker — and what they agree on: the messages the worker is sent
//! ([`Msg`]) and the packet limits.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use rumqttc::Event as MqttEvent;

use super::open::OpenEvents;
use super::spool::Spool;
use super::Stats;
use crate::config::CameraConfig;
use crate::event::{Event, EventKind};

/// rumqttc's in-flight limit: its packet ids cycle through 1..=INFLIGHT (the worker keeps
/// its own window well under it).
pub(super) const INFLIGHT: u16 = 100;
/// The largest packet the broker may send before `net` raises the limit for the next
/// connection: commands are a few bytes, but a mistaken (even retained) large payload on a
/// command topic must be read and refused, not drop the connection.
pub(super) const INCOMING_MAX: usize = 8 << 20;
/// The largest packet handed to rumqttc (a snapshot JPEG of a large frame fits); anything larger
/// is set aside by the worker rather than breaking the connection on every attempt.
pub(super) const OUTGOING_MAX: usize = 16 << 20;
/// What the worker thread is told, by the connection thread and by the publisher handle.
pub enum Msg {
    /// The connection thread connected: the new connection's epoch.
    Up(u64),
    /// The connection thread lost (or failed to make) the connection: the reason.
    Down(String),
    /// Something happened on the connection.
    Mqtt(MqttEvent),
    /// New events or states to send.
    Wake,
    Stop,
}

/// Messages for Home Assistant's event entities kept while they cannot be sent (oldest dropped).
const CAMERA_EVENTS_MAX: usize = 256;

#[derive(Default)]
pub struct Status {
    pub last_error: Option<String>,
    pub stats: Stats,
}

/// A prompt's state and score as the latest event left them, and whether the worker has still
/// to pick them up.
#[derive(Clone, Copy)]
pub struct PromptState {
    pub on: bool,
    pub score: Option<f32>,
    pub dirty: bool,
}

/// The connection as the `mqtt-net` thread sees it: whether it is up, and which one it is (each
/// CONNACK starts a new epoch), so the worker sends only into the connection it has seen come up.
#[derive(Clone, Copy, Default)]
pub struct Link {
    pub up: bool,
    pub epoch: u64,
}

/// A prompt's latest JPEG and whether it still has to be sent.
pub type Snapshot = (Arc<Vec<u8>>, bool);
/// (camera id, prompt id), or (camera id, `None`) for the camera's last detection.
pub type SnapshotKey = (String, Option<String>);

/// State shared by the publisher handle and its threads.
pub struct Shared {
    pub spool: Mutex<Spool>,
    pub status: Mutex<Status>,
    pub shutdown: AtomicBool,
    /// The worker sends only while holding this lock with the link up in the epoch it saw, so
    /// nothing it sends can slip into a connection it has not seen come up.
    pub(super) link: Mutex<Link>,
    /// (camera id, prompt id) -> its state (latest wins).
    pub(super) states: Mutex<BTreeMap<(String, String), PromptState>>,
    /// The latest snapshot per prompt, and per camera (prompt `None`: its last detection),
    /// and whether it still has to be sent (latest wins).
    pub(super) snapshots: Mutex<BTreeMap<SnapshotKey, Snapshot>>,
    /// `{"event_type": ...}` messages for the cameras' event entities: live only, so dropped
    /// while disconnected (the spooled events topic is the lossless record).
    pub(super) camera_events: Mutex<VecDeque<(String, Vec<u8>)>>,
    /// The events started and not ended yet, mirrored next to the spool.
    pub(super) open: Mutex<OpenEvents>,
}

impl Shared {
    pub fn new(spool: Spool, open: OpenEvents, cameras: &[CameraConfig]) -> Shared {
        let mut states = BTreeMap::new();
        for c in cameras {
            for p in &c.prompts {
                states.insert(
                    (c.id.clone(), p.id.clone()),
                    PromptState {
                        on: false,
                        score: None,
                        dirty: true,
                    },
                );
            }
        }
        Shared {
            spool: Mutex::new(spool),
            status: Mutex::new(Status::default()),
            shutdown: AtomicBool::new(false),
            link: Mutex::new(Link::default()),
            states: Mutex::new(states),
            snapshots: Mutex::new(BTreeMap::new()),
            camera_events: Mutex::new(VecDeque::new()),
            open: Mutex::new(open),
        }
    }

    /// Whether the connection is up now.
    pub fn link_up(&self) -> bool {
        self.link.lock().map(|l| l.up).unwrap_or(false)
    }

    /// Queues an event for its camera's Home Assistant event entity (`type` becomes `event_type`).
    pub fn push_camera_event(&self, topic: String, e: &Event) {
        let mut v = match serde_json::to_value(e) {
            Ok(v) => v,
            Err(err) => return tracing::warn!("unable to serialize event {}: {err}", e.id),
        };
        if let Some(obj) = v.as_object_mut() {
            if let Some(t) = obj.remove("type") {
                obj.insert("event_type".into(), t);
            }
        }
        if let (true, Ok(mut q)) = (self.link_up(), self.camera_events.lock()) {
            if q.len() >= CAMERA_EVENTS_MAX {
                q.pop_front();
            }
            q.push_back((topic, v.to_string().into_bytes()));
        }
    }

    /// Records a prompt's latest snapshot, which is also its camera's last detection; both are
    /// sent retained, and only the newest of each is kept.
    pub fn set_snapshot(&self, camera: &str, prompt: &str, jpeg: Arc<Vec<u8>>) {
        if let Ok(mut s) = self.snapshots.lock() {
            s.insert(
                (camera.to_string(), Some(prompt.to_string())),
                (jpeg.clone(), true),
            );
            s.insert((camera.to_string(), None), (jpeg, true));
        }
    }

    /// Records an event's prompt state (latest wins).
    pub fn set_state(&self, e: &Event) {
        if let Ok(mut states) = self.states.lock() {
            let s = states
                .entry((e.camera.clone(), e.prompt.clone()))
                .or_insert(PromptState {
                    on: false,
                    score: None,
                    dirty: true,
                });
            s.on = e.kind != EventKind::End;
            s.score = Some(e.score);
            s.dirty = true;
        }
    }

    /// A prompt that started running: `OFF` until its first event (kept if it has a state).
    pub(super) fn ensure_state(&self, camera: &str, prompt: &str) {
        if let Ok(mut states) = self.states.lock() {
            states
                .entry((camera.to_string(), prompt.to_string()))
                .and_modify(|s| s.dirty = true)
                .or_insert(PromptState {
                    on: false,
                    score: None,
                    dirty: true,
                });
        }
    }

    /// A prompt that stopped running: its state and snapshot are forgotten.
    pub(super) fn forget_state(&self, camera: &str, prompt: &str) {
        let key = (camera.to_string(), prompt.to_string());
        if let Ok(mut states) = self.states.lock() {
            states.remove(&key);
        }
        if let Ok(mut s) = self.snapshots.lock() {
            s.remove(&(key.0, Some(key.1)));
        }
    }

    /// Takes the states changed since the last call.
    pub(super) fn take_states(&self) -> Vec<((String, String), PromptState)> {
        let Ok(mut states) = self.states.lock() else {
            return vec![];
        };
        states
            .iter_mut()
            .filter(|(_, v)| v.dirty)
            .map(|(k, v)| {
                v.dirty = false;
                (k.clone(), *v)
            })
            .collect()
    }

    pub(super) fn status(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}
