//! Threads: with `inference_threads = 0` (the default) the number of inference threads is
//! measured once the models are loaded instead of assumed to be all cores: every loaded model
//! (each once, however many cameras share it) runs on a blank frame at each candidate count (`threads::pick_threads`) and the fastest
//! count is kept, fewer threads on a tie. More threads are not always faster: single-core work
//! between the matrix products, a core shared with other processes or SMT siblings can make two
//! threads slower than one.

use anyhow::Result;

use crate::pipeline::start_cache::{StartCache, Threads};
use crate::pipeline::towers::Towers;

/// Picks and sets the inference thread count for the loaded models; returns it. A count that
/// an earlier start measured on the same models on this machine (`cache`) is used as it is.
pub(super) fn calibrate(towers: &Towers, cache: &StartCache) -> Result<usize> {
    let key = towers.calibration_key();
    let show = |times: &[(usize, f64)]| {
        times
            .iter()
            .map(|(n, ms)| format!("{n} thread(s) {ms:.1} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(t) = cache.threads(&key) {
        let n = crate::threads::set_threads(t.threads);
        tracing::info!(
            "inference threads measured on these models at an earlier start: {}; using {n} ({}; delete it to measure again)",
            show(&t.times),
            cache.path().map(|p| p.display().to_string()).unwrap_or_default()
        );
        return Ok(n);
    }
    let frame = crate::pipeline::precision::blank_frame();
    let known = towers.timed();
    let (n, times) = crate::threads::pick_threads(|| towers.run_once(&frame), known)?;
    let reused = match known {
        Some((k, _)) => format!(" ({k} from the precision timings)"),
        None => String::new(),
    };
    tracing::info!(
        "inference threads measured on the loaded models: {}{reused}; using {n}",
        show(&times)
    );
    cache.put_threads(
        &key,
        Threads {
            threads: n,
            times,
            measured: crate::pipeline::start_cache::stamp_now(),
        },
    );
    Ok(n)
}
