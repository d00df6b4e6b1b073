//! Threads: tract's matrix-product executor, which every model's products run on. The daemon
//! sets it at start (`inference_threads`; 0 = measured: [`pick_threads`] times the loaded models
//! at each candidate count and keeps the fastest), `promptcam bench` and the CLI set it from
//! `--threads`.

use std::time::Instant;

use anyhow::Result;

/// Sets tract's matrix-product executor: `threads` workers (0 = all cores).
pub fn set_threads(threads: usize) -> usize {
    use tract_linalg::multithread::{set_default_executor, Executor};
    let n = if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    };
    set_default_executor(if n > 1 {
        Executor::multithread(n)
    } else {
        Executor::SingleThread
    });
    n
}

/// How many threads tract's matrix-product executor runs now.
pub fn current_threads() -> usize {
    use tract_linalg::multithread::{current_tract_executor, Executor};
    match current_tract_executor() {
        Executor::SingleThread => 1,
        Executor::MultiThread(pool) => pool.current_num_threads(),
        Executor::RayonGlobal => rayon::current_num_threads(),
    }
}

/// The thread counts worth trying on `cores` cores: all of them, one, and half from 4 up.
fn candidates(cores: usize) -> Vec<usize> {
    let mut v = vec![1, cores.max(1)];
    if cores >= 4 {
        v.push(cores / 2);
    }
    v.sort();
    v.dedup();
    v
}

/// The fastest of `(threads, ms)` measurements; more threads must be at least 3% faster than
/// fewer to win, so a tie goes to the count that leaves cores free.
pub fn choose_threads(times: &[(usize, f64)]) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort_by_key(|(n, _)| *n);
    let mut best = sorted.first().copied().unwrap_or((1, 0.0));
    for (n, t) in sorted.into_iter().skip(1) {
        if t < best.1 * 0.97 {
            best = (n, t);
        }
    }
    best.0
}

/// Times `run` (one analysed frame's models) at the candidate thread counts of this machine —
/// one warm-up and the best of two timed runs each — and leaves the executor at the fastest
/// ([`choose_threads`]). `known` is a (threads, ms) already measured the same way (the
/// precision choice's timings), not run again. Returns the choice and the times: more threads
/// are not always faster (issue 14: a 2-core Xeon ran int8 CLIP slower on two threads than on
/// one).
pub fn pick_threads(
    mut run: impl FnMut() -> Result<()>,
    known: Option<(usize, f64)>,
) -> Result<(usize, Vec<(usize, f64)>)> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut times = vec![];
    for n in candidates(cores) {
        if let Some(k) = known.filter(|(k, _)| *k == n) {
            times.push(k);
            continue;
        }
        set_threads(n);
        run()?;
        let mut best = f64::INFINITY;
        for _ in 0..2 {
            let t = Instant::now();
            run()?;
            best = best.min(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.push((n, best));
    }
    let n = choose_threads(&times);
    set_threads(n);
    Ok((n, times))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_timing_is_not_run_again() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let all = candidates(cores);
        let mut runs = 0;
        // the known count is the fastest by far: chosen without running it
        let (n, times) = pick_threads(
            || {
                runs += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
                Ok(())
            },
            Some((cores, 0.001)),
        )
        .unwrap();
        assert_eq!(runs, 3 * (all.len() - 1));
        assert_eq!(times.len(), all.len());
        assert!(times.contains(&(cores, 0.001)), "{times:?}");
        assert_eq!(n, cores);
        set_threads(0);
    }

    #[test]
    fn more_threads_win_only_when_clearly_faster() {
        assert_eq!(choose_threads(&[(2, 30.0), (1, 40.0)]), 2);
        // slower, or within 3%: the fewer threads
        assert_eq!(choose_threads(&[(2, 64.4), (1, 57.2)]), 1);
        assert_eq!(choose_threads(&[(1, 40.0), (2, 39.5)]), 1);
        assert_eq!(choose_threads(&[(1, 100.0), (2, 60.0), (4, 59.0)]), 2);
        assert_eq!(choose_threads(&[(4, 30.0), (1, 100.0), (2, 60.0)]), 4);
        assert_eq!(candidates(2), vec![1, 2]);
        assert_eq!(candidates(4), vec![1, 2, 4]);
        assert_eq!(candidates(1), vec![1]);
    }
}
