//! History: what the cameras saw, kept on the device so that a user can see how prompts scored,
//! try new wording on past frames and replay the decision rules (the prompt lab, `web`).
//!
//! For every analysed frame the inference thread hands a [`FrameRecord`] (camera, time, motion
//! flag, every prompt's score and best box, the frame's CLIP image embedding when a CLIP model is
//! configured) to [`History::record`], which never blocks: a bounded channel to the `history`
//! thread (`writer`), which encodes thumbnails, batches rows into one SQLite transaction every
//! quarter second (so a crash loses at most the last second) and applies retention by age and
//! size. `store` owns the SQLite schema and queries (WAL mode, through rusqlite's bundled SQLite);
//! `lab` scores stored embeddings against new prompts and replays the decider.

pub mod bench;
pub mod lab;
pub mod store;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::config::HistoryConfig;
use crate::event::Event;
use crate::frame::Frame;
use crate::model::identity::ModelIdentity;

/// One prompt's score on one frame, as its decider received it.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptScore {
    pub prompt: String,
    pub score: f32,
    /// The best box (OWL-ViT prompts), in frame pixels.
    pub bbox: Option<[f32; 4]>,
}

/// What the inference thread knows about one analysed frame.
#[derive(Clone, Debug)]
pub struct FrameRecord {
    pub camera: String,
    pub time: SystemTime,
    /// Whether the motion gate saw motion (false: a periodic refresh or no gate decision).
    pub motion: bool,
    pub scores: Vec<PromptScore>,
    /// The L2-normalized CLIP image embedding of the frame (its region of interest, if set),
    /// and the model that made it.
    pub embedding: Option<(Arc<ModelIdentity>, Vec<f32>)>,
    /// The frame, when a thumbnail is due (see [`ThumbnailClock`]); encoded on the history thread.
    pub thumbnail: Option<Arc<Frame>>,
}

/// What the history thread stores.
pub enum Record {
    Frame(FrameRecord),
    /// An event at a time (its start, the frame of a better score, or its end).
    Event(Event, SystemTime),
}

/// Counters of the history thread, readable from any thread.
#[derive(Default, Debug)]
pub struct HistoryStats {
    /// Frames written.
    pub frames: AtomicU64,
    /// Events written.
    pub events: AtomicU64,
    /// Records dropped because the history thread fell behind (the channel was full) or the
    /// database refused them.
    pub dropped: AtomicU64,
    /// Size of the database in bytes after the last retention pass.
    pub bytes: AtomicU64,
    /// Records not written because the file system had less than `min_free_mb` free.
    pub skipped: AtomicU64,
    /// Whether writing is paused for lack of free space.
    pub paused: AtomicBool,
    /// What keeps the history from recording now (a `/healthz` line), if anything.
    health: Mutex<Option<String>>,
}

impl HistoryStats {
    /// Sets (or, with None, clears) what keeps the history from recording.
    pub fn set_health(&self, line: Option<String>) {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = line;
    }

    /// What keeps the history from recording now, if anything.
    pub fn health(&self) -> Option<String> {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl crate::status::OutputStats for HistoryStats {
    fn metrics(&self) -> Vec<crate::status::OutputMetric> {
        let m = |name, help, counter, unit, value: u64| crate::status::OutputMetric {
            name,
            help,
            counter,
            unit,
            labels: vec![],
            value: value as f64,
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            m("promptcam_history_frames", "Analysed frames written to the history.", true, None, get(&self.frames)),
            m("promptcam_history_events", "Events written to the history.", true, None, get(&self.events)),
            m(
                "promptcam_history_dropped",
                "History records dropped (the history thread fell behind or the database refused them).",
                true,
                None,
                get(&self.dropped),
            ),
            m(
                "promptcam_history_size",
                "Size of the history database after the last retention pass.",
                false,
                Some("bytes"),
                get(&self.bytes),
            ),
            m(
                "promptcam_history_skipped",
                "History records not written because the disk had less than history.min_free_mb free.",
                true,
                None,
                get(&self.skipped),
            ),
            m(
                "promptcam_history_paused",
                "1 while the history does not record because the disk is short of free space.",
                false,
                None,
                self.paused.load(Ordering::Relaxed) as u64,
            ),
        ]
    }

    fn degraded(&self) -> Option<String> {
        self.health()
    }
}

/// The handle the daemon keeps: records go to the `history` thread.
pub struct History {
    tx: Option<SyncSender<Record>>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<HistoryStats>,
    pub config: HistoryConfig,
}

/// Records waiting for the history thread, at most: a few seconds of frames from several cameras.
const QUEUE: usize = 512;

impl History {
    /// Opens (or creates) the database and starts the `history` thread. A corrupt database is
    /// set aside (renamed) and a fresh one started, with a warning. A database that does not
    /// open costs the pages their history and the lab, not the cameras' events: it is logged,
    /// `/healthz` says so, and the thread tries again by itself.
    pub fn start(config: HistoryConfig) -> Result<History> {
        let store = store::Store::open(&config.dir).map_err(|e| {
            tracing::error!(
                "{e:#}; running without the history (the pages' plots and the prompt lab stay empty) and trying again by itself"
            );
            format!("{e:#}")
        });
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(HistoryStats::default());
        let w = writer::Writer::new(store, config.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || w.run(rx))
            .context("unable to start the history thread")?;
        tracing::info!(
            "history in {} (kept {:.1} days, at most {} MB)",
            config.db_path().display(),
            config.keep.as_secs_f64() / 86400.0,
            config.max_bytes / (1024 * 1024)
        );
        Ok(History {
            tx: Some(tx),
            thread: Some(thread),
            stats,
            config,
        })
    }

    /// Hands a record to the history thread without blocking; when it has fallen behind the
    /// record is dropped and counted.
    pub fn record(&self, r: Record) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!("history: {n} record(s) dropped so far: the history thread falls behind (slow disk?)");
                }
            }
        }
    }

    /// Writes what is queued and stops the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Decides, per camera, when the next thumbnail is due: at most one per interval, and always on
/// a frame that caused an event. Time is an argument.
#[derive(Debug, Default)]
pub struct ThumbnailClock {
    last: Option<SystemTime>,
}

impl ThumbnailClock {
    /// Whether the frame at `now` gets a thumbnail; `event` forces one.
    pub fn due(&mut self, now: SystemTime, interval: Duration, event: bool) -> bool {
        let due = event
            || self
                .last
                .is_none_or(|t| now.duration_since(t).map_or(true, |d| d >= interval));
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_unix_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_at_most_every_interval_and_on_events() {
        let mut c = ThumbnailClock::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let i = Duration::from_secs(5);
        assert!(c.due(at(0.0), i, false), "the first frame gets one");
        assert!(!c.due(at(1.0), i, false));
        assert!(!c.due(at(4.9), i, false));
        assert!(c.due(at(5.0), i, false));
        assert!(c.due(at(5.5), i, true), "an event forces one");
        assert!(
            !c.due(at(9.0), i, false),
            "the interval restarts at the event's"
        );
        assert!(c.due(at(10.5), i, false));
        // a clock that stepped back does not stall thumbnails forever
        assert!(c.due(at(2.0), i, false));
    }

    #[test]
    fn a_backlog_is_deleted_in_passes_that_follow_each_other() {
        // two and a half chunks of frames, all past `keep` when the writer starts: deleted a
        // chunk a pass, the passes a commit apart (not a minute)
        let dir = std::env::temp_dir().join(format!("promptcam-backlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = HistoryConfig {
            dir: dir.clone(),
            keep: Duration::from_secs(3600),
            max_bytes: u64::MAX,
            min_free_bytes: 0,
            thumbnail_width: 64,
            thumbnail_interval: Duration::from_secs(5),
        };
        let old = SystemTime::now() - Duration::from_secs(7200);
        let n = store::RETAIN_CHUNK as usize * 5 / 2;
        let frames: Vec<_> = (0..n)
            .map(|i| {
                writer::prepare_frame(
                    FrameRecord {
                        camera: "porch".into(),
                        time: old + Duration::from_millis(i as u64),
                        motion: false,
                        scores: vec![],
                        embedding: None,
                        thumbnail: None,
                    },
                    64,
                )
            })
            .collect();
        store::Store::open(&dir)
            .unwrap()
            .insert(&frames, &[])
            .unwrap();
        let history = History::start(config).unwrap();
        let reader = store::Store::open_read_only(&dir.join(store::FILE_NAME)).unwrap();
        let t = std::time::Instant::now();
        while reader.count_frames("porch", 0, i64::MAX).unwrap() > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the backlog is still there after 20 s: {} frames",
                reader.count_frames("porch", 0, i64::MAX).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        history.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
