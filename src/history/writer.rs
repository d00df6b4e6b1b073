//! Writer: the `history` thread. It turns records into rows (scores as JSON, embeddings as f16,
//! thumbnails scaled and JPEG-encoded here, never on the inference thread), commits them in one
//! transaction at least every quarter second, and runs retention once a minute. A database
//! that turns out corrupt while running is set aside and a fresh one started; other write
//! errors are logged (at most once a minute) and their rows counted as dropped.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::store::{encode_embedding, NewEvent, NewFrame, Store};
use super::{unix_ms, FrameRecord, HistoryStats, Record};
use crate::config::HistoryConfig;
use crate::event::{Event, EventKind};

/// Rows are committed at least this often (a crash loses at most about this much).
const COMMIT_EVERY: Duration = Duration::from_millis(250);
const RETAIN_EVERY: Duration = Duration::from_secs(60);
/// Rows kept waiting at most while the database refuses writes.
const PENDING_MAX: usize = 2048;

pub struct Writer {
    store: Store,
    config: HistoryConfig,
    stats: Arc<HistoryStats>,
    frames: Vec<NewFrame>,
    events: Vec<NewEvent>,
    last_error_log: Option<Instant>,
}

impl Writer {
    pub fn new(store: Store, config: HistoryConfig, stats: Arc<HistoryStats>) -> Writer {
        Writer {
            store,
            config,
            stats,
            frames: vec![],
            events: vec![],
            last_error_log: None,
        }
    }

    pub fn run(mut self, rx: Receiver<Record>) {
        self.retain();
        let mut last_commit = Instant::now();
        let mut last_retain = Instant::now();
        loop {
            let wait = COMMIT_EVERY.saturating_sub(last_commit.elapsed());
            match rx.recv_timeout(wait) {
                Ok(r) => self.add(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_commit.elapsed() >= COMMIT_EVERY {
                self.commit();
                last_commit = Instant::now();
            }
            if last_retain.elapsed() >= RETAIN_EVERY {
                self.retain();
                last_retain = Instant::now();
            }
        }
        self.commit();
    }

    fn add(&mut self, r: Record) {
        match r {
            Record::Frame(f) => self
                .frames
                .push(prepare_frame(f, self.config.thumbnail_width)),
            Record::Event(e, at) => self.events.push(prepare_event(e, at)),
        }
    }

    fn commit(&mut self) {
        if self.frames.is_empty() && self.events.is_empty() {
            return;
        }
        match self.store.insert(&self.frames, &self.events) {
            Ok(()) => {
                self.stats
                    .frames
                    .fetch_add(self.frames.len() as u64, Ordering::Relaxed);
                self.stats
                    .events
                    .fetch_add(self.events.len() as u64, Ordering::Relaxed);
                self.frames.clear();
                self.events.clear();
            }
            Err(e) => {
                self.failed(&e);
                // keep them for the next try, within bounds: the oldest go first
                let over = (self.frames.len() + self.events.len()).saturating_sub(PENDING_MAX);
                if over > 0 {
                    let f = over.min(self.frames.len());
                    self.frames.drain(..f);
                    self.events.drain(..(over - f).min(self.events.len()));
                    self.stats.dropped.fetch_add(over as u64, Ordering::Relaxed);
                }
            }
        }
    }

    fn retain(&mut self) {
        let now = unix_ms(SystemTime::now());
        match self
            .store
            .retain(now, self.config.keep, self.config.max_bytes)
        {
            Ok(r) => {
                self.stats.bytes.store(r.bytes_after, Ordering::Relaxed);
                if r.frames > 0 {
                    tracing::debug!(
                        "history: retention removed {} frame(s); {} bytes left",
                        r.frames,
                        r.bytes_after
                    );
                }
            }
            Err(e) => self.failed(&e),
        }
    }

    /// A write failed: a corrupt database is replaced at once; other errors are logged.
    fn failed(&mut self, e: &anyhow::Error) {
        let corrupt = super::store::is_corrupt(e);
        if corrupt {
            match self.store.start_over() {
                Ok(aside) => tracing::warn!(
                    "history: the database turned out corrupt ({e:#}); it was moved to {} and a new one started",
                    aside.display()
                ),
                Err(e) => tracing::error!("history: the database is corrupt and unable to start a new one: {e:#}"),
            }
            return;
        }
        if self
            .last_error_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            tracing::error!(
                "history: unable to write to {}: {e:#}; check free space and permissions (rows are kept and retried)",
                self.store.path().display()
            );
            self.last_error_log = Some(Instant::now());
        }
    }
}

/// Scores as JSON `{"prompt": [score, box?]}`, the embedding as f16, the thumbnail as JPEG.
pub fn prepare_frame(f: FrameRecord, thumbnail_width: u32) -> NewFrame {
    let mut scores = serde_json::Map::new();
    for s in &f.scores {
        let mut v = vec![serde_json::json!(round(s.score))];
        if let Some(b) = s.bbox {
            v.push(serde_json::json!(b.map(|x| (x * 10.0).round() / 10.0)));
        }
        scores.insert(s.prompt.clone(), serde_json::Value::Array(v));
    }
    NewFrame {
        camera: f.camera,
        t_ms: unix_ms(f.time),
        motion: f.motion,
        scores: serde_json::Value::Object(scores).to_string(),
        embedding: f.embedding.map(|(m, v)| (m, encode_embedding(&v))),
        thumbnail: f
            .thumbnail
            .and_then(|frame| thumbnail(&frame.image, thumbnail_width)),
    }
}

/// Scores keep 5 decimals: plenty for plots and replays, a third of the JSON.
fn round(x: f32) -> f64 {
    (x as f64 * 1e5).round() / 1e5
}

/// An event row at the time it happened: a start at its frame's capture time, an end when it
/// ended, an update when it was recorded.
fn prepare_event(e: Event, at: SystemTime) -> NewEvent {
    let stamp = match e.kind {
        EventKind::Start => Some(e.started_at.as_str()),
        EventKind::End => e.ended_at.as_deref(),
        EventKind::Update => None,
    };
    let at = stamp
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .unwrap_or(at);
    NewEvent {
        kind: match e.kind {
            EventKind::Start => "start",
            EventKind::Update => "update",
            EventKind::End => "end",
        },
        event_id: e.id,
        camera: e.camera,
        prompt: e.prompt,
        t_ms: unix_ms(at),
        score: e.score,
        bbox: e.bbox,
        snapshot: e.snapshot.and_then(|s| s.jpeg()).map(|j| j.to_vec()),
    }
}

/// A JPEG `width` pixels wide (never wider than the image), aspect kept.
pub fn thumbnail(image: &image::RgbImage, width: u32) -> Option<Vec<u8>> {
    let (w, h) = image.dimensions();
    let tw = width.min(w).max(1);
    let th = ((h as u64 * tw as u64) / w.max(1) as u64).max(1) as u32;
    let small = image::imageops::thumbnail(image, tw, th);
    let mut jpeg = vec![];
    match image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 75).encode_image(&small) {
        Ok(()) => Some(jpeg),
        Err(e) => {
            tracing::warn!("history: unable to encode a thumbnail: {e}");
            None
        }
    }
}
