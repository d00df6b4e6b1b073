//! Start cache: what a start measures, remembered in the state directory (`start-cache.json`)
//! so that a restart, or a reload of unchanged models, does not measure it again (issue 21:
//! timing both precisions and the thread counts took 8 of a 14 s start). Three things are kept:
//! - each model's int8 and fp32 timings under `quantized = "auto"` (or `true`, which times fp32
//!   for its warning): a warm start loads only the chosen precision;
//! - the inference thread count measured on a set of loaded models;
//! - CLIP's text embeddings, so that the text tower is not loaded at all when every prompt's
//!   embedding is known.
//!
//! Every entry is keyed by what it depends on: the model directory's `.onnx` files (name, size,
//! modification time), the input size, the thread count, the device (CPU or GPU), this binary
//! (its size and time: an upgrade of promptcam or of the tract it carries re-measures), the CPU
//! (`/proc/cpuinfo`'s model and feature lines: the kernels tract picks follow them) and the
//! `TRACT_*` / `PROMPTCAM_*` variables that change kernels or devices. A changed key is a miss, never a
//! stale hit. The cache is not trusted blindly: a file that does not parse is logged and
//! rebuilt, and a cached choice whose model fails to load is forgotten and measured again.
//! Deleting the file re-measures everything at the next start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Precision;

/// The file's name in the state directory.
pub const FILE: &str = "start-cache.json";
/// The format of the file; another number is read as empty.
const FORMAT: u32 = 1;
/// At most this many text embeddings are kept; the least recently used go first.
const MAX_TEXTS: usize = 2048;

/// One model's two timings on this machine, and what they chose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub int8_ms: f64,
    pub fp32_ms: f64,
    pub chosen: Precision,
    /// For people reading the file: the model, its size, the thread count.
    pub what: String,
    /// Unix seconds of the measurement.
    pub measured: u64,
}

/// A thread count measured on a set of loaded models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threads {
    pub threads: usize,
    /// The measured ms a frame (all the models once) at each count.
    pub times: Vec<(usize, f64)>,
    pub measured: u64,
}

/// An inference worker count measured on a set of loaded models and cameras.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workers {
    pub workers: usize,
    /// The matrix-product threads of each worker.
    pub threads: usize,
    /// The measured frames a second (all the models once a frame) at each worker count.
    pub rates: Vec<(usize, f64)>,
    pub measured: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Text {
    /// The embedding's f32 bits: exact, unlike a decimal round trip.
    bits: Vec<u32>,
    used: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Data {
    format: u32,
    #[serde(default)]
    timings: BTreeMap<String, Timing>,
    #[serde(default)]
    threads: BTreeMap<String, Threads>,
    #[serde(default)]
    workers: BTreeMap<String, Workers>,
    #[serde(default)]
    texts: BTreeMap<String, Text>,
}

/// The cache of one start (or reload): read once, written back by [`StartCache::save`].
#[derive(Debug, Default)]
pub struct StartCache {
    path: Option<PathBuf>,
    data: Mutex<(Data, bool)>,
}

/// A key: the SHA-256 of the parts, hex (the parts themselves can be long: CPU flags).
pub fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a measurement on this machine depends on besides the model: this binary, the CPU, the
/// cores and the variables that steer tract's kernels and promptcam's device (read once).
pub fn machine() -> String {
    static MACHINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MACHINE.get_or_init(read_machine).clone()
}

fn read_machine() -> String {
    let exe = std::env::current_exe()
        .ok()
        .map(|p| file_stamp(&p))
        .unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut vars: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("TRACT_") || k.starts_with("PROMPTCAM_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.sort();
    format!(
        "promptcam {} {exe}|{}|{}|{} cores|{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        cpu_signature(&cpuinfo),
        crate::threads::cores(),
        vars.join(",")
    )
}

/// The lines of `/proc/cpuinfo` that name the CPU and its instruction sets, once each.
pub fn cpu_signature(cpuinfo: &str) -> String {
    const KEYS: [&str; 8] = [
        "vendor_id",
        "model name",
        "flags",
        "Features",
        "CPU implementer",
        "CPU architecture",
        "CPU variant",
        "CPU part",
    ];
    let mut lines: Vec<String> = cpuinfo
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            KEYS.contains(&k.trim())
                .then(|| format!("{}={}", k.trim(), v.trim()))
        })
        .collect();
    lines.sort();
    lines.dedup();
    lines.join(";")
}

/// A file's path, size and modification time: its identity for the cache (hashing a 600 MB
/// model at every start would cost what the cache saves).
fn file_stamp(p: &Path) -> String {
    let (len, modified) = crate::model::identity::stamp(p).unwrap_or_default();
    format!("{}:{len}:{modified}", p.display())
}

/// Every `.onnx` file of a model directory, stamped ([`file_stamp`]), in name order.
pub fn files_stamp(root: &Path) -> String {
    let onnx = root.join("onnx");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&onnx)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let stamps: Vec<String> = names.iter().map(|p| file_stamp(p)).collect();
    format!("{}|{}", root.display(), stamps.join(","))
}

impl StartCache {
    /// No cache: every lookup misses and nothing is written (`promptcam check`, which measures
    /// what it checks, and tests).
    pub fn off() -> StartCache {
        StartCache::default()
    }

    /// The cache in `state_dir`; a file that cannot be read or parsed is logged and starts empty
    /// (it is rewritten at the next save).
    pub fn open(state_dir: &Path) -> StartCache {
        let path = state_dir.join(FILE);
        let data = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Data::default(),
            Err(e) => {
                tracing::warn!(
                    "unable to read the start cache {}: {e}; measuring at this start instead",
                    path.display()
                );
                Data::default()
            }
            Ok(bytes) => match serde_json::from_slice::<Data>(&bytes) {
                Ok(d) if d.format == FORMAT => d,
                Ok(_) => Data::default(),
                Err(e) => {
                    tracing::warn!(
                        "unable to use the start cache {}: {e}; measuring at this start and rewriting it",
                        path.display()
                    );
                    Data::default()
                }
            },
        };
        StartCache {
            path: Some(path),
            data: Mutex::new((data, false)),
        }
    }

    /// Where the cache lives, for log lines; None when off.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Data, &mut bool) -> T) -> Option<T> {
        self.path.as_ref()?;
        let mut g = self.data.lock().unwrap_or_else(|p| p.into_inner());
        let (data, dirty) = &mut *g;
        Some(f(data, dirty))
    }

    pub fn timing(&self, key: &str) -> Option<Timing> {
        self.with(|d, _| d.timings.get(key).cloned()).flatten()
    }

    pub fn put_timing(&self, key: &str, t: Timing) {
        self.with(|d, dirty| {
            d.timings.insert(key.to_string(), t);
            *dirty = true;
        });
    }

    /// Drops a timing whose choice did not load: the next start measures again.
    pub fn forget_timing(&self, key: &str) {
        self.with(|d, dirty| *dirty |= d.timings.remove(key).is_some());
    }

    pub fn threads(&self, key: &str) -> Option<Threads> {
        self.with(|d, _| d.threads.get(key).cloned()).flatten()
    }

    pub fn put_threads(&self, key: &str, t: Threads) {
        self.with(|d, dirty| {
            d.threads.insert(key.to_string(), t);
            *dirty = true;
        });
    }

    pub fn workers(&self, key: &str) -> Option<Workers> {
        self.with(|d, _| d.workers.get(key).cloned()).flatten()
    }

    pub fn put_workers(&self, key: &str, w: Workers) {
        self.with(|d, dirty| {
            d.workers.insert(key.to_string(), w);
            *dirty = true;
        });
    }

    /// A text's embedding, if known; a hit marks it used (the last used are kept).
    pub fn text(&self, key: &str) -> Option<Vec<f32>> {
        self.with(|d, dirty| {
            let t = d.texts.get_mut(key)?;
            t.used = stamp_now();
            *dirty = true;
            Some(t.bits.iter().map(|b| f32::from_bits(*b)).collect())
        })
        .flatten()
    }

    pub fn put_text(&self, key: &str, v: &[f32]) {
        self.with(|d, dirty| {
            let bits = v.iter().map(|x| x.to_bits()).collect();
            d.texts.insert(
                key.to_string(),
                Text {
                    bits,
                    used: stamp_now(),
                },
            );
            if d.texts.len() > MAX_TEXTS {
                let mut used: Vec<(u64, String)> =
                    d.texts.iter().map(|(k, t)| (t.used, k.clone())).collect();
                used.sort();
                for (_, k) in used.into_iter().take(d.texts.len() - MAX_TEXTS) {
                    d.texts.remove(&k);
                }
            }
            *dirty = true;
        });
    }

    /// Writes the cache back when something changed (`identity::write_atomically`: a crash
    /// leaves the old or the new file, never half of one). A failure is
    /// logged: the next start measures again, nothing else is lost.
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let mut g = self.data.lock().unwrap_or_else(|p| p.into_inner());
        let (data, dirty) = &mut *g;
        if !*dirty {
            return;
        }
        data.format = FORMAT;
        let written = serde_json::to_vec(data)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| crate::model::identity::write_atomically(path, &bytes));
        match written {
            Ok(()) => *dirty = false,
            Err(e) => tracing::warn!(
                "unable to write the start cache: {e:#}; the next start measures again (is the state directory writable?)"
            ),
        }
    }
}

/// Seconds since the Unix epoch, for [`Timing::measured`] and [`Threads::measured`].
pub fn stamp_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "promptcam-start-cache-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn entries_survive_a_restart_and_texts_exactly() {
        let dir = tmp("roundtrip");
        let c = StartCache::open(&dir);
        let t = Timing {
            int8_ms: 121.4,
            fp32_ms: 140.7,
            chosen: Precision::Quantized,
            what: "CLIP".into(),
            measured: 1,
        };
        c.put_timing("k", t.clone());
        let v = vec![0.1f32, -1.0e-38, f32::MIN_POSITIVE / 3.0, 1.0 / 3.0];
        c.put_text("t", &v);
        c.put_threads(
            "m",
            Threads {
                threads: 2,
                times: vec![(1, 500.0), (2, 400.0)],
                measured: 1,
            },
        );
        c.save();
        let again = StartCache::open(&dir);
        assert_eq!(again.timing("k"), Some(t));
        assert_eq!(again.timing("other"), None);
        let back = again.text("t").unwrap();
        assert!(back.iter().zip(&v).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(again.threads("m").unwrap().threads, 2);
        again.forget_timing("k");
        again.save();
        assert_eq!(StartCache::open(&dir).timing("k"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_broken_file_starts_empty_and_is_rewritten() {
        let dir = tmp("broken");
        std::fs::write(dir.join(FILE), b"{\"format\": 1, \"timings\": [").unwrap();
        let c = StartCache::open(&dir);
        assert_eq!(c.timing("k"), None);
        c.put_text("t", &[1.0]);
        c.save();
        assert_eq!(StartCache::open(&dir).text("t"), Some(vec![1.0]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn off_never_hits_nor_writes() {
        let c = StartCache::off();
        c.put_text("t", &[1.0]);
        assert_eq!(c.text("t"), None);
        c.save();
        assert!(c.path().is_none());
    }

    #[test]
    fn texts_are_capped_least_recently_used_first() {
        let c = StartCache::open(&tmp("cap"));
        for i in 0..MAX_TEXTS + 3 {
            c.put_text(&format!("{i:05}"), &[i as f32]);
        }
        let n = c.with(|d, _| d.texts.len()).unwrap();
        assert_eq!(n, MAX_TEXTS);
    }

    #[test]
    fn the_cpu_signature_keeps_the_lines_that_steer_kernels() {
        let x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\ncpu MHz\t\t: 2994.1\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\ncpu MHz\t\t: 2100.0\n";
        let sig = cpu_signature(x86);
        assert_eq!(
            sig,
            "flags=fpu avx2 fma;model name=AMD EPYC;vendor_id=AuthenticAMD"
        );
        // the clock changes from one start to the next; the instruction sets do not
        assert!(!sig.contains("MHz"));
        let vnni = x86.replace("fma", "fma avx512_vnni");
        assert_ne!(cpu_signature(&vnni), sig);
        let pi5 = "processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n";
        let pi4 = pi5.replace(" asimddp", "").replace("0xd0b", "0xd08");
        assert_ne!(cpu_signature(pi5), cpu_signature(&pi4));
    }

    #[test]
    fn a_touched_model_file_changes_the_stamp() {
        let dir = tmp("stamp");
        std::fs::create_dir_all(dir.join("onnx")).unwrap();
        std::fs::write(dir.join("onnx/model.onnx"), b"one").unwrap();
        let a = files_stamp(&dir);
        std::fs::write(dir.join("onnx/model.onnx"), b"two!").unwrap();
        let b = files_stamp(&dir);
        assert_ne!(a, b);
        std::fs::write(dir.join("onnx/notes.txt"), b"not a model").unwrap();
        assert_eq!(files_stamp(&dir), b);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
