//! Live: the retained topics that mirror the daemon's live [`Status`] — per camera whether
//! detection is paused, whether its stream delivers frames, its diagnostics JSON, and per prompt
//! the threshold in force — and each prompt's state and score as events leave them. The worker
//! refreshes them about every second (diagnostics every `diagnostics_interval`) and sends what
//! changed (latest wins: a topic whose payload did not change is not sent again); after a
//! (re)connect or Home Assistant's birth everything is sent again. Owned by the worker thread: no
//! locks here.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::discovery::{Topics, OFF, OFFLINE, ON, ONLINE};
use crate::status::Status;

/// A camera whose frame counter has not moved for this long is reported `offline`.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a camera's stream is up, from its capture counter: `online` while the counter moved
/// within [`STREAM_TIMEOUT`] (so no edit of the capture loop is needed).
#[derive(Default)]
pub struct StreamWatch {
    captured: u64,
    changed: Option<Instant>,
}

impl StreamWatch {
    pub fn update(&mut self, captured: u64, now: Instant) -> bool {
        if captured != self.captured {
            self.captured = captured;
            self.changed = Some(now);
        }
        self.changed
            .is_some_and(|t| now.saturating_duration_since(t) < STREAM_TIMEOUT)
    }
}

/// The diagnostics payload of one camera.
#[derive(Debug, Serialize)]
pub struct Diagnostics {
    /// Mean inference time of the frames analysed since the last report (else the last frame's);
    /// null before the first analysed frame.
    pub inference_ms: Option<f64>,
    /// Frames analysed per second since the last report.
    pub analysed_fps: f64,
    /// Frames replaced in the latest-wins slot before inference took them (since start).
    pub dropped_frames: u64,
    pub captured_frames: u64,
    pub undecodable_frames: u64,
    pub skipped_no_motion: u64,
    pub paused_frames: u64,
    pub reconnects: u64,
    pub events: u64,
    pub stream: &'static str,
    pub paused: bool,
}

struct Camera {
    id: String,
    stream: StreamWatch,
    /// Inference count and time sum at the last diagnostics report.
    last: (u64, f64, Instant),
}

/// Latest payload per retained topic, and whether it still has to be sent.
pub struct Live {
    topics: Topics,
    status: Status,
    cameras: Vec<Camera>,
    retained: BTreeMap<String, (Vec<u8>, bool)>,
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

impl Live {
    pub fn new(topics: Topics, status: Status, now: Instant) -> Live {
        let cameras = status
            .cameras
            .iter()
            .map(|c| Camera {
                id: c.id.clone(),
                stream: StreamWatch::default(),
                last: (0, 0.0, now),
            })
            .collect();
        Live {
            topics,
            status,
            cameras,
            retained: BTreeMap::new(),
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Records a topic's payload; it is to be sent only if it differs from the last one.
    pub fn set(&mut self, topic: String, payload: Vec<u8>) {
        match self.retained.get_mut(&topic) {
            Some((p, _)) if *p == payload => {}
            Some(v) => *v = (payload, true),
            None => {
                self.retained.insert(topic, (payload, true));
            }
        }
    }

    /// Reads the status: pause, stream and thresholds; with `diagnostics`, also a new
    /// diagnostics report (sent even when unchanged: it is a periodic report).
    pub fn refresh(&mut self, now: Instant, diagnostics: bool) {
        for i in 0..self.cameras.len() {
            let Some(cam) = self.status.camera(&self.cameras[i].id).cloned() else {
                continue;
            };
            let snap = cam.snapshot(now);
            let c = &mut self.cameras[i];
            let stream = if c.stream.update(snap.source.captured, now) {
                ONLINE
            } else {
                OFFLINE
            };
            let id = c.id.clone();
            self.set(
                self.topics.paused(&id),
                if snap.paused { ON } else { OFF }.as_bytes().to_vec(),
            );
            self.set(self.topics.stream(&id), stream.as_bytes().to_vec());
            for p in &snap.prompts {
                self.set(
                    self.topics.threshold(&id, &p.id),
                    format!("{}", p.threshold).into_bytes(),
                );
            }
            if diagnostics {
                let c = &mut self.cameras[i];
                let (count, sum, at) = c.last;
                let n = snap.inference.count.saturating_sub(count);
                let dt = now.saturating_duration_since(at).as_secs_f64();
                let inference_ms = if n > 0 {
                    Some(round((snap.inference.sum_ms - sum) / n as f64, 1))
                } else {
                    (snap.inference.count > 0).then(|| round(snap.inference.last_ms, 1))
                };
                c.last = (snap.inference.count, snap.inference.sum_ms, now);
                let d = Diagnostics {
                    inference_ms,
                    analysed_fps: if dt > 0.0 {
                        round(n as f64 / dt, 2)
                    } else {
                        0.0
                    },
                    dropped_frames: snap.dropped,
                    captured_frames: snap.source.captured,
                    undecodable_frames: snap.source.undecodable,
                    skipped_no_motion: snap.source.skipped_no_motion,
                    paused_frames: snap.paused_frames,
                    reconnects: snap.source.reconnects,
                    events: snap.events,
                    stream,
                    paused: snap.paused,
                };
                match serde_json::to_vec(&d) {
                    Ok(payload) => {
                        self.retained
                            .insert(self.topics.diagnostics(&id), (payload, true));
                    }
                    Err(e) => {
                        tracing::warn!("unable to serialize the diagnostics of camera {id}: {e}")
                    }
                }
            }
        }
    }

    /// A topic no longer mirrored (a prompt that went).
    pub fn forget(&mut self, topic: &str) {
        self.retained.remove(topic);
    }

    /// After a (re)connect or Home Assistant's birth: everything goes out again.
    pub fn mark_all(&mut self) {
        self.retained.values_mut().for_each(|v| v.1 = true);
    }

    /// The topics and payloads still to send, in topic order.
    #[cfg(test)]
    pub fn pending(&self) -> Vec<(String, Vec<u8>)> {
        self.retained
            .iter()
            .filter(|(_, v)| v.1)
            .map(|(t, v)| (t.clone(), v.0.clone()))
            .collect()
    }

    /// The first topic (in topic order) still to send, and its payload.
    pub fn next_pending(&self) -> Option<(String, Vec<u8>)> {
        self.retained
            .iter()
            .find(|(_, v)| v.1)
            .map(|(t, v)| (t.clone(), v.0.clone()))
    }

    /// Marks a topic sent.
    pub fn sent(&mut self, topic: &str) {
        if let Some(v) = self.retained.get_mut(topic) {
            v.1 = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use crate::frame::FrameSlot;
    use crate::status::{CameraStatus, PromptStatus};

    #[test]
    fn a_stream_is_online_while_its_counter_moves() {
        let t0 = Instant::now();
        let mut w = StreamWatch::default();
        assert!(!w.update(0, t0), "no frame yet");
        assert!(w.update(1, t0 + Duration::from_secs(1)));
        assert!(w.update(1, t0 + Duration::from_secs(30)));
        assert!(
            !w.update(1, t0 + Duration::from_secs(31)),
            "no frame for 30 s"
        );
        assert!(w.update(2, t0 + Duration::from_secs(40)));
    }

    #[test]
    fn refresh_reports_changes_and_diagnostics() {
        let p = PromptStatus {
            id: "person".into(),
            name: "Person".into(),
            threshold: 0.5,
            score: 0.0,
            on: false,
        };
        let cam = Arc::new(CameraStatus::new(
            "porch",
            "Porch",
            Arc::default(),
            FrameSlot::new(),
            vec![p],
        ));
        let topics = Topics {
            prefix: "promptcam".into(),
            device_id: "pi".into(),
            discovery_prefix: "homeassistant".into(),
        };
        let t0 = Instant::now();
        let mut live = Live::new(topics, Status::new(vec![cam.clone()]), t0);
        cam.source.captured.fetch_add(3, Ordering::Relaxed);
        live.refresh(t0 + Duration::from_secs(1), true);
        let pending: BTreeMap<String, Vec<u8>> = live.pending().into_iter().collect();
        assert_eq!(pending["promptcam/pi/porch/paused"], b"OFF");
        assert_eq!(pending["promptcam/pi/porch/stream"], b"online");
        assert_eq!(pending["promptcam/pi/porch/person/threshold"], b"0.5");
        let d: serde_json::Value =
            serde_json::from_slice(&pending["promptcam/pi/porch/diagnostics"]).unwrap();
        assert_eq!(
            (d["captured_frames"].as_u64(), d["inference_ms"].is_null()),
            (Some(3), true)
        );
        for t in pending.keys() {
            live.sent(t);
        }
        live.refresh(t0 + Duration::from_secs(2), false);
        assert!(live.pending().is_empty(), "nothing changed");
        cam.set_paused(true);
        for i in 0..4 {
            let frame = Arc::new(crate::frame::Frame {
                image: image::RgbImage::new(2, 2),
                seq: i,
                captured_at: std::time::SystemTime::now(),
                monotonic: t0,
            });
            cam.record_frame(t0, Duration::from_millis(40 + 10 * i), frame, vec![]);
        }
        live.refresh(t0 + Duration::from_secs(3), true);
        let pending: BTreeMap<String, Vec<u8>> = live.pending().into_iter().collect();
        assert_eq!(pending["promptcam/pi/porch/paused"], b"ON");
        let d: serde_json::Value =
            serde_json::from_slice(&pending["promptcam/pi/porch/diagnostics"]).unwrap();
        assert_eq!(
            d["inference_ms"].as_f64(),
            Some(55.0),
            "mean of 40, 50, 60, 70 ms"
        );
        assert_eq!(d["analysed_fps"].as_f64(), Some(2.0), "4 frames in 2 s");
        assert!(
            !pending.contains_key("promptcam/pi/porch/stream"),
            "unchanged"
        );
    }
}
