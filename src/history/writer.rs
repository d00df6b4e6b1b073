//! Writer: the `history` thread. It turns records into rows (scores as JSON, embeddings as f16,
//! thumbnails scaled and JPEG-encoded here, never on the inference thread), commits them in one
//! transaction at least every quarter second, and runs retention once a minute (a pass deletes
//! a bounded chunk; while more is due, passes follow each commit). A database that turns out
//! corrupt while running is set aside and a fresh one started; other write errors are logged
//! (at most once a minute) and their rows counted as dropped.
//!
//! Two states keep the daemon's other work safe, each logged once, shown on `/healthz` (through
//! [`HistoryStats::health`]) and left by itself:
//! - **off**: the database did not open (a path that is a file, a read-only or full disk, a
//!   lock); opening is retried with a growing wait (1 s up to 30 s) and rows wait, within bounds;
//! - **paused**: the history's file system has less than `min_free_mb` free; frames are skipped
//!   (counted), so that the database never takes the last space that the MQTT spool, the
//!   run-time prompts and the rest of the system need. Writing resumes once space is back.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::store::{encode_embedding, NewEvent, NewFrame, Store};
use super::{unix_ms, FrameRecord, HistoryStats, Record};
use crate::backoff::Backoff;
use crate::config::HistoryConfig;
use crate::event::{Event, EventKind};

/// Rows are committed at least this often (a crash loses at most about this much).
const COMMIT_EVERY: Duration = Duration::from_millis(250);
const RETAIN_EVERY: Duration = Duration::from_secs(60);
/// The next retention pass while one has more to delete (each pass deletes a bounded chunk):
/// after the next commit, so that frames keep being written between passes.
const RETAIN_AGAIN: Duration = COMMIT_EVERY;
/// Rows kept waiting at most while the database refuses writes.
const PENDING_MAX: usize = 2048;

pub struct Writer {
    /// None while the database is off (did not open); see [`Writer::reopen`].
    store: Option<Store>,
    config: HistoryConfig,
    stats: Arc<HistoryStats>,
    frames: Vec<NewFrame>,
    events: Vec<NewEvent>,
    last_error_log: Option<Instant>,
    /// When to try opening the database again, while it is off.
    reopen_at: Instant,
    reopen_wait: Backoff,
    /// Free bytes seen below `min_free_mb`: writing is paused.
    low: Option<u64>,
    /// Rows skipped during the current pause.
    skipped: u64,
    /// When the next retention pass is due.
    retain_at: Instant,
}

impl Writer {
    /// A writer for `store`, or for a database that failed to open (`Err`: the reason, logged
    /// by the caller), which it tries again.
    pub fn new(
        store: Result<Store, String>,
        config: HistoryConfig,
        stats: Arc<HistoryStats>,
    ) -> Writer {
        let mut reopen_wait = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let reopen_at = Instant::now() + reopen_wait.next_wait();
        if let Err(e) = &store {
            stats.set_health(Some(off_line(&config, e)));
        }
        Writer {
            store: store.ok(),
            config,
            stats,
            frames: vec![],
            events: vec![],
            last_error_log: None,
            reopen_at,
            reopen_wait,
            low: None,
            skipped: 0,
            retain_at: Instant::now(),
        }
    }

    pub fn run(mut self, rx: Receiver<Record>) {
        self.check_space();
        self.retain();
        let mut last_commit = Instant::now();
        loop {
            let wait = COMMIT_EVERY.saturating_sub(last_commit.elapsed());
            match rx.recv_timeout(wait) {
                Ok(r) => self.add(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_commit.elapsed() >= COMMIT_EVERY {
                self.reopen();
                self.check_space();
                self.commit();
                last_commit = Instant::now();
            }
            if Instant::now() >= self.retain_at {
                self.retain();
            }
        }
        self.commit();
    }

    /// While the database is off, tries to open it when the wait is over.
    fn reopen(&mut self) {
        if self.store.is_some() || Instant::now() < self.reopen_at {
            return;
        }
        match Store::open(&self.config.dir) {
            Ok(store) => {
                tracing::info!(
                    "history: {} opened; recording again",
                    store.path().display()
                );
                self.store = Some(store);
                self.stats.set_health(None);
                self.check_space();
                self.retain();
            }
            Err(e) => {
                let wait = self.reopen_wait.next_wait();
                self.reopen_at = Instant::now() + wait;
                self.stats
                    .set_health(Some(off_line(&self.config, &format!("{e:#}"))));
            }
        }
    }

    /// Pauses or resumes writing as the file system's free space crosses `min_free_mb`.
    fn check_space(&mut self) {
        if self.config.min_free_bytes == 0 {
            return;
        }
        // a directory that does not exist yet (the database is off) has no space to watch
        let Ok(free) = free_bytes(&self.config.dir) else {
            return;
        };
        let mb = |b: u64| b / (1024 * 1024);
        match (self.low, free < self.config.min_free_bytes) {
            (None, true) => {
                tracing::warn!(
                    "history: paused: {} MB free on the file system of {}, under history.min_free_mb = {}; frames are not recorded until space is freed (events still go out)",
                    mb(free),
                    self.config.dir.display(),
                    mb(self.config.min_free_bytes)
                );
                self.low = Some(free);
                self.skipped = 0;
            }
            (Some(_), true) => self.low = Some(free),
            (Some(_), false) => {
                tracing::info!(
                    "history: {} MB free again on the file system of {}; recording resumes ({} row(s) skipped while paused)",
                    mb(free),
                    self.config.dir.display(),
                    self.skipped
                );
                self.low = None;
            }
            (None, false) => {}
        }
        if self.store.is_some() {
            self.stats.set_health(self.low.map(|free| {
                format!(
                    "history: paused: {} MB free on the file system of {}, under history.min_free_mb = {}; free some space (recording resumes by itself)",
                    mb(free),
                    self.config.dir.display(),
                    mb(self.config.min_free_bytes)
                )
            }));
        }
        self.stats
            .paused
            .store(self.low.is_some(), Ordering::Relaxed);
    }

    /// Counts `n` rows not written while paused.
    fn skip(&mut self, n: u64) {
        self.skipped += n;
        self.stats.skipped.fetch_add(n, Ordering::Relaxed);
    }

    fn add(&mut self, r: Record) {
        if self.low.is_some() {
            // nothing is prepared (no thumbnail encoded) for a row that will not be written
            return self.skip(1);
        }
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
        if self.low.is_some() {
            // rows prepared before the pause began
            self.skip((self.frames.len() + self.events.len()) as u64);
            self.frames.clear();
            self.events.clear();
            return;
        }
        let result = match &mut self.store {
            Some(store) => store.insert(&self.frames, &self.events),
            // off: the rows wait for the database, within bounds
            None => Err(anyhow::anyhow!("the history database is not open")),
        };
        match result {
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
                if self.store.is_some() {
                    self.failed(&e);
                }
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

    /// One retention pass; the next is due in a minute, or soon while it has more to delete.
    fn retain(&mut self) {
        let now = unix_ms(SystemTime::now());
        self.retain_at = Instant::now() + RETAIN_EVERY;
        let Some(store) = &mut self.store else {
            return;
        };
        match store.retain(now, self.config.keep, self.config.max_bytes) {
            Ok(r) => {
                if r.more {
                    self.retain_at = Instant::now() + RETAIN_AGAIN;
                }
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
        let Some(store) = &mut self.store else {
            return;
        };
        if super::store::is_corrupt(e) {
            match store.start_over() {
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
                store.path().display()
            );
            self.last_error_log = Some(Instant::now());
        }
    }
}

/// The `/healthz` line of a database that is off.
fn off_line(config: &HistoryConfig, e: &str) -> String {
    format!(
        "history: off: {e}; retried by itself (fix the cause; {} holds the database)",
        config.dir.display()
    )
}

/// Bytes free to an unprivileged writer on the file system holding `dir`.
pub fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `s` a buffer of the size statvfs writes
    if unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `s`
    let s = unsafe { s.assume_init() };
    // 32 bits wide on 32-bit targets
    #[allow(clippy::unnecessary_cast)]
    Ok((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
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
