//! Queries: what the web pages and `promptcam search` read from the history (cameras, frames,
//! events, embeddings, thumbnails and snapshots); the lab's marks are in `marks`.

use anyhow::Result;
use rusqlite::{params, OptionalExtension};

use super::{decode_f16, encode_embedding, Store};

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

/// The frames a streamed pass over a camera's embeddings saw ([`Store::score_embeddings`]), in
/// time order: `ids[i]`, `times[i]` and `thumbs[i]` (the frame's own thumbnail, if it has one)
/// describe the `i`-th score. The embeddings themselves are not kept: a few are read again by
/// id ([`Store::embedding`]), so a pass holds 36 bytes a frame, not the 1 kB of its embedding.
#[derive(Clone, Debug, Default)]
pub struct FrameIndex {
    pub ids: Vec<i64>,
    pub times: Vec<i64>,
    pub thumbs: Vec<Option<i64>>,
    /// The size of the embeddings scored.
    pub dim: usize,
    /// Rows of the period left out because another model made them (another size).
    pub other_model: usize,
}

impl FrameIndex {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A set of embeddings held in memory (the lab's marks, tests): `ids[i]`, `times[i]` and
/// `thumbs[i]` describe the `i`-th row of `halves` (`dim` values each, little-endian f16 as
/// stored: [`Embeddings::row_into`] gives a row as f32).
#[derive(Clone, Debug, Default)]
pub struct Embeddings {
    pub ids: Vec<i64>,
    pub times: Vec<i64>,
    pub thumbs: Vec<Option<i64>>,
    pub dim: usize,
    pub halves: Vec<u8>,
    /// Rows of the period left out because another model made them (another size).
    pub other_model: usize,
}

impl Embeddings {
    /// Embeddings from f32 rows (stored as f16, as the history stores them).
    pub fn from_f32(
        ids: Vec<i64>,
        times: Vec<i64>,
        thumbs: Vec<Option<i64>>,
        dim: usize,
        rows: &[f32],
    ) -> Embeddings {
        Embeddings {
            ids,
            times,
            thumbs,
            dim,
            halves: encode_embedding(rows),
            other_model: 0,
        }
    }
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Row `i` as f32, into `out` (`dim` values).
    pub fn row_into(&self, i: usize, out: &mut [f32]) {
        decode_f16(&self.halves[i * self.dim * 2..(i + 1) * self.dim * 2], out);
    }
    /// Row `i` as f32.
    pub fn row(&self, i: usize) -> Vec<f32> {
        let mut v = vec![0.0; self.dim];
        self.row_into(i, &mut v);
        v
    }
}

/// The readers' statements over the big tables (each must run on an index: store's tests).
pub(super) const CAMERAS: &str =
    "SELECT camera, count(*) FROM frames GROUP BY camera ORDER BY camera";
pub(super) const FRAMES: &str = "SELECT id, t_ms, motion, scores, thumb FROM frames \
     WHERE camera = ?1 AND t_ms >= ?2 AND t_ms < ?3 ORDER BY t_ms, id";
pub(super) const COUNT_FRAMES: &str =
    "SELECT count(*) FROM frames WHERE camera = ?1 AND t_ms >= ?2 AND t_ms < ?3";
pub(super) const EVENTS: &str =
    "SELECT id, event_id, prompt, kind, t_ms, score, box, snapshot IS NOT NULL FROM events \
     WHERE camera = ?1 AND t_ms >= ?2 AND t_ms < ?3 ORDER BY t_ms, id";
pub(super) const EMBEDDINGS: &str =
    "SELECT frame, t_ms, thumb, v FROM embeddings WHERE camera = ?1 AND t_ms >= ?2 ORDER BY frame";
pub(super) const EMBEDDING: &str = "SELECT v FROM embeddings WHERE frame = ?1";

impl Store {
    /// The cameras that have frames, each with its frame count.
    pub fn cameras(&self) -> Result<Vec<(String, i64)>> {
        let mut st = self.conn.prepare(CAMERAS)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A camera's frames with `since_ms <= t_ms < until_ms`, in time order.
    pub fn frames(&self, camera: &str, since_ms: i64, until_ms: i64) -> Result<Vec<FrameRow>> {
        let mut out = vec![];
        self.each_frame(camera, since_ms, until_ms, |f| {
            out.push(f);
            Ok(())
        })?;
        Ok(out)
    }

    /// How many frames [`Store::frames`] would return (read from the index alone).
    pub fn count_frames(&self, camera: &str, since_ms: i64, until_ms: i64) -> Result<usize> {
        let n: i64 = self
            .conn
            .prepare_cached(COUNT_FRAMES)?
            .query_row(params![camera, since_ms, until_ms], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// [`Store::frames`]'s rows handed to `f` one at a time, never all in memory.
    pub fn each_frame(
        &self,
        camera: &str,
        since_ms: i64,
        until_ms: i64,
        mut f: impl FnMut(FrameRow) -> Result<()>,
    ) -> Result<()> {
        let mut st = self.conn.prepare_cached(FRAMES)?;
        let mut rows = st.query(params![camera, since_ms, until_ms])?;
        while let Some(r) = rows.next()? {
            let scores: String = r.get(3)?;
            f(FrameRow {
                id: r.get(0)?,
                t_ms: r.get(1)?,
                motion: r.get(2)?,
                scores: serde_json::from_str(&scores).unwrap_or_default(),
                thumb: r.get(4)?,
            })?;
        }
        Ok(())
    }

    /// A camera's events with `since_ms <= t_ms < until_ms`, in time order.
    pub fn events(&self, camera: &str, since_ms: i64, until_ms: i64) -> Result<Vec<EventRow>> {
        let mut st = self.conn.prepare_cached(EVENTS)?;
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

    /// `score` of each of a camera's embeddings of `dim` values (those the CLIP model in use
    /// makes) with `t_ms >= since_ms`, in time order, one row at a time: the memory a pass holds
    /// is its [`FrameIndex`] and scores, whatever the history's size. Rows another model made
    /// (another size: the CLIP model changed) are counted, not scored.
    pub fn score_embeddings(
        &self,
        camera: &str,
        since_ms: i64,
        dim: usize,
        mut score: impl FnMut(&[f32]) -> f32,
    ) -> Result<(FrameIndex, Vec<f32>)> {
        let mut st = self.conn.prepare_cached(EMBEDDINGS)?;
        let mut rows = st.query(params![camera, since_ms])?;
        let mut index = FrameIndex {
            dim,
            ..FrameIndex::default()
        };
        let (mut scores, mut row) = (vec![], vec![0.0; dim]);
        while let Some(r) = rows.next()? {
            let v = r.get_ref(3)?.as_blob()?;
            if v.len() != dim * 2 {
                index.other_model += 1;
                continue;
            }
            decode_f16(v, &mut row);
            scores.push(score(&row));
            index.ids.push(r.get(0)?);
            index.times.push(r.get(1)?);
            index.thumbs.push(r.get(2)?);
        }
        Ok((index, scores))
    }

    /// A frame's embedding as f32, if it is stored with `dim` values.
    pub fn embedding(&self, frame: i64, dim: usize) -> Result<Option<Vec<f32>>> {
        let mut st = self.conn.prepare_cached(EMBEDDING)?;
        let v: Option<Vec<u8>> = st.query_row([frame], |r| r.get(0)).optional()?;
        Ok(v.filter(|v| v.len() == dim * 2).map(|v| {
            let mut row = vec![0.0; dim];
            decode_f16(&v, &mut row);
            row
        }))
    }

    /// Every embedding [`Store::score_embeddings`] would score, held in memory: for tests and
    /// small sets only (the lab and `promptcam search` stream).
    pub fn embeddings(&self, camera: &str, since_ms: i64, dim: usize) -> Result<Embeddings> {
        let mut rows = vec![];
        let (index, _) = self.score_embeddings(camera, since_ms, dim, |r| {
            rows.extend_from_slice(r);
            0.0
        })?;
        let mut e = Embeddings::from_f32(index.ids, index.times, index.thumbs, dim, &rows);
        e.other_model = index.other_model;
        Ok(e)
    }

    /// A frame's own thumbnail (JPEG), if it has one.
    pub fn frame_thumbnail(&self, frame: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT t.jpeg FROM frames f JOIN thumbs t ON t.id = f.thumb WHERE f.id = ?1",
                [frame],
                |r| r.get(0),
            )
            .optional()?)
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
}
