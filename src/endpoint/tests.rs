//! Unit tests of `endpoint`.

use super::*;
use crate::frame::SourceStatsSnapshot;
use crate::status::InferenceTimes;

fn snap(captured: u64, analysed: u64, skipped: u64, paused: bool) -> CameraSnapshot {
    let source = SourceStatsSnapshot {
        captured,
        skipped_no_motion: skipped,
        ..SourceStatsSnapshot::default()
    };
    let inference = InferenceTimes {
        count: analysed,
        ..InferenceTimes::default()
    };
    // frames the inference thread did not take were replaced in the slot
    let dropped = captured.saturating_sub(analysed + skipped);
    CameraSnapshot {
        source,
        dropped,
        paused,
        paused_frames: 0,
        events: 0,
        inference,
        since_analysed: None,
        prompts: vec![],
    }
}

#[test]
fn health_needs_frames_and_inference_but_not_motion() {
    let t0 = Instant::now();
    let w = Duration::from_secs(30);
    let mut p = Progress::new(t0);
    let at = |s: u64| t0 + Duration::from_secs(s);
    assert!(
        verdict("a", &snap(0, 0, 0, false), false, &p, w, at(10)).is_ok(),
        "a grace window after start"
    );
    // a quiet camera: frames captured and held back by the motion gate is progress
    for i in 1..=60 {
        p.observe(&snap(i, 1, i - 1, false), at(i));
    }
    assert!(verdict("a", &snap(60, 1, 59, false), false, &p, w, at(61)).is_ok());
    // the source stops delivering: unhealthy after the window, naming the camera
    let e = verdict("a", &snap(60, 1, 59, false), false, &p, w, at(91)).unwrap_err();
    assert!(e.contains("camera a") && e.contains("no frame"), "{e}");
    // frames arrive but inference stands still
    for i in 61..=100 {
        p.observe(&snap(i, 1, 59, false), at(i));
    }
    let e = verdict("a", &snap(100, 1, 59, false), false, &p, w, at(100)).unwrap_err();
    assert!(e.contains("stalled"), "{e}");
    // paused cameras and ended sources never fail
    assert!(verdict("a", &snap(100, 1, 59, true), false, &p, w, at(500)).is_ok());
    assert!(verdict("a", &snap(100, 1, 59, false), true, &p, w, at(500)).is_ok());
}
