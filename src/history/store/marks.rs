//! Marks: the lab's yes/no labels of a question's frames. A mark keeps its own copy of what
//! learning needs — the frame's CLIP embedding (and the model that made it), its time and its
//! thumbnail — so retention, which deletes frames, never takes a labelled data set away.
//! Imported marks (from another device) get negative frame ids: they name no frame of this
//! history and can never be confused with one.

use anyhow::{bail, Result};
use rusqlite::{params, OptionalExtension};

use super::Store;
use crate::model::identity::ModelIdentity;

/// A mark with its data.
#[derive(Clone, Debug, PartialEq)]
pub struct Marked {
    pub frame: i64,
    pub yes: bool,
    pub t_ms: Option<i64>,
    /// The model that made `v`; `None` for marks made before the history recorded models.
    pub model: Option<ModelIdentity>,
    /// The embedding as stored (little-endian f16); `None` when the frame had none.
    pub v: Option<Vec<u8>>,
    /// The thumbnail (JPEG), when asked for and kept.
    pub jpeg: Option<Vec<u8>>,
    /// Whether the mark kept a thumbnail (asked for or not).
    pub pictured: bool,
}

const SET_MARK: &str = "
INSERT INTO marks (camera, query, frame, yes, t_ms, model, v, jpeg)
SELECT ?1, ?2, f.id, ?4, f.t_ms, e.model, e.v, t.jpeg
FROM frames f
LEFT JOIN embeddings e ON e.frame = f.id
LEFT JOIN thumbs t ON t.id = f.thumb
WHERE f.id = ?3 AND f.camera = ?1
ON CONFLICT (camera, query, frame) DO UPDATE SET yes = excluded.yes";

impl Store {
    /// Sets (or with `None` clears) a frame's yes/no mark for a lab question, copying the
    /// frame's data into the mark. A mark that exists is changed even when its frame is gone.
    /// Returns false when there is neither the frame nor a mark to change.
    pub fn set_mark(
        &mut self,
        camera: &str,
        query: &str,
        frame: i64,
        yes: Option<bool>,
    ) -> Result<bool> {
        let n = match yes {
            Some(yes) => {
                let n = self
                    .conn
                    .execute(SET_MARK, params![camera, query, frame, yes])?;
                match n {
                    0 => self.conn.execute(
                        "UPDATE marks SET yes = ?4 WHERE camera = ?1 AND query = ?2 AND frame = ?3",
                        params![camera, query, frame, yes],
                    )?,
                    n => n,
                }
            }
            None => self.conn.execute(
                "DELETE FROM marks WHERE camera = ?1 AND query = ?2 AND frame = ?3",
                params![camera, query, frame],
            )?,
        };
        Ok(n > 0 || yes.is_none())
    }

    /// The marks of a lab question: (frame id, yes).
    pub fn marks(&self, camera: &str, query: &str) -> Result<Vec<(i64, bool)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT frame, yes FROM marks WHERE camera = ?1 AND query = ?2 ORDER BY frame",
        )?;
        let rows = st.query_map(params![camera, query], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The marks of a lab question with their data, in time order (the same on every device an
    /// exported set is imported into); with `pictures`, their thumbnails too.
    pub fn marked(&self, camera: &str, query: &str, pictures: bool) -> Result<Vec<Marked>> {
        let mut st = self.conn.prepare_cached(
            "SELECT m.frame, m.yes, m.t_ms, md.name, md.sha256, m.v, \
             CASE WHEN ?3 THEN m.jpeg END, m.jpeg IS NOT NULL \
             FROM marks m LEFT JOIN models md ON md.id = m.model \
             WHERE m.camera = ?1 AND m.query = ?2 ORDER BY m.t_ms, m.frame",
        )?;
        let rows = st.query_map(params![camera, query, pictures], |r| {
            let name: Option<String> = r.get(3)?;
            let sha256: Option<String> = r.get(4)?;
            Ok(Marked {
                frame: r.get(0)?,
                yes: r.get(1)?,
                t_ms: r.get(2)?,
                model: name
                    .zip(sha256)
                    .map(|(name, sha256)| ModelIdentity { name, sha256 }),
                v: r.get(5)?,
                jpeg: r.get(6)?,
                pictured: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The questions a camera has marks for, each with its count of yes and no.
    pub fn questions(&self, camera: &str) -> Result<Vec<(String, usize, usize)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT query, sum(yes), sum(1 - yes) FROM marks WHERE camera = ?1 \
             GROUP BY query ORDER BY query",
        )?;
        let rows = st.query_map([camera], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)? as usize,
                r.get::<_, i64>(2)? as usize,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A marked frame's thumbnail, kept with its mark.
    pub fn mark_thumbnail(&self, frame: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT jpeg FROM marks WHERE frame = ?1 AND jpeg IS NOT NULL LIMIT 1",
                [frame],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Adds marks made elsewhere (`labels import`) to a camera's question, each under a new
    /// negative frame id; a mark equal to one already there (same time and embedding) is
    /// skipped, so importing a file twice adds nothing. Returns (added, skipped).
    pub fn import_marks(
        &mut self,
        camera: &str,
        query: &str,
        model: &ModelIdentity,
        marks: &[Marked],
    ) -> Result<(usize, usize)> {
        if marks.iter().any(|m| m.v.is_none() || m.t_ms.is_none()) {
            bail!("every imported mark needs its embedding and time");
        }
        let model_id = self.model_id(model)?;
        let tx = self.conn.transaction()?;
        let mut next: i64 = tx.query_row(
            "SELECT min(0, coalesce(min(frame), 0)) - 1 FROM marks",
            [],
            |r| r.get(0),
        )?;
        let (mut added, mut skipped) = (0, 0);
        {
            let mut same = tx.prepare(
                "SELECT count(*) FROM marks WHERE camera = ?1 AND query = ?2 AND t_ms = ?3 AND v = ?4",
            )?;
            let mut add = tx.prepare(
                "INSERT INTO marks (camera, query, frame, yes, t_ms, model, v, jpeg) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for m in marks {
                let n: i64 = same.query_row(params![camera, query, m.t_ms, m.v], |r| r.get(0))?;
                if n > 0 {
                    skipped += 1;
                    continue;
                }
                add.execute(params![
                    camera, query, next, m.yes, m.t_ms, model_id, m.v, m.jpeg
                ])?;
                next -= 1;
                added += 1;
            }
        }
        tx.commit()?;
        Ok((added, skipped))
    }
}
