//! Open: the record of events that started and have not ended yet, kept next to the spool
//! (`open-events.json`: event id -> its latest start/update). A daemon that stops gracefully ends
//! every open event itself; one that is killed (SIGKILL, power loss, a crash) cannot, so the
//! next start reads the record and spools an `end` for each event still open, with
//! `"reason": "restart"` and `ended_at` the time of the restart, before anything new. An event is
//! recorded open before it is spooled (so nothing delivered is missing here); a daemon killed in
//! between leaves an `end` whose start was never sent.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Map, Value};

use super::spool::{Spool, OPEN_RECORD};
use crate::event::{rfc3339, Event, EventKind};

/// The open events, mirrored on disk after every change.
pub struct OpenEvents {
    path: PathBuf,
    open: BTreeMap<String, Value>,
    /// Whether the last write failed (logged once until one succeeds).
    failing: bool,
}

impl OpenEvents {
    /// Reads what a previous run left open and returns the ids and `end` payloads that close it,
    /// leaving out events the spool already ends; the record then starts empty.
    pub fn load(dir: &Path, spool: &Spool, now: SystemTime) -> (OpenEvents, Vec<(String, String)>) {
        let path = dir.join(OPEN_RECORD);
        let record = OpenEvents {
            path,
            open: BTreeMap::new(),
            failing: false,
        };
        let left: Map<String, Value> = match fs::read(&record.path) {
            Err(_) => return (record, vec![]),
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(
                        "unable to read the open-events record {}: {e}; events a killed daemon left open get no `end`",
                        record.path.display()
                    );
                    return (record, vec![]);
                }
            },
        };
        let ended: Vec<String> = spool
            .entries()
            .filter_map(|e| serde_json::from_str::<Value>(&e.payload).ok())
            .filter(|v| v["type"] == "end")
            .filter_map(|v| v["id"].as_str().map(str::to_string))
            .collect();
        let mut ends = vec![];
        for (id, last) in left {
            if ended.contains(&id) {
                continue;
            }
            let Value::Object(mut end) = last else {
                continue;
            };
            end.insert("type".into(), "end".into());
            end.insert("ended_at".into(), rfc3339(now).into());
            end.insert("reason".into(), "restart".into());
            ends.push((id, Value::Object(end).to_string()));
        }
        if !ends.is_empty() {
            tracing::info!(
                "closing {} event(s) the previous run left open (it stopped without ending them): `end` with reason `restart`",
                ends.len()
            );
        }
        (record, ends)
    }

    /// Notes an event: a start or update opens (or refreshes) it, an end closes it.
    pub fn record(&mut self, e: &Event) {
        let changed = match e.kind {
            EventKind::End => self.open.remove(&e.id).is_some(),
            EventKind::Start | EventKind::Update => match serde_json::to_value(e) {
                Ok(v) => {
                    self.open.insert(e.id.clone(), v);
                    true
                }
                Err(_) => false,
            },
        };
        if changed {
            self.save();
        }
    }

    /// Writes the record (also when empty: that is what a new start reads).
    pub fn save(&mut self) {
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&self.open).unwrap_or_default())?;
            f.sync_data()?;
            fs::rename(&tmp, &self.path)
        };
        match write() {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!(
                    "the open-events record {} is written again",
                    self.path.display()
                );
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(
                    "unable to write the open-events record {}: {e}; retrying with the next event (until then a killed daemon could leave events without `end`)",
                    self.path.display()
                );
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(kind: EventKind, id: &str) -> Event {
        Event {
            kind,
            camera: "porch".into(),
            prompt: "a_person".into(),
            score: 0.8,
            bbox: None,
            started_at: "2026-01-01T00:00:00.000Z".into(),
            ended_at: None,
            id: id.into(),
            runtime: false,
            reason: None,
            once: false,
            snapshot: None,
        }
    }

    #[test]
    fn a_restart_ends_what_was_left_open_once() {
        let dir = std::env::temp_dir().join(format!("promptcam-open-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut spool = Spool::open(&dir, 100).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (mut rec, ends) = OpenEvents::load(&dir, &spool, now);
        assert!(ends.is_empty());
        rec.record(&event(EventKind::Start, "a"));
        rec.record(&event(EventKind::Start, "b"));
        rec.record(&event(EventKind::Update, "b"));
        rec.record(&event(EventKind::Start, "c"));
        rec.record(&event(EventKind::End, "a"));
        // `c` ended in the spool, but the daemon died before the record said so
        spool.push(serde_json::to_string(&event(EventKind::End, "c")).unwrap());
        let (_, ends) = OpenEvents::load(&dir, &spool, now);
        assert_eq!(ends.len(), 1, "{ends:?}");
        let end: Value = serde_json::from_str(&ends[0].1).unwrap();
        assert_eq!(
            (&end["type"], &end["id"], &end["reason"]),
            (&"end".into(), &"b".into(), &"restart".into())
        );
        assert_eq!(end["ended_at"], "2027-01-15T08:00:00.000Z");
        assert_eq!(end["started_at"], "2026-01-01T00:00:00.000Z");
        crate::mqtt::spool::check_event(&ends[0].1).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }
}
