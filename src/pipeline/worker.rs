//! Inference: the loop of the `promptcam-infer` thread and, with `inference_workers` above 1,
//! of its helpers (`promptcam-infer-N`). Each worker serves the cameras in turn — pending
//! threshold changes, the frame waiting in the camera's latest-wins slot (unless paused), time
//! passing for the deciders — and hands the events to the event thread, the frames' records to
//! the history and the latest labels to the status. It sleeps when there is nothing to do.
//!
//! Workers share the cameras: a worker takes a camera by locking it and passes over the ones
//! another worker holds, so two cameras' frames are analysed at the same time (on the same
//! loaded weights: `towers`), one camera's frames stay in order, and its events keep their
//! order. Each worker runs its matrix products on a thread pool of its own. The first worker
//! also runs the reloads between its rounds, which lock each camera in turn.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use super::Camera;
use crate::event::Event;
use crate::history::{History, Record};

pub struct Inference {
    cameras: Vec<Mutex<Camera>>,
    events: SyncSender<Event>,
    history: Option<Arc<History>>,
    /// `once` prompts whose first event started: (camera, prompt), for the reload to end.
    once_started: Mutex<Vec<(String, String)>>,
    /// How many workers serve the cameras, and the matrix-product threads of each.
    workers: usize,
    threads: usize,
}

/// What the loop shares with the other threads: the stop request and the heartbeat it writes
/// (milliseconds since `started`) for the watchdog.
pub struct Signals<'a> {
    pub shutdown: &'a AtomicBool,
    pub heartbeat_ms: &'a AtomicU64,
    pub started: Instant,
}

/// What the first worker shares with its helpers.
struct Crew {
    stop: AtomicBool,
    /// Each helper's last round (ms since `started`): the heartbeat is the oldest of them.
    beats: Vec<AtomicU64>,
    started: Instant,
}

/// Sets a stop flag when dropped: on return and on a panic alike.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Inference {
    pub fn new(
        cameras: Vec<Camera>,
        events: SyncSender<Event>,
        history: Option<Arc<History>>,
    ) -> Inference {
        Inference {
            cameras: cameras.into_iter().map(Mutex::new).collect(),
            events,
            history,
            once_started: Mutex::new(vec![]),
            workers: 1,
            threads: crate::threads::current_threads(),
        }
    }

    /// Serves the cameras with `workers` workers (at most one per camera) of `threads`
    /// matrix-product threads each.
    pub fn with_workers(mut self, workers: usize, threads: usize) -> Inference {
        self.workers = workers.clamp(1, self.cameras.len().max(1));
        self.threads = threads.max(1);
        self
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Camera `i`, waiting while a worker analyses its frame.
    pub fn camera(&self, i: usize) -> MutexGuard<'_, Camera> {
        self.cameras[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every camera, each locked in turn.
    pub fn cameras(&self) -> impl Iterator<Item = MutexGuard<'_, Camera>> {
        (0..self.cameras.len()).map(|i| self.camera(i))
    }

    /// The `once` prompts whose first event started since the last call.
    pub fn take_once_started(&self) -> Vec<(String, String)> {
        std::mem::take(
            &mut self
                .once_started
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
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

    /// One pass over the cameras, waiting for each; true when a frame was taken from a slot.
    pub fn step(&self) -> Result<bool> {
        self.round(0, true)
    }

    /// One pass of worker `worker` over the cameras, from its own starting camera (so that
    /// workers do not queue on the same one). `wait`: lock each camera, else pass over those
    /// another worker holds. True when a frame was taken from a slot.
    fn round(&self, worker: usize, wait: bool) -> Result<bool> {
        let n = self.cameras.len();
        let mut worked = false;
        for k in 0..n {
            let c = &self.cameras[(worker + k) % n];
            let mut cam = match c.try_lock() {
                Ok(cam) => cam,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) if wait => {
                    c.lock().unwrap_or_else(PoisonError::into_inner)
                }
                Err(TryLockError::WouldBlock) => continue,
            };
            worked |= self.serve(&mut cam)?;
        }
        Ok(worked)
    }

    /// A camera's pending threshold changes, its waiting frame and time passing; true when a
    /// frame was taken from its slot.
    fn serve(&self, cam: &mut Camera) -> Result<bool> {
        cam.apply_threshold_requests();
        let worked = match cam.slot.take() {
            Some(frame) => {
                self.analyse(cam, frame)?;
                true
            }
            None => false,
        };
        let ended = cam.tick(Instant::now(), SystemTime::now());
        self.send(ended)?;
        Ok(worked)
    }

    fn analyse(&self, cam: &mut Camera, frame: crate::frame::Captured) -> Result<()> {
        if cam.status.is_paused() {
            cam.status.paused_frames.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // decoded here, not by the capture thread: the frames the slot replaced never were
        let frame = match frame.decode() {
            Ok(frame) => Arc::new(frame),
            Err(e) => {
                cam.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("camera {}: skipped a frame: {e:#}", cam.config.id);
                return Ok(());
            }
        };
        let t = Instant::now();
        let Some(a) = cam.analyse(&frame)? else {
            return Ok(());
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
        self.once_started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(Camera::once_started(&a.events));
        self.send(a.events)
    }

    /// Every camera's source has ended (finite replays) and its last frame was taken.
    pub fn all_ended(&self) -> bool {
        self.cameras().all(|c| c.slot.is_closed())
    }

    /// Ends every open event and logs each camera's counts: the daemon is stopping.
    pub fn finish(&self) -> Result<()> {
        let wall = SystemTime::now();
        for mut cam in self.cameras() {
            let ended = cam.end_all(wall);
            self.send(ended)?;
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
        if self.cameras.len() != 1 {
            return std::thread::sleep(Duration::from_millis(20));
        }
        let (slot, next_end) = {
            let one = self.camera(0);
            (one.slot.clone(), one.next_end())
        };
        let now = Instant::now();
        let wait = next_end
            .map_or(Duration::from_millis(500), |due| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(500));
        if let Some(frame) = slot.wait_take(wait) {
            slot.put(frame);
        }
    }

    /// Runs until a stop is asked for or every source has ended; `between` runs at the top of
    /// each of the first worker's rounds (the daemon's reloads). Open events end before it
    /// returns. An error of any worker stops them all and is returned.
    pub fn run(self, s: Signals, between: impl FnMut(&Inference) -> Result<()>) -> Result<()> {
        let crew = Crew {
            stop: AtomicBool::new(false),
            beats: (1..self.workers).map(|_| AtomicU64::new(0)).collect(),
            started: s.started,
        };
        let this = &self;
        let result = std::thread::scope(|scope| {
            let helpers = (1..self.workers)
                .map(|w| {
                    let crew = &crew;
                    std::thread::Builder::new()
                        .name(format!("promptcam-infer-{w}"))
                        .spawn_scoped(scope, move || {
                            // an error or a panic here stops the first worker too
                            let _stop = StopOnDrop(&crew.stop);
                            let name = format!("tract-w{w}");
                            crate::threads::with_threads(this.threads, &name, || this.help(w, crew))
                        })
                        .context("unable to start an inference worker")
                })
                .collect::<Result<Vec<_>>>();
            // the helpers stop when the first worker does, even when it panics (else the
            // scope would wait for them forever)
            let stop = StopOnDrop(&crew.stop);
            let ran = match &helpers {
                Ok(_) => self.lead(&s, &crew, between),
                Err(_) => Ok(false),
            };
            drop(stop);
            let mut joined = Ok(());
            for (w, h) in helpers?.into_iter().enumerate() {
                let r = h.join().unwrap_or_else(|_| {
                    Err(anyhow::anyhow!("inference worker {} panicked", w + 1))
                });
                joined = joined.and(r);
            }
            joined?;
            ran
        });
        let drain = match result {
            Ok(drain) => drain,
            Err(e) => {
                let _ = self.finish();
                return Err(e);
            }
        };
        // the sources ended: a frame a helper passed over on its last round is still analysed
        while drain && self.step()? {}
        self.finish()
    }

    /// The first worker: reloads between rounds, the heartbeat; true when every source ended
    /// (false: a stop was asked for, or a helper stopped).
    fn lead(
        &self,
        s: &Signals,
        crew: &Crew,
        mut between: impl FnMut(&Inference) -> Result<()>,
    ) -> Result<bool> {
        loop {
            let now = s.started.elapsed().as_millis() as u64;
            let oldest = crew
                .beats
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .fold(now, u64::min);
            s.heartbeat_ms.store(oldest, Ordering::Relaxed);
            between(self)?;
            let worked = self.round(0, self.workers == 1)?;
            if s.shutdown.load(Ordering::Relaxed) || crew.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            if self.all_ended() && !worked {
                return Ok(true);
            }
            if !worked {
                self.idle();
            }
        }
    }

    /// A helper: rounds until the crew stops.
    fn help(&self, worker: usize, crew: &Crew) -> Result<()> {
        while !crew.stop.load(Ordering::Relaxed) {
            let now = crew.started.elapsed().as_millis() as u64;
            crew.beats[worker - 1].store(now, Ordering::Relaxed);
            if !self.round(worker, false)? {
                self.idle();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
