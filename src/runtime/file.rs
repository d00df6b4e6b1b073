//! File: the run-time prompts of one camera as the state directory keeps them across restarts —
//! `<state>/runtime-prompts/<camera>.json`, written atomically after every change, read (and
//! every prompt validated again) at start and by `promptcam check`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Meta;

/// The directory of the files inside the state directory.
pub const DIR: &str = "runtime-prompts";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    camera: String,
    prompts: Vec<Meta>,
}

/// The file of a camera's run-time prompts.
pub fn path(state: &Path, camera: &str) -> PathBuf {
    state.join(DIR).join(format!("{camera}.json"))
}

/// Writes a camera's run-time prompts (an empty list removes the file).
pub fn save(state: &Path, camera: &str, prompts: &[Meta]) -> Result<()> {
    let path = path(state, camera);
    if prompts.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("unable to remove {}", path.display()))
            }
            _ => Ok(()),
        };
    }
    let f = File {
        version: VERSION,
        camera: camera.to_string(),
        prompts: prompts.to_vec(),
    };
    let bytes = serde_json::to_vec_pretty(&f).context("unable to serialize run-time prompts")?;
    crate::model::identity::write_atomically(&path, &bytes)
}

/// Reads a camera's run-time prompts; none when the file does not exist.
pub fn load(state: &Path, camera: &str) -> Result<Vec<Meta>> {
    let path = path(state, camera);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("unable to read {}", path.display())),
    };
    let f: File = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "unable to read the run-time prompts in {}; fix or delete the file",
            path.display()
        )
    })?;
    if f.version != VERSION {
        anyhow::bail!(
            "unable to read the run-time prompts in {}: version {} (this promptcam writes {VERSION}); delete the file",
            path.display(),
            f.version
        );
    }
    Ok(f.prompts)
}
