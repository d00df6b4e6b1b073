//! Source: where frames come from. [`FrameSource`] is the one seam tests need (recorded streams
//! and image files play through the same path as a camera); [`open`] picks the implementation
//! from a source spec, and [`capture_loop`] runs one on its own thread into a latest-wins slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use image::RgbImage;

use crate::backoff::{sleep_unless, Backoff};
use crate::frame::{Captured, FrameSlot, Picture, SourceStats};

pub mod bench;
pub mod file;
pub mod http;
pub mod multipart;
pub mod pixel;
pub mod rtsp;
pub mod v4l2;

/// A camera or a recording. `next_frame` blocks until the next frame (each source paces itself
/// or the capture loop limits the rate), and returns `Ok(None)` at the end of a finite stream.
pub trait FrameSource: Send {
    fn next_frame(&mut self) -> Result<Option<RgbImage>>;
    /// The next frame as the capture loop wants it: sources that receive compressed pictures
    /// (MJPEG parts, snapshots, V4L2 MJPEG) hand over the bytes, checked to be a whole picture
    /// but not decoded, so a frame the rate limit or the slot drops costs no decoding; the
    /// others decode (H.264 frames depend on earlier ones) and hand over pixels.
    fn next_picture(&mut self) -> Result<Option<Picture>> {
        Ok(self.next_frame()?.map(Picture::Pixels))
    }
    /// A description for logs, with any credentials removed.
    fn describe(&self) -> String;
    /// Frames the source received but could not decode and skipped, so far.
    fn undecodable(&self) -> u64 {
        0
    }
}

/// Opens a source from its config spec: an MJPEG stream (`http://...`), a JPEG URL polled at
/// `fps` (`snapshot+http://...`), an RTSP camera streaming H.264 (`rtsp://...`), a V4L2 camera
/// (`/dev/videoN[@WxH]`), an image file, a directory of images, or a glob. Network sources only
/// check their URL here and connect on the first `next_frame` (and reconnect on the call after
/// an error), so a camera that is off at startup is retried by [`capture_loop`].
pub fn open(spec: &str, fps: f64, looped: bool) -> Result<Box<dyn FrameSource>> {
    let lower = spec.to_ascii_lowercase();
    if lower.starts_with(http::SNAPSHOT_PREFIX) {
        return Ok(Box::new(http::SnapshotSource::open(spec, fps)?));
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(Box::new(http::MjpegSource::open(spec)?));
    }
    if lower.starts_with("/dev/video") {
        return Ok(Box::new(v4l2::V4l2Source::open(spec, fps)?));
    }
    if lower.starts_with("rtsp://") {
        return Ok(Box::new(rtsp::RtspSource::open(spec)?));
    }
    Ok(Box::new(file::FileSource::open(spec, fps, looped)?))
}

/// What [`open`] checks before it would read a frame, without reading one, connecting or opening
/// a device (`promptcam check`): URLs parse and name a host, a V4L2 spec parses and its device
/// node exists and may be opened, files, directories and globs name at least one image. Returns the source's
/// description.
pub fn check(spec: &str, fps: f64, looped: bool) -> Result<String> {
    if spec.to_ascii_lowercase().starts_with("/dev/video") {
        let (path, (w, h)) = v4l2::parse_spec(spec).with_context(|| {
            format!(
                "unable to use source {spec:?}: expected /dev/videoN or /dev/videoN@WIDTHxHEIGHT"
            )
        })?;
        use std::os::unix::fs::FileTypeExt;
        let node = std::fs::metadata(&path).with_context(|| {
            format!(
                "unable to open camera {path}: is it plugged in? `promptcam devices` lists cameras"
            )
        })?;
        if !node.file_type().is_char_device() {
            anyhow::bail!("unable to open camera {path}: it is not a device node; `promptcam devices` lists cameras");
        }
        let c = std::ffi::CString::new(path.as_bytes())
            .with_context(|| format!("unable to use source {spec:?}: a NUL byte in the path"))?;
        // SAFETY: access reads the NUL-terminated path only
        if unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK) } != 0 {
            let e = std::io::Error::last_os_error();
            anyhow::bail!("unable to open camera {path}: {e}; is the user in the `video` group?");
        }
        return Ok(format!(
            "V4L2 camera {path} (asking for {w}x{h}; not opened by check)"
        ));
    }
    // the network sources only parse their URL when opened; files are listed, not read
    Ok(open(spec, fps, looped)?.describe())
}

/// Removes `user:password@` from URLs so credentials never reach logs or errors. Everything up
/// to the last `@` counts as credentials, so a password with `@` or `/` in it is hidden whole.
pub fn redact(spec: &str) -> String {
    match (spec.find("://"), spec.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &spec[..s], &spec[at + 1..]),
        _ => spec.to_string(),
    }
}

/// Decodes `%XX` escapes in URL credentials (others are kept as written): the HTTP and RTSP
/// sources read `user:password@` this way.
pub(crate) fn percent_decode(text: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(text).collect()
}

/// Runs a source until it ends or `shutdown` is set, handing frames to `slot` at most `fps` per
/// second. Errors are counted as reconnects and retried after a capped exponential backoff with
/// jitter (never a hot loop); frames a source skipped as undecodable are counted from the source.
pub fn capture_loop(
    mut source: Box<dyn FrameSource>,
    fps: f64,
    slot: FrameSlot,
    stats: Arc<SourceStats>,
    shutdown: Arc<AtomicBool>,
) {
    let min_gap = Duration::from_secs_f64(1.0 / fps.max(0.001));
    let mut last: Option<Instant> = None;
    let mut seq = 0u64;
    // this capture thread's own backoff (and jitter generator, seeded from the OS)
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    // what the source counted as undecodable so far (the inference thread adds the frames
    // that fail to decode there)
    let mut undecodable = 0;
    let mut count_undecodable = |source: &dyn FrameSource| {
        let now = source.undecodable();
        stats
            .undecodable
            .fetch_add(now.saturating_sub(undecodable), Ordering::Relaxed);
        undecodable = now;
    };
    while !shutdown.load(Ordering::Relaxed) {
        match source.next_picture() {
            Ok(Some(picture)) => {
                backoff.reset();
                stats.captured.fetch_add(1, Ordering::Relaxed);
                count_undecodable(source.as_ref());
                let now = Instant::now();
                if last.is_some_and(|l| now.duration_since(l) < min_gap) {
                    continue;
                }
                last = Some(now);
                seq += 1;
                slot.put(Captured {
                    picture,
                    seq,
                    captured_at: SystemTime::now(),
                    monotonic: now,
                });
            }
            Ok(None) => break,
            Err(e) => {
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                count_undecodable(source.as_ref());
                let wait = backoff.next_wait();
                tracing::warn!(
                    "source {}: {e:#}; retrying in {:.1} s",
                    source.describe(),
                    wait.as_secs_f64()
                );
                sleep_unless(&shutdown, wait);
            }
        }
    }
    slot.close();
}

/// The first wait before reconnecting, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact("rtsp://admin:hunter2@10.0.0.5/stream"),
            "rtsp://***@10.0.0.5/stream"
        );
        assert_eq!(redact("tests/fixtures/images"), "tests/fixtures/images");
        let e = format!(
            "{:#}",
            open("rtsp://admin:hunter2@/s", 1.0, false).err().unwrap()
        );
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(redact("http://u:p@ss@cam/s"), "http://***@cam/s");
    }

    #[test]
    fn percent_escapes_decode_and_stray_percents_stay() {
        assert_eq!(percent_decode("ad%40min%3Ap%2fw"), b"ad@min:p/w");
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%zz%4"), b"%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "\u{e9}".as_bytes());
    }
}
