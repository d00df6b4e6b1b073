//! Notify: the main thread's part under systemd (`Type=notify`): READY once everything runs,
//! WATCHDOG only while every inference worker makes progress (the oldest worker's heartbeat:
//! `pipeline::worker`), a STATUS line every 10 s (frames analysed, mean inference time),
//! STOPPING on the way out.

use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::signals::Control;
use crate::status::Status;

/// Serves systemd until the inference thread ends.
pub(super) fn serve<T>(
    inference: &JoinHandle<T>,
    control: &Control,
    status: &Status,
    started: Instant,
) {
    let _ = sd_notify::notify(&[NotifyState::Ready]);
    let mut last_status = Instant::now();
    while !inference.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        let beat = Duration::from_millis(control.heartbeat_ms.load(Ordering::Relaxed));
        if started.elapsed().saturating_sub(beat) < Duration::from_secs(10) {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
        if last_status.elapsed() >= Duration::from_secs(10) {
            let _ = sd_notify::notify(&[NotifyState::Status(&status_line(status))]);
            last_status = Instant::now();
        }
        if control.shutdown.load(Ordering::Relaxed) {
            let _ = sd_notify::notify(&[NotifyState::Stopping]);
        }
    }
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// The cameras' inference time histograms, summed.
fn status_line(status: &Status) -> String {
    let (frames, ms) = status.cameras.iter().fold((0u64, 0f64), |(n, ms), c| {
        let t = c.snapshot(Instant::now()).inference;
        (n + t.count, ms + t.sum_ms)
    });
    format!(
        "analysed {frames} frames, inference {:.1} ms per frame",
        ms / frames.max(1) as f64
    )
}
