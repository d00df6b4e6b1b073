//! Camera: one camera as the inference thread sees it — its motion gate, prompt models and, per
//! prompt, the decider and the event tracker — and what one frame (or time passing) turns into:
//! events, the history's record, the labels of the latest-frame view.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Result;

use super::{inside, Observation, PromptModel};
use crate::annotate::Snapshot;
use crate::config::{CameraConfig, OwlVitWhen, PromptConfig};
use crate::decide::{DecideConfig, Decider, Transition};
use crate::event::{Event, EventKind, EventTracker};
use crate::frame::{Frame, FrameSlot, SourceStats};
use crate::history::{FrameRecord, PromptScore, ThumbnailClock};
use crate::model::ModelKind;
use crate::motion::{MotionGate, Reason};
use crate::status::{CameraStatus, PromptStatus};

struct PromptState {
    config: PromptConfig,
    decider: Decider,
    events: EventTracker,
    /// How far `off` sits below `on` in the config file: kept when a command moves `on`, even
    /// through a threshold of 0 (where `off` is clamped to 0 and the gap would otherwise be lost).
    gap: f32,
}

impl PromptState {
    fn new(config: &PromptConfig) -> PromptState {
        PromptState {
            decider: Decider::new(config.decide.clone()),
            events: EventTracker::default(),
            gap: configured_gap(&config.decide),
            config: config.clone(),
        }
    }
}

/// Marks a run-time prompt's event (and why it ended, when it did not end by itself).
fn tag(config: &PromptConfig, e: &mut Event, reason: Option<&'static str>) {
    if let Some(m) = &config.runtime {
        e.runtime = true;
        e.once = m.once;
    }
    e.reason = reason;
}

/// Ends a prompt's open event, if it has one.
fn end_open(
    camera: &str,
    p: &mut PromptState,
    wall: SystemTime,
    reason: Option<&'static str>,
) -> Option<Event> {
    if !p.events.is_open() {
        return None;
    }
    let score = p.decider.best().unwrap_or(0.0);
    let mut e = p
        .events
        .follow(camera, &p.config.id, Transition::Ended, score, None, wall)?;
    tag(&p.config, &mut e, reason);
    Some(e)
}

fn configured_gap(d: &DecideConfig) -> f32 {
    (d.threshold - d.off_threshold).max(0.0)
}

/// The `(on, off)` thresholds for a new `on`: `off` keeps the configured `gap` below it, never
/// below zero; `-0` is `0`.
pub fn retarget(on: f32, gap: f32) -> (f32, f32) {
    let on = on + 0.0; // -0 + 0 is +0
    (on, (on - gap).max(0.0))
}

/// A label per prompt for the latest-frame view: its best box this frame (if any) and score.
pub type Labels = Vec<(Option<[f32; 4]>, String)>;

/// What analysing one frame produced.
pub struct Analysis {
    /// Start, update and end events, in the order they happened.
    pub events: Vec<Event>,
    pub labels: Labels,
    /// For the history: every prompt's score and box, the CLIP embedding (no thumbnail yet).
    pub record: FrameRecord,
    /// Whether a prompt's event started or improved on this frame.
    pub event: bool,
}

pub struct Camera {
    pub config: CameraConfig,
    pub slot: FrameSlot,
    pub stats: Arc<SourceStats>,
    /// What the MQTT and HTTP edges read (counts, prompt states) and steer (pause, thresholds).
    pub status: Arc<CameraStatus>,
    motion: Option<MotionGate>,
    models: Vec<Box<dyn PromptModel>>,
    prompts: Vec<PromptState>,
    /// When this camera's next history thumbnail is due.
    pub thumbs: ThumbnailClock,
    /// When a detector last looked at a whole frame (motion crops only).
    whole_frame_at: Option<Instant>,
}

impl Camera {
    pub fn new(
        config: &CameraConfig,
        motion: Option<MotionGate>,
        models: Vec<Box<dyn PromptModel>>,
    ) -> Camera {
        let (slot, stats) = (FrameSlot::new(), Arc::<SourceStats>::default());
        let prompts: Vec<PromptState> = config.prompts.iter().map(PromptState::new).collect();
        let status = Arc::new(CameraStatus::new(
            &config.id,
            &config.name,
            stats.clone(),
            slot.clone(),
            vec![],
        ));
        let cam = Camera {
            config: config.clone(),
            slot,
            stats,
            status,
            motion,
            models,
            prompts,
            thumbs: ThumbnailClock::default(),
            whole_frame_at: None,
        };
        cam.publish_prompts();
        cam
    }

    /// The prompts as the status shows them (after a load, reload or threshold change).
    fn publish_prompts(&self) {
        let statuses = self
            .prompts
            .iter()
            .map(|p| PromptStatus {
                id: p.config.id.clone(),
                name: p.config.name.clone(),
                threshold: p.config.decide.threshold,
                score: p.decider.best().unwrap_or(0.0),
                on: p.decider.is_on(),
            })
            .collect();
        self.status.set_prompts(statuses);
        self.status
            .set_prompt_configs(self.prompts.iter().map(|p| p.config.clone()).collect());
        self.publish_classes();
    }

    /// The class embeddings of the camera's picture prompts, for the prompt lab.
    fn publish_classes(&self) {
        let classes = self
            .models
            .iter()
            .flat_map(|m| m.picture_classes())
            .filter_map(|(i, q, scale)| Some((self.prompts.get(i)?.config.id.clone(), q, scale)))
            .collect();
        self.status.set_classes(classes);
    }

    pub fn models(&self) -> &[Box<dyn PromptModel>] {
        &self.models
    }

    /// Runs the models on a frame if the motion gate lets it through, and follows each prompt's
    /// score through its decider and event tracker; `None` when the gate held the frame back.
    pub fn analyse(&mut self, frame: &Arc<Frame>) -> Result<Option<Analysis>> {
        let (mut moved, mut region) = (true, None);
        if let Some(gate) = self.motion.as_mut() {
            let verdict = gate.check(&frame.image, frame.monotonic);
            if !verdict.analyse {
                self.stats.skipped_no_motion.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            moved = matches!(verdict.reason, Reason::Motion | Reason::First);
            region = verdict.region;
        }
        let focus = self.focus(region, frame.monotonic);
        self.stats.analysed.fetch_add(1, Ordering::Relaxed);
        let roi = self.config.roi;
        let mut out = Analysis {
            events: vec![],
            labels: vec![],
            record: FrameRecord {
                camera: self.config.id.clone(),
                time: frame.captured_at,
                motion: moved,
                scores: vec![],
                embedding: None,
                thumbnail: None,
            },
            event: false,
        };
        for m in 0..self.models.len() {
            if !self.runs(m, moved) {
                continue;
            }
            let cropped = self.models[m].focus(focus, frame.image.dimensions());
            if self.models[m].kind().is_detector() && !cropped {
                self.whole_frame_at = Some(frame.monotonic);
            }
            let seen = self.models[m].observe(frame, roi)?;
            if let Some((model, e)) = self.models[m].embedding() {
                out.record.embedding = Some((model.clone(), e.to_vec()));
            }
            for i in self.models[m].prompts().to_vec() {
                // a prompt's best observation; a box counts only when its center is inside the
                // region of interest, and a prompt without one scores 0
                let best = seen
                    .iter()
                    .filter(|o| o.prompt == i && o.bbox.is_none_or(|b| inside(roi, &b)))
                    .max_by(|a, b| a.score.total_cmp(&b.score));
                let Observation { score, bbox, .. } = best.cloned().unwrap_or(Observation {
                    prompt: i,
                    score: 0.0,
                    bbox: None,
                });
                out.event |= self.observe(i, m, score, bbox, frame, &mut out.events);
                let p = &self.prompts[i];
                let label = match p.config.model {
                    ModelKind::ClipSeg => format!("{} {:.1}%", p.config.name, score * 100.0),
                    _ => format!("{} {score:.2}", p.config.name),
                };
                out.labels.push((bbox, label));
                out.record.scores.push(PromptScore {
                    prompt: p.config.id.clone(),
                    score,
                    bbox,
                });
            }
        }
        Ok(Some(out))
    }

    /// The motion region detectors look around on this frame, with `motion_crops` on: none on
    /// the first frame, when the gate saw no motion (a refresh), or when the last whole-frame
    /// pass is `full_frame_every` old.
    fn focus(&self, region: Option<[u32; 4]>, now: Instant) -> Option<[u32; 4]> {
        let every = self.config.motion_crops?;
        let last = self.whole_frame_at?;
        (now.saturating_duration_since(last) < every).then_some(region)?
    }

    /// Whether model `m` runs on this frame: detectors only when the camera's `owlvit_when` says
    /// so (every analysed frame, only on motion, or only while a CLIP prompt is ON: a cascade).
    fn runs(&self, m: usize, moved: bool) -> bool {
        if !self.models[m].kind().is_detector() {
            return true;
        }
        match self.config.owlvit_when {
            OwlVitWhen::Always => true,
            OwlVitWhen::Motion => moved,
            OwlVitWhen::ClipOn => self
                .prompts
                .iter()
                .any(|p| p.config.model == ModelKind::Clip && p.decider.is_on()),
        }
    }

    /// One prompt's score for a frame through its decider and tracker; true when its event
    /// started or improved (the frame then gets a history thumbnail).
    fn observe(
        &mut self,
        i: usize,
        model: usize,
        score: f32,
        bbox: Option<[f32; 4]>,
        frame: &Arc<Frame>,
        events: &mut Vec<Event>,
    ) -> bool {
        let p = &mut self.prompts[i];
        let d = p.decider.observe(Some(score), frame.monotonic);
        self.status
            .update_prompt(i, d.smoothed, p.decider.is_on(), p.config.decide.threshold);
        let Some(mut e) = p.events.follow(
            &self.config.id,
            &p.config.id,
            d.transition,
            d.smoothed,
            bbox,
            frame.captured_at,
        ) else {
            return false;
        };
        if e.kind == EventKind::Start {
            self.status.events.fetch_add(1, Ordering::Relaxed);
        }
        tag(&p.config, &mut e, None);
        let better = matches!(e.kind, EventKind::Start | EventKind::Update);
        if better {
            let label = format!("{} {:.2}", p.config.name, p.decider.best().unwrap_or(0.0));
            let overlay = self.models[model].overlay(i, e.bbox);
            e.snapshot = Some(Arc::new(Snapshot::new(frame.clone(), label, i, overlay)));
        }
        events.push(e);
        better
    }

    /// Time passing without frames: events whose score stayed low for `off_delay` end.
    pub fn tick(&mut self, now: Instant, wall: SystemTime) -> Vec<Event> {
        let mut out = vec![];
        for (i, p) in self.prompts.iter_mut().enumerate() {
            let d = p.decider.tick(now);
            let e = p.events.follow(
                &self.config.id,
                &p.config.id,
                d.transition,
                d.smoothed,
                None,
                wall,
            );
            out.extend(e.map(|mut e| {
                tag(&p.config, &mut e, None);
                e
            }));
            self.status
                .update_prompt(i, d.smoothed, p.decider.is_on(), p.config.decide.threshold);
        }
        out
    }

    /// Ends every open event (the daemon stops).
    pub fn end_all(&mut self, wall: SystemTime) -> Vec<Event> {
        let id = self.config.id.clone();
        self.prompts
            .iter_mut()
            .filter_map(|p| end_open(&id, p, wall, None))
            .collect()
    }

    /// When the earliest open event ends if nothing changes (the loop wakes up for it).
    pub fn next_end(&self) -> Option<Instant> {
        self.prompts
            .iter()
            .filter_map(|p| p.decider.ends_at())
            .min()
    }

    /// Threshold changes asked for (MQTT, the prompt lab), applied between frames: the `off`
    /// threshold keeps the configured distance below `on` (hysteresis), never below zero.
    pub fn apply_threshold_requests(&mut self) {
        let requests = self.status.take_threshold_requests();
        if requests.is_empty() {
            return;
        }
        for (id, threshold) in requests {
            let Some(p) = self.prompts.iter_mut().find(|p| p.config.id == id) else {
                continue;
            };
            let (threshold, off) = retarget(threshold, p.gap);
            p.decider.set_thresholds(threshold, off);
            (p.config.decide.threshold, p.config.decide.off_threshold) = (threshold, off);
            tracing::info!(
                "camera {}: prompt {id} threshold set to {threshold} (off below {off})",
                self.config.id
            );
        }
        self.publish_prompts();
    }

    /// A reloaded config with the same prompts: the thresholds change at once (the configured
    /// hysteresis gap with them). Returns how many prompts it applied to.
    pub fn set_thresholds(&mut self, prompts: &[PromptConfig]) -> usize {
        let mut n = 0;
        for p in self.prompts.iter_mut() {
            if let Some(np) = prompts.iter().find(|n| n.id == p.config.id) {
                p.decider
                    .set_thresholds(np.decide.threshold, np.decide.off_threshold);
                p.config.decide.threshold = np.decide.threshold;
                p.config.decide.off_threshold = np.decide.off_threshold;
                p.gap = configured_gap(&np.decide);
                n += 1;
            }
        }
        self.publish_prompts();
        n
    }

    /// New prompt models for the same prompts (a tower another camera's change rebuilt).
    pub fn rebind(&mut self, models: Vec<Box<dyn PromptModel>>) {
        self.models = models;
        self.publish_classes();
    }

    /// New prompts take over. A prompt that stays (the same id and model) keeps its decider and
    /// open event, with the new settings; the open events of the others end (returned), with
    /// the run-time reason `reason` gives (once, expired, removed...); the models and the
    /// prompts the status shows are replaced.
    pub fn swap_in(
        &mut self,
        config: &CameraConfig,
        models: Vec<Box<dyn PromptModel>>,
        wall: SystemTime,
        reason: &dyn Fn(&str) -> Option<&'static str>,
    ) -> Vec<Event> {
        let mut old = std::mem::take(&mut self.prompts);
        let mut ended = vec![];
        for np in &config.prompts {
            let kept = old
                .iter()
                .position(|p| p.config.id == np.id && p.config.same_model(np));
            self.prompts.push(match kept {
                Some(k) => {
                    let mut p = old.remove(k);
                    // it stays: a reason recorded for it (a change of settings) is not an end
                    let _ = reason(&p.config.id);
                    p.decider
                        .set_thresholds(np.decide.threshold, np.decide.off_threshold);
                    p.gap = configured_gap(&np.decide);
                    p.config = np.clone();
                    p
                }
                None => PromptState::new(np),
            });
        }
        for mut p in old {
            let why = reason(&p.config.id);
            ended.extend(end_open(&self.config.id, &mut p, wall, why));
        }
        self.models = models;
        self.config.prompts = config.prompts.clone();
        self.config.owlvit_when = config.owlvit_when;
        self.publish_prompts();
        tracing::info!(
            "camera {}: {} prompt(s) loaded",
            self.config.id,
            self.prompts.len()
        );
        ended
    }

    /// The `once` prompts whose event started in `events`: (camera, prompt).
    pub fn once_started(events: &[Event]) -> impl Iterator<Item = (String, String)> + '_ {
        events
            .iter()
            .filter(|e| e.once && e.kind == EventKind::Start)
            .map(|e| (e.camera.clone(), e.prompt.clone()))
    }
}
