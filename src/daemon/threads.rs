//! Threads: with `inference_threads = 0` (the default) the number of inference threads is
//! measured once the models are loaded instead of assumed to be all cores: every loaded model
//! (each once, however many cameras share it) runs on a blank frame at each candidate count (`threads::pick_threads`) and the fastest
//! count is kept, fewer threads on a tie. More threads are not always faster: single-core work
//! between the matrix products, a core shared with other processes or SMT siblings can make two
//! threads slower than one.

use anyhow::Result;

use crate::pipeline::towers::Towers;

/// Picks and sets the inference thread count for the loaded models; returns it.
pub(super) fn calibrate(towers: &Towers) -> Result<usize> {
    let frame = crate::pipeline::precision::blank_frame();
    let (n, times) = crate::threads::pick_threads(|| towers.run_once(&frame))?;
    let measured: Vec<String> = times
        .iter()
        .map(|(n, ms)| format!("{n} thread(s) {ms:.1} ms"))
        .collect();
    tracing::info!(
        "inference threads measured on the loaded models: {}; using {n}",
        measured.join(", ")
    );
    Ok(n)
}
