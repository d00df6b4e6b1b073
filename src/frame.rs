//! Frame: what flows from capture to inference. Owns the `Frame` value, the latest-wins
//! `FrameSlot` hand-off between a capture thread and the inference thread, the per-camera
//! `SourceStats` counters, and `decode_jpeg` (camera bytes -> RGB pixels).
//!
//! The slot holds at most one frame: a camera that produces faster than the models can consume
//! never builds a backlog, it just replaces the waiting frame and counts the one it replaced.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
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
    frame: Option<Frame>,
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
    pub fn put(&self, frame: Frame) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if state.frame.replace(frame).is_some() {
            state.dropped += 1;
        }
        drop(state);
        self.inner.ready.notify_one();
    }

    /// The waiting frame, if any, leaving the slot empty. Still works after `close`, so a
    /// frame put before shutdown can be drained.
    pub fn take(&self) -> Option<Frame> {
        self.lock().frame.take()
    }

    /// Waits up to `timeout` for a frame and takes it. Returns `None` on timeout, and at once
    /// when the slot is (or becomes) closed.
    pub fn wait_take(&self, timeout: Duration) -> Option<Frame> {
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

/// Decodes a camera frame: JPEG, or PNG when the bytes start with the PNG signature. The result
/// is converted to RGB as transformers' `convert_to_rgb` does ([`crate::preprocess::to_rgb`]:
/// transparency onto white). Truncated or corrupt bytes give an error
/// ("unable to decode frame: ..."), never a panic.
pub fn decode_jpeg(bytes: &[u8]) -> anyhow::Result<RgbImage> {
    const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let format = if bytes.starts_with(PNG_SIGNATURE) {
        image::ImageFormat::Png
    } else {
        image::ImageFormat::Jpeg
    };
    if format == image::ImageFormat::Jpeg
        && bytes.starts_with(&[0xFF, 0xD8])
        && !jpeg_has_end_of_image(bytes)
    {
        // The JPEG decoder fills a cut-off scan with grey instead of failing; a frame cut off
        // mid-transfer would then look like sudden motion.
        return Err(anyhow!(
            "unable to decode frame: JPEG truncated ({} bytes, no end-of-image marker)",
            bytes.len()
        ));
    }
    // The decoders report bad input as errors; the unwind guard only keeps a decoder bug on
    // hostile bytes from taking the capture thread down.
    let decoded = std::panic::catch_unwind(|| image::load_from_memory_with_format(bytes, format))
        .map_err(|_| {
            anyhow!(
                "unable to decode frame: {format:?} decoder panicked on {} bytes",
                bytes.len()
            )
        })?
        .map_err(|e| {
            anyhow!(
                "unable to decode frame: {e} ({format:?}, {} bytes)",
                bytes.len()
            )
        })?;
    Ok(crate::preprocess::to_rgb(decoded))
}

/// Whether an end-of-image marker (FF D9) follows the start of the last scan (FF DA). Inside
/// entropy-coded data every FF byte is followed by 00 or a restart marker, so neither marker
/// appears by accident; an embedded EXIF thumbnail ends before the main image's scans, and bytes
/// some cameras append after the end marker are tolerated.
fn jpeg_has_end_of_image(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    last_scan.is_some_and(|start| bytes[start..].windows(2).any(|w| w == [0xFF, 0xD9]))
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

    /// A textured picture, so that most of the JPEG is scan data.
    fn jpeg_bytes(width: u32, height: u32) -> Vec<u8> {
        let image = RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([((x * 7) ^ (y * 3)) as u8, (y * 5) as u8, (x ^ y) as u8])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&image)
            .unwrap();
        out
    }

    #[test]
    fn decode_jpeg_gives_the_right_size() {
        let decoded = decode_jpeg(&jpeg_bytes(160, 120)).unwrap();
        assert_eq!(decoded.dimensions(), (160, 120));
        // padding some cameras send after the end-of-image marker is fine
        let mut padded = jpeg_bytes(48, 32);
        padded.extend_from_slice(&[0, 0, 0, 0, b'\r', b'\n']);
        assert_eq!(decode_jpeg(&padded).unwrap().dimensions(), (48, 32));
    }

    #[test]
    fn decode_png_by_magic_bytes() {
        let image = RgbImage::from_pixel(5, 7, image::Rgb([1, 2, 3]));
        let mut out = std::io::Cursor::new(Vec::new());
        image.write_to(&mut out, image::ImageFormat::Png).unwrap();
        let decoded = decode_jpeg(out.get_ref()).unwrap();
        assert_eq!(decoded.dimensions(), (5, 7));
        assert_eq!(decoded.get_pixel(2, 3).0, [1, 2, 3]);
        let bytes = out.into_inner();
        assert!(decode_jpeg(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn truncated_jpeg_is_an_error() {
        // the decoder itself accepts a scan cut short, so every cut must be caught
        let bytes = jpeg_bytes(160, 120);
        for cut in [
            bytes.len() / 2,
            bytes.len() * 3 / 4,
            bytes.len() - 2,
            400,
            100,
            2,
        ] {
            let err = decode_jpeg(&bytes[..cut]).unwrap_err();
            assert!(
                format!("{err:#}").contains("unable to decode frame"),
                "cut {cut}: {err:#}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let garbage: Vec<u8> = (0..1000u32).map(|i| (i * 37 % 251) as u8).collect();
        let err = decode_jpeg(&garbage).unwrap_err();
        assert!(
            format!("{err:#}").contains("unable to decode frame"),
            "{err:#}"
        );
        assert!(decode_jpeg(&[]).is_err());
    }
}
