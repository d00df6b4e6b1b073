//! Pause and `/metrics` against the real daemon with a real broker: a looped replay (two rocket
//! frames, two cat frames and a corrupt file, so events start and end every loop and one file
//! per loop is undecodable) with `[http]` and `[mqtt]`. Pausing over MQTT stops analysis (no
//! frame analysed, no event, frames counted as paused) and resuming restarts it; every
//! documented metric family is there with a value that fits what the test saw: counts that add
//! up, the events the subscriber received, the spool drained, one broker connection (two after
//! a broker restart).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::endpoint::{agent, free_port, get, parse_prometheus};
use crate::fixture::TempDir;
use crate::mqtt::{Broker, Sub};
use crate::spawn::{Exit, Proc};

const BASE: &str = "promptcam/promptcam/launch_pad";
const PROMPT: &str = "a_rocket_on_the_launch_pad";

/// Every family the README documents, with its type.
const FAMILIES: [(&str, &str); 16] = [
    ("promptcam_frames_captured_total", "counter"),
    ("promptcam_frames_dropped_total", "counter"),
    ("promptcam_frames_undecodable_total", "counter"),
    ("promptcam_source_reconnects_total", "counter"),
    ("promptcam_frames_analysed_total", "counter"),
    ("promptcam_frames_skipped_no_motion_total", "counter"),
    ("promptcam_frames_paused_total", "counter"),
    ("promptcam_events_total", "counter"),
    ("promptcam_camera_paused", "gauge"),
    ("promptcam_inference_duration_seconds", "histogram"),
    ("promptcam_prompt_on", "gauge"),
    ("promptcam_prompt_score", "gauge"),
    ("promptcam_mqtt_spool_depth", "gauge"),
    ("promptcam_mqtt_connected", "gauge"),
    ("promptcam_mqtt_spool_dropped_total", "counter"),
    ("promptcam_mqtt_connections_total", "counter"),
];

struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn get(port: u16) -> Metrics {
        let (code, _, body) =
            get(&agent(), &format!("http://127.0.0.1:{port}/metrics")).expect("/metrics answers");
        assert_eq!(code, 200);
        let (types, samples) = parse_prometheus(&String::from_utf8(body).unwrap());
        for (family, t) in FAMILIES {
            assert_eq!(types.get(family).map(String::as_str), Some(t), "{family}");
        }
        Metrics(samples)
    }

    /// A per-camera series.
    fn cam(&self, name: &str) -> f64 {
        self.0[&format!("{name}{{camera=\"launch_pad\"}}")]
    }

    fn prompt(&self, name: &str) -> f64 {
        self.0[&format!("{name}{{camera=\"launch_pad\",prompt=\"{PROMPT}\"}}")]
    }

    fn global(&self, name: &str) -> f64 {
        self.0[&format!("{name}{{}}")]
    }
}

fn wait_metrics(port: u16, what: &str, f: impl Fn(&Metrics) -> bool) -> Metrics {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if get(&agent(), &format!("http://127.0.0.1:{port}/metrics")).is_some() {
            let m = Metrics::get(port);
            if f(&m) {
                return m;
            }
        }
        assert!(Instant::now() < end, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The event payloads that arrive until none has for `quiet`.
fn drain(sub: &Sub, quiet: Duration) -> Vec<serde_json::Value> {
    let mut out = vec![];
    while let Some(m) = sub.wait_for(quiet, |_| true) {
        out.push(serde_json::from_str(&m.payload).unwrap());
    }
    out
}

#[test]
fn pause_stops_analysis_and_every_metric_tells_the_truth() {
    let tmp = TempDir::new("pause-metrics");
    let mut broker = Broker::start(tmp.path(), "");
    let events = Sub::new(
        broker.port,
        "pm-events",
        &["promptcam/promptcam/events"],
        true,
    );
    let states = Sub::new(broker.port, "pm-states", &[&format!("{BASE}/paused")], true);
    let frames = ["rocket.png", "rocket.png", "chelsea.png", "chelsea.png"];
    let config = crate::daemon::replay(tmp.path(), &frames, true, 0.6);
    std::fs::write(tmp.path().join("frames").join("004.jpg"), b"not a picture").unwrap();
    let port = free_port();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("fps = 10", "fps = 5");
    std::fs::write(
        &config,
        format!(
            "{text}\n[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nspool_dir = \"{}\"\n",
            broker.port,
            tmp.path().join("spool").display()
        ),
    )
    .unwrap();
    let mut d = Proc::run(&config, None);
    let running = wait_metrics(port, "10 frames analysed and connected", |m| {
        m.cam("promptcam_frames_analysed_total") >= 10.0
            && m.global("promptcam_mqtt_connected") == 1.0
    });
    assert_eq!(running.cam("promptcam_camera_paused"), 0.0);

    // pause: once the switch says so and the frame in flight is done, nothing is analysed
    states.publish(&format!("{BASE}/paused/set"), "ON");
    assert!(
        states
            .wait_for(Duration::from_secs(10), |m| m.payload == "ON")
            .is_some(),
        "the paused state"
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = drain(&events, Duration::from_secs(1));
    let m1 = Metrics::get(port);
    let during = drain(&events, Duration::from_millis(2500));
    let m2 = Metrics::get(port);
    assert!(during.is_empty(), "events while paused: {during:?}");
    let analysed = m2.cam("promptcam_frames_analysed_total");
    assert_eq!(
        analysed,
        m1.cam("promptcam_frames_analysed_total"),
        "analysed while paused"
    );
    let paused = m2.cam("promptcam_frames_paused_total");
    assert!(
        paused >= m1.cam("promptcam_frames_paused_total") + 8.0,
        "5 fps for 2.5 s go to the paused count: {} -> {paused}",
        m1.cam("promptcam_frames_paused_total")
    );
    assert_eq!(m2.cam("promptcam_camera_paused"), 1.0);

    // the counts add up: every captured frame was analysed, held back, paused or replaced
    let captured = m2.cam("promptcam_frames_captured_total");
    let dropped = m2.cam("promptcam_frames_dropped_total");
    let skipped = m2.cam("promptcam_frames_skipped_no_motion_total");
    assert_eq!(skipped, 0.0, "the motion gate is off");
    assert!(
        (captured - (analysed + skipped + paused + dropped)).abs() <= 2.0,
        "captured {captured} vs analysed {analysed} + paused {paused} + dropped {dropped}"
    );
    assert!(
        dropped <= 5.0,
        "the tiny model keeps up at 5 fps: {dropped}"
    );
    assert_eq!(m2.cam("promptcam_source_reconnects_total"), 0.0);
    // one corrupt file per loop of four pictures
    let undecodable = m2.cam("promptcam_frames_undecodable_total");
    assert!(
        undecodable >= 1.0 && (captured / 4.0 - undecodable).abs() <= 1.5,
        "{undecodable} undecodable for {captured} captured"
    );
    // the histogram counts the analysed frames
    let h = "promptcam_inference_duration_seconds";
    assert_eq!(m2.cam(&format!("{h}_count")), analysed);
    assert!(m2.cam(&format!("{h}_sum")) > 0.0);
    let mut buckets: Vec<(f64, f64)> =
        m2.0.iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&format!("{h}_bucket{{camera=\"launch_pad\",le=\""))?;
                let le = le.strip_suffix("\"}")?;
                Some((
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    },
                    *v,
                ))
            })
            .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), 13);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap().1, analysed);
    // the events: as many started as the subscriber saw start
    let starts = before.iter().filter(|e| e["type"] == "start").count();
    assert!(starts >= 2, "{before:?}");
    assert_eq!(
        m2.cam("promptcam_events_total"),
        starts as f64,
        "{before:?}"
    );
    // the prompt: ON/OFF as the retained state says, with a score that fits it
    let state = Sub::new(
        broker.port,
        "pm-state",
        &[&format!("{BASE}/{PROMPT}/state")],
        true,
    )
    .wait_for(Duration::from_secs(5), |_| true)
    .expect("the retained state");
    let (on, score) = (
        m2.prompt("promptcam_prompt_on"),
        m2.prompt("promptcam_prompt_score"),
    );
    assert_eq!(
        on,
        if state.payload == "ON" { 1.0 } else { 0.0 },
        "{}",
        state.payload
    );
    assert!((0.0..=1.0).contains(&score));
    assert!(
        if on == 1.0 {
            score >= 0.48
        } else {
            score < 0.6
        },
        "on {on}, score {score}"
    );
    // the publisher: drained, connected once, nothing dropped
    assert_eq!(m2.global("promptcam_mqtt_spool_depth"), 0.0);
    assert_eq!(m2.global("promptcam_mqtt_connected"), 1.0);
    assert_eq!(m2.global("promptcam_mqtt_connections_total"), 1.0);
    assert_eq!(m2.global("promptcam_mqtt_spool_dropped_total"), 0.0);

    // resume: analysis and events come back
    states.publish(&format!("{BASE}/paused/set"), "OFF");
    wait_metrics(port, "analysis after the resume", |m| {
        m.cam("promptcam_frames_analysed_total") > analysed
            && m.cam("promptcam_camera_paused") == 0.0
    });
    let start = events.wait_for(Duration::from_secs(15), |m| m.payload.contains("\"start\""));
    assert!(start.is_some(), "no event after the resume");

    // a broker restart is a second connection
    broker.stop();
    wait_metrics(port, "disconnected", |m| {
        m.global("promptcam_mqtt_connected") == 0.0
    });
    broker.restart();
    wait_metrics(port, "reconnected", |m| {
        m.global("promptcam_mqtt_connected") == 1.0
            && m.global("promptcam_mqtt_connections_total") == 2.0
    });
    d.signal(libc::SIGTERM);
    assert_eq!(
        d.wait(Duration::from_secs(20)),
        Some(Exit::Code(0)),
        "{}",
        d.log()
    );
}
