//! Store: the history database, one SQLite file (`history.sqlite`) in WAL mode.
//!
//! Tables: `frames` (camera, time, motion flag, every prompt's score and box as JSON, the id of
//! the frame's own thumbnail), `embeddings` (the frame's CLIP image embedding as little-endian
//! f16, kept apart so score plots never read it), `thumbs` (small JPEGs), `events` (start,
//! update, end with the snapshot) and `marks` (the lab's yes/no labels). Times are Unix
//! milliseconds. `auto_vacuum = INCREMENTAL` lets retention give space back to the file system.
//!
//! The writer owns one read-write connection; readers (the web pages, `promptcam search`) open
//! their own, read-only: WAL lets them read while it writes. A file that is not a database, or a
//! corrupt one, is renamed aside and a fresh one started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

pub const FILE_NAME: &str = crate::config::HistoryConfig::FILE_NAME;
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    t_ms INTEGER NOT NULL,
    motion INTEGER NOT NULL,
    scores TEXT NOT NULL,
    thumb INTEGER
);
CREATE INDEX IF NOT EXISTS frames_camera_t ON frames (camera, t_ms);
CREATE TABLE IF NOT EXISTS embeddings (
    frame INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    t_ms INTEGER NOT NULL,
    thumb INTEGER,
    v BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS thumbs (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    t_ms INTEGER NOT NULL,
    jpeg BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS thumbs_camera_t ON thumbs (camera, t_ms);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    prompt TEXT NOT NULL,
    kind TEXT NOT NULL,
    t_ms INTEGER NOT NULL,
    score REAL NOT NULL,
    box TEXT,
    snapshot BLOB
);
CREATE INDEX IF NOT EXISTS events_camera_t ON events (camera, t_ms);
CREATE TABLE IF NOT EXISTS marks (
    camera TEXT NOT NULL,
    query TEXT NOT NULL,
    frame INTEGER NOT NULL,
    yes INTEGER NOT NULL,
    PRIMARY KEY (camera, query, frame)
);
";

/// One connection to the history database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A frame row ready to insert (the writer prepares it off the inference thread).
pub struct NewFrame {
    pub camera: String,
    pub t_ms: i64,
    pub motion: bool,
    /// `{"prompt": [score, [x0, y0, x1, y1]?], ...}`.
    pub scores: String,
    pub embedding: Option<Vec<u8>>,
    pub thumbnail: Option<Vec<u8>>,
}

/// An event row ready to insert.
pub struct NewEvent {
    pub event_id: String,
    pub camera: String,
    pub prompt: String,
    pub kind: &'static str,
    pub t_ms: i64,
    pub score: f32,
    pub bbox: Option<[f32; 4]>,
    pub snapshot: Option<Vec<u8>>,
}

/// A stored frame for plots: time, motion flag, and each prompt's (score, box).
#[derive(Clone, Debug, PartialEq)]
pub struct FrameRow {
    pub id: i64,
    pub t_ms: i64,
    pub motion: bool,
    pub scores: serde_json::Map<String, serde_json::Value>,
    pub thumb: Option<i64>,
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EventRow {
    pub id: i64,
    pub event_id: String,
    pub prompt: String,
    pub kind: String,
    pub t_ms: i64,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: Option<[f32; 4]>,
    pub has_snapshot: bool,
}

/// Every stored embedding of a camera, in time order: `ids[i]`, `times[i]` and `thumbs[i]` (the
/// frame's own thumbnail, if it has one) describe the `i`-th row of `vectors` (`dim` values
/// each, as f32).
#[derive(Clone, Debug, Default)]
pub struct Embeddings {
    pub ids: Vec<i64>,
    pub times: Vec<i64>,
    pub thumbs: Vec<Option<i64>>,
    pub dim: usize,
    pub vectors: Vec<f32>,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }
}

/// An embedding as stored: little-endian f16 (half the size of f32; far inside the tolerance of
/// a CLIP score: softmax(100 x cosine) moves by about 1e-3 at most).
pub fn encode_embedding(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

/// Appends stored embeddings (little-endian f16, back to back) to `out` as f32, with the CPU's
/// half-precision conversion where it has one (F16C, NEON).
pub fn decode_embeddings_into(bytes: &[u8], out: &mut Vec<f32>) {
    use half::slice::HalfFloatSliceExt;
    let halves: Vec<half::f16> = bytes
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
        .collect();
    let start = out.len();
    out.resize(start + halves.len(), 0.0);
    halves.convert_to_f32_slice(&mut out[start..]);
}

/// What retention removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retained {
    pub frames: usize,
    pub bytes_after: u64,
}

/// Whether an error says the database file is damaged (or not a database at all).
pub fn is_corrupt(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>().is_some_and(|e| {
            matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            )
        })
    })
}

impl Store {
    /// Opens the database read-write in `dir` (created if needed). A corrupt file (or one that
    /// is not a database) is renamed to `history.sqlite.corrupt-<unix ms>` and a fresh one made.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "unable to create the history directory {}; create it writable for the daemon or set history.path",
                dir.display()
            )
        })?;
        let path = dir.join(FILE_NAME);
        match Store::open_rw(&path) {
            Ok(s) => Ok(s),
            Err(e) if is_corrupt(&e) => {
                let aside = set_aside(&path)?;
                tracing::warn!(
                    "the history database {} is corrupt ({e:#}); it was moved to {} and a new one started",
                    path.display(),
                    aside.display()
                );
                Store::open_rw(&path)
            }
            Err(e) => Err(e),
        }
    }

    fn open_rw(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)
            .with_context(|| format!("unable to open the history database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let setup = || -> rusqlite::Result<()> {
            // auto_vacuum must be set before the first table exists to take effect
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.execute_batch(SCHEMA)?;
            let version: Option<i64> = conn
                .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?
                .and_then(|v| v.parse().ok());
            if version.is_none() {
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
            // reading every table once finds a damaged file now, not at the first query
            for t in ["frames", "embeddings", "thumbs", "events", "marks"] {
                conn.query_row(
                    &format!("SELECT count(*) FROM (SELECT 1 FROM {t} LIMIT 1)"),
                    [],
                    |_| Ok(()),
                )?;
            }
            Ok(())
        };
        setup()
            .with_context(|| format!("unable to set up the history database {}", path.display()))?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing database read-only (the web pages, `promptcam search`).
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| {
            format!(
                "unable to open the history database {}; it is made by `promptcam run` with [history] on",
                path.display()
            )
        })?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // the lab reads every embedding of a camera: map the file instead of copying it page by
        // page through the pager (several times faster on a large history)
        conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// A read-write connection for short updates from the web pages (the lab's marks).
    pub fn open_existing(path: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("unable to open the history database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets a database that turned out corrupt aside and starts a fresh one in its place;
    /// returns where the old file went.
    pub fn start_over(&mut self) -> Result<PathBuf> {
        // close the damaged file before moving it
        self.conn = Connection::open_in_memory()?;
        let aside = set_aside(&self.path)?;
        *self = Store::open_rw(&self.path)?;
        Ok(aside)
    }

    /// Writes frames and events in one transaction.
    pub fn insert(&mut self, frames: &[NewFrame], events: &[NewEvent]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut thumb =
                tx.prepare_cached("INSERT INTO thumbs (camera, t_ms, jpeg) VALUES (?1, ?2, ?3)")?;
            let mut frame = tx.prepare_cached(
                "INSERT INTO frames (camera, t_ms, motion, scores, thumb) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut emb = tx.prepare_cached(
                "INSERT INTO embeddings (frame, camera, t_ms, thumb, v) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for f in frames {
                let thumb_id = match &f.thumbnail {
                    Some(jpeg) => {
                        thumb.execute(params![f.camera, f.t_ms, jpeg])?;
                        Some(tx.last_insert_rowid())
                    }
                    None => None,
                };
                frame.execute(params![f.camera, f.t_ms, f.motion, f.scores, thumb_id])?;
                let id = tx.last_insert_rowid();
                if let Some(v) = &f.embedding {
                    emb.execute(params![id, f.camera, f.t_ms, thumb_id, v])?;
                }
            }
            let mut ev = tx.prepare_cached(
                "INSERT INTO events (event_id, camera, prompt, kind, t_ms, score, box, snapshot) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for e in events {
                let bbox = e.bbox.map(|b| serde_json::json!(b).to_string());
                ev.execute(params![
                    e.event_id, e.camera, e.prompt, e.kind, e.t_ms, e.score, bbox, e.snapshot
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Bytes the database holds (pages in use, not free ones).
    pub fn size_bytes(&self) -> Result<u64> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(((pages - free).max(0) * size) as u64)
    }

    /// Deletes everything older than `cutoff_ms` (frames, their embeddings and thumbnails,
    /// events and marks); returns the number of frames deleted.
    pub fn delete_before(&mut self, cutoff_ms: i64) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let n = tx.execute("DELETE FROM frames WHERE t_ms < ?1", [cutoff_ms])?;
        tx.execute("DELETE FROM embeddings WHERE t_ms < ?1", [cutoff_ms])?;
        tx.execute("DELETE FROM thumbs WHERE t_ms < ?1", [cutoff_ms])?;
        tx.execute("DELETE FROM events WHERE t_ms < ?1", [cutoff_ms])?;
        tx.execute(
            "DELETE FROM marks WHERE frame NOT IN (SELECT id FROM frames)",
            [],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Retention: everything older than `now_ms - keep` goes; then, while the database is bigger
    /// than `max_bytes`, the oldest tenth of what is left. Freed pages go back to the file system.
    pub fn retain(&mut self, now_ms: i64, keep: Duration, max_bytes: u64) -> Result<Retained> {
        let mut frames = self.delete_before(now_ms - keep.as_millis() as i64)?;
        for _ in 0..64 {
            if self.size_bytes()? <= max_bytes {
                break;
            }
            let oldest = |table: &str| -> Result<Option<i64>> {
                Ok(self
                    .conn
                    .query_row(
                        &format!("SELECT min(t_ms), max(t_ms) FROM {table}"),
                        [],
                        |r| Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?)),
                    )?
                    .map(|(lo, hi)| lo + (hi - lo) / 10 + 1))
            };
            // the oldest tenth of the time span the biggest tables cover
            let cut = [oldest("frames")?, oldest("thumbs")?, oldest("events")?]
                .into_iter()
                .flatten()
                .min();
            let Some(cut) = cut else { break };
            frames += self.delete_before(cut)?;
        }
        self.conn.execute_batch("PRAGMA incremental_vacuum")?;
        Ok(Retained {
            frames,
            bytes_after: self.size_bytes()?,
        })
    }

    /// The cameras that have frames, each with its frame count.
    pub fn cameras(&self) -> Result<Vec<(String, i64)>> {
        let mut st = self
            .conn
            .prepare("SELECT camera, count(*) FROM frames GROUP BY camera ORDER BY camera")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A camera's frames with `since_ms <= t_ms < until_ms`, in time order.
    pub fn frames(&self, camera: &str, since_ms: i64, until_ms: i64) -> Result<Vec<FrameRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, t_ms, motion, scores, thumb FROM frames \
             WHERE camera = ?1 AND t_ms >= ?2 AND t_ms < ?3 ORDER BY t_ms, id",
        )?;
        let rows = st.query_map(params![camera, since_ms, until_ms], |r| {
            let scores: String = r.get(3)?;
            Ok(FrameRow {
                id: r.get(0)?,
                t_ms: r.get(1)?,
                motion: r.get(2)?,
                scores: serde_json::from_str(&scores).unwrap_or_default(),
                thumb: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A camera's events with `since_ms <= t_ms < until_ms`, in time order.
    pub fn events(&self, camera: &str, since_ms: i64, until_ms: i64) -> Result<Vec<EventRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, event_id, prompt, kind, t_ms, score, box, snapshot IS NOT NULL FROM events \
             WHERE camera = ?1 AND t_ms >= ?2 AND t_ms < ?3 ORDER BY t_ms, id",
        )?;
        let rows = st.query_map(params![camera, since_ms, until_ms], |r| {
            let bbox: Option<String> = r.get(6)?;
            Ok(EventRow {
                id: r.get(0)?,
                event_id: r.get(1)?,
                prompt: r.get(2)?,
                kind: r.get(3)?,
                t_ms: r.get(4)?,
                score: r.get(5)?,
                bbox: bbox.and_then(|b| serde_json::from_str(&b).ok()),
                has_snapshot: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A camera's embeddings with `t_ms >= since_ms`, in time order.
    pub fn embeddings(&self, camera: &str, since_ms: i64) -> Result<Embeddings> {
        let mut st = self.conn.prepare_cached(
            "SELECT frame, t_ms, thumb, v FROM embeddings WHERE camera = ?1 AND t_ms >= ?2 ORDER BY frame",
        )?;
        let mut rows = st.query(params![camera, since_ms])?;
        let mut out = Embeddings::default();
        let mut raw: Vec<u8> = vec![];
        while let Some(r) = rows.next()? {
            let v = r.get_ref(3)?.as_blob()?;
            if out.dim == 0 {
                out.dim = v.len() / 2;
            }
            if v.len() != out.dim * 2 {
                continue; // another model's embedding (the CLIP model changed): not comparable
            }
            out.ids.push(r.get(0)?);
            out.times.push(r.get(1)?);
            out.thumbs.push(r.get(2)?);
            raw.extend_from_slice(v);
        }
        decode_embeddings_into(&raw, &mut out.vectors);
        Ok(out)
    }

    pub fn thumbnail(&self, id: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row("SELECT jpeg FROM thumbs WHERE id = ?1", [id], |r| r.get(0))
            .optional()?)
    }

    pub fn event_snapshot(&self, id: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row("SELECT snapshot FROM events WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?
            .flatten())
    }

    /// Sets (or with `None` clears) a frame's yes/no mark for a lab question.
    pub fn set_mark(
        &mut self,
        camera: &str,
        query: &str,
        frame: i64,
        yes: Option<bool>,
    ) -> Result<()> {
        match yes {
            Some(yes) => self.conn.execute(
                "INSERT OR REPLACE INTO marks (camera, query, frame, yes) VALUES (?1, ?2, ?3, ?4)",
                params![camera, query, frame, yes],
            )?,
            None => self.conn.execute(
                "DELETE FROM marks WHERE camera = ?1 AND query = ?2 AND frame = ?3",
                params![camera, query, frame],
            )?,
        };
        Ok(())
    }

    /// The marks of a lab question: (frame id, yes).
    pub fn marks(&self, camera: &str, query: &str) -> Result<Vec<(i64, bool)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT frame, yes FROM marks WHERE camera = ?1 AND query = ?2 ORDER BY frame",
        )?;
        let rows = st.query_map(params![camera, query], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// Renames a damaged database (and its WAL and shared-memory files) aside.
fn set_aside(path: &Path) -> Result<PathBuf> {
    let stamp = super::unix_ms(std::time::SystemTime::now());
    let aside = path.with_extension(format!("sqlite.corrupt-{stamp}"));
    std::fs::rename(path, &aside).with_context(|| {
        format!(
            "unable to move the corrupt history database {} aside; delete it by hand",
            path.display()
        )
    })?;
    for ext in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{ext}", path.display()));
        if side.exists() {
            let _ = std::fs::rename(&side, PathBuf::from(format!("{}{ext}", aside.display())));
        }
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("promptcam-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn frame(camera: &str, t_ms: i64, thumb_bytes: usize) -> NewFrame {
        let emb: Vec<f32> = (0..512)
            .map(|i| ((i as f32 + t_ms as f32) * 0.37).sin() * 0.044)
            .collect();
        NewFrame {
            camera: camera.into(),
            t_ms,
            motion: t_ms % 2 == 0,
            scores: format!("{{\"a_cat\":[{}]}}", (t_ms % 1000) as f32 / 1000.0),
            embedding: Some(encode_embedding(&emb)),
            thumbnail: (thumb_bytes > 0).then(|| vec![0xAB; thumb_bytes]),
        }
    }

    #[test]
    fn rows_round_trip_and_embeddings_stay_close() {
        let d = dir("roundtrip");
        let mut s = Store::open(&d).unwrap();
        s.insert(
            &[
                frame("porch", 1000, 10),
                frame("porch", 2000, 0),
                frame("yard", 1500, 0),
            ],
            &[NewEvent {
                event_id: "1000-porch-a_cat".into(),
                camera: "porch".into(),
                prompt: "a_cat".into(),
                kind: "start",
                t_ms: 1000,
                score: 0.75,
                bbox: Some([1.0, 2.0, 3.0, 4.0]),
                snapshot: Some(vec![1, 2, 3]),
            }],
        )
        .unwrap();
        let r = Store::open_read_only(&d.join(FILE_NAME)).unwrap();
        let frames = r.frames("porch", 0, i64::MAX).unwrap();
        assert_eq!(
            frames.iter().map(|f| f.t_ms).collect::<Vec<_>>(),
            vec![1000, 2000]
        );
        assert_eq!(frames[1].scores["a_cat"][0].as_f64(), Some(0.0));
        assert!(frames[0].scores.get("a_dog").is_none());
        assert!(frames[0].thumb.is_some() && frames[1].thumb.is_none());
        let e = r.embeddings("porch", 0).unwrap();
        assert_eq!((e.len(), e.dim), (2, 512));
        let want: Vec<f32> = (0..512)
            .map(|i| ((i as f32 + 1000.0) * 0.37).sin() * 0.044)
            .collect();
        let err = e
            .row(0)
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 5e-5, "f16 storage error {err}");
        let ev = r.events("porch", 0, i64::MAX).unwrap();
        assert_eq!(
            (ev.len(), ev[0].bbox, ev[0].has_snapshot),
            (1, Some([1.0, 2.0, 3.0, 4.0]), true)
        );
        assert_eq!(r.event_snapshot(ev[0].id).unwrap(), Some(vec![1, 2, 3]));
        assert!(
            e.thumbs[0].is_some() && e.thumbs[1].is_none(),
            "{:?}",
            e.thumbs
        );
        assert!(r.thumbnail(e.thumbs[0].unwrap()).unwrap().is_some());
        assert_eq!(
            r.cameras().unwrap(),
            vec![("porch".to_string(), 2), ("yard".to_string(), 1)]
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn retention_by_age_then_by_size_oldest_first() {
        let d = dir("retain");
        let mut s = Store::open(&d).unwrap();
        let hour = 3_600_000;
        // 48 hours of frames, one a minute, with a 2 kB thumbnail every tenth
        let batch: Vec<NewFrame> = (0..48 * 60)
            .map(|m| frame("porch", m * 60_000, if m % 10 == 0 { 2048 } else { 0 }))
            .collect();
        s.insert(&batch, &[]).unwrap();
        let mut marks = Store::open_existing(&d.join(FILE_NAME)).unwrap();
        marks.set_mark("porch", "a cat", 1, Some(true)).unwrap();
        let full = s.size_bytes().unwrap();
        // keep one day: the first day goes
        let now = 48 * hour;
        let r = s
            .retain(now, Duration::from_secs(24 * 3600), u64::MAX)
            .unwrap();
        assert_eq!(r.frames, 24 * 60);
        let left = s.frames("porch", 0, i64::MAX).unwrap();
        assert_eq!(left.first().map(|f| f.t_ms), Some(24 * hour));
        assert!(
            s.marks("porch", "a cat").unwrap().is_empty(),
            "marks of deleted frames go too"
        );
        assert!(r.bytes_after < full * 3 / 4, "{} of {full}", r.bytes_after);
        let file = std::fs::metadata(d.join(FILE_NAME)).unwrap().len();
        // then a size cap: the oldest go until it fits, the newest stay
        let cap = r.bytes_after / 3;
        let r = s.retain(now, Duration::from_secs(24 * 3600), cap).unwrap();
        assert!(r.bytes_after <= cap, "{} > {cap}", r.bytes_after);
        let left = s.frames("porch", 0, i64::MAX).unwrap();
        assert!(
            !left.is_empty() && left.last().map(|f| f.t_ms) == Some((48 * 60 - 1) * 60_000),
            "the newest frame stays"
        );
        assert!(
            left[0].t_ms > 30 * hour,
            "the oldest went first: {}",
            left[0].t_ms
        );
        assert_eq!(s.embeddings("porch", 0).unwrap().len(), left.len());
        // incremental vacuum gave the space back to the file system
        s.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        assert!(
            std::fs::metadata(d.join(FILE_NAME)).unwrap().len() < file,
            "the file shrank"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_file_is_set_aside_and_a_fresh_one_started() {
        let d = dir("corrupt");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(FILE_NAME),
            b"this is not a database, it is a text file that got here somehow. ".repeat(200),
        )
        .unwrap();
        let mut s = Store::open(&d).unwrap();
        s.insert(&[frame("porch", 1000, 0)], &[]).unwrap();
        assert_eq!(s.frames("porch", 0, i64::MAX).unwrap().len(), 1);
        let aside: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("history.sqlite.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
