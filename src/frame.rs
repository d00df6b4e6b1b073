//! Frame: what flows from capture to inference. Owns the `Frame` value, the latest-wins
//! `FrameSlot` hand-off between a capture thread and the inference thread, the per-camera
//! `SourceStats` counters (camera bytes become pixels in `crate::decode`).
//!
//! The slot holds at most one frame: a camera that produces faster than the models can consume
//! never builds a backlog, it just replaces the waiting frame and counts the one it replaced.
//! Compressed frames (MJPEG parts, snapshots, V4L2 MJPEG) wait in the slot as the camera sent
//! them and are decoded by whoever takes them ([`Captured::decode`], on the inference thread),
//! so the frames the slot replaces are never decoded at all.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use image::RgbImage;

/// One captured picture and when it was taken.
pub struct Frame {
    /// The decoded pixels.
    pub image: RgbImage,
    /// Per-camera sequence number (gaps mean frames were lost before or in the slot).
    pub seq: u64,
    /// Wall-clock capture time, for events and snapshots.
    pub captured_at: SystemTime,
    /// Monotonic capture time, for intervals (motion refresh, latency).
    pub monotonic: Instant,
}

/// What a source hands over: pixels, or a picture's bytes as the camera sent them (JPEG or PNG,
/// checked to be whole by [`crate::decode::check_image`], decoded by [`Captured::decode`]).
pub enum Picture {
    Pixels(RgbImage),
    Compressed(Vec<u8>),
}

/// A frame as it waits in the slot: its picture, possibly not decoded yet.
pub struct Captured {
    pub picture: Picture,
    pub seq: u64,
    pub captured_at: SystemTime,
    pub monotonic: Instant,
}

impl Captured {
    /// The frame with its pixels: compressed bytes are decoded here (JPEG or PNG, the hardened
    /// decoder); bytes that do not decode give "unable to decode frame: ...".
    pub fn decode(self) -> anyhow::Result<Frame> {
        let image = match self.picture {
            Picture::Pixels(image) => image,
            Picture::Compressed(bytes) => crate::decode::decode_image(&bytes)?,
        };
        Ok(Frame {
            image,
            seq: self.seq,
            captured_at: self.captured_at,
            monotonic: self.monotonic,
        })
    }
}

impl From<Frame> for Captured {
    fn from(f: Frame) -> Captured {
        Captured {
            picture: Picture::Pixels(f.image),
            seq: f.seq,
            captured_at: f.captured_at,
            monotonic: f.monotonic,
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("size", &self.image.dimensions())
            .field("seq", &self.seq)
            .field("captured_at", &self.captured_at)
            .field("monotonic", &self.monotonic)
            .finish()
    }
}

#[derive(Default)]
struct SlotState {
    frame: Option<Captured>,
    dropped: u64,
    closed: bool,
}

#[derive(Default)]
struct SlotInner {
    state: Mutex<SlotState>,
    ready: Condvar,
}

/// Latest-wins hand-off between a capture thread and the inference thread.
///
/// `put` replaces an unprocessed older frame (counting it as dropped) and never blocks; `take`
/// returns the newest frame if any; `wait_take` blocks up to a timeout for one. Cloning gives
/// another handle to the same slot.
#[derive(Clone, Default)]
pub struct FrameSlot {
    inner: Arc<SlotInner>,
}

impl fmt::Debug for FrameSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("FrameSlot")
            .field("frame", &state.frame.as_ref().map(|frame| frame.seq))
            .field("dropped", &state.dropped)
            .field("closed", &state.closed)
            .finish()
    }
}

impl FrameSlot {
    /// An empty, open slot.
    pub fn new() -> FrameSlot {
        FrameSlot::default()
    }

    /// The slot's state; a panic on another thread while holding the lock leaves the state
    /// consistent (every update is a single assignment), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers a frame without blocking. A frame still waiting in the slot is replaced and
    /// counted as dropped. After `close` the frame is discarded (not counted: nobody is
    /// consuming any more).
    pub fn put(&self, frame: impl Into<Captured>) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if state.frame.replace(frame.into()).is_some() {
            state.dropped += 1;
        }
        drop(state);
        self.inner.ready.notify_one();
    }

    /// The waiting frame, if any, leaving the slot empty. Still works after `close`, so a
    /// frame put before shutdown can be drained.
    pub fn take(&self) -> Option<Captured> {
        self.lock().frame.take()
    }

    /// Waits up to `timeout` for a frame and takes it. Returns `None` on timeout, and at once
    /// when the slot is (or becomes) closed.
    pub fn wait_take(&self, timeout: Duration) -> Option<Captured> {
        let state = self.lock();
        let (mut state, _) = self
            .inner
            .ready
            .wait_timeout_while(state, timeout, |s| s.frame.is_none() && !s.closed)
            .unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return None;
        }
        state.frame.take()
    }

    /// How many frames were replaced before anyone took them.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Wakes any waiter and makes later `wait_take` calls return `None` immediately (shutdown).
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.ready.notify_all();
    }

    /// Whether `close` was called on any handle of this slot.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Per-camera counters shared between the capture side and the rest of the daemon. Update
/// them with `fetch_add(1, Ordering::Relaxed)`; read them with `snapshot`.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Frames received from the camera (decoded or not).
    pub captured: AtomicU64,
    /// Frames whose bytes could not be decoded.
    pub undecodable: AtomicU64,
    /// Times the connection to the camera was re-established.
    pub reconnects: AtomicU64,
    /// Frames that went through the models.
    pub analysed: AtomicU64,
    /// Frames the motion gate kept from the models.
    pub skipped_no_motion: AtomicU64,
}

/// A plain copy of `SourceStats` at one moment. Frames dropped in the hand-off are counted by
/// the camera's `FrameSlot::dropped`, not here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStatsSnapshot {
    pub captured: u64,
    pub undecodable: u64,
    pub reconnects: u64,
    pub analysed: u64,
    pub skipped_no_motion: u64,
}

impl SourceStats {
    /// Reads every counter (each individually; the set is not one atomic moment).
    pub fn snapshot(&self) -> SourceStatsSnapshot {
        SourceStatsSnapshot {
            captured: self.captured.load(Ordering::Relaxed),
            undecodable: self.undecodable.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            analysed: self.analysed.load(Ordering::Relaxed),
            skipped_no_motion: self.skipped_no_motion.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn frame(seq: u64) -> Frame {
        Frame {
            image: RgbImage::new(4, 3),
            seq,
            captured_at: SystemTime::now(),
            monotonic: Instant::now(),
        }
    }

    #[test]
    fn put_put_take_gives_the_newest_and_counts_the_drop() {
        let slot = FrameSlot::new();
        slot.put(frame(1));
        slot.put(frame(2));
        assert_eq!(slot.take().map(|f| f.seq), Some(2));
        assert_eq!(slot.dropped(), 1);
        assert!(slot.take().is_none());
    }

    #[test]
    fn take_on_empty_is_none() {
        let slot = FrameSlot::new();
        assert!(slot.take().is_none());
        assert_eq!(slot.dropped(), 0);
    }

    #[test]
    fn wait_take_wakes_when_another_thread_puts() {
        let slot = FrameSlot::new();
        let producer = slot.clone();
        let handle = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            producer.put(frame(7));
        });
        let started = Instant::now();
        let got = slot.wait_take(Duration::from_secs(10));
        assert_eq!(got.map(|f| f.seq), Some(7));
        assert!(started.elapsed() < Duration::from_secs(5));
        handle.join().unwrap();
    }

    #[test]
    fn wait_take_times_out() {
        let slot = FrameSlot::new();
        let started = Instant::now();
        assert!(slot.wait_take(Duration::from_millis(50)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn close_wakes_a_waiter_and_returns_none() {
        let slot = FrameSlot::new();
        let waiter = slot.clone();
        let handle = thread::spawn(move || {
            let started = Instant::now();
            let got = waiter.wait_take(Duration::from_secs(10));
            (got.is_none(), started.elapsed())
        });
        thread::sleep(Duration::from_millis(50));
        slot.close();
        let (none, waited) = handle.join().unwrap();
        assert!(none);
        assert!(waited < Duration::from_secs(5));
        assert!(slot.is_closed());
        // later waits return at once, and puts after close are discarded
        let started = Instant::now();
        assert!(slot.wait_take(Duration::from_secs(10)).is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
        slot.put(frame(3));
        assert!(slot.take().is_none());
    }

    #[test]
    fn slot_and_stats_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<FrameSlot>();
        check::<SourceStats>();
        check::<Frame>();
    }

    #[test]
    fn stats_snapshot_copies_the_counters() {
        let stats = SourceStats::default();
        stats.captured.fetch_add(3, Ordering::Relaxed);
        stats.skipped_no_motion.fetch_add(2, Ordering::Relaxed);
        let snap = stats.snapshot();
        assert_eq!(
            snap,
            SourceStatsSnapshot {
                captured: 3,
                skipped_no_motion: 2,
                ..Default::default()
            }
        );
    }
}
