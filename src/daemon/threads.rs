//! Threads and workers: with `inference_threads = 0` (the default) the number of inference threads is
//! measured once the models are loaded instead of assumed to be all cores: every loaded model
//! (each once, however many cameras share it) runs on a blank frame at each candidate count (`threads::pick_threads`) and the fastest
//! count is kept, fewer threads on a tie. More threads are not always faster: single-core work
//! between the matrix products, a core shared with other processes or SMT siblings can make two
//! threads slower than one.
//!
//! With several cameras and `inference_workers = 0` (the default), the daemon then measures
//! whether workers that analyse cameras side by side, splitting those threads between them
//! (each its own pool), analyse more frames a second than one worker with all of them: tract's
//! matrix products do not scale to many threads as well as independent frames do.

use anyhow::Result;

use crate::config::Config;
use crate::pipeline::start_cache::{StartCache, Threads, Workers};
use crate::pipeline::towers::Towers;

/// Measurements for a log line: each `(count, figure)` as `each` writes it, comma-separated.
fn listed(items: &[(usize, f64)], each: impl Fn(usize, f64) -> String) -> String {
    items
        .iter()
        .map(|(n, x)| each(*n, *x))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Picks and sets the inference thread count for the loaded models; returns it and its ms a
/// frame. A count that an earlier start measured on the same models on this machine (`cache`)
/// is used as it is.
pub(super) fn calibrate(towers: &Towers, cache: &StartCache) -> Result<(usize, Option<f64>)> {
    let ms_at =
        |times: &[(usize, f64)], n: usize| times.iter().find(|(k, _)| *k == n).map(|(_, ms)| *ms);
    let key = towers.calibration_key();
    let show = |times: &[(usize, f64)]| listed(times, |n, ms| format!("{n} thread(s) {ms:.1} ms"));
    if let Some(t) = cache.threads(&key) {
        let n = crate::threads::set_threads(t.threads);
        tracing::info!(
            "inference threads measured on these models at an earlier start: {}; using {n} ({}; delete it to measure again)",
            show(&t.times),
            cache.path().map(|p| p.display().to_string()).unwrap_or_default()
        );
        return Ok((n, ms_at(&t.times, n)));
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
    let ms = ms_at(&times, n);
    cache.put_threads(
        &key,
        Threads {
            threads: n,
            times,
            measured: crate::pipeline::start_cache::stamp_now(),
        },
    );
    Ok((n, ms))
}

/// The inference workers and each one's matrix-product threads, for `threads` threads in all
/// (measured, at `ms` a frame, or configured): `inference_workers` when set (at most one per
/// camera), else measured ([`measure_workers`]) when there are several cameras and cores, one
/// worker otherwise. Sets the executor to each worker's threads.
pub(super) fn workers(
    config: &Config,
    towers: &Towers,
    cache: &StartCache,
    threads: usize,
    ms: Option<f64>,
) -> Result<(usize, usize)> {
    let cameras = config.cameras.len().max(1);
    let each = |w: usize| match (w, config.inference_threads) {
        (1, _) => threads,
        (w, 0) => crate::threads::threads_each(threads, w),
        (_, n) => n,
    };
    let chosen = match config.inference_workers {
        0 => measure_workers(towers, cache, cameras, threads, ms, each)?,
        n if n > cameras => {
            tracing::info!(
                "inference_workers = {n}, but a worker analyses one camera at a time: {cameras} worker(s) for {cameras} camera(s)"
            );
            cameras
        }
        n => n,
    };
    crate::threads::set_threads(each(chosen));
    Ok((chosen, each(chosen)))
}

/// The worker count with the most frames a second of the loaded models run side by side
/// (`crate::threads::parallel_rate`), `each(w)` threads a worker: 1 (at `ms` a frame, when the
/// thread measurement timed it) against 2 and one per camera up to the cores. A count an
/// earlier start measured on the same models, cameras and machine (`cache`) is used as it is.
fn measure_workers(
    towers: &Towers,
    cache: &StartCache,
    cameras: usize,
    threads: usize,
    ms: Option<f64>,
    each: impl Fn(usize) -> usize,
) -> Result<usize> {
    use crate::threads::{choose_workers, cores, parallel_rate, worker_candidates};
    let candidates = worker_candidates(cameras, cores());
    if candidates.is_empty() {
        return Ok(1);
    }
    let show =
        |rates: &[(usize, f64)]| listed(rates, |w, r| format!("{w} worker(s) {r:.2} frames/s"));
    let key = crate::pipeline::start_cache::key(&[
        &towers.calibration_key(),
        &format!("workers for {cameras} cameras, {threads} threads"),
    ]);
    if let Some(w) = cache.workers(&key) {
        tracing::info!(
            "inference workers measured on these models and cameras at an earlier start: {}; using {} ({}; delete it to measure again)",
            show(&w.rates),
            w.workers,
            cache.path().map(|p| p.display().to_string()).unwrap_or_default()
        );
        return Ok(w.workers);
    }
    let frame = crate::pipeline::precision::blank_frame();
    let run = || towers.run_once(&frame);
    let one = match ms {
        Some(ms) => 1000.0 / ms.max(1e-6),
        None => parallel_rate(1, threads, &run)?,
    };
    let mut rates = vec![(1, one)];
    for w in candidates {
        rates.push((w, parallel_rate(w, each(w), &run)?));
    }
    let w = choose_workers(&rates);
    tracing::info!(
        "inference workers measured on the loaded models, side by side: {}{}; using {w}",
        show(&rates),
        if ms.is_some() {
            " (1 from the thread measurement)"
        } else {
            ""
        }
    );
    cache.put_workers(
        &key,
        Workers {
            workers: w,
            threads: each(w),
            rates,
            measured: crate::pipeline::start_cache::stamp_now(),
        },
    );
    Ok(w)
}
