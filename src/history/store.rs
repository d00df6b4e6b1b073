//! Store: the history database, one SQLite file (`history.sqlite`) in WAL mode.
//!
//! Tables: `frames` (camera, time, motion flag, every prompt's score and box as JSON, the id of
//! the frame's own thumbnail), `embeddings` (the frame's CLIP image embedding as little-endian
//! f16, kept apart so score plots never read it), `thumbs` (small JPEGs), `events` (start,
//! update, end with the snapshot), `models` (the CLIP checkpoints that made the embeddings, by
//! the SHA-256 of their weights: `crate::model::identity`) and `marks` (the lab's yes/no labels,
//! each with its own copy of the frame's embedding, time and thumbnail, so that retention never
//! takes a labelled data set away). Times are Unix milliseconds. `auto_vacuum = INCREMENTAL`
//! lets retention give space back to the file system.
//!
//! The writer owns one read-write connection; readers (the web pages, `promptcam search`) open
//! their own, read-only: WAL lets them read while it writes. A file that is not a database, or a
//! corrupt one, is renamed aside and a fresh one started.
//!
//! Here: the schema, opening, writing and retention; `queries` holds what the readers read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::model::identity::ModelIdentity;

mod marks;
mod queries;
pub use marks::Marked;
pub use queries::{Embeddings, EventRow, FrameIndex, FrameRow};

pub const FILE_NAME: &str = crate::config::HistoryConfig::FILE_NAME;
/// 2: `models`, the model of each embedding, and marks that keep their frame's data.
const SCHEMA_VERSION: i64 = 2;

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
    v BLOB NOT NULL,
    model INTEGER
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL
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
    t_ms INTEGER,
    model INTEGER,
    v BLOB,
    jpeg BLOB,
    PRIMARY KEY (camera, query, frame)
);
-- the lab reads a camera's embeddings in frame order from a time on: walked in this index's
-- order, with no sort of the rows (and their blobs) and no scan of other cameras' rows
CREATE INDEX IF NOT EXISTS embeddings_camera_frame ON embeddings (camera, frame, t_ms);
-- retention deletes by time alone, and finds each table's oldest and newest rows, as ranges
CREATE INDEX IF NOT EXISTS frames_t ON frames (t_ms);
CREATE INDEX IF NOT EXISTS embeddings_t ON embeddings (t_ms);
CREATE INDEX IF NOT EXISTS thumbs_t ON thumbs (t_ms);
CREATE INDEX IF NOT EXISTS events_t ON events (t_ms);
";

/// The WAL is truncated to this size after a checkpoint: on a small card it must not keep the
/// peak of a burst of writes (SQLite's default keeps whatever it grew to).
const JOURNAL_SIZE_LIMIT: i64 = 16 << 20;

/// Retention's statements: deletes by time and each table's time span (`queries::HOT` lists
/// them with the readers' for the test that every one runs on an index).
const DELETE_BEFORE: [&str; 4] = [
    "DELETE FROM frames WHERE t_ms < ?1",
    "DELETE FROM embeddings WHERE t_ms < ?1",
    "DELETE FROM thumbs WHERE t_ms < ?1",
    "DELETE FROM events WHERE t_ms < ?1",
];

/// Version 1 to 2: the new columns, and the data of the frames already marked copied into their
/// marks while the frames are still there (their model is unknown: version 1 did not say).
const MIGRATE_1_TO_2: &str = "
ALTER TABLE embeddings ADD COLUMN model INTEGER;
ALTER TABLE marks ADD COLUMN t_ms INTEGER;
ALTER TABLE marks ADD COLUMN model INTEGER;
ALTER TABLE marks ADD COLUMN v BLOB;
ALTER TABLE marks ADD COLUMN jpeg BLOB;
UPDATE marks SET
    t_ms = (SELECT t_ms FROM frames WHERE id = marks.frame),
    v = (SELECT v FROM embeddings WHERE frame = marks.frame),
    jpeg = (SELECT t.jpeg FROM frames f JOIN thumbs t ON t.id = f.thumb WHERE f.id = marks.frame);
";
/// The time of the first frame past a retention chunk of the frames older than a cut.
const CHUNK_END: &str = "SELECT t_ms FROM frames WHERE t_ms < ?1 ORDER BY t_ms LIMIT 1 OFFSET ?2";

/// Frames one retention pass deletes at most: a pass (the deletes, the checkpoint and the
/// vacuum) took 52-58 ms at most on the AMD EPYC of BENCHMARKS.md (issue 23).
pub const RETAIN_CHUNK: i64 = 1000;

fn time_span(table: &str) -> String {
    format!("SELECT min(t_ms), max(t_ms) FROM {table}")
}

/// One connection to the history database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// `models` rows already looked up or made, by SHA-256.
    models: std::collections::HashMap<String, i64>,
    /// Frames a retention pass deletes at most ([`RETAIN_CHUNK`]; smaller in tests).
    retain_chunk: i64,
}

/// A frame row ready to insert (the writer prepares it off the inference thread).
pub struct NewFrame {
    pub camera: String,
    pub t_ms: i64,
    pub motion: bool,
    /// `{"prompt": [score, [x0, y0, x1, y1]?], ...}`.
    pub scores: String,
    /// The embedding (f16, [`encode_embedding`]) and the model that made it.
    pub embedding: Option<(Arc<ModelIdentity>, Vec<u8>)>,
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

/// An embedding as stored: little-endian f16 (half the size of f32; far inside the tolerance of
/// a CLIP score: softmax(100 x cosine) moves by about 1e-3 at most).
pub fn encode_embedding(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

/// Decodes stored embedding values (little-endian f16) into `out`: cheap enough to do row by
/// row while scoring, so a lab query never holds a camera's whole history as f32. On x86-64,
/// `half` converts with F16C, picked at run time: 300 000 512-value rows in ~50 ms on the AMD
/// EPYC of BENCHMARKS.md, where a table of every f16 took ~85 ms.
#[cfg(target_arch = "x86_64")]
pub fn decode_f16(bytes: &[u8], out: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    // in blocks: the bytes copied into aligned f16s (a blob need not be aligned), then converted
    let mut block = [half::f16::ZERO; 64];
    for (out, bytes) in out.chunks_mut(64).zip(bytes.chunks(128)) {
        let n = out.len().min(bytes.len() / 2);
        for (h, b) in block.iter_mut().zip(bytes.chunks_exact(2)) {
            *h = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]]));
        }
        block[..n].convert_to_f32_slice(&mut out[..n]);
    }
}

/// Decodes stored embedding values (little-endian f16) into `out`, through a table of every
/// f16 as f32: `half` uses the CPU's conversion only where it has FP16 arithmetic (not a Pi 4's
/// Cortex-A72), and its bit-by-bit fallback is slower than a lookup.
#[cfg(not(target_arch = "x86_64"))]
pub fn decode_f16(bytes: &[u8], out: &mut [f32]) {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|b| half::f16::from_bits(b).to_f32())
            .collect()
    });
    for (d, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *d = table[usize::from(u16::from_le_bytes([b[0], b[1]]))];
    }
}

/// What retention removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retained {
    pub frames: usize,
    pub bytes_after: u64,
    /// The pass stopped at its chunk, or the database is still over its size: another pass is
    /// due soon.
    pub more: bool,
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
            conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
            conn.execute_batch(SCHEMA)?;
            let version: Option<i64> = conn
                .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?
                .and_then(|v| v.parse().ok());
            if version == Some(1) {
                // in one transaction: a power cut leaves version 1 whole, migrated next time
                conn.execute_batch(&format!(
                    "BEGIN; {MIGRATE_1_TO_2} UPDATE meta SET value = '2' WHERE key = 'schema'; COMMIT;"
                ))?;
            }
            if version.is_none() {
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
            Ok(())
        };
        setup()
            .with_context(|| format!("unable to set up the history database {}", path.display()))?;
        // every page of every table and index, checked now rather than found by a query later
        let problems: Vec<String> = {
            let mut st = conn.prepare("PRAGMA quick_check")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<_>>().with_context(|| {
                format!("unable to check the history database {}", path.display())
            })?
        };
        if problems != ["ok"] {
            return Err(anyhow::Error::new(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(problems.join("; ")),
            )))
            .with_context(|| format!("the history database {} is damaged", path.display()));
        }
        Ok(Store::with(conn, path))
    }

    fn with(conn: Connection, path: &Path) -> Store {
        Store {
            conn,
            path: path.to_path_buf(),
            models: Default::default(),
            retain_chunk: RETAIN_CHUNK,
        }
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
        // no `mmap_size`: a mapped 1 GB history counted in the daemon's resident memory (and
        // its OOM score) as the lab read it, and the lab query was no faster for it (471-479 ms
        // read through SQLite's pager, 504-572 ms mapped: BENCHMARKS.md, issue 23)
        Ok(Store::with(conn, path))
    }

    /// What stops this connection's running statement from another thread (the web's
    /// cancelled requests).
    pub fn interrupt_handle(&self) -> rusqlite::InterruptHandle {
        self.conn.get_interrupt_handle()
    }

    /// A statement that runs for minutes unless interrupted (the tests of cancellation).
    #[cfg(test)]
    pub fn spin(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000000) \
             SELECT count(*) FROM c",
            [],
            |r| r.get(0),
        )?)
    }

    /// A read-write connection for short updates from the web pages (the lab's marks).
    pub fn open_existing(path: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("unable to open the history database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Store::with(conn, path))
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

    /// The `models` row of a model, made if new.
    pub fn model_id(&mut self, m: &ModelIdentity) -> Result<i64> {
        if let Some(id) = self.models.get(&m.sha256) {
            return Ok(*id);
        }
        self.conn.execute(
            "INSERT INTO models (sha256, name) VALUES (?1, ?2) ON CONFLICT (sha256) DO NOTHING",
            params![m.sha256, m.name],
        )?;
        let id = self.conn.query_row(
            "SELECT id FROM models WHERE sha256 = ?1",
            [&m.sha256],
            |r| r.get(0),
        )?;
        self.models.insert(m.sha256.clone(), id);
        Ok(id)
    }

    /// Writes frames and events in one transaction.
    pub fn insert(&mut self, frames: &[NewFrame], events: &[NewEvent]) -> Result<()> {
        let mut model_ids = vec![];
        for f in frames {
            if let Some((m, _)) = &f.embedding {
                model_ids.push(self.model_id(m)?);
            }
        }
        let mut model_ids = model_ids.into_iter();
        let tx = self.conn.transaction()?;
        {
            let mut thumb =
                tx.prepare_cached("INSERT INTO thumbs (camera, t_ms, jpeg) VALUES (?1, ?2, ?3)")?;
            let mut frame = tx.prepare_cached(
                "INSERT INTO frames (camera, t_ms, motion, scores, thumb) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut emb = tx.prepare_cached(
                "INSERT INTO embeddings (frame, camera, t_ms, thumb, v, model) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
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
                if let Some((_, v)) = &f.embedding {
                    let model = model_ids.next();
                    emb.execute(params![id, f.camera, f.t_ms, thumb_id, v, model])?;
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

    /// Bytes the database takes: its pages in use (not free ones) and its write-ahead log,
    /// which holds up to a checkpoint's worth of pages on disk beside the file.
    pub fn size_bytes(&self) -> Result<u64> {
        Ok(self.pages_bytes()? + self.wal_bytes())
    }

    fn pages_bytes(&self) -> Result<u64> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(((pages - free).max(0) * size) as u64)
    }

    fn wal_bytes(&self) -> u64 {
        std::fs::metadata(format!("{}-wal", self.path.display()))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Copies the WAL into the file and truncates it, unless a reader holds it for more than a
    /// moment (then the next checkpoint does; `journal_size_limit` caps what it keeps).
    fn checkpoint(&self) -> Result<()> {
        self.conn.busy_timeout(Duration::from_millis(100))?;
        let done = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        self.conn.busy_timeout(Duration::from_secs(5))?;
        Ok(done?)
    }

    /// Deletes everything older than `cutoff_ms` (frames, their embeddings and thumbnails, and
    /// events; never marks, which keep what they need); returns the number of frames deleted.
    pub fn delete_before(&mut self, cutoff_ms: i64) -> Result<usize> {
        let tx = self.conn.transaction()?;
        // the first deletes the frames: its count is what retention reports
        let frames = tx.execute(DELETE_BEFORE[0], [cutoff_ms])?;
        for sql in &DELETE_BEFORE[1..] {
            tx.execute(sql, [cutoff_ms])?;
        }
        tx.commit()?;
        Ok(frames)
    }

    /// `cutoff_ms`, or an earlier time if more than `retain_chunk` frames are older than it:
    /// the time of the first frame past the chunk (found on `frames_t`), so that one delete
    /// takes at most a chunk of frames (a few more only where many share one millisecond).
    /// The second value says the cut was brought forward.
    fn bounded_cut(&self, cutoff_ms: i64) -> Result<(i64, bool)> {
        let mut st = self.conn.prepare_cached(CHUNK_END)?;
        let past: Option<i64> = st
            .query_row(params![cutoff_ms, self.retain_chunk], |r| r.get(0))
            .optional()?;
        Ok(match past {
            None => (cutoff_ms, false),
            Some(t) => {
                let first: Option<i64> = self
                    .conn
                    .query_row(&time_span("frames"), [], |r| r.get(0))?;
                // a chunk's frames all in one millisecond still make progress
                (if first == Some(t) { t + 1 } else { t }, true)
            }
        })
    }

    /// One retention pass: everything older than `now_ms - keep` goes; once that is done, while
    /// the database and its WAL (as left by a checkpoint) take more than `max_bytes`, the
    /// oldest tenth of what is left. A pass deletes at most `retain_chunk` frames, so that the
    /// writer's commits never wait long behind it whatever the backlog (a history that
    /// shrank to a new `max_mb`, a device back after a week off); `Retained::more` then asks
    /// for the next pass soon. Freed pages go back to the file system.
    pub fn retain(&mut self, now_ms: i64, keep: Duration, max_bytes: u64) -> Result<Retained> {
        let (cut, mut more) = self.bounded_cut(now_ms - keep.as_millis() as i64)?;
        let mut frames = self.delete_before(cut)?;
        self.checkpoint()?;
        if !more && self.pages_bytes()? + self.wal_bytes() > max_bytes {
            // the oldest tenth of the time span the biggest tables cover
            let oldest = |table: &str| -> Result<Option<i64>> {
                Ok(self
                    .conn
                    .query_row(&time_span(table), [], |r| {
                        Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?))
                    })?
                    .map(|(lo, hi)| lo + (hi - lo) / 10 + 1))
            };
            let cut = [oldest("frames")?, oldest("thumbs")?, oldest("events")?]
                .into_iter()
                .flatten()
                .min();
            if let Some(cut) = cut {
                let (cut, _) = self.bounded_cut(cut)?;
                let gone = self.delete_before(cut)?;
                frames += gone;
                // over until a pass finds it under (the WAL is measured after a checkpoint:
                // counting the growth of the deletes themselves would delete ever more)
                more = gone > 0;
            }
        }
        self.conn.execute_batch("PRAGMA incremental_vacuum")?;
        self.checkpoint()?;
        Ok(Retained {
            frames,
            bytes_after: self.size_bytes()?,
            more,
        })
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
mod tests;
