//! Spool: the bounded on-disk queue of event payloads not yet acknowledged by the broker. Every
//! event is written here first (one file per event, named by a sequence number, written to a
//! temporary name and renamed), removed when its PUBACK arrives, and replayed in order after a
//! reconnect or a daemon restart. Beyond `max` events the oldest are dropped and counted.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One spooled event: its sequence number and the JSON payload to publish.
#[derive(Clone, Debug)]
pub struct Entry {
    pub seq: u64,
    pub payload: String,
}

/// The spool directory and an in-memory mirror of its entries, oldest first.
pub struct Spool {
    dir: PathBuf,
    max: usize,
    entries: VecDeque<Entry>,
    next_seq: u64,
    dropped: u64,
}

const SUFFIX: &str = ".json";

impl Spool {
    /// Opens (creating it if needed) a spool directory and loads what a previous run left there.
    pub fn open(dir: &Path, max: usize) -> Result<Spool> {
        fs::create_dir_all(dir).with_context(|| {
            format!("unable to create the MQTT spool directory {}; create it writable for the daemon or set mqtt.spool_dir", dir.display())
        })?;
        let mut found: Vec<(u64, PathBuf)> = vec![];
        let listing = fs::read_dir(dir).with_context(|| {
            format!(
                "unable to list the MQTT spool directory {}; check its permissions",
                dir.display()
            )
        })?;
        for e in listing.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(seq) = name
                .strip_suffix(SUFFIX)
                .and_then(|s| s.parse::<u64>().ok())
            {
                found.push((seq, e.path()));
            } else if name.ends_with(".tmp") {
                // a write interrupted by a crash: never renamed, so never acknowledged to anyone
                let _ = fs::remove_file(e.path());
            }
        }
        found.sort();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max: max.max(1),
            entries: VecDeque::new(),
            next_seq: 1,
            dropped: 0,
        };
        for (seq, path) in found {
            spool.next_seq = spool.next_seq.max(seq + 1);
            match fs::read_to_string(&path) {
                Ok(payload) if serde_json::from_str::<serde_json::Value>(&payload).is_ok() => {
                    spool.entries.push_back(Entry { seq, payload })
                }
                _ => {
                    tracing::warn!("dropping unreadable spooled event {}", path.display());
                    let _ = fs::remove_file(&path);
                }
            }
        }
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

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    /// Appends a payload durably; drops the oldest entries beyond the bound.
    pub fn push(&mut self, payload: String) -> Result<u64> {
        let seq = self.next_seq;
        let path = self.path(seq);
        let tmp = self.dir.join(format!("{seq:020}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(payload.as_bytes())?;
            f.sync_data()?;
            fs::rename(&tmp, &path)
        };
        write().with_context(|| {
            format!(
                "unable to write to the MQTT spool {}; check free space and permissions",
                self.dir.display()
            )
        })?;
        self.next_seq += 1;
        self.entries.push_back(Entry { seq, payload });
        self.trim();
        Ok(seq)
    }

    fn trim(&mut self) {
        while self.entries.len() > self.max {
            if let Some(old) = self.entries.pop_front() {
                let _ = fs::remove_file(self.path(old.seq));
                self.dropped += 1;
                if self.dropped == 1 || self.dropped.is_power_of_two() {
                    tracing::warn!(
                        "MQTT spool full ({} events): dropped {} oldest event(s) so far",
                        self.max,
                        self.dropped
                    );
                }
            }
        }
    }

    /// Removes an acknowledged entry (unknown sequence numbers are ignored: already dropped).
    pub fn ack(&mut self, seq: u64) {
        if let Some(i) = self.entries.iter().position(|e| e.seq == seq) {
            self.entries.remove(i);
            if let Err(e) = fs::remove_file(self.path(seq)) {
                tracing::warn!(
                    "unable to remove spooled event {}: {e}",
                    self.path(seq).display()
                );
            }
        }
    }

    /// The first entry with a sequence number at or after `seq`.
    pub fn next_from(&self, seq: u64) -> Option<&Entry> {
        self.entries.iter().find(|e| e.seq >= seq)
    }

    /// Sequence number of the oldest entry, or the next one to be written when empty.
    pub fn first_seq(&self) -> u64 {
        self.entries.front().map(|e| e.seq).unwrap_or(self.next_seq)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Events dropped because the spool was full, since it was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_ordered_and_persistent() {
        let dir = std::env::temp_dir().join(format!("promptcam-spool-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut s = Spool::open(&dir, 3).unwrap();
        for i in 0..5 {
            s.push(format!("{{\"i\":{i}}}")).unwrap();
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.dropped(), 2);
        let first = s.first_seq();
        s.ack(first);
        drop(s);
        let s = Spool::open(&dir, 3).unwrap();
        let got: Vec<&str> = s.entries.iter().map(|e| e.payload.as_str()).collect();
        assert_eq!(got, vec!["{\"i\":3}", "{\"i\":4}"]);
        assert_eq!(s.next_from(0).map(|e| e.seq), Some(4));
        let _ = fs::remove_dir_all(&dir);
    }
}
