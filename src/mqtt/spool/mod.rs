//! Spool: the bounded on-disk queue of event payloads not yet acknowledged by the broker. Every
//! event is written here first (one file per event, named by its zero-padded 20-digit sequence
//! number, written to a temporary name and renamed), removed when its PUBACK arrives, and
//! replayed in order after a reconnect or a daemon restart. What a previous run left is checked
//! on open (`load`): only well-formed event objects under well-formed names are replayed, the rest
//! is set aside in `rejected/` with a warning. A write that fails (disk full, too many open files)
//! loses nothing: the event is held in memory, sent from there, and written when the spool takes
//! writes again. Beyond `max` events the oldest are dropped, counted and logged.

mod load;

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

pub use load::check_event;

/// The largest payload accepted as an event (a real one is well under 1 KiB).
pub const MAX_ENTRY: usize = 1 << 20;
/// The open-events record kept next to the entries (see `super::open`).
pub const OPEN_RECORD: &str = "open-events.json";
/// Where entries that cannot be sent are set aside.
pub const REJECTED: &str = "rejected";
const SUFFIX: &str = ".json";

/// One spooled event: its sequence number and the JSON payload to publish.
#[derive(Clone, Debug)]
pub struct Entry {
    pub seq: u64,
    pub payload: String,
    /// False while the event is held in memory only, its write having failed.
    on_disk: bool,
}

/// The spool directory and an in-memory mirror of its entries, oldest first.
pub struct Spool {
    dir: PathBuf,
    max: usize,
    entries: VecDeque<Entry>,
    next_seq: u64,
    dropped: u64,
    /// Entries held in memory because their write failed.
    held: usize,
}

impl Spool {
    /// Opens (creating it if needed) a spool directory and loads what a previous run left there.
    pub fn open(dir: &Path, max: usize) -> Result<Spool> {
        let loaded = load::load(dir)?;
        let next_seq = loaded.last().map(|(seq, _)| seq + 1).unwrap_or(1);
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max: max.max(1),
            entries: loaded
                .into_iter()
                .map(|(seq, payload)| Entry {
                    seq,
                    payload,
                    on_disk: true,
                })
                .collect(),
            next_seq,
            dropped: 0,
            held: 0,
        };
        spool.trim();
        if !spool.entries.is_empty() {
            tracing::info!(
                "MQTT spool {}: {} event(s) from a previous run to deliver",
                dir.display(),
                spool.entries.len()
            );
        }
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(name(seq))
    }

    fn write(&self, seq: u64, payload: &str) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{seq:020}.tmp"));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(payload.as_bytes())?;
        f.sync_data()?;
        drop(f);
        fs::rename(&tmp, self.path(seq)).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// Appends a payload and writes it durably; drops the oldest entries beyond the bound. A
    /// failed write never loses the event: it is held in memory (and sent from there) and
    /// written by [`Spool::retry`] once the spool takes writes again.
    pub fn push(&mut self, payload: String) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        // held entries go to disk first, so the files keep the events' order
        self.retry();
        let on_disk = match self.held {
            0 => match self.write(seq, &payload) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(
                        "unable to write event {seq} to the MQTT spool {}: {e}; holding it in memory and retrying (it is delivered from memory meanwhile, but lost if the daemon stops first); check free space, permissions and the open-file limit",
                        self.dir.display()
                    );
                    false
                }
            },
            _ => false,
        };
        if !on_disk {
            self.held += 1;
            if self.held > 1 && self.held.is_power_of_two() {
                tracing::warn!(
                    "MQTT spool {} still not writable: {} event(s) held in memory",
                    self.dir.display(),
                    self.held
                );
            }
        }
        self.entries.push_back(Entry {
            seq,
            payload,
            on_disk,
        });
        self.trim();
        seq
    }

    /// Writes the entries held in memory, oldest first, until one fails. Returns how many are
    /// still held.
    pub fn retry(&mut self) -> usize {
        if self.held == 0 {
            return 0;
        }
        let mut written = 0;
        for i in 0..self.entries.len() {
            if self.entries[i].on_disk {
                continue;
            }
            let e = &self.entries[i];
            if self.write(e.seq, &e.payload).is_err() {
                break;
            }
            self.entries[i].on_disk = true;
            self.held -= 1;
            written += 1;
        }
        if written > 0 {
            tracing::info!(
                "MQTT spool {} takes writes again: {written} held event(s) written, {} still held",
                self.dir.display(),
                self.held
            );
        }
        self.held
    }

    fn trim(&mut self) {
        while self.entries.len() > self.max {
            if let Some(old) = self.entries.pop_front() {
                self.forget(&old);
                self.dropped += 1;
                if self.dropped == 1 || self.dropped.is_power_of_two() {
                    tracing::warn!(
                        "MQTT spool full ({} events): dropped {} oldest event(s) so far (promptcam_mqtt_spool_dropped_total); raise mqtt.spool_max_events or check the broker",
                        self.max,
                        self.dropped
                    );
                }
            }
        }
    }

    /// Removes an entry's file (or its place among the held ones).
    fn forget(&mut self, e: &Entry) {
        if !e.on_disk {
            self.held -= 1;
        } else if let Err(err) = fs::remove_file(self.path(e.seq)) {
            tracing::warn!(
                "unable to remove spooled event {}: {err}",
                self.path(e.seq).display()
            );
        }
    }

    fn index(&self, seq: u64) -> Option<usize> {
        let i = self.entries.partition_point(|e| e.seq < seq);
        (self.entries.get(i)?.seq == seq).then_some(i)
    }

    /// Removes an acknowledged entry (unknown sequence numbers are ignored: already dropped).
    pub fn ack(&mut self, seq: u64) {
        if let Some(e) = self.index(seq).and_then(|i| self.entries.remove(i)) {
            self.forget(&e);
        }
    }

    /// Takes out an entry that can never be sent (e.g. larger than the broker connection
    /// allows), moving its file to `rejected/` with a warning: never dropped silently.
    pub fn set_aside(&mut self, seq: u64, why: &str) {
        let Some(e) = self.index(seq).and_then(|i| self.entries.remove(i)) else {
            return;
        };
        if e.on_disk {
            load::set_aside(&self.dir, &self.path(seq), why);
        } else {
            self.held -= 1;
            tracing::error!("MQTT: event {seq} held in memory cannot be sent: {why}; dropped");
        }
    }

    /// The first entry with a sequence number at or after `seq`.
    pub fn next_from(&self, seq: u64) -> Option<&Entry> {
        self.entries
            .get(self.entries.partition_point(|e| e.seq < seq))
    }

    /// Sequence number of the oldest entry, or the next one to be written when empty.
    pub fn first_seq(&self) -> u64 {
        self.entries.front().map(|e| e.seq).unwrap_or(self.next_seq)
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries held in memory because their write failed.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Events dropped because the spool was full, since it was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The file name of an entry: its sequence number, zero-padded to 20 digits.
fn name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> String {
        format!(
            r#"{{"type":"start","camera":"c","prompt":"p","score":0.5,"started_at":"t","id":"e{i}"}}"#
        )
    }

    #[test]
    fn bounded_ordered_and_persistent() {
        let dir = std::env::temp_dir().join(format!("promptcam-spool-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut s = Spool::open(&dir, 3).unwrap();
        for i in 0..5 {
            s.push(event(i));
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.dropped(), 2);
        let first = s.first_seq();
        s.ack(first);
        drop(s);
        let s = Spool::open(&dir, 3).unwrap();
        let got: Vec<&str> = s.entries.iter().map(|e| e.payload.as_str()).collect();
        assert_eq!(got, vec![event(3), event(4)]);
        assert_eq!(s.next_from(0).map(|e| e.seq), Some(4));
        assert_eq!(s.next_from(5).map(|e| e.seq), Some(5));
        assert_eq!(s.next_from(6).map(|e| e.seq), None);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_holds_the_event_in_memory_until_the_spool_takes_writes() {
        let base =
            std::env::temp_dir().join(format!("promptcam-spool-held-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let dir = base.join("spool");
        let mut s = Spool::open(&dir, 10).unwrap();
        s.push(event(0));
        // the directory replaced by a file: every write fails (as with ENOSPC or EMFILE)
        fs::rename(&dir, base.join("away")).unwrap();
        fs::write(&dir, b"").unwrap();
        let (a, b) = (s.push(event(1)), s.push(event(2)));
        assert_eq!((s.len(), s.held()), (3, 2));
        assert_eq!(s.next_from(a).map(|e| e.payload.clone()), Some(event(1)));
        s.ack(a);
        assert_eq!(
            (s.len(), s.held()),
            (2, 1),
            "a held event can be acknowledged"
        );
        fs::remove_file(&dir).unwrap();
        fs::rename(base.join("away"), &dir).unwrap();
        assert_eq!(s.retry(), 0);
        let c = s.push(event(3));
        drop(s);
        let s = Spool::open(&dir, 10).unwrap();
        let seqs: Vec<u64> = s.entries().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, b, c], "written once writable, in order");
        let _ = fs::remove_dir_all(&base);
    }
}
