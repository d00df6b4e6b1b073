//! Identity: which CLIP checkpoint made an image embedding, so that embeddings (and the marks
//! and learned prompts made of them) are never mixed across models. It is the SHA-256 of the
//! image tower's weights file: the fp32 `vision_model.onnx` when the directory has it (int8
//! files of the same checkpoint then share the identity: their embeddings are the checkpoint's
//! within quantization noise), else the int8 one, else the combined `model.onnx`.
//!
//! Hashing a full-size tower reads 350 MB (seconds on a Pi), so results are kept in a small
//! JSON cache (in the state directory) keyed by the file's path, size and modification time.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::dir::{ModelDir, Precision};

/// A CLIP checkpoint's identity: the weights' SHA-256 and, for people, the directory's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    pub name: String,
    pub sha256: String,
}

impl ModelIdentity {
    /// The identity of a CLIP directory's image tower; `cache` is a JSON file that remembers
    /// hashes between runs (created when missing; `None`: hash every time).
    pub fn of(dir: &ModelDir, cache: Option<&Path>) -> Result<ModelIdentity> {
        let file = [
            ("vision_model", Precision::Fp32),
            ("vision_model", Precision::Quantized),
            ("model", Precision::Fp32),
            ("model", Precision::Quantized),
        ]
        .iter()
        .map(|(stem, p)| dir.onnx_path(stem, *p))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "unable to identify the CLIP model in {}: it has no image tower file ({}); {}",
                dir.root.display(),
                dir.onnx_listing(),
                super::dir::FETCH_HINT
            )
        })?;
        let name = dir
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.root.display().to_string());
        Ok(ModelIdentity {
            name,
            sha256: sha256_cached(&file, cache)?,
        })
    }

    /// A short form for messages: `clip-vit-base-patch32 (sha256 0123456789ab)`.
    pub fn short(&self) -> String {
        format!(
            "{} (sha256 {})",
            self.name,
            &self.sha256[..self.sha256.len().min(12)]
        )
    }
}

impl std::fmt::Display for ModelIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.short())
    }
}

/// What the cache keeps per file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Cached {
    len: u64,
    modified_ns: u128,
    sha256: String,
}

/// Hashes already made in this process, by file.
static MEMO: Mutex<BTreeMap<PathBuf, Cached>> = Mutex::new(BTreeMap::new());

/// A file's size and modification time (ns since the epoch): what says it changed, short of
/// hashing it.
pub fn stamp(path: &Path) -> Result<(u64, u128)> {
    let m =
        std::fs::metadata(path).with_context(|| format!("unable to read {}", path.display()))?;
    let modified = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((m.len(), modified))
}

/// The file's SHA-256 in hex, from the memo, the cache file, or read.
pub fn sha256_cached(path: &Path, cache: Option<&Path>) -> Result<String> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (len, modified_ns) = stamp(&path)?;
    let fresh = |c: &Cached| c.len == len && c.modified_ns == modified_ns;
    let mut memo = MEMO
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(c) = memo.get(&path).filter(|c| fresh(c)) {
        return Ok(c.sha256.clone());
    }
    let mut on_disk: BTreeMap<PathBuf, Cached> = cache
        .and_then(|c| std::fs::read(c).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let sha256 = match on_disk.get(&path).filter(|c| fresh(c)) {
        Some(c) => c.sha256.clone(),
        None => {
            let sha256 = sha256_file(&path)?;
            on_disk.insert(
                path.clone(),
                Cached {
                    len,
                    modified_ns,
                    sha256: sha256.clone(),
                },
            );
            if let Some(c) = cache {
                // a cache that cannot be written costs a hash at the next start, nothing more
                if let Err(e) = write_atomically(c, &serde_json::to_vec_pretty(&on_disk)?) {
                    tracing::debug!(
                        "unable to write the model hash cache {}: {e:#}",
                        c.display()
                    );
                }
            }
            sha256
        }
    };
    memo.insert(
        path,
        Cached {
            len,
            modified_ns,
            sha256: sha256.clone(),
        },
    );
    Ok(sha256)
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("unable to read {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("unable to read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader (or a power cut)
/// sees the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("unable to create {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("unable to write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_the_weights_hash_and_the_cache_follows_the_file() {
        let d = std::env::temp_dir().join(format!("promptcam-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("w.onnx");
        std::fs::write(&f, b"abc").unwrap();
        let cache = d.join("cache.json");
        // the SHA-256 of "abc" (FIPS 180-2's first example)
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_cached(&f, Some(&cache)).unwrap(), abc);
        assert!(std::fs::read_to_string(&cache).unwrap().contains(abc));
        // a changed file (another size) is hashed again, not taken from memo or cache
        std::fs::write(&f, b"abcd").unwrap();
        let abcd = sha256_cached(&f, Some(&cache)).unwrap();
        assert_ne!(abcd, abc);
        assert_eq!(abcd, sha256_file(&f).unwrap());
        // the identity of a real CLIP directory names it and is stable
        let dir = ModelDir::open(Path::new("models/tiny/clip")).unwrap();
        let a = ModelIdentity::of(&dir, None).unwrap();
        assert_eq!(a.name, "clip");
        assert_eq!(a.sha256.len(), 64);
        assert_eq!(a, ModelIdentity::of(&dir, Some(&cache)).unwrap());
        let _ = std::fs::remove_dir_all(&d);
    }
}
