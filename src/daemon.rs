//! Daemon: `promptcam run` — wires the stages in one direction. Each camera's source runs on its
//! own capture thread into a latest-wins slot; one named inference thread serves the cameras in
//! turn: motion gate -> models (CLIP scores, OWL-ViT detections) -> decide -> events; the event
//! thread publishes them over MQTT, or prints them as JSON lines when no broker is configured.
//! The main thread handles signals and systemd notifications. A SIGHUP that changes a camera's
//! prompts loads its new models on a `promptcam-reload` thread while the old ones keep serving.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use image::RgbImage;

use crate::config::{CameraConfig, Config, ModelKind, OwlVitWhen, PromptConfig};
use crate::decide::{Decider, Transition};
use crate::event::{event_id, rfc3339, Event, EventKind};
use crate::frame::{Frame, FrameSlot, SourceStats};
use crate::model::{Clip, ClipSeg, ModelDir, OwlVit};
use crate::motion::MotionGate;
use crate::status::{CameraStatus, PromptStatus, Status};

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
            let status = Arc::new(CameraStatus::new(&cam.id, &cam.name, stats.clone(), slot.clone(), prompt_statuses(&prompts)));
            Ok(Camera { config: cam.clone(), slot, stats, status, motion, clip, owl, seg, prompts })
        })
        .collect()
}

type Models = (Option<CameraClip>, Option<OwlVit>, Vec<PromptState>);

/// A camera's CLIPSeg model with its segmentation prompts, in the camera's prompt order.
fn load_seg(config: &Config, cam: &CameraConfig) -> Result<Option<ClipSeg>> {
    let texts: Vec<String> = cam.prompts.iter().filter(|p| p.model == ModelKind::ClipSeg).map(|p| p.text.clone()).collect();
    if texts.is_empty() {
        return Ok(None);
    }
    let m = config.clipseg.as_ref().context("CLIPSeg prompts need [models.clipseg]")?;
    let seg = ClipSeg::load(&ModelDir::open(&m.dir)?, m.precision, &texts).with_context(|| format!("unable to load CLIPSeg for camera {:?}", cam.name))?;
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

/// Every camera's shared status, for the MQTT and HTTP edges.
pub fn status_of(cameras: &[Camera]) -> Status {
    Status { cameras: cameras.iter().map(|c| c.status.clone()).collect() }
}

/// A camera's models for its prompt set: one CLIP with a class per prompt (or ensemble) and per
/// negative, one OWL-ViT with the object prompts folded in, and a decider per prompt.
fn load_models(config: &Config, cam: &CameraConfig) -> Result<Models> {
    // the bigger model first: the smaller one's load peak then sits on its resident size, not
    // the other way round (both full-size int8 models, measured: 530 -> 470 MB peak)
    let owl_texts: Vec<String> = cam.prompts.iter().filter(|p| p.model == ModelKind::OwlVit).map(|p| p.text.clone()).collect();
    let owl = if owl_texts.is_empty() {
        None
    } else {
        let m = config.owlvit.as_ref().context("OWL-ViT prompts need [models.owlvit]")?;
        Some(OwlVit::load(&ModelDir::open(&m.dir)?, m.precision, &owl_texts).with_context(|| format!("unable to load OWL-ViT for camera {:?}", cam.name))?)
    };
    let clip_prompts: Vec<(usize, &PromptConfig)> = cam.prompts.iter().enumerate().filter(|(_, p)| p.model == ModelKind::Clip).collect();
    let clip = if clip_prompts.is_empty() {
        None
    } else {
        let m = config.clip.as_ref().context("CLIP prompts need [models.clip]")?;
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
            let texts = if p.ensemble.is_empty() { vec![p.text.clone()] } else { p.ensemble.iter().map(|t| t.replace("{}", &p.text)).collect() };
            own[*i] = Some(class_of(texts));
        }
        let mut compare = vec![None; cam.prompts.len()];
        for (i, p) in &clip_prompts {
            let negatives: Vec<usize> = if p.negatives.is_empty() {
                clip_prompts.iter().filter(|(j, _)| j != i).filter_map(|(j, _)| own[*j]).collect()
            } else {
                p.negatives.iter().map(|n| class_of(vec![n.clone()])).collect()
            };
            compare[*i] = own[*i].map(|c| (c, negatives));
        }
        let clip = Clip::load_classes(&dir, m.precision, &classes).with_context(|| format!("unable to load CLIP for camera {:?}", cam.name))?;
        Some(CameraClip { clip, compare })
    };
    let prompts = cam.prompts.iter().map(|p| PromptState { config: p.clone(), decider: Decider::new(p.decide.clone()), open: None }).collect();
    Ok((clip, owl, prompts))
}

/// Shared between the threads: shutdown and reload requests, and the inference heartbeat.
#[derive(Default)]
pub struct Control {
    pub shutdown: AtomicBool,
    pub reload: AtomicBool,
    /// Milliseconds since `started` at the inference thread's last loop.
    pub heartbeat_ms: AtomicU64,
    pub analysed: AtomicU64,
    pub inference_us: AtomicU64,
}

/// Runs the daemon until every source has ended or a stop signal arrives.
pub fn run(config: Config) -> Result<()> {
    let threads = crate::bench::set_threads(config.inference_threads);
    tracing::info!("inference on {threads} thread(s)");
    let mqtt = config.mqtt.as_ref().map(|raw| crate::mqtt::parse_config(raw, &config.path)).transpose()?;
    let cameras = prepare(&config)?;
    // bind the HTTP endpoint before any thread starts: a busy port fails the start at once
    let http = config.http.as_ref().map(crate::endpoint::bind).transpose()?;
    let control = Arc::new(Control::default());
    let started = Instant::now();
    crate::signals::install(control.clone())?;

    let mut capture = vec![];
    for cam in &cameras {
        let source = crate::source::open(&cam.config.source, cam.config.fps, cam.config.looped)
            .with_context(|| format!("unable to open the source of camera {:?}", cam.config.name))?;
        tracing::info!("camera {}: {}", cam.config.id, source.describe());
        let (slot, stats, shutdown) = (cam.slot.clone(), cam.stats.clone(), Arc::new(AtomicBool::new(false)));
        let fps = cam.config.fps;
        let stop = shutdown.clone();
        let handle = std::thread::Builder::new()
            .name(format!("capture-{}", cam.config.id))
            .spawn(move || crate::source::capture_loop(source, fps, slot, stats, shutdown))
            .context("unable to start a capture thread")?;
        capture.push((stop, handle));
    }

    let (tx, rx) = sync_channel::<Event>(256);
    let sink = match mqtt {
        // the publisher connects in the background and spools events while the broker is away
        // commands (pause, thresholds) steer the cameras' shared status; the inference thread
        // applies them between frames
        Some(m) => Sink::Mqtt(crate::mqtt::Publisher::start(m, &config.device_id, &config.cameras, status_of(&cameras))?),
        None => Sink::Stdout,
    };
    let endpoint = match http {
        Some(listener) => {
            let mqtt_stats = match &sink {
                Sink::Mqtt(p) => Some(p.stats_handle()),
                Sink::Stdout => None,
            };
            let fps: Vec<f64> = cameras.iter().map(|c| c.config.fps).collect();
            Some(crate::endpoint::Endpoint::start(listener, status_of(&cameras), &fps, mqtt_stats)?)
        }
        None => None,
    };
    let printer = std::thread::Builder::new().name("events".into()).spawn(move || deliver(rx, sink)).context("unable to start the event thread")?;
    let infer_control = control.clone();
    let config_path = config.path.clone();
    let inference = std::thread::Builder::new()
        .name("promptcam-infer".into())
        .spawn(move || inference_loop(cameras, tx, infer_control, started, config_path, Reloads::new()))
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
            let n = control.analysed.load(Ordering::Relaxed).max(1);
            let status = format!(
                "analysed {} frames, inference {:.1} ms per frame",
                control.analysed.load(Ordering::Relaxed),
                control.inference_us.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
            );
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
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
    let result = inference.join().map_err(|_| anyhow::anyhow!("the inference thread panicked"))?;
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

fn deliver(rx: Receiver<Event>, sink: Sink) {
    let stdout = std::io::stdout();
    for e in rx {
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
) -> Result<()> {
    loop {
        control.heartbeat_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
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
                if let Some(labels) = analyse(cam, &frame, &tx)? {
                    let took = t.elapsed();
                    control.analysed.fetch_add(1, Ordering::Relaxed);
                    control.inference_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
                    cam.status.record_frame(Instant::now(), took, frame, labels);
                }
            }
        }
        let now = Instant::now();
        for cam in cameras.iter_mut() {
            for i in 0..cam.prompts.len() {
                let d = cam.prompts[i].decider.tick(now);
                emit(cam, i, d.transition, d.smoothed, &tx)?;
                let p = &cam.prompts[i];
                cam.status.update_prompt(i, d.smoothed, p.decider.is_on(), p.config.decide.threshold);
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
                    // sleep until a frame arrives (or the source closes): idle CPU stays near zero
                    if let Some(frame) = one.slot.wait_take(Duration::from_millis(500)) {
                        one.slot.put(frame);
                    }
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// MQTT `number` commands: new `on` thresholds, applied between frames. The `off` threshold
/// keeps its distance below `on` (hysteresis) and never goes below zero.
fn apply_threshold_requests(cam: &mut Camera) {
    for (id, threshold) in cam.status.take_threshold_requests() {
        let Some(p) = cam.prompts.iter_mut().find(|p| p.config.id == id) else { continue };
        let gap = p.config.decide.threshold - p.config.decide.off_threshold;
        let off = (threshold - gap.max(0.0)).max(0.0);
        p.decider.set_thresholds(threshold, off);
        (p.config.decide.threshold, p.config.decide.off_threshold) = (threshold, off);
        tracing::info!("camera {}: prompt {} threshold set to {threshold} (off below {off})", cam.config.id, id);
    }
}

/// A label per prompt for the latest-frame view: its best box this frame (if any) and score.
type Labels = Vec<(Option<[f32; 4]>, String)>;

/// Runs the models on a frame if the motion gate lets it through; returns the frame's labels
/// if it did.
fn analyse(cam: &mut Camera, frame: &Frame, tx: &SyncSender<Event>) -> Result<Option<Labels>> {
    let mut moved = true;
    if let Some(gate) = cam.motion.as_mut() {
        let verdict = gate.check(&frame.image, frame.monotonic);
        if !verdict.analyse {
            cam.stats.skipped_no_motion.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        moved = matches!(verdict.reason, crate::motion::Reason::Motion | crate::motion::Reason::First);
    }
    cam.stats.analysed.fetch_add(1, Ordering::Relaxed);
    // CLIP classifies the region of interest, not the whole frame
    let image = match cam.config.roi {
        Some(r) => std::borrow::Cow::Owned(crop(&frame.image, r)),
        None => std::borrow::Cow::Borrowed(&frame.image),
    };
    let mut clip_scores: Vec<(usize, f32)> = vec![];
    if let Some(c) = cam.clip.as_mut() {
        let emb = c.clip.image_embedding(&image)?;
        let sims: Vec<f32> = c.clip.scores(&emb).iter().map(|s| s.similarity).collect();
        for (i, cmp) in c.compare.iter().enumerate() {
            if let Some((own, negatives)) = cmp {
                let mut logits = vec![sims[*own] * c.clip.logit_scale];
                logits.extend(negatives.iter().map(|n| sims[*n] * c.clip.logit_scale));
                clip_scores.push((i, crate::model::clip::softmax(&logits)[0]));
            }
        }
    }
    let mut labels: Labels = vec![];
    for (i, score) in &clip_scores {
        observe(cam, *i, Some(*score), None, frame, tx)?;
        labels.push((None, format!("{} {score:.2}", cam.prompts[*i].config.name)));
    }
    // the cascade: OWL-ViT (the expensive model) only when the camera's setting says so
    let run_owl = match cam.config.owlvit_when {
        OwlVitWhen::Always => true,
        OwlVitWhen::Motion => moved,
        OwlVitWhen::ClipOn => cam.prompts.iter().any(|p| p.config.model == ModelKind::Clip && p.decider.is_on()),
    };
    if let (Some(owl), true) = (cam.owl.as_mut(), run_owl) {
        let dets = owl.detect(&frame.image, 0.0)?;
        let owl_prompts: Vec<usize> = (0..cam.prompts.len()).filter(|i| cam.prompts[*i].config.model == ModelKind::OwlVit).collect();
        for (q, i) in owl_prompts.into_iter().enumerate() {
            // the best detection of this prompt whose center is inside the region of interest
            let best = dets.iter().find(|d| d.prompt_index == q && inside(cam.config.roi, &d.bbox));
            let score = best.map(|d| d.score).unwrap_or(0.0);
            observe(cam, i, Some(score), best.map(|d| d.bbox), frame, tx)?;
            labels.push((best.map(|d| d.bbox), format!("{} {score:.2}", cam.prompts[i].config.name)));
        }
    }
    // CLIPSeg: a prompt's score is the fraction of the region of interest its mask covers
    if let Some(seg) = cam.seg.as_mut() {
        let masks = seg.masks(&frame.image)?;
        let (w, h) = frame.image.dimensions();
        let seg_prompts = cam.prompts.iter().enumerate().filter(|(_, p)| p.config.model == ModelKind::ClipSeg);
        let scores: Vec<(usize, f32)> =
            seg_prompts.enumerate().map(|(q, (i, p))| (i, masks.coverage(q, w, h, cam.config.roi, p.config.mask_threshold).0)).collect();
        for (i, score) in scores {
            observe(cam, i, Some(score), None, frame, tx)?;
            labels.push((None, format!("{} {:.1}%", cam.prompts[i].config.name, score * 100.0)));
        }
    }
    Ok(Some(labels))
}

/// One prompt's score for a frame through its decider, and the events that follow.
fn observe(cam: &mut Camera, i: usize, score: Option<f32>, bbox: Option<[f32; 4]>, frame: &Frame, tx: &SyncSender<Event>) -> Result<()> {
    let d = cam.prompts[i].decider.observe(score, frame.monotonic);
    let p = &cam.prompts[i];
    cam.status.update_prompt(i, d.smoothed, p.decider.is_on(), p.config.decide.threshold);
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
    let snapshot = matches!(d.transition, Transition::Started | Transition::Updated).then(|| snapshot(cam, i, frame));
    emit_with(cam, i, d.transition, d.smoothed, snapshot.flatten(), tx)
}

/// The frame with the prompt's box (if any) and label drawn, as JPEG.
fn snapshot(cam: &Camera, i: usize, frame: &Frame) -> Option<Arc<Vec<u8>>> {
    let p = &cam.prompts[i];
    let mut img = frame.image.clone();
    let label = format!("{} {:.2}", p.config.name, p.decider.best().unwrap_or(0.0));
    let bbox = p.open.as_ref().and_then(|o| o.bbox).unwrap_or([0.0, 0.0, img.width() as f32 - 1.0, img.height() as f32 - 1.0]);
    match (p.config.model, cam.seg.as_ref().and_then(|s| s.last_masks())) {
        // CLIPSeg: the prompt's mask overlaid instead of a box
        (ModelKind::ClipSeg, Some(masks)) => {
            let q = cam.prompts[..i].iter().filter(|o| o.config.model == ModelKind::ClipSeg).count();
            let layer = crate::model::clipseg::Layer { prompt: q, threshold: p.config.mask_threshold, label: &label, colour_index: i };
            crate::model::clipseg::overlay(&mut img, masks, &[layer]);
        }
        _ => crate::annotate::draw(&mut img, &[crate::annotate::Label { bbox, text: &label, colour_index: i }]),
    }
    let mut jpeg = vec![];
    match image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).encode_image(&img) {
        Ok(()) => Some(Arc::new(jpeg)),
        Err(e) => {
            tracing::warn!("unable to encode the snapshot of {}/{}: {e}", cam.config.id, p.config.id);
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

fn emit(cam: &mut Camera, i: usize, t: Transition, score: f32, tx: &SyncSender<Event>) -> Result<()> {
    emit_with(cam, i, t, score, None, tx)
}

fn emit_with(cam: &mut Camera, i: usize, t: Transition, score: f32, snapshot: Option<Arc<Vec<u8>>>, tx: &SyncSender<Event>) -> Result<()> {
    let kind = match t {
        Transition::Started => EventKind::Start,
        Transition::Updated => EventKind::Update,
        Transition::Ended => EventKind::End,
        Transition::None => return Ok(()),
    };
    let p = &mut cam.prompts[i];
    let Some(open) = p.open.as_ref() else { return Ok(()) };
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
    tx.send(event).map_err(|_| anyhow::anyhow!("the event thread stopped"))
}

/// What defines a camera's models: its prompts without their decision settings.
fn prompt_set(c: &CameraConfig) -> Vec<(String, ModelKind, Vec<String>, Vec<String>)> {
    c.prompts.iter().map(|p| (p.text.clone(), p.model, p.negatives.clone(), p.ensemble.clone())).collect()
}

/// A camera's models for a new prompt set, as the reload thread builds them.
type Loaded = (Models, Option<ClipSeg>);

/// How the reload thread builds a camera's models; tests put a gate in front of it.
type LoadFn = Arc<dyn Fn(&Config, &CameraConfig) -> Result<Loaded> + Send + Sync>;

/// Prompt reloads in the background. At most one load is in flight (never two racing to swap):
/// a SIGHUP that arrives meanwhile is queued, and the file is read again once the load is done,
/// so the newest file wins in the end and a change made during the load is not lost.
struct Reloads {
    load: LoadFn,
    /// Per camera, as it finishes: its id, its new config and its models (or why not).
    in_flight: Option<Receiver<(String, CameraConfig, Result<Loaded>)>>,
    queued: bool,
}

impl Reloads {
    fn new() -> Reloads {
        Reloads { load: Arc::new(|config, cam| Ok((load_models(config, cam)?, load_seg(config, cam)?))), in_flight: None, queued: false }
    }

    /// Loads the models of `changed` cameras on the reload thread.
    fn start(&mut self, new: Config, changed: Vec<CameraConfig>) {
        let (done, rx) = channel();
        let load = self.load.clone();
        let spawned = std::thread::Builder::new().name("promptcam-reload".into()).spawn(move || {
            for nc in changed {
                let loaded = load(&new, &nc);
                if done.send((nc.id.clone(), nc, loaded)).is_err() {
                    return; // the daemon is stopping
                }
            }
        });
        match spawned {
            Ok(_) => self.in_flight = Some(rx),
            Err(e) => tracing::error!("unable to start the reload thread: {e}; keeping the running prompts, send SIGHUP again to retry"),
        }
    }

    /// Swaps in the models that finished loading, without waiting; true once the load is done.
    fn poll(&mut self, cameras: &mut [Camera], tx: &SyncSender<Event>) -> bool {
        let Some(rx) = &self.in_flight else { return false };
        loop {
            match rx.try_recv() {
                Ok((id, nc, loaded)) => {
                    let Some(cam) = cameras.iter_mut().find(|c| c.config.id == id) else { continue };
                    match loaded {
                        Err(e) => tracing::error!("reload of camera {id} rejected, keeping its prompts: {e:#}"),
                        Ok(models) => swap_in(cam, &nc, models, tx),
                    }
                }
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => {
                    self.in_flight = None;
                    return true;
                }
            }
        }
    }
}

/// A camera's new prompts take over: its open events end, its models, deciders and the
/// prompts its status shows are replaced.
fn swap_in(cam: &mut Camera, nc: &CameraConfig, ((clip, owl, prompts), seg): Loaded, tx: &SyncSender<Event>) {
    for i in 0..cam.prompts.len() {
        let score = cam.prompts[i].decider.best().unwrap_or(0.0);
        if cam.prompts[i].open.is_some() && emit(cam, i, Transition::Ended, score, tx).is_err() {
            return;
        }
    }
    cam.status.set_prompts(prompt_statuses(&prompts));
    (cam.clip, cam.owl, cam.seg, cam.prompts) = (clip, owl, seg, prompts);
    cam.config.prompts = nc.prompts.clone();
    cam.config.owlvit_when = nc.owlvit_when;
    tracing::info!("camera {}: {} prompt(s) loaded", cam.config.id, cam.prompts.len());
}

/// SIGHUP: re-read the config. Thresholds of prompts that still exist change at once; a camera
/// whose prompts changed gets new models, loaded in the background while its old prompts keep
/// serving (its stream keeps running; its open events end when the new ones take over; for that
/// while both sets of models are in memory); an invalid file, or models that fail to load, are
/// rejected and the running config kept. While a load is in flight the whole SIGHUP waits for
/// it (see [`Reloads`]). New cameras and sources take a restart.
fn reload(cameras: &mut [Camera], path: &std::path::Path, reloads: &mut Reloads) {
    if reloads.in_flight.is_some() {
        reloads.queued = true;
        return tracing::info!("reload of {} queued until the prompts being loaded are in", path.display());
    }
    let new = match crate::config::load(path) {
        Ok(new) => new,
        Err(e) => return tracing::error!("reload rejected, keeping the running config: {e:#}"),
    };
    let mut changed = 0;
    let mut load = vec![];
    for cam in cameras.iter_mut() {
        let Some(nc) = new.cameras.iter().find(|c| c.id == cam.config.id) else { continue };
        if prompt_set(nc) != prompt_set(&cam.config) {
            tracing::info!("camera {}: loading {} prompt(s) in the background", cam.config.id, nc.prompts.len());
            load.push(nc.clone());
            continue;
        }
        for p in cam.prompts.iter_mut() {
            if let Some(np) = nc.prompts.iter().find(|n| n.id == p.config.id) {
                p.decider.set_thresholds(np.decide.threshold, np.decide.off_threshold);
                p.config.decide.threshold = np.decide.threshold;
                p.config.decide.off_threshold = np.decide.off_threshold;
                changed += 1;
            }
        }
        cam.status.set_prompts(prompt_statuses(&cam.prompts));
    }
    tracing::info!("reloaded {}: thresholds of {changed} prompt(s) applied", path.display());
    if !load.is_empty() {
        reloads.start(new, load);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A config file in a fresh directory, removed when dropped.
    struct ConfigFile(std::path::PathBuf);

    impl ConfigFile {
        fn new(tag: &str) -> ConfigFile {
            let dir = std::env::temp_dir().join(format!("promptcam-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            ConfigFile(dir.join("promptcam.toml"))
        }

        /// One camera with the tiny CLIP model and one prompt against "a photo of a cat".
        fn write(&self, prompt: &str) {
            let text = format!(
                "[models.clip]\ndir = \"{}/models/tiny/clip\"\n\n[motion]\nenabled = false\n\n[[cameras]]\nname = \"Launch pad\"\nsource = \"tests/fixtures/images\"\n\n\
                 [[cameras.prompts]]\ntext = \"{prompt}\"\nmodel = \"clip\"\nnegatives = [\"a photo of a cat\"]\nthreshold = 0.6\nwindow = 1\nmin_frames = 1\noff_delay = 0\n",
                env!("CARGO_MANIFEST_DIR")
            );
            std::fs::write(&self.0, text).expect("a writable config file");
        }
    }

    impl Drop for ConfigFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn rocket() -> Frame {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/images/rocket.png");
        let image = image::open(path).expect("the rocket fixture").to_rgb8();
        Frame { image, seq: 0, captured_at: SystemTime::now(), monotonic: Instant::now() }
    }

    /// Polls until the load in flight is done (the bound only guards against a hang).
    fn finish(reloads: &mut Reloads, cameras: &mut [Camera], tx: &SyncSender<Event>) {
        let end = Instant::now() + Duration::from_secs(60);
        while !reloads.poll(cameras, tx) {
            assert!(Instant::now() < end, "the reload never finished");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kinds(events: &[Event]) -> Vec<(String, EventKind)> {
        events.iter().map(|e| (e.prompt.clone(), e.kind)).collect()
    }

    #[test]
    fn old_prompts_keep_serving_while_new_models_load_then_swap_in() {
        let file = ConfigFile::new("reload-swap");
        file.write("a rocket on the launch pad");
        let mut cameras = prepare(&crate::config::load(&file.0).expect("a valid config")).expect("the tiny models");
        let (tx, rx) = sync_channel(256);
        // the new models load only when the test opens the gate
        let (open, gate) = channel::<()>();
        let gate = Mutex::new(gate);
        let mut reloads = Reloads::new();
        let real = reloads.load.clone();
        reloads.load = Arc::new(move |config, cam| {
            let _ = gate.lock().map(|g| g.recv());
            real(config, cam)
        });

        file.write("a rocket");
        reload(&mut cameras, &file.0, &mut reloads);
        assert!(reloads.in_flight.is_some(), "the changed prompt loads in the background");
        // a second SIGHUP during the load is queued, not a second load racing the first
        reload(&mut cameras, &file.0, &mut reloads);
        assert!(reloads.queued);

        // frames are analysed with the old prompt meanwhile
        for _ in 0..3 {
            assert!(analyse(&mut cameras[0], &rocket(), &tx).expect("analysis").is_some());
            assert!(!reloads.poll(&mut cameras, &tx), "the load is still waiting at the gate");
        }
        let during: Vec<Event> = rx.try_iter().collect();
        assert!(kinds(&during).contains(&("a_rocket_on_the_launch_pad".into(), EventKind::Start)), "{:?}", kinds(&during));
        assert_eq!(cameras[0].prompts[0].config.id, "a_rocket_on_the_launch_pad");

        open.send(()).expect("the reload thread waits at the gate");
        finish(&mut reloads, &mut cameras, &tx);
        // the old prompt's open event ends as the new prompt takes over
        let swapped: Vec<Event> = rx.try_iter().collect();
        assert_eq!(kinds(&swapped), vec![("a_rocket_on_the_launch_pad".into(), EventKind::End)]);
        assert_eq!(cameras[0].config.prompts[0].text, "a rocket");
        assert_eq!(cameras[0].status.prompts().iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec!["a_rocket".to_string()]);
        for _ in 0..3 {
            analyse(&mut cameras[0], &rocket(), &tx).expect("analysis");
        }
        let after: Vec<Event> = rx.try_iter().collect();
        assert!(kinds(&after).contains(&("a_rocket".into(), EventKind::Start)), "{:?}", kinds(&after));
        assert!(after.iter().all(|e| e.prompt == "a_rocket"), "{:?}", kinds(&after));

        // the queued SIGHUP re-reads the file: its prompts are in already, so nothing loads again
        assert!(std::mem::take(&mut reloads.queued));
        reload(&mut cameras, &file.0, &mut reloads);
        assert!(reloads.in_flight.is_none());
    }

    #[test]
    fn models_that_fail_to_load_leave_the_old_prompts_serving() {
        let file = ConfigFile::new("reload-fail");
        file.write("a rocket on the launch pad");
        let mut cameras = prepare(&crate::config::load(&file.0).expect("a valid config")).expect("the tiny models");
        let (tx, rx) = sync_channel(256);
        let mut reloads = Reloads::new();
        reloads.load = Arc::new(|_, _| Err(anyhow::anyhow!("unable to load CLIP: out of memory")));
        file.write("a rocket");
        reload(&mut cameras, &file.0, &mut reloads);
        finish(&mut reloads, &mut cameras, &tx);
        assert_eq!(cameras[0].config.prompts[0].text, "a rocket on the launch pad");
        for _ in 0..3 {
            analyse(&mut cameras[0], &rocket(), &tx).expect("analysis");
        }
        let events: Vec<Event> = rx.try_iter().collect();
        assert!(kinds(&events).contains(&("a_rocket_on_the_launch_pad".into(), EventKind::Start)), "{:?}", kinds(&events));
    }
}
