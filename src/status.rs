//! Status: the live picture of each camera that the edges read and steer — what capture and
//! inference measured (counts, inference time histogram, the latest analysed frame with its
//! labels), each prompt's current state and threshold, and the controls that MQTT commands change
//! (pause a camera, set a prompt's threshold).
//!
//! The inference thread owns the models and deciders; it writes here after each frame and takes
//! pending requests at the top of each loop, so a command never races a frame in flight. Readers
//! (the MQTT worker, the HTTP endpoint) only copy values out.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::frame::{Frame, FrameSlot, SourceStats, SourceStatsSnapshot};

/// Upper bounds (milliseconds) of the inference time histogram buckets; one more bucket counts
/// everything slower.
pub const INFERENCE_BUCKETS_MS: [f64; 12] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];

/// One prompt as the outside sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptStatus {
    pub id: String,
    pub name: String,
    /// The `on` threshold in force.
    pub threshold: f32,
    /// The smoothed score after the last analysed frame.
    pub score: f32,
    pub on: bool,
}

/// Inference time per analysed frame, as a cumulative histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InferenceTimes {
    pub count: u64,
    pub sum_ms: f64,
    /// `buckets[i]` counts frames that took at most `INFERENCE_BUCKETS_MS[i]` (not cumulative);
    /// the last entry counts the rest.
    pub buckets: [u64; INFERENCE_BUCKETS_MS.len() + 1],
    /// The last frame's time.
    pub last_ms: f64,
}

impl InferenceTimes {
    pub fn record(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        self.count += 1;
        self.sum_ms += ms;
        self.last_ms = ms;
        let i = INFERENCE_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(INFERENCE_BUCKETS_MS.len());
        self.buckets[i] += 1;
    }
}

/// The latest analysed frame and the labels to draw on it (drawn and encoded only on request).
#[derive(Clone)]
pub struct Latest {
    pub frame: Arc<Frame>,
    pub labels: Vec<(Option<[f32; 4]>, String)>,
}

#[derive(Default)]
struct Live {
    prompts: Vec<PromptStatus>,
    inference: InferenceTimes,
    last_analysed: Option<Instant>,
    latest: Option<Latest>,
    /// Threshold changes asked for and not yet applied: (prompt id, threshold).
    threshold_requests: Vec<(String, f32)>,
    /// The prompts' settings in force (live thresholds included), for the prompt lab.
    configs: Vec<crate::config::PromptConfig>,
    /// The class embeddings of the camera's CLIP prompts made of pictures, by prompt id, with the
    /// logit scale (the lab measures those prompts on the marks; it has no image tower).
    classes: Vec<(String, crate::history::lab::QueryEmbeddings, f32)>,
}

/// One camera's live state, shared by the capture, inference, MQTT and HTTP threads.
pub struct CameraStatus {
    pub id: String,
    pub name: String,
    pub source: Arc<SourceStats>,
    slot: FrameSlot,
    /// While set, frames are taken from the slot and dropped unanalysed (counted in `paused_frames`).
    pub paused: AtomicBool,
    pub paused_frames: AtomicU64,
    /// Events started on this camera.
    pub events: AtomicU64,
    live: Mutex<Live>,
}

/// Counters of one camera at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct CameraSnapshot {
    pub source: SourceStatsSnapshot,
    /// Frames replaced in the latest-wins slot before inference took them.
    pub dropped: u64,
    pub paused: bool,
    pub paused_frames: u64,
    pub events: u64,
    pub inference: InferenceTimes,
    /// Time since the last analysed frame, if any.
    pub since_analysed: Option<Duration>,
    pub prompts: Vec<PromptStatus>,
}

impl CameraStatus {
    pub fn new(
        id: &str,
        name: &str,
        source: Arc<SourceStats>,
        slot: FrameSlot,
        prompts: Vec<PromptStatus>,
    ) -> CameraStatus {
        CameraStatus {
            id: id.to_string(),
            name: name.to_string(),
            source,
            slot,
            paused: AtomicBool::new(false),
            paused_frames: AtomicU64::new(0),
            events: AtomicU64::new(0),
            live: Mutex::new(Live {
                prompts,
                ..Live::default()
            }),
        }
    }

    // a panic elsewhere must not take the status down with it: the data stays usable
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// Asks the inference thread to use `threshold` for prompt `prompt_id`; returns false (and
    /// changes nothing) when the camera has no such prompt or the value is not in 0..=1. `-0`
    /// is taken as `0`.
    pub fn request_threshold(&self, prompt_id: &str, threshold: f32) -> bool {
        if !(0.0..=1.0).contains(&threshold) {
            return false;
        }
        let threshold = threshold + 0.0; // -0 is 0 (and is shown as 0)
        let mut live = self.live();
        if !live.prompts.iter().any(|p| p.id == prompt_id) {
            return false;
        }
        live.threshold_requests
            .push((prompt_id.to_string(), threshold));
        true
    }

    /// The inference thread: the threshold requests since the last call, oldest first.
    pub fn take_threshold_requests(&self) -> Vec<(String, f32)> {
        std::mem::take(&mut self.live().threshold_requests)
    }

    /// The inference thread: after a frame, its time, the prompts' states and the labels.
    pub fn record_frame(
        &self,
        now: Instant,
        took: Duration,
        frame: Arc<Frame>,
        labels: Vec<(Option<[f32; 4]>, String)>,
    ) {
        let mut live = self.live();
        live.inference.record(took);
        live.last_analysed = Some(now);
        live.latest = Some(Latest { frame, labels });
    }

    /// The inference thread: replaces the prompt list (after a reload changed the prompts).
    pub fn set_prompts(&self, prompts: Vec<PromptStatus>) {
        self.live().prompts = prompts;
    }

    /// The inference thread: the prompts' settings in force, after a load, reload or threshold change.
    pub fn set_prompt_configs(&self, configs: Vec<crate::config::PromptConfig>) {
        self.live().configs = configs;
    }

    pub fn set_classes(&self, classes: Vec<(String, crate::history::lab::QueryEmbeddings, f32)>) {
        self.live().classes = classes;
    }

    /// A picture prompt's class embeddings and logit scale, by prompt id.
    pub fn class_of(&self, id: &str) -> Option<(crate::history::lab::QueryEmbeddings, f32)> {
        self.live()
            .classes
            .iter()
            .find(|(i, ..)| i == id)
            .map(|(_, q, s)| (q.clone(), *s))
    }

    pub fn prompt_configs(&self) -> Vec<crate::config::PromptConfig> {
        self.live().configs.clone()
    }

    /// The inference thread: one prompt's smoothed score, state and threshold.
    pub fn update_prompt(&self, index: usize, score: f32, on: bool, threshold: f32) {
        if let Some(p) = self.live().prompts.get_mut(index) {
            (p.score, p.on, p.threshold) = (score, on, threshold);
        }
    }

    /// The source ended (a finite file replay) and its capture thread stopped.
    pub fn source_ended(&self) -> bool {
        self.slot.is_closed()
    }

    pub fn latest(&self) -> Option<Latest> {
        self.live().latest.clone()
    }

    pub fn prompts(&self) -> Vec<PromptStatus> {
        self.live().prompts.clone()
    }

    pub fn snapshot(&self, now: Instant) -> CameraSnapshot {
        let live = self.live();
        CameraSnapshot {
            source: self.source.snapshot(),
            dropped: self.slot.dropped(),
            paused: self.is_paused(),
            paused_frames: self.paused_frames.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            inference: live.inference.clone(),
            since_analysed: live.last_analysed.map(|t| now.saturating_duration_since(t)),
            prompts: live.prompts.clone(),
        }
    }
}

/// One figure an output (a sink, the history) reports about itself, for `/metrics`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputMetric {
    /// The family name, without the `_total` a counter gets or a unit suffix.
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    /// `Some("bytes")` adds the unit to the name.
    pub unit: Option<&'static str>,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// What an output can say about itself; registered in [`Status::add_output`].
pub trait OutputStats: Send + Sync {
    fn metrics(&self) -> Vec<OutputMetric>;

    /// What keeps this output from working as configured now (a line of `/healthz`), if
    /// anything; unlike [`Status::degrade`], it clears once the cause is gone.
    fn degraded(&self) -> Option<String> {
        None
    }
}

/// Events handed to one sink, and those it failed to take.
pub struct SinkStatus {
    pub name: &'static str,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
}

impl SinkStatus {
    pub fn new(name: &'static str) -> SinkStatus {
        SinkStatus {
            name,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

impl OutputStats for SinkStatus {
    fn metrics(&self) -> Vec<OutputMetric> {
        let metric = |name, help, value: u64| OutputMetric {
            name,
            help,
            counter: true,
            unit: None,
            labels: vec![("sink", self.name.to_string())],
            value: value as f64,
        };
        vec![
            metric(
                "promptcam_sink_events",
                "Events handed to the sink.",
                self.delivered.load(Ordering::Relaxed),
            ),
            metric(
                "promptcam_sink_failures",
                "Events the sink failed to take (see the log).",
                self.failed.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// Every camera's status, in config order, and the outputs' figures.
#[derive(Clone, Default)]
pub struct Status {
    pub cameras: Vec<Arc<CameraStatus>>,
    /// The prompts added while the daemon runs (MQTT, Home Assistant, the prompt lab).
    pub runtime: crate::runtime::Runtime,
    outputs: Arc<Mutex<Vec<Arc<dyn OutputStats>>>>,
    /// What works less than configured while the cameras run (`/healthz` says "degraded").
    degraded: Arc<Mutex<Vec<String>>>,
}

impl Status {
    pub fn new(cameras: Vec<Arc<CameraStatus>>) -> Status {
        Status {
            cameras,
            runtime: crate::runtime::Runtime::default(),
            outputs: Arc::default(),
            degraded: Arc::default(),
        }
    }

    pub fn camera(&self, id: &str) -> Option<&Arc<CameraStatus>> {
        self.cameras.iter().find(|c| c.id == id)
    }

    /// Registers an output's figures (the sinks, the MQTT publisher, the history).
    pub fn add_output(&self, o: Arc<dyn OutputStats>) {
        self.outputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(o);
    }

    /// Records a part that works less than configured (a line of `/healthz`).
    pub fn degrade(&self, why: String) {
        self.degraded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(why);
    }

    /// What works less than configured: the lasting lines, then the outputs' current ones.
    pub fn degraded(&self) -> Vec<String> {
        let mut lines = self
            .degraded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let outputs = self
            .outputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        lines.extend(outputs.iter().filter_map(|o| o.degraded()));
        lines
    }

    /// Every output's figures, now.
    pub fn output_metrics(&self) -> Vec<OutputMetric> {
        let outputs = self
            .outputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        outputs.iter().flat_map(|o| o.metrics()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera() -> CameraStatus {
        let p = PromptStatus {
            id: "person".into(),
            name: "Person".into(),
            threshold: 0.5,
            score: 0.0,
            on: false,
        };
        CameraStatus::new("porch", "Porch", Arc::default(), FrameSlot::new(), vec![p])
    }

    #[test]
    fn threshold_requests_are_validated_and_taken_once() {
        let c = camera();
        assert!(!c.request_threshold("person", 1.5));
        assert!(!c.request_threshold("person", f32::NAN));
        assert!(!c.request_threshold("car", 0.3));
        assert!(c.request_threshold("person", 0.3));
        assert!(c.request_threshold("person", 0.4));
        assert!(c.request_threshold("person", -0.0));
        let taken = c.take_threshold_requests();
        assert_eq!(
            taken,
            vec![
                ("person".to_string(), 0.3),
                ("person".to_string(), 0.4),
                ("person".to_string(), 0.0)
            ]
        );
        assert!(taken[2].1.is_sign_positive(), "-0 is taken as 0");
        assert_eq!(format!("{}", taken[2].1), "0");
        assert!(c.take_threshold_requests().is_empty());
    }

    #[test]
    fn histogram_buckets_and_sum() {
        let mut t = InferenceTimes::default();
        for ms in [3, 5, 6, 40_000] {
            t.record(Duration::from_millis(ms));
        }
        assert_eq!(t.count, 4);
        assert_eq!(t.buckets[0], 2, "3 and 5 ms are <= 5 ms");
        assert_eq!(t.buckets[1], 1);
        assert_eq!(
            t.buckets[INFERENCE_BUCKETS_MS.len()],
            1,
            "40 s is beyond the last bound"
        );
        assert!((t.sum_ms - 40_014.0).abs() < 1e-6);
        assert_eq!(t.last_ms, 40_000.0);
    }
}
