//! Inference: the loop of the `promptcam-infer` thread. It serves the cameras in turn — pending
//! threshold changes, the frame waiting in the camera's latest-wins slot (unless paused), time
//! passing for the deciders — and hands the events to the event thread, the frames' records to
//! the history and the latest labels to the status. It sleeps when there is nothing to do.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;

use super::Camera;
use crate::event::Event;
use crate::history::{History, Record};

pub struct Inference {
    pub cameras: Vec<Camera>,
    events: SyncSender<Event>,
    history: Option<Arc<History>>,
    /// `once` prompts whose first event started: (camera, prompt), for the reload to end.
    once_started: Vec<(String, String)>,
}

/// What the loop shares with the other threads: the stop request and the heartbeat it writes
/// (milliseconds since `started`) for the watchdog.
pub struct Signals<'a> {
    pub shutdown: &'a AtomicBool,
    pub heartbeat_ms: &'a AtomicU64,
    pub started: Instant,
}

impl Inference {
    pub fn new(
        cameras: Vec<Camera>,
        events: SyncSender<Event>,
        history: Option<Arc<History>>,
    ) -> Inference {
        Inference {
            cameras,
            events,
            history,
            once_started: vec![],
        }
    }

    /// The `once` prompts whose first event started since the last call.
    pub fn take_once_started(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.once_started)
    }

    /// Hands events to the event thread (a bounded channel: if it is gone, the daemon stops).
    pub fn send(&self, events: Vec<Event>) -> Result<()> {
        for e in events {
            self.events
                .send(e)
                .map_err(|_| anyhow::anyhow!("the event thread stopped"))?;
        }
        Ok(())
    }

    /// One pass over the cameras; true when a frame was taken from a slot.
    pub fn step(&mut self) -> Result<bool> {
        let mut worked = false;
        for c in 0..self.cameras.len() {
            let cam = &mut self.cameras[c];
            cam.apply_threshold_requests();
            let Some(frame) = cam.slot.take() else {
                continue;
            };
            worked = true;
            if cam.status.is_paused() {
                cam.status.paused_frames.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // decoded here, not by the capture thread: the frames the slot replaced never were
            let frame = match frame.decode() {
                Ok(frame) => Arc::new(frame),
                Err(e) => {
                    cam.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("camera {}: skipped a frame: {e:#}", cam.config.id);
                    continue;
                }
            };
            let t = Instant::now();
            let Some(a) = cam.analyse(&frame)? else {
                continue;
            };
            if let Some(h) = &self.history {
                let mut record = a.record;
                if cam
                    .thumbs
                    .due(frame.captured_at, h.config.thumbnail_interval, a.event)
                {
                    record.thumbnail = Some(frame.clone());
                }
                h.record(Record::Frame(record));
            }
            cam.status
                .record_frame(Instant::now(), t.elapsed(), frame, a.labels);
            self.once_started.extend(Camera::once_started(&a.events));
            self.send(a.events)?;
        }
        let (now, wall) = (Instant::now(), SystemTime::now());
        for c in 0..self.cameras.len() {
            let ended = self.cameras[c].tick(now, wall);
            self.send(ended)?;
        }
        Ok(worked)
    }

    /// Every camera's source has ended (finite replays) and its last frame was taken.
    pub fn all_ended(&self) -> bool {
        self.cameras.iter().all(|c| c.slot.is_closed())
    }

    /// Ends every open event and logs each camera's counts: the daemon is stopping.
    pub fn finish(&mut self) -> Result<()> {
        let wall = SystemTime::now();
        for c in 0..self.cameras.len() {
            let ended = self.cameras[c].end_all(wall);
            self.send(ended)?;
            let cam = &self.cameras[c];
            let s = cam.stats.snapshot();
            let t = cam.status.snapshot(Instant::now()).inference;
            tracing::info!(
                "camera {}: {} frames captured, {} dropped, {} undecodable, {} analysed ({} still), \
                 {:.1} ms inference per analysed frame",
                cam.config.id,
                s.captured,
                cam.slot.dropped(),
                s.undecodable,
                s.analysed,
                s.skipped_no_motion,
                t.sum_ms / t.count.max(1) as f64
            );
        }
        Ok(())
    }

    /// Nothing to do: one camera sleeps until a frame arrives (or its source closes), or until
    /// an event is due to end, so that it ends `off_delay` after its score dropped and idle CPU
    /// stays near zero; several poll every 20 ms.
    pub fn idle(&self) {
        match self.cameras.as_slice() {
            [one] => {
                let now = Instant::now();
                let wait = one
                    .next_end()
                    .map_or(Duration::from_millis(500), |due| {
                        due.saturating_duration_since(now)
                    })
                    .min(Duration::from_millis(500));
                if let Some(frame) = one.slot.wait_take(wait) {
                    one.slot.put(frame);
                }
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }

    /// Runs until a stop is asked for or every source has ended; `between` runs at the top of
    /// each round (the daemon's reloads). Open events end before it returns.
    pub fn run(
        mut self,
        s: Signals,
        mut between: impl FnMut(&mut Inference) -> Result<()>,
    ) -> Result<()> {
        loop {
            s.heartbeat_ms
                .store(s.started.elapsed().as_millis() as u64, Ordering::Relaxed);
            between(&mut self)?;
            let worked = self.step()?;
            if s.shutdown.load(Ordering::Relaxed) || (self.all_ended() && !worked) {
                return self.finish();
            }
            if !worked {
                self.idle();
            }
        }
    }
}
