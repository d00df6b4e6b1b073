//! Endpoint: the optional local HTTP endpoint of the daemon (`[http]`, off by default, bound to
//! 127.0.0.1 when on) for a monitoring agent or a person with curl on the device:
//!
//! - `/healthz`: 200 while every running camera makes progress (`ok`, or `degraded` and what
//!   runs less than configured, such as a history that could not open), else 503 with the
//!   reasons;
//! - `/metrics`: Prometheus text (version 0.0.4) of the per-camera counters, the inference time
//!   histogram, events, and the MQTT publisher's spool depth and connection;
//! - `/snapshot/<camera>.jpg`: the latest analysed frame with its labels, drawn and encoded on
//!   request (404 for an unknown camera, 503 until the camera has analysed a frame).
//!
//! axum's router answers on a current-thread tokio runtime on its own named thread; it only reads
//! the shared [`Status`], so a slow client never slows capture or inference. Connections are
//! bounded in number and time ([`conn`]): idle and slow clients are closed, and the endpoint
//! never takes more than a quarter of the process's file descriptors.
//!
//! Health: a camera makes progress when frames from its source reach the inference thread and
//! are dealt with, analysed or held back by the motion gate (a quiet, motion-gated camera is
//! healthy: its frames are still captured and checked). A monitor task samples the counters every
//! 250 ms; a camera fails when that count stood still for longer than its window, `stale_after`
//! (default 30 s) or three frame intervals at its `fps`, whichever is longer. The reason names
//! the stage: frames still replacing each other in the camera's slot mean inference is stalled,
//! otherwise the source stopped delivering. Paused cameras and sources that ended (a finite
//! replay) are reported but never fail.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::config::HttpConfig;
use crate::status::{CameraSnapshot, Status};

mod conn;
mod metrics;
pub mod tls;
use metrics::Metrics;

/// A bound listening socket, taken before any thread starts so a busy port fails at once.
pub struct Listener {
    socket: std::net::TcpListener,
    config: HttpConfig,
    /// HTTPS: the acceptor made from `[http] tls_cert` and `tls_key`.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Binds `[http] listen`; the error names the address and the config key.
pub fn bind(config: &HttpConfig) -> Result<Listener> {
    let addr = config.listen;
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let socket = std::net::TcpListener::bind(addr).with_context(|| {
        format!("unable to listen on {addr} (`http.listen` in the config); pick a free port, or set `enabled = false` in [http]")
    })?;
    socket
        .set_nonblocking(true)
        .with_context(|| format!("unable to set up the socket on {addr}"))?;
    Ok(Listener {
        socket,
        config: config.clone(),
        tls,
    })
}

impl Listener {
    /// The address actually bound (port 0 in the config picks a free port).
    pub fn local_addr(&self) -> Result<std::net::SocketAddr> {
        self.socket
            .local_addr()
            .context("unable to read the endpoint's address")
    }
}

/// The running endpoint; [`Endpoint::stop`] (or dropping it) ends it gracefully.
pub struct Endpoint {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The per-camera progress monitor behind `/healthz`.
struct Progress {
    /// Frames replaced in the slot: they keep rising while the source delivers and nobody takes.
    dropped: u64,
    processed: u64,
    dropped_at: Option<Instant>,
    processed_at: Instant,
}

impl Progress {
    fn new(now: Instant) -> Progress {
        Progress {
            dropped: 0,
            processed: 0,
            dropped_at: None,
            processed_at: now,
        }
    }

    fn observe(&mut self, s: &CameraSnapshot, now: Instant) {
        let processed = processed(s);
        if s.dropped != self.dropped {
            (self.dropped, self.dropped_at) = (s.dropped, Some(now));
        }
        if processed != self.processed {
            (self.processed, self.processed_at) = (processed, now);
        }
    }
}

/// Frames the inference thread took from the slot and dealt with: analysed, held back by the
/// motion gate, or dropped while paused.
fn processed(s: &CameraSnapshot) -> u64 {
    s.inference.count + s.source.skipped_no_motion + s.paused_frames
}

/// One camera's health line: Ok (healthy) or Err (the reason it fails).
fn verdict(
    id: &str,
    s: &CameraSnapshot,
    ended: bool,
    p: &Progress,
    window: Duration,
    now: Instant,
) -> std::result::Result<String, String> {
    let secs = |t: Instant| now.saturating_duration_since(t).as_secs_f64();
    if s.paused {
        return Ok(format!("camera {id}: paused"));
    }
    if ended {
        return Ok(format!(
            "camera {id}: source ended after {} frame(s)",
            s.source.captured
        ));
    }
    if now.saturating_duration_since(p.processed_at) <= window {
        return Ok(format!(
            "camera {id}: {} analysed, {} held back by the motion gate",
            s.inference.count, s.source.skipped_no_motion
        ));
    }
    if p.dropped_at
        .is_some_and(|t| now.saturating_duration_since(t) <= window)
    {
        return Err(format!(
            "camera {id}: frames arrive but none was analysed for {:.0} s: inference is stalled",
            secs(p.processed_at)
        ));
    }
    Err(format!(
        "camera {id}: no frame from its source for {:.0} s ({} reconnect(s), {} undecodable); check the camera and `promptcam probe`",
        secs(p.processed_at),
        s.source.reconnects,
        s.source.undecodable
    ))
}

struct App {
    status: Status,
    /// Per camera: how long it may stand still.
    windows: Vec<Duration>,
    progress: Mutex<Vec<Progress>>,
    registry: Registry,
}

impl App {
    fn sample(&self) {
        let now = Instant::now();
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        for (cam, p) in self.status.cameras.iter().zip(progress.iter_mut()) {
            p.observe(&cam.snapshot(now), now);
        }
    }
}

impl Endpoint {
    /// Starts serving on `listener` from a thread named `http`. `fps` is each camera's frame
    /// rate, in `status` order.
    pub fn start(
        listener: Listener,
        status: Status,
        fps: &[f64],
        web: crate::web::Web,
    ) -> Result<Endpoint> {
        let addr = listener.local_addr()?;
        let stale = listener.config.stale_after;
        let windows = fps
            .iter()
            .map(|f| stale.max(Duration::from_secs_f64(3.0 / f.max(0.001))))
            .collect();
        let now = Instant::now();
        let progress = Mutex::new(status.cameras.iter().map(|_| Progress::new(now)).collect());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Metrics {
            status: status.clone(),
        }));
        let app = Arc::new(App {
            status,
            windows,
            progress,
            registry,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("unable to start the HTTP endpoint's runtime")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let socket = listener.socket;
        let tls = listener.tls.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        // every route (pages, API, /healthz, /metrics, /snapshot) behind the same access rules
        let guard = Arc::new(crate::web::auth::Guard::new(
            listener.config.token.clone(),
            addr,
            tls.is_some(),
        ));
        let router = Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route("/snapshot/{file}", get(snapshot))
            .with_state(app.clone())
            .merge(crate::web::routes(Arc::new(web)))
            .merge(crate::web::auth::routes(guard.clone()))
            .layer(axum::middleware::from_fn_with_state(
                guard,
                crate::web::auth::guard,
            ));
        let limits = conn::Limits {
            max: conn::max_connections(listener.config.max_connections),
            idle: listener.config.idle_timeout,
            request: listener.config.request_timeout,
        };
        if limits.max < listener.config.max_connections {
            tracing::info!(
                "HTTP endpoint: at most {} connections (a quarter of the open-file limit; `http.max_connections` is {})",
                limits.max,
                listener.config.max_connections
            );
        }
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || runtime.block_on(serve(socket, tls, app, router, limits, stopped)))
            .context("unable to start the HTTP endpoint's thread")?;
        tracing::info!(
            "HTTP endpoint on {scheme}://{addr}/ (pages, /api, /healthz, /metrics, /snapshot/<camera>.jpg)"
        );
        Ok(Endpoint {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops accepting, lets requests in flight finish (at most 2 s), and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(
    socket: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<App>,
    router: Router,
    limits: conn::Limits,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            return tracing::error!(
                "unable to serve the HTTP endpoint: {e}; the daemon runs on without it"
            )
        }
    };
    let monitor = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            monitor.sample();
        }
    });
    let stop = async move {
        let _ = stopped.await;
    };
    conn::serve(listener, tls, router, limits, stop).await;
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    app.sample();
    let now = Instant::now();
    let progress = app.progress.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut ok, mut failing) = (vec![], vec![]);
    for ((cam, p), window) in app
        .status
        .cameras
        .iter()
        .zip(progress.iter())
        .zip(&app.windows)
    {
        match verdict(
            &cam.id,
            &cam.snapshot(now),
            cam.source_ended(),
            p,
            *window,
            now,
        ) {
            Ok(line) => ok.push(line),
            Err(line) => failing.push(line),
        }
    }
    let degraded = app.status.degraded();
    if failing.is_empty() && degraded.is_empty() {
        text(StatusCode::OK, format!("ok\n{}\n", ok.join("\n")))
    } else if failing.is_empty() {
        // the cameras work: still 200, with what does not
        text(
            StatusCode::OK,
            format!("degraded\n{}\n{}\n", degraded.join("\n"), ok.join("\n")),
        )
    } else {
        failing.extend(degraded);
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy\n{}\n{}\n", failing.join("\n"), ok.join("\n")),
        )
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut body, &app.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            body,
        )
            .into_response(),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unable to encode the metrics\n".into(),
        ),
    }
}

async fn snapshot(State(app): State<Arc<App>>, Path(file): Path<String>) -> Response {
    let Some(id) = file.strip_suffix(".jpg") else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no such snapshot {file:?}: ask for /snapshot/<camera>.jpg\n"),
        );
    };
    let Some(cam) = app.status.camera(id) else {
        let ids: Vec<&str> = app.status.cameras.iter().map(|c| c.id.as_str()).collect();
        return text(
            StatusCode::NOT_FOUND,
            format!("no camera {id:?}; cameras: {}\n", ids.join(", ")),
        );
    };
    let Some(latest) = cam.latest() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("camera {id} has not analysed a frame yet; try again shortly\n"),
        );
    };
    // drawing and encoding a large frame takes tens of milliseconds: off the runtime's thread
    let jpeg = tokio::task::spawn_blocking(move || annotated_jpeg(&latest)).await;
    match jpeg {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unable to encode the snapshot of camera {id}: {e:#}\n"),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unable to encode the snapshot of camera {id}: {e}\n"),
        ),
    }
}

/// The frame with its labels: boxed detections where they are, whole-frame (CLIP) labels stacked
/// in the top-left corner.
fn annotated_jpeg(latest: &crate::status::Latest) -> Result<Vec<u8>> {
    let mut img = latest.frame.image.clone();
    let boxed: Vec<crate::annotate::Label> = latest
        .labels
        .iter()
        .enumerate()
        .filter_map(|(i, (b, t))| {
            b.map(|bbox| crate::annotate::Label {
                bbox,
                text: t,
                colour_index: i,
            })
        })
        .collect();
    crate::annotate::draw(&mut img, &boxed);
    let scale = (img.width().min(img.height()) / 400) + 1;
    let mut y = 0i64;
    for (i, (_, t)) in latest
        .labels
        .iter()
        .enumerate()
        .filter(|(_, (b, _))| b.is_none())
    {
        crate::annotate::text(&mut img, 0, y, t, scale, crate::annotate::colour(i));
        y += 8 * scale as i64 + 6;
    }
    let mut jpeg = vec![];
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&img)
        .context("JPEG encoder")?;
    Ok(jpeg)
}

#[cfg(test)]
mod tests;
