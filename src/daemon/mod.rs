//! Daemon: `promptcam run` — wires the stages in one direction. Each camera's source runs on its
//! own capture thread into a latest-wins slot; one named inference thread serves the cameras in
//! turn: motion gate -> models (CLIP scores, OWL-ViT detections) -> decide -> events; the event
//! thread publishes them over MQTT, or prints them as JSON lines when no broker is configured.
//! The main thread handles signals and systemd notifications. A SIGHUP that changes a camera's
//! prompts loads its new models on a `promptcam-reload` thread while the old ones keep serving.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use image::RgbImage;

use crate::config::{CameraConfig, Config, OwlVitWhen, PromptConfig};
use crate::decide::{Decider, Transition};
use crate::event::{event_id, rfc3339, Event, EventKind};
use crate::frame::{Frame, FrameSlot, SourceStats};
use crate::model::{Clip, ClipSeg, ModelDir, ModelKind, OwlVit};
use crate::motion::MotionGate;
use crate::signals::Control;
use crate::status::{CameraStatus, PromptStatus, Status};

mod reload;
mod threads;
use reload::{reload, Reloads};

/// A camera's CLIP model and, per prompt, which classes its score compares.
struct CameraClip {
    clip: Clip,
    /// For each prompt index (CLIP prompts only): its class and the classes it must beat.
    compare: Vec<Option<(usize, Vec<usize>)>>,
}

struct OpenEvent {
    id: String,
    started: SystemTime,
    bbox: Option<[f32; 4]>,
}

struct PromptState {
    config: PromptConfig,
    decider: Decider,
    open: Option<OpenEvent>,
    /// How far `off` sits below `on` in the config file: kept when a command moves `on`, even
    /// through a threshold of 0 (where `off` is clamped to 0 and the gap would otherwise be lost).
    gap: f32,
}

/// One camera as the inference thread sees it.
pub struct Camera {
    pub config: CameraConfig,
    slot: FrameSlot,
    pub stats: Arc<SourceStats>,
    /// What the MQTT and HTTP edges read (counts, prompt states) and steer (pause, thresholds).
    pub status: Arc<CameraStatus>,
    motion: Option<MotionGate>,
    clip: Option<CameraClip>,
    owl: Option<OwlVit>,
    seg: Option<ClipSeg>,
    prompts: Vec<PromptState>,
    /// When this camera's next history thumbnail is due.
    thumbs: crate::history::ThumbnailClock,
}

/// Loads every camera's models; `promptcam check` stops here.
pub fn prepare(config: &Config) -> Result<Vec<Camera>> {
    config
        .cameras
        .iter()
        .map(|cam| {
            let (clip, owl, prompts) = load_models(config, cam)?;
            let seg = load_seg(config, cam)?;
            let motion = config.motion.clone().map(|m| {
                let mut g = MotionGate::new(m);
                g.set_roi(cam.roi);
                g
            });
            let (slot, stats) = (FrameSlot::new(), Arc::<SourceStats>::default());
            let status = Arc::new(CameraStatus::new(
                &cam.id,
                &cam.name,
                stats.clone(),
                slot.clone(),
                prompt_statuses(&prompts),
            ));
            status.set_prompt_configs(prompt_configs(&prompts));
            Ok(Camera {
                config: cam.clone(),
                slot,
                stats,
                status,
                motion,
                clip,
                owl,
                seg,
                prompts,
                thumbs: Default::default(),
            })
        })
        .collect()
}

type Models = (Option<CameraClip>, Option<OwlVit>, Vec<PromptState>);

/// A camera's CLIPSeg model with its segmentation prompts, in the camera's prompt order.
fn load_seg(config: &Config, cam: &CameraConfig) -> Result<Option<ClipSeg>> {
    let texts: Vec<String> = cam
        .prompts
        .iter()
        .filter(|p| p.model == ModelKind::ClipSeg)
        .map(|p| p.text.clone())
        .collect();
    if texts.is_empty() {
        return Ok(None);
    }
    let m = config
        .model(ModelKind::ClipSeg)
        .context("CLIPSeg prompts need [models.clipseg]")?;
    let seg = ClipSeg::load(&ModelDir::open(&m.dir)?, m.precision, &texts)
        .with_context(|| format!("unable to load CLIPSeg for camera {:?}", cam.name))?;
    Ok(Some(seg))
}

fn prompt_statuses(prompts: &[PromptState]) -> Vec<PromptStatus> {
    prompts
        .iter()
        .map(|p| PromptStatus {
            id: p.config.id.clone(),
            name: p.config.name.clone(),
            threshold: p.config.decide.threshold,
            score: p.decider.best().unwrap_or(0.0),
            on: p.decider.is_on(),
        })
        .collect()
}

fn prompt_configs(prompts: &[PromptState]) -> Vec<PromptConfig> {
    prompts.iter().map(|p| p.config.clone()).collect()
}

/// Every camera's shared status, for the MQTT and HTTP edges.
pub fn status_of(cameras: &[Camera]) -> Status {
    Status {
        cameras: cameras.iter().map(|c| c.status.clone()).collect(),
    }
}

/// A camera's models for its prompt set: one CLIP with a class per prompt (or ensemble) and per
/// negative, one OWL-ViT with the object prompts folded in, and a decider per prompt.
fn load_models(config: &Config, cam: &CameraConfig) -> Result<Models> {
    if cam.prompts.iter().any(|p| p.model == ModelKind::Owlv2) {
        anyhow::bail!("unable to run camera {:?}: the daemon does not run OWLv2 prompts yet (`promptcam detect` does); use model = \"owlvit\" for now", cam.name);
    }
    // the bigger model first: the smaller one's load peak then sits on its resident size, not
    // the other way round (both full-size int8 models, measured: 530 -> 470 MB peak)
    let owl_texts: Vec<String> = cam
        .prompts
        .iter()
        .filter(|p| p.model == ModelKind::OwlVit)
        .map(|p| p.text.clone())
        .collect();
    let owl = if owl_texts.is_empty() {
        None
    } else {
        let m = config
            .model(ModelKind::OwlVit)
            .context("OWL-ViT prompts need [models.owlvit]")?;
        Some(
            OwlVit::load(
                &ModelDir::open(&m.dir)?,
                m.precision,
                &owl_texts,
                m.input_size,
            )
            .with_context(|| format!("unable to load OWL-ViT for camera {:?}", cam.name))?,
        )
    };
    let clip_prompts: Vec<(usize, &PromptConfig)> = cam
        .prompts
        .iter()
        .enumerate()
        .filter(|(_, p)| p.model == ModelKind::Clip)
        .collect();
    // with a history, every camera's frames get a CLIP embedding for the prompt lab
    let embed_only = clip_prompts.is_empty()
        && config.history.is_some()
        && config.model(ModelKind::Clip).is_some();
    let clip = if clip_prompts.is_empty() && !embed_only {
        None
    } else {
        let m = config
            .model(ModelKind::Clip)
            .context("CLIP prompts need [models.clip]")?;
        let dir = ModelDir::open(&m.dir)?;
        let mut classes: Vec<Vec<String>> = vec![];
        let mut class_of = |texts: Vec<String>| -> usize {
            match classes.iter().position(|c| c[0] == texts[0]) {
                Some(i) => i,
                None => {
                    classes.push(texts);
                    classes.len() - 1
                }
            }
        };
        let mut own = vec![None; cam.prompts.len()];
        for (i, p) in &clip_prompts {
            own[*i] = Some(class_of(crate::model::clip::ensemble_texts(
                &p.text,
                &p.ensemble,
            )));
        }
        let mut compare = vec![None; cam.prompts.len()];
        for (i, p) in &clip_prompts {
            let negatives: Vec<usize> = if p.negatives.is_empty() {
                clip_prompts
                    .iter()
                    .filter(|(j, _)| j != i)
                    .filter_map(|(j, _)| own[*j])
                    .collect()
            } else {
                p.negatives
                    .iter()
                    .map(|n| class_of(vec![n.clone()]))
                    .collect()
            };
            compare[*i] = own[*i].map(|c| (c, negatives));
        }
        let clip = Clip::load_classes(&dir, m.precision, &classes)
            .with_context(|| format!("unable to load CLIP for camera {:?}", cam.name))?;
        Some(CameraClip { clip, compare })
    };
    let prompts = cam
        .prompts
        .iter()
        .map(|p| PromptState {
            config: p.clone(),
            decider: Decider::new(p.decide.clone()),
            open: None,
            gap: configured_gap(&p.decide),
        })
        .collect();
    Ok((clip, owl, prompts))
}

/// Runs the daemon until every source has ended or a stop signal arrives.
pub fn run(config: Config) -> Result<()> {
    // signals first: a SIGHUP or SIGTERM while the models load must not kill the daemon
    let control = Arc::new(Control::default());
    crate::signals::install(control.clone())?;
    tracing::info!("loading the models of {} camera(s)", config.cameras.len());
    let threads = crate::bench::set_threads(config.inference_threads);
    let mqtt = config.mqtt.clone();
    let mut cameras = prepare(&config)?;
    let threads = match config.inference_threads {
        0 => threads::calibrate(&mut cameras)?,
        _ => threads,
    };
    tracing::info!("inference on {threads} thread(s)");
    let status = status_of(&cameras);
    // bind the HTTP endpoint before any thread starts: a busy port fails the start at once
    let http = config
        .http
        .as_ref()
        .map(crate::endpoint::bind)
        .transpose()?;
    let started = Instant::now();
    *control
        .started
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = true;

    let mut capture = vec![];
    for cam in &cameras {
        let source = crate::source::open(&cam.config.source, cam.config.fps, cam.config.looped)
            .with_context(|| {
                format!("unable to open the source of camera {:?}", cam.config.name)
            })?;
        tracing::info!("camera {}: {}", cam.config.id, source.describe());
        let (slot, stats, shutdown) = (
            cam.slot.clone(),
            cam.stats.clone(),
            Arc::new(AtomicBool::new(false)),
        );
        let fps = cam.config.fps;
        let stop = shutdown.clone();
        let handle = std::thread::Builder::new()
            .name(format!("capture-{}", cam.config.id))
            .spawn(move || crate::source::capture_loop(source, fps, slot, stats, shutdown))
            .context("unable to start a capture thread")?;
        capture.push((stop, handle));
    }

    let history = config
        .history
        .clone()
        .map(crate::history::History::start)
        .transpose()?
        .map(Arc::new);
    let (tx, rx) = sync_channel::<Event>(256);
    let sink = match mqtt {
        // the publisher connects in the background and spools events while the broker is away
        // commands (pause, thresholds) steer the cameras' shared status; the inference thread
        // applies them between frames
        Some(m) => Sink::Mqtt(crate::mqtt::Publisher::start(
            m,
            &config.device_id,
            &config.cameras,
            status.clone(),
        )?),
        None => Sink::Stdout,
    };
    let endpoint = match http {
        Some(listener) => {
            let mqtt_stats = match &sink {
                Sink::Mqtt(p) => Some(p.stats_handle()),
                Sink::Stdout => None,
            };
            let fps: Vec<f64> = cameras.iter().map(|c| c.config.fps).collect();
            let web = crate::web::Web::new(
                status.clone(),
                config.history.clone(),
                config.model(ModelKind::Clip).cloned(),
                history.as_ref().map(|h| h.stats.clone()),
            );
            Some(crate::endpoint::Endpoint::start(
                listener,
                status.clone(),
                &fps,
                mqtt_stats,
                web,
            )?)
        }
        None => None,
    };
    let printer = std::thread::Builder::new()
        .name("events".into())
        .spawn({
            let history = history.clone();
            move || deliver(rx, sink, history)
        })
        .context("unable to start the event thread")?;
    let infer_control = control.clone();
    let config_path = config.path.clone();
    let inference = std::thread::Builder::new()
        .name("promptcam-infer".into())
        .spawn(move || {
            inference_loop(
                cameras,
                tx,
                infer_control,
                started,
                config_path,
                Reloads::new(),
                history,
            )
        })
        .context("unable to start the inference thread")?;

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let mut last_status = Instant::now();
    while !inference.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        let beat = Duration::from_millis(control.heartbeat_ms.load(Ordering::Relaxed));
        if started.elapsed().saturating_sub(beat) < Duration::from_secs(10) {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
        if last_status.elapsed() >= Duration::from_secs(10) {
            // the cameras' inference time histograms, summed
            let (frames, ms) = status.cameras.iter().fold((0u64, 0f64), |(n, ms), c| {
                let t = c.snapshot(Instant::now()).inference;
                (n + t.count, ms + t.sum_ms)
            });
            let line = format!(
                "analysed {frames} frames, inference {:.1} ms per frame",
                ms / frames.max(1) as f64
            );
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
            last_status = Instant::now();
        }
        if control.shutdown.load(Ordering::Relaxed) {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    for (stop, _) in &capture {
        stop.store(true, Ordering::Relaxed);
    }
    let result = inference
        .join()
        .map_err(|_| anyhow::anyhow!("the inference thread panicked"))?;
    if let Some(e) = endpoint {
        e.stop();
    }
    let _ = printer.join();
    for (_, h) in capture {
        let _ = h.join();
    }
    result
}

/// Where events go: MQTT when the config has an `[mqtt]` table, else stdout as JSON lines.
enum Sink {
    Stdout,
    Mqtt(crate::mqtt::Publisher),
}

fn deliver(rx: Receiver<Event>, sink: Sink, history: Option<Arc<crate::history::History>>) {
    let stdout = std::io::stdout();
    for e in rx {
        if let Some(h) = &history {
            h.record(crate::history::Record::Event(e.clone(), SystemTime::now()));
        }
        match &sink {
            Sink::Mqtt(p) => {
                if let Some(jpeg) = &e.snapshot {
                    p.publish_snapshot(&e.camera, &e.prompt, jpeg.clone());
                }
                if let Err(err) = p.publish(&e) {
                    tracing::error!("unable to queue event {}: {err:#}", e.id);
                }
            }
            Sink::Stdout => {
                let mut out = stdout.lock();
                match serde_json::to_string(&e) {
                    Ok(line) => {
                        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                            return;
                        }
                    }
                    Err(err) => tracing::error!("unable to serialize event {}: {err}", e.id),
                }
            }
        }
    }
    // the channel closed: the daemon is stopping; publish `offline` and flush
    if let Sink::Mqtt(p) = sink {
        p.stop();
    }
}

fn inference_loop(
    mut cameras: Vec<Camera>,
    tx: SyncSender<Event>,
    control: Arc<Control>,
    started: Instant,
    config_path: std::path::PathBuf,
    mut reloads: Reloads,
    history: Option<Arc<crate::history::History>>,
) -> Result<()> {
    loop {
        control
            .heartbeat_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        if control.reload.swap(false, Ordering::Relaxed) {
            reload(&mut cameras, &config_path, &mut reloads);
        }
        // models loaded in the background swap in between frames; a SIGHUP that came during
        // the load is served once it is done
        if reloads.poll(&mut cameras, &tx) && std::mem::take(&mut reloads.queued) {
            reload(&mut cameras, &config_path, &mut reloads);
        }
        let mut worked = false;
        for cam in cameras.iter_mut() {
            apply_threshold_requests(cam);
            if let Some(frame) = cam.slot.take() {
                worked = true;
                if cam.status.is_paused() {
                    cam.status.paused_frames.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let frame = Arc::new(frame);
                let t = Instant::now();
                if let Some(a) = analyse(cam, &frame, &tx)? {
                    if let Some(h) = &history {
                        let mut record = a.record;
                        if cam
                            .thumbs
                            .due(frame.captured_at, h.config.thumbnail_interval, a.event)
                        {
                            record.thumbnail = Some(frame.clone());
                        }
                        h.record(crate::history::Record::Frame(record));
                    }
                    cam.status
                        .record_frame(Instant::now(), t.elapsed(), frame, a.labels);
                }
            }
        }
        let now = Instant::now();
        for cam in cameras.iter_mut() {
            for i in 0..cam.prompts.len() {
                let d = cam.prompts[i].decider.tick(now);
                emit(cam, i, d.transition, d.smoothed, &tx)?;
                let p = &cam.prompts[i];
                cam.status.update_prompt(
                    i,
                    d.smoothed,
                    p.decider.is_on(),
                    p.config.decide.threshold,
                );
            }
        }
        let all_ended = cameras.iter().all(|c| c.slot.is_closed());
        if control.shutdown.load(Ordering::Relaxed) || (all_ended && !worked) {
            for cam in cameras.iter_mut() {
                for i in 0..cam.prompts.len() {
                    if cam.prompts[i].open.is_some() {
                        let score = cam.prompts[i].decider.best().unwrap_or(0.0);
                        emit(cam, i, Transition::Ended, score, &tx)?;
                    }
                }
                let s = cam.stats.snapshot();
                tracing::info!(
                    "camera {}: {} frames captured, {} dropped, {} undecodable",
                    cam.config.id,
                    s.captured,
                    cam.slot.dropped(),
                    s.undecodable
                );
            }
            return Ok(());
        }
        if !worked {
            match cameras.as_slice() {
                [one] => {
                    // sleep until a frame arrives (or the source closes), or until an event is due
                    // to end, so that it ends `off_delay` after its score dropped, not at the next
                    // frame: idle CPU stays near zero
                    let now = Instant::now();
                    let wait = one
                        .prompts
                        .iter()
                        .filter_map(|p| p.decider.ends_at())
                        .map(|due| due.saturating_duration_since(now))
                        .fold(Duration::from_millis(500), Duration::min);
                    if let Some(frame) = one.slot.wait_take(wait) {
                        one.slot.put(frame);
                    }
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// The hysteresis a prompt's config file asks for: `threshold - off_threshold`.
fn configured_gap(d: &crate::decide::DecideConfig) -> f32 {
    (d.threshold - d.off_threshold).max(0.0)
}

/// The `(on, off)` thresholds for a new `on`: `off` keeps the configured `gap` below it, never
/// below zero; `-0` is `0`.
fn retarget(on: f32, gap: f32) -> (f32, f32) {
    let on = on + 0.0; // -0 + 0 is +0
    (on, (on - gap).max(0.0))
}

/// MQTT `number` commands: new `on` thresholds, applied between frames. The `off` threshold
/// keeps the configured distance below `on` (hysteresis) and never goes below zero.
fn apply_threshold_requests(cam: &mut Camera) {
    let requests = cam.status.take_threshold_requests();
    if requests.is_empty() {
        return;
    }
    for (id, threshold) in requests {
        let Some(p) = cam.prompts.iter_mut().find(|p| p.config.id == id) else {
            continue;
        };
        let (threshold, off) = retarget(threshold, p.gap);
        p.decider.set_thresholds(threshold, off);
        (p.config.decide.threshold, p.config.decide.off_threshold) = (threshold, off);
        tracing::info!(
            "camera {}: prompt {} threshold set to {threshold} (off below {off})",
            cam.config.id,
            id
        );
    }
    cam.status.set_prompt_configs(prompt_configs(&cam.prompts));
}

/// A label per prompt for the latest-frame view: its best box this frame (if any) and score.
type Labels = Vec<(Option<[f32; 4]>, String)>;

/// What analysing one frame produced, besides its events.
struct Analysed {
    labels: Labels,
    /// For the history: every prompt's score and box, the CLIP embedding (no thumbnail yet).
    record: crate::history::FrameRecord,
    /// Whether a prompt's event started or improved on this frame.
    event: bool,
}

/// Runs the models on a frame if the motion gate lets it through; returns what it found if it did.
fn analyse(cam: &mut Camera, frame: &Frame, tx: &SyncSender<Event>) -> Result<Option<Analysed>> {
    let mut moved = true;
    if let Some(gate) = cam.motion.as_mut() {
        let verdict = gate.check(&frame.image, frame.monotonic);
        if !verdict.analyse {
            cam.stats.skipped_no_motion.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        moved = matches!(
            verdict.reason,
            crate::motion::Reason::Motion | crate::motion::Reason::First
        );
    }
    cam.stats.analysed.fetch_add(1, Ordering::Relaxed);
    // CLIP classifies the region of interest, not the whole frame
    let image = match cam.config.roi {
        Some(r) => std::borrow::Cow::Owned(crop(&frame.image, r)),
        None => std::borrow::Cow::Borrowed(&frame.image),
    };
    let mut clip_scores: Vec<(usize, f32)> = vec![];
    let mut embedding = None;
    if let Some(c) = cam.clip.as_mut() {
        let emb = c.clip.image_embedding(&image)?;
        let sims: Vec<f32> = c.clip.scores(&emb).iter().map(|s| s.similarity).collect();
        for (i, cmp) in c.compare.iter().enumerate() {
            if let Some((own, negatives)) = cmp {
                let negatives = negatives.iter().map(|n| sims[*n]);
                let score =
                    crate::model::clip::prompt_score(sims[*own], negatives, c.clip.logit_scale);
                clip_scores.push((i, score));
            }
        }
        embedding = Some(emb);
    }
    let mut labels: Labels = vec![];
    let mut scores: Vec<crate::history::PromptScore> = vec![];
    let mut event = false;
    for (i, score) in &clip_scores {
        event |= observe(cam, *i, Some(*score), None, frame, tx)?;
        labels.push((None, format!("{} {score:.2}", cam.prompts[*i].config.name)));
        scores.push(prompt_score(cam, *i, *score, None));
    }
    // the cascade: OWL-ViT (the expensive model) only when the camera's setting says so
    let run_owl = match cam.config.owlvit_when {
        OwlVitWhen::Always => true,
        OwlVitWhen::Motion => moved,
        OwlVitWhen::ClipOn => cam
            .prompts
            .iter()
            .any(|p| p.config.model == ModelKind::Clip && p.decider.is_on()),
    };
    if let (Some(owl), true) = (cam.owl.as_mut(), run_owl) {
        let dets = owl.detect(&frame.image, 0.0)?;
        let owl_prompts: Vec<usize> = (0..cam.prompts.len())
            .filter(|i| cam.prompts[*i].config.model == ModelKind::OwlVit)
            .collect();
        for (q, i) in owl_prompts.into_iter().enumerate() {
            // the best detection of this prompt whose center is inside the region of interest
            let best = dets
                .iter()
                .find(|d| d.prompt_index == q && inside(cam.config.roi, &d.bbox));
            let score = best.map(|d| d.score).unwrap_or(0.0);
            event |= observe(cam, i, Some(score), best.map(|d| d.bbox), frame, tx)?;
            scores.push(prompt_score(cam, i, score, best.map(|d| d.bbox)));
            labels.push((
                best.map(|d| d.bbox),
                format!("{} {score:.2}", cam.prompts[i].config.name),
            ));
        }
    }
    // CLIPSeg: a prompt's score is the fraction of the region of interest its mask covers
    if let Some(seg) = cam.seg.as_mut() {
        let masks = seg.masks(&frame.image)?;
        let (w, h) = frame.image.dimensions();
        let seg_prompts = cam
            .prompts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.config.model == ModelKind::ClipSeg);
        let seg_scores: Vec<(usize, f32)> = seg_prompts
            .enumerate()
            .map(|(q, (i, p))| {
                (
                    i,
                    masks
                        .coverage(q, w, h, cam.config.roi, p.config.mask_threshold)
                        .0,
                )
            })
            .collect();
        for (i, score) in seg_scores {
            event |= observe(cam, i, Some(score), None, frame, tx)?;
            scores.push(prompt_score(cam, i, score, None));
            labels.push((
                None,
                format!("{} {:.1}%", cam.prompts[i].config.name, score * 100.0),
            ));
        }
    }
    let record = crate::history::FrameRecord {
        camera: cam.config.id.clone(),
        time: frame.captured_at,
        motion: moved,
        scores,
        embedding,
        thumbnail: None,
    };
    Ok(Some(Analysed {
        labels,
        record,
        event,
    }))
}

fn prompt_score(
    cam: &Camera,
    i: usize,
    score: f32,
    bbox: Option<[f32; 4]>,
) -> crate::history::PromptScore {
    crate::history::PromptScore {
        prompt: cam.prompts[i].config.id.clone(),
        score,
        bbox,
    }
}

/// One prompt's score for a frame through its decider, and the events that follow; true when
/// its event started or improved.
fn observe(
    cam: &mut Camera,
    i: usize,
    score: Option<f32>,
    bbox: Option<[f32; 4]>,
    frame: &Frame,
    tx: &SyncSender<Event>,
) -> Result<bool> {
    let d = cam.prompts[i].decider.observe(score, frame.monotonic);
    let p = &cam.prompts[i];
    cam.status
        .update_prompt(i, d.smoothed, p.decider.is_on(), p.config.decide.threshold);
    if let (Some(open), Some(b)) = (cam.prompts[i].open.as_mut(), bbox) {
        if d.transition == Transition::Updated {
            open.bbox = Some(b);
        }
    }
    if d.transition == Transition::Started {
        cam.status.events.fetch_add(1, Ordering::Relaxed);
        cam.prompts[i].open = Some(OpenEvent {
            id: event_id(frame.captured_at, &cam.config.id, &cam.prompts[i].config.id),
            started: frame.captured_at,
            bbox,
        });
    }
    let event = matches!(d.transition, Transition::Started | Transition::Updated);
    let snapshot = event.then(|| snapshot(cam, i, frame));
    emit_with(cam, i, d.transition, d.smoothed, snapshot.flatten(), tx)?;
    Ok(event)
}

/// The frame with the prompt's box (if any) and label drawn, as JPEG.
fn snapshot(cam: &Camera, i: usize, frame: &Frame) -> Option<Arc<Vec<u8>>> {
    let p = &cam.prompts[i];
    let mut img = frame.image.clone();
    let label = format!("{} {:.2}", p.config.name, p.decider.best().unwrap_or(0.0));
    let bbox = p.open.as_ref().and_then(|o| o.bbox).unwrap_or([
        0.0,
        0.0,
        img.width() as f32 - 1.0,
        img.height() as f32 - 1.0,
    ]);
    match (
        p.config.model,
        cam.seg.as_ref().and_then(|s| s.last_masks()),
    ) {
        // CLIPSeg: the prompt's mask overlaid instead of a box
        (ModelKind::ClipSeg, Some(masks)) => {
            let q = cam.prompts[..i]
                .iter()
                .filter(|o| o.config.model == ModelKind::ClipSeg)
                .count();
            let layer = crate::model::clipseg::Layer {
                prompt: q,
                threshold: p.config.mask_threshold,
                label: &label,
                colour_index: i,
            };
            crate::model::clipseg::overlay(&mut img, masks, &[layer]);
        }
        _ => crate::annotate::draw(
            &mut img,
            &[crate::annotate::Label {
                bbox,
                text: &label,
                colour_index: i,
            }],
        ),
    }
    let mut jpeg = vec![];
    match image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).encode_image(&img) {
        Ok(()) => Some(Arc::new(jpeg)),
        Err(e) => {
            tracing::warn!(
                "unable to encode the snapshot of {}/{}: {e}",
                cam.config.id,
                p.config.id
            );
            None
        }
    }
}

fn inside(roi: Option<[u32; 4]>, b: &[f32; 4]) -> bool {
    match roi {
        None => true,
        Some(r) => {
            let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
            cx >= r[0] as f32 && cx < r[2] as f32 && cy >= r[1] as f32 && cy < r[3] as f32
        }
    }
}

fn crop(image: &RgbImage, r: [u32; 4]) -> RgbImage {
    let (w, h) = image.dimensions();
    let (x0, y0) = (r[0].min(w.saturating_sub(1)), r[1].min(h.saturating_sub(1)));
    let (x1, y1) = (r[2].min(w).max(x0 + 1), r[3].min(h).max(y0 + 1));
    image::imageops::crop_imm(image, x0, y0, x1 - x0, y1 - y0).to_image()
}

fn emit(
    cam: &mut Camera,
    i: usize,
    t: Transition,
    score: f32,
    tx: &SyncSender<Event>,
) -> Result<()> {
    emit_with(cam, i, t, score, None, tx)
}

fn emit_with(
    cam: &mut Camera,
    i: usize,
    t: Transition,
    score: f32,
    snapshot: Option<Arc<Vec<u8>>>,
    tx: &SyncSender<Event>,
) -> Result<()> {
    let kind = match t {
        Transition::Started => EventKind::Start,
        Transition::Updated => EventKind::Update,
        Transition::Ended => EventKind::End,
        Transition::None => return Ok(()),
    };
    let p = &mut cam.prompts[i];
    let Some(open) = p.open.as_ref() else {
        return Ok(());
    };
    let event = Event {
        kind,
        camera: cam.config.id.clone(),
        prompt: p.config.id.clone(),
        score,
        bbox: open.bbox,
        started_at: rfc3339(open.started),
        ended_at: (kind == EventKind::End).then(|| rfc3339(SystemTime::now())),
        id: open.id.clone(),
        snapshot,
    };
    if kind == EventKind::End {
        p.open = None;
    }
    // a bounded channel: if the event thread is gone the daemon is stopping anyway
    tx.send(event)
        .map_err(|_| anyhow::anyhow!("the event thread stopped"))
}
