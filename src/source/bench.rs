//! Capture bench: `promptcam bench --capture SOURCE` — what capturing costs the capture thread
//! when the camera sends more frames than the models take: the same stream, on one connection,
//! first with every frame decoded as it arrives (how capture worked before frames waited in the
//! slot compressed), then with frames handed over undecoded and decoded only when taken. A taker
//! thread takes frames at the analysis rate and decodes them, as the inference thread does. The
//! capture thread's CPU time comes from its own thread clock; the figures of both phases come
//! from one run, so their ratio is the saving.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use image::RgbImage;
use serde::Serialize;

use super::{capture_loop, FrameSource};
use crate::frame::{FrameSlot, Picture, SourceStats};

/// One phase's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    pub seconds: f64,
    pub captured: u64,
    /// Frames the taker took (and decoded).
    pub taken: u64,
    /// The capture thread's CPU time over wall time, in percent of one core.
    pub capture_cpu_percent: f64,
    /// The taker's decoding time per taken frame, ms.
    pub decode_ms_per_taken: f64,
}

#[derive(Debug, Serialize)]
pub struct CaptureReport {
    pub source: String,
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    pub decode_at_capture: Phase,
    pub decode_when_taken: Phase,
}

impl std::fmt::Display for CaptureReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "capture of {} ({}x{}), analysed at {} fps",
            self.source, self.width, self.height, self.fps
        )?;
        writeln!(
            f,
            "  {:<30} {:>9} {:>7} {:>12} {:>16}",
            "", "captured", "taken", "capture CPU", "decode/taken ms"
        )?;
        for (name, p) in [
            ("every frame decoded (before)", &self.decode_at_capture),
            ("decoded when taken (now)", &self.decode_when_taken),
        ] {
            writeln!(
                f,
                "  {name:<30} {:>9} {:>7} {:>11.1}% {:>16.2}",
                p.captured, p.taken, p.capture_cpu_percent, p.decode_ms_per_taken
            )?;
        }
        let (a, b) = (
            self.decode_at_capture.capture_cpu_percent,
            self.decode_when_taken.capture_cpu_percent,
        );
        write!(
            f,
            "  capture thread CPU, now / before: {:.2}",
            b / a.max(1e-9)
        )
    }
}

/// The source, decoding every frame as it arrives while `eager` is set (the old capture).
struct Switch {
    inner: Box<dyn FrameSource>,
    eager: Arc<AtomicBool>,
}

impl FrameSource for Switch {
    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        self.inner.next_frame()
    }
    fn next_picture(&mut self) -> Result<Option<Picture>> {
        if self.eager.load(Ordering::Relaxed) {
            Ok(self.inner.next_frame()?.map(Picture::Pixels))
        } else {
            self.inner.next_picture()
        }
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn undecodable(&self) -> u64 {
        self.inner.undecodable()
    }
}

/// A thread's CPU clock, read from any thread.
fn thread_cpu(clock: libc::clockid_t) -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid timespec; an invalid clock only makes the call fail
    if unsafe { libc::clock_gettime(clock, &mut t) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Runs the two phases, `seconds` each (after a warm-up second), on one connection to `spec`.
pub fn run(spec: &str, fps: f64, seconds: f64) -> Result<CaptureReport> {
    use std::os::unix::thread::JoinHandleExt;
    let source = super::open(spec, 1000.0, false)?;
    let eager = Arc::new(AtomicBool::new(true));
    let described = source.describe();
    let switch = Box::new(Switch {
        inner: source,
        eager: eager.clone(),
    });
    let (slot, stats) = (FrameSlot::new(), Arc::new(SourceStats::default()));
    let shutdown = Arc::new(AtomicBool::new(false));
    let (s, st, sd) = (slot.clone(), stats.clone(), shutdown.clone());
    // the camera's own rate: the capture loop's limit must not drop frames before the slot
    let capture = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || capture_loop(switch, 1000.0, s, st, sd))
        .context("unable to start the capture thread")?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is alive until shutdown is set below, and clock is a valid out pointer
    if unsafe { libc::pthread_getcpuclockid(capture.as_pthread_t(), &mut clock) } != 0 {
        anyhow::bail!("unable to read the capture thread's CPU clock");
    }
    let gap = Duration::from_secs_f64(1.0 / fps);
    let mut size = (0, 0);
    let phase = |warm: f64, secs: f64, size: &mut (u32, u32)| -> Result<Phase> {
        let end_warm = Instant::now() + Duration::from_secs_f64(warm);
        while Instant::now() < end_warm {
            take_one(&slot, gap, size)?;
        }
        let (c0, n0, t0) = (
            thread_cpu(clock),
            stats.captured.load(Ordering::Relaxed),
            Instant::now(),
        );
        let (mut taken, mut decoding) = (0, Duration::ZERO);
        while t0.elapsed().as_secs_f64() < secs {
            if let Some(d) = take_one(&slot, gap, size)? {
                taken += 1;
                decoding += d;
            }
        }
        let wall = t0.elapsed();
        Ok(Phase {
            seconds: wall.as_secs_f64(),
            captured: stats.captured.load(Ordering::Relaxed) - n0,
            taken,
            capture_cpu_percent: (thread_cpu(clock) - c0).as_secs_f64() / wall.as_secs_f64()
                * 100.0,
            decode_ms_per_taken: decoding.as_secs_f64() * 1000.0 / taken.max(1) as f64,
        })
    };
    let before = phase(1.0, seconds, &mut size);
    eager.store(false, Ordering::Relaxed);
    let after = before.and_then(|b| Ok((b, phase(1.0, seconds, &mut size)?)));
    shutdown.store(true, Ordering::Relaxed);
    slot.close();
    let _ = capture.join();
    let (before, after) = after?;
    if before.captured == 0 || after.captured == 0 {
        anyhow::bail!("unable to measure the capture of {described}: no frames arrived; check the source with `promptcam probe --source ...`");
    }
    Ok(CaptureReport {
        source: described,
        fps,
        width: size.0,
        height: size.1,
        decode_at_capture: before,
        decode_when_taken: after,
    })
}

/// Sleeps until the next analysis is due, then takes the waiting frame (if any) and decodes it
/// as the inference thread would; returns the decoding time.
fn take_one(slot: &FrameSlot, gap: Duration, size: &mut (u32, u32)) -> Result<Option<Duration>> {
    std::thread::sleep(gap);
    let Some(c) = slot.take() else {
        return Ok(None);
    };
    let t = Instant::now();
    let frame = c.decode()?;
    *size = frame.image.dimensions();
    Ok(Some(t.elapsed()))
}
