//! Threads: tract's matrix-product executor, which every model's products run on. The daemon
//! sets it at start (`inference_threads`; 0 = measured: [`pick_threads`] times the loaded models
//! at each candidate count and keeps the fastest), `promptcam bench` and the CLI set it from
//! `--threads`.

use std::time::Instant;

use anyhow::Result;

/// This machine's cores (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// An executor of `n` threads (named `name-k`), or the calling thread alone for 1.
pub fn executor(n: usize, name: &str) -> tract_linalg::multithread::Executor {
    use tract_linalg::multithread::Executor;
    match n {
        0 | 1 => Executor::SingleThread,
        n => Executor::multithread_with_name(n, name),
    }
}

/// Sets tract's matrix-product executor: `threads` workers (0 = all cores).
pub fn set_threads(threads: usize) -> usize {
    let n = if threads == 0 { cores() } else { threads };
    tract_linalg::multithread::set_threading_element_threshold(crate::model::fused::PARALLEL_MIN);
    tract_linalg::multithread::set_default_executor(executor(n, "tract-default"));
    n
}

/// Runs `f` with its matrix products on `threads` threads of its own (an inference worker
/// beside others: each has its own pool, so two workers' products do not queue on one).
pub fn with_threads<R>(threads: usize, name: &str, f: impl FnOnce() -> R) -> R {
    tract_linalg::multithread::multithread_tract_scope(executor(threads, name), f)
}

/// Runs `f` on one of the current executor's own threads, the caller waiting: what a model run
/// goes through (`model::graph::run`). Started from outside the pool, each of tract's parallel
/// matrix products is a job handed to the pool and a wait for its end: two thread wake-ups per
/// product, ~100 products a frame, and under a hypervisor a wake-up costs about what a small
/// product's half does. Started inside, the running thread takes part of each product itself
/// and another pool thread steals the rest. Int8 CLIP at 2 threads on a Zen 4: 40.8 -> 36.7 ms
/// a frame.
///
/// One model run at a time per pool: a pool thread waiting for a stolen part of a product runs
/// whatever job is queued meanwhile, and a second model run started there would find tract's
/// per-thread matrix-product scratch still borrowed by the first ("RefCell already borrowed",
/// seen with two threads running CLIP on one pool). A run that finds its pool occupied runs
/// on its own thread, as every run did before. With one thread, or already on a pool thread,
/// `f` runs here too.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use tract_linalg::multithread::{current_tract_executor, multithread_tract_scope, Executor};
    match current_tract_executor() {
        Executor::MultiThread(pool) if pool.current_thread_index().is_none() => {
            match Occupied::take(&pool) {
                Some(_occupied) => {
                    // The executor is also set on the pool thread: a worker's own
                    // (`with_threads`) is thread-local, and the pool thread would otherwise
                    // see the default one.
                    // The panic is carried past the scope, so that the scope ends and the pool
                    // thread does not keep its own pool alive.
                    let executor = Executor::MultiThread(pool.clone());
                    let run = move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                    match pool.install(move || multithread_tract_scope(executor, run)) {
                        Ok(r) => r,
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
                None => f(),
            }
        }
        _ => f(),
    }
}

/// The pools a model run occupies now, by address.
static OCCUPIED: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// A pool marked occupied by a model run, until dropped (a panic included).
struct Occupied(usize);

impl Occupied {
    fn take(pool: &std::sync::Arc<rayon::ThreadPool>) -> Option<Occupied> {
        let key = std::sync::Arc::as_ptr(pool) as usize;
        let mut pools = OCCUPIED.lock().unwrap_or_else(|e| e.into_inner());
        if pools.contains(&key) {
            return None;
        }
        pools.push(key);
        Some(Occupied(key))
    }
}

impl Drop for Occupied {
    fn drop(&mut self) {
        let mut pools = OCCUPIED.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|p| *p != self.0);
    }
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
    let cores = cores();
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

/// The worker counts worth trying for `cameras` cameras on `cores` cores: two, and one per
/// camera up to the cores (a worker per camera at most: a camera's frames are analysed in order).
pub fn worker_candidates(cameras: usize, cores: usize) -> Vec<usize> {
    let most = cameras.min(cores);
    let mut v: Vec<usize> = [2, most]
        .into_iter()
        .filter(|w| *w >= 2 && *w <= most)
        .collect();
    v.dedup();
    v
}

/// The matrix-product threads each of `workers` workers gets out of `threads` in all.
pub fn threads_each(threads: usize, workers: usize) -> usize {
    (threads / workers.max(1)).max(1)
}

/// Frames a second of `workers` threads running `run` side by side, `threads` matrix-product
/// threads each: each runs it once to warm up (its pool, its buffers), then all start together
/// and run it twice; the rate is the frames over the slowest worker's time.
pub fn parallel_rate(
    workers: usize,
    threads: usize,
    run: &(dyn Fn() -> Result<()> + Sync),
) -> Result<f64> {
    let ready = std::sync::Barrier::new(workers);
    let times = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let ready = &ready;
                s.spawn(move || {
                    with_threads(threads, &format!("tract-m{w}"), || {
                        let warm = run();
                        ready.wait();
                        warm?;
                        let t = Instant::now();
                        run()?;
                        run()?;
                        Ok(t.elapsed().as_secs_f64())
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a measuring thread panicked")))
            })
            .collect::<Result<Vec<f64>>>()
    })?;
    let slowest = times.into_iter().fold(0.0, f64::max);
    Ok(2.0 * workers as f64 / slowest.max(1e-9))
}

/// The worker count of the highest rate among `(workers, frames a second)`; more workers must
/// be at least 10% faster than fewer to win (each holds its own activations and buffers).
pub fn choose_workers(rates: &[(usize, f64)]) -> usize {
    let mut sorted = rates.to_vec();
    sorted.sort_by_key(|(n, _)| *n);
    let mut best = sorted.first().copied().unwrap_or((1, 0.0));
    for (n, r) in sorted.into_iter().skip(1) {
        if r > best.1 * 1.1 {
            best = (n, r);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_timing_is_not_run_again() {
        let cores = cores();
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
    fn a_model_run_goes_to_the_executors_own_threads() {
        let here = std::thread::current().id();
        let on = |threads| {
            with_threads(threads, "in-pool-test", || {
                in_pool(|| {
                    let t = std::thread::current();
                    (t.id(), t.name().map(str::to_string), current_threads())
                })
            })
        };
        // a pool thread, which sees the worker's own executor rather than the default one
        let (id, name, n) = on(2);
        assert_ne!(id, here);
        assert!(name.is_some_and(|n| n.starts_with("in-pool-test-")));
        assert_eq!(n, 2);
        // one thread: the caller's
        assert_eq!(on(1).0, here);
        // already on a pool thread: no second hand-over
        let nested = with_threads(2, "in-pool-test", || {
            in_pool(|| {
                let id = std::thread::current().id();
                (id, in_pool(|| std::thread::current().id()))
            })
        });
        assert_eq!(nested.0, nested.1);
    }

    #[test]
    fn a_panicking_run_leaves_the_pool_free_and_unreferenced() {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        let executor = executor(2, "panic-test");
        let Executor::MultiThread(pool) = &executor else {
            panic!("a 2-thread executor has a pool");
        };
        let refs = std::sync::Arc::strong_count(pool);
        // on a thread of its own, whose executor scope the panic also leaves set until it ends
        let caller = executor.clone();
        let panicked = std::thread::spawn(move || {
            multithread_tract_scope(caller, || in_pool(|| panic!("a failing model run")))
        })
        .join();
        assert!(panicked.is_err());
        // the pool thread's executor scope ended: no reference to the pool is left behind
        assert_eq!(std::sync::Arc::strong_count(pool), refs);
        // and the pool takes the next run
        let caller = std::thread::current().id();
        let on_pool = multithread_tract_scope(executor.clone(), || {
            in_pool(|| std::thread::current().id() != caller)
        });
        assert!(on_pool);
    }

    #[test]
    fn a_second_run_on_an_occupied_pool_stays_on_its_own_thread() {
        use std::sync::Barrier;
        use tract_linalg::multithread::multithread_tract_scope;
        let pool = executor(2, "occupied-test");
        // both runs wait for each other, so they overlap
        let both = Barrier::new(2);
        let on_pool: Vec<bool> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..2)
                .map(|_| {
                    let (pool, both) = (pool.clone(), &both);
                    s.spawn(move || {
                        let caller = std::thread::current().id();
                        multithread_tract_scope(pool, || {
                            in_pool(|| {
                                both.wait();
                                std::thread::current().id() != caller
                            })
                        })
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let mut on_pool = on_pool;
        on_pool.sort();
        assert_eq!(
            on_pool,
            [false, true],
            "one run on the pool, the other on its caller"
        );
        // and the pool is free again afterwards
        let after = multithread_tract_scope(pool, || {
            let caller = std::thread::current().id();
            in_pool(|| std::thread::current().id() != caller)
        });
        assert!(after);
    }

    #[test]
    fn more_workers_win_only_when_clearly_faster() {
        assert_eq!(choose_workers(&[(1, 10.0), (2, 17.0)]), 2);
        assert_eq!(choose_workers(&[(2, 10.9), (1, 10.0)]), 1);
        assert_eq!(choose_workers(&[(1, 10.0), (2, 12.0), (4, 12.5)]), 2);
        assert_eq!(worker_candidates(4, 2), vec![2]);
        assert_eq!(worker_candidates(4, 16), vec![2, 4]);
        assert_eq!(worker_candidates(1, 16), Vec::<usize>::new());
        assert_eq!(worker_candidates(3, 1), Vec::<usize>::new());
        assert_eq!(threads_each(2, 2), 1);
        assert_eq!(threads_each(8, 2), 4);
        assert_eq!(threads_each(3, 4), 1);
    }

    #[test]
    fn workers_side_by_side_are_timed_together() {
        // two workers that each sleep 30 ms a frame: side by side, about twice one's rate
        let run = || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            Ok(())
        };
        let one = parallel_rate(1, 1, &run).unwrap();
        let two = parallel_rate(2, 1, &run).unwrap();
        assert!(one > 20.0 && one < 34.0, "{one}");
        assert!(two > 1.6 * one, "{one} {two}");
        // a failing run is an error, not a rate
        let fail = || anyhow::bail!("no model");
        assert!(parallel_rate(2, 1, &fail).is_err());
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
