//! Daemon: `promptcam run` — wiring only. It loads the models ([`prepare`]), starts a capture
//! thread per camera (source -> latest-wins slot), the inference thread (the [`pipeline`]:
//! motion gate -> prompt models -> deciders -> events), the `events` thread (the [`sink`]s:
//! stdout, MQTT, history), the HTTP edge, and serves systemd (`notify`) and signals on the main
//! thread. A SIGHUP re-reads the config (`reload`). The stages live in their own modules; this
//! one only connects them, in that one direction.
//!
//! [`pipeline`]: crate::pipeline
//! [`sink`]: crate::sink

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::config::{Config, ModelConfig};
use crate::event::Event;
use crate::model::{ModelKind, PrecisionChoice};
use crate::motion::MotionGate;
use crate::pipeline::start_cache::StartCache;
use crate::pipeline::towers::Towers;
use crate::pipeline::{Camera, Inference};
use crate::signals::Control;
use crate::sink::{HistorySink, MqttSink, Sink, StdoutSink};
use crate::status::Status;

mod notify;
mod reload;
mod threads;

use reload::Reloads;

/// Loads the models and builds every camera on them (with what `cache` remembers from an
/// earlier start); `promptcam check` stops here.
pub fn prepare(config: &Config, cache: &StartCache) -> Result<(Towers, Vec<Camera>)> {
    let towers = Towers::load(config, None, cache)?;
    let cameras = config
        .cameras
        .iter()
        .map(|cam| {
            let models = towers
                .prompt_models(cam)
                .with_context(|| format!("unable to set up the models of camera {:?}", cam.name))?;
            let motion = config.motion.clone().map(|m| {
                let mut g = MotionGate::new(m);
                g.set_roi(cam.roi);
                g
            });
            Ok(Camera::new(cam, motion, models))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((towers, cameras))
}

/// Every camera's shared status, for the MQTT and HTTP edges.
pub fn status_of(cameras: &[Camera]) -> Status {
    Status::new(cameras.iter().map(|c| c.status.clone()).collect())
}

/// A camera's capture thread and the flag that stops it.
struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

fn start_capture(cam: &Camera) -> Result<Capture> {
    let c = &cam.config;
    let source = crate::source::open(&c.source, c.fps, c.looped)
        .with_context(|| format!("unable to open the source of camera {:?}", c.name))?;
    tracing::info!("camera {}: {}", c.id, source.describe());
    let (slot, stats, fps) = (cam.slot.clone(), cam.stats.clone(), c.fps);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("capture-{}", c.id))
        .spawn(move || crate::source::capture_loop(source, fps, slot, stats, flag))
        .context("unable to start a capture thread")?;
    Ok(Capture { stop, thread })
}

/// Runs the daemon until every source has ended or a stop signal arrives.
pub fn run(config: Config) -> Result<()> {
    // signals first: a SIGHUP or SIGTERM while the models load must not kill the daemon
    let control = Arc::new(Control::default());
    crate::signals::install(control.clone())?;
    tracing::info!("loading the models of {} camera(s)", config.cameras.len());
    let threads = crate::threads::set_threads(config.inference_threads);
    let device = crate::model::device::select(config.device);
    match device.refused {
        true => tracing::warn!("{device}"),
        false => tracing::info!("{device}"),
    }
    let mqtt = config.mqtt.clone();
    // the prompts added at run time before the last stop come back with the file's
    let runtime = crate::runtime::Runtime::start(&config, std::time::SystemTime::now());
    let mut running = config.clone();
    let cache = StartCache::open(&config.state_dir());
    let (towers, cameras) = match runtime.merge(&mut running) {
        0 => prepare(&running, &cache)?,
        // saved run-time prompts whose models no longer load must not keep the cameras down
        _ => prepare(&running, &cache).or_else(|e| {
            tracing::error!("{e:#}; starting without the run-time prompts");
            runtime.reject_unloaded(&config.cameras, &format!("{e:#}"));
            running = config.clone();
            prepare(&running, &cache)
        })?,
    };
    let (threads, ms) = match config.inference_threads {
        0 => threads::calibrate(&towers, &cache)?,
        _ => (threads, None),
    };
    let (workers, threads) = threads::workers(&running, &towers, &cache, threads, ms)?;
    cache.save();
    match workers {
        1 => tracing::info!("inference on {threads} thread(s)"),
        w => tracing::info!("inference on {w} workers of {threads} thread(s) each"),
    }
    let mut status = status_of(&cameras);
    status.runtime = runtime.clone();
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

    let capture = cameras
        .iter()
        .map(start_capture)
        .collect::<Result<Vec<_>>>()?;
    // a history whose database does not open (a full or read-only disk, a path that is a file)
    // retries by itself (`history::writer`); only a thread that cannot start ends it here, and
    // that costs the pages their history and the lab, not the cameras' events
    let history = match config
        .history
        .clone()
        .map(crate::history::History::start)
        .transpose()
    {
        Ok(h) => h.map(Arc::new),
        Err(e) => {
            tracing::error!(
                "{e:#}; running without the history (the pages' plots and the prompt lab stay empty) until the daemon restarts"
            );
            status.degrade(format!(
                "history: off since the start: {e:#}; restart the daemon"
            ));
            None
        }
    };
    // the sinks: MQTT (which connects in the background, spools events while the broker is
    // away, and takes commands that steer the cameras' status) or stdout; and the history
    let mut sinks: Vec<Box<dyn Sink>> = vec![];
    match mqtt {
        Some(m) => {
            let p = crate::mqtt::Publisher::start(
                m,
                &config.device_id,
                &running.cameras,
                status.clone(),
            )?;
            status.add_output(Arc::new(p.stats_handle()));
            sinks.push(Box::new(MqttSink(p)));
        }
        None => sinks.push(Box::new(StdoutSink::default())),
    }
    if let Some(h) = &history {
        status.add_output(h.stats.clone());
        sinks.push(Box::new(HistorySink(h.clone())));
    }
    let (tx, rx) = sync_channel::<Event>(256);
    let events = crate::sink::start(rx, sinks, &status)?;
    let endpoint = match http {
        Some(listener) => {
            let fps: Vec<f64> = cameras.iter().map(|c| c.config.fps).collect();
            let stats = history.as_ref().map(|h| h.stats.clone());
            let web = crate::web::Web::new(
                config.http.as_ref().map_or(1, |h| h.lab_queries),
                status.clone(),
                config.history.clone(),
                // the lab's text tower runs in the precision CLIP's image tower was given
                config.model(ModelKind::Clip).map(|m| ModelConfig {
                    precision: towers
                        .precision(ModelKind::Clip)
                        .map_or(m.precision, PrecisionChoice::fixed),
                    ..m.clone()
                }),
                stats,
            );
            Some(crate::endpoint::Endpoint::start(
                listener,
                status.clone(),
                &fps,
                web,
            )?)
        }
        None => None,
    };
    let infer = control.clone();
    let mut reloads = Reloads::new(towers, config.clone(), runtime);
    let inference = std::thread::Builder::new()
        .name("promptcam-infer".into())
        .spawn(move || {
            let s = crate::pipeline::worker::Signals {
                shutdown: &infer.shutdown,
                heartbeat_ms: &infer.heartbeat_ms,
                started,
            };
            Inference::new(cameras, tx, history)
                .with_workers(workers, threads)
                .run(s, |inf| reloads.between(inf, &infer.reload))
        })
        .context("unable to start the inference thread")?;

    notify::serve(&inference, &control, &status, started);
    for c in &capture {
        c.stop.store(true, Ordering::Relaxed);
    }
    let result = inference
        .join()
        .map_err(|_| anyhow::anyhow!("the inference thread panicked"))?;
    if let Some(e) = endpoint {
        e.stop();
    }
    let _ = events.join();
    for c in capture {
        let _ = c.thread.join();
    }
    result
}
