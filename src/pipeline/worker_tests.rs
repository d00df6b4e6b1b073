//! Inference workers with fake models (no ONNX): two workers analyse two cameras' frames at the
//! same time, one worker one after the other; a worker's error stops them all and is returned.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Inference, Signals};
use crate::config::{CameraConfig, OwlVitWhen};
use crate::event::{Event, EventKind};
use crate::frame::Frame;
use crate::model::ModelKind;
use crate::pipeline::{Camera, Observation, PromptModel};

/// Where the cameras' models wait for each other: each run counts itself in and waits (up to
/// `patience`) until every camera's model is inside.
struct Meeting {
    inside: Mutex<usize>,
    all_in: Condvar,
    cameras: usize,
    patience: Duration,
}

/// How a model breaks, if it does.
#[derive(Clone, Copy, PartialEq)]
enum Fail {
    No,
    Error,
    Panic,
}

/// A model that scores its one prompt 0.9 after meeting the others (or giving up on them), and
/// records whether it met them; `fail` makes it return an error or panic instead.
struct Meets {
    meeting: Arc<Meeting>,
    met: Arc<Mutex<Vec<bool>>>,
    prompts: Vec<usize>,
    fail: Fail,
}

impl PromptModel for Meets {
    fn kind(&self) -> ModelKind {
        ModelKind::Clip
    }
    fn prompts(&self) -> &[usize] {
        &self.prompts
    }
    fn observe(&mut self, _: &Frame, _: Option<[u32; 4]>) -> Result<Vec<Observation>> {
        match self.fail {
            Fail::No => {}
            Fail::Error => anyhow::bail!("the model broke"),
            Fail::Panic => panic!("the model panicked"),
        }
        let m = &self.meeting;
        let mut inside = m.inside.lock().unwrap();
        *inside += 1;
        m.all_in.notify_all();
        let (inside, _) = m
            .all_in
            .wait_timeout_while(inside, m.patience, |n| *n < m.cameras)
            .unwrap();
        self.met.lock().unwrap().push(*inside >= m.cameras);
        Ok(vec![Observation {
            prompt: 0,
            score: 0.9,
            bbox: None,
        }])
    }
}

fn camera(id: &str, model: Meets) -> Camera {
    // decided on one frame (window 1, min_frames 1)
    let p = crate::pipeline::tests::prompt("a van", ModelKind::Clip);
    let config = CameraConfig {
        name: id.into(),
        id: id.into(),
        source: "unused".into(),
        fps: 1.0,
        looped: false,
        roi: None,
        owlvit_when: OwlVitWhen::Always,
        motion_crops: None,
        prompts: vec![p],
        watch: crate::config::WatchConfig::default_for(&Default::default()),
    };
    let cam = Camera::new(&config, None, vec![Box::new(model)]);
    // one frame, then the source ends
    cam.slot.put(Frame {
        image: image::RgbImage::new(8, 8),
        seq: 1,
        captured_at: std::time::SystemTime::now(),
        monotonic: Instant::now(),
    });
    cam.slot.close();
    cam
}

/// Runs two cameras (camera `b`'s model failing as `fail` says) on `workers` workers until
/// their sources end; whether each run met the other camera's, the run's result and the events.
fn run(workers: usize, patience: Duration, fail: Fail) -> (Vec<bool>, Result<()>, Receiver<Event>) {
    let meeting = Arc::new(Meeting {
        inside: Mutex::new(0),
        all_in: Condvar::new(),
        cameras: 2,
        patience,
    });
    let met = Arc::new(Mutex::new(vec![]));
    let model = |fail| Meets {
        meeting: meeting.clone(),
        met: met.clone(),
        prompts: vec![0],
        fail,
    };
    let cameras = vec![camera("a", model(Fail::No)), camera("b", model(fail))];
    let (tx, rx) = sync_channel(64);
    let (shutdown, heartbeat_ms) = (AtomicBool::new(false), AtomicU64::new(0));
    let signals = Signals {
        shutdown: &shutdown,
        heartbeat_ms: &heartbeat_ms,
        started: Instant::now(),
    };
    let result = Inference::new(cameras, tx, None)
        .with_workers(workers, 1)
        .run(signals, |_| Ok(()));
    let met = met.lock().unwrap().clone();
    (met, result, rx)
}

#[test]
fn two_workers_analyse_two_cameras_at_the_same_time() {
    let (met, result, rx) = run(2, Duration::from_secs(20), Fail::No);
    result.unwrap();
    assert_eq!(met, [true, true], "each camera's model met the other's");
    let started: Vec<String> = rx
        .try_iter()
        .filter(|e| e.kind == EventKind::Start)
        .map(|e| e.camera.clone())
        .collect();
    assert_eq!(started.len(), 2, "{started:?}");
    assert!(started.contains(&"a".to_string()) && started.contains(&"b".to_string()));
}

#[test]
fn one_worker_analyses_one_camera_at_a_time() {
    let (met, result, _rx) = run(1, Duration::from_millis(200), Fail::No);
    result.unwrap();
    assert_eq!(
        met,
        [false, true],
        "the first waited alone; the second found it counted"
    );
}

#[test]
fn a_workers_error_stops_every_worker_and_is_returned() {
    let (_, result, _rx) = run(2, Duration::from_millis(200), Fail::Error);
    let e = format!("{:#}", result.unwrap_err());
    assert!(e.contains("the model broke"), "{e}");
}

#[test]
fn a_panic_in_any_worker_ends_the_run_instead_of_hanging_it() {
    // the helper's panic comes back as an error; the first worker's panic goes on unwinding,
    // once the helpers stopped (either worker may take the panicking camera)
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(2, Duration::from_millis(200), Fail::Panic).1
    }));
    match outcome {
        Err(_) => {}
        Ok(Err(e)) => assert!(
            format!("{e:#}").contains("inference worker 1 panicked"),
            "{e:#}"
        ),
        Ok(Ok(())) => panic!("a panicking model ended in success"),
    }
}
