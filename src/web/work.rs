//! Work: the bounds on the API's heavy requests (the lab's, `/api/search`, `/api/history`).
//! At most `[http] lab_queries` (default 1) run at once; the others wait up to [`QUEUE_WAIT`]
//! for their turn, then get 503 with `Retry-After`. A request's work runs on one of the gate's
//! own `lab` threads and holds its turn until it ends, so a client that leaves cannot free a turn
//! its work still uses; but its work stops early: the request's future is dropped, which
//! interrupts the request's SQLite statement and marks the job cancelled for the steps between
//! statements. Work that runs past [`DEADLINE`] is cancelled the same way and answered 503.
//!
//! The `lab` threads run in Linux's idle scheduling class (`SCHED_IDLE`), and [`LAB_NICE`] nicer,
//! which is what remains where that class is refused: where the cores are busy (a Pi analysing
//! its cameras) the inference threads get the CPU first and the lab's queries take longer,
//! instead of the cameras' frames. Measured by `scripts/lab-load.py` (BENCHMARKS.md): with a
//! lower nice value alone, 20 clients querying a 1 GB history slowed inference 1.63x on 2 cores;
//! in the idle class 1.18-1.22x. The work's model runs (the lab's CLIP text tower) stay on that
//! thread: tract's matrix products there never borrow the inference threads' pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::Semaphore;

use super::api::ApiError;
use crate::history::store::Store;

/// How long a heavy request waits for a turn before it is refused.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);
/// How long a heavy request's work may run (a full history's lab query on a Pi takes seconds).
pub const DEADLINE: Duration = Duration::from_secs(60);
/// What the 503 tells the client to wait before trying again, in seconds.
pub const RETRY_AFTER_S: u64 = 2;
/// How much nicer (lower in CPU priority) the `lab` threads are than the daemon.
pub const LAB_NICE: i32 = 10;

/// A heavy request's work, handed to a `lab` thread.
type Task = Box<dyn FnOnce() + Send>;

/// The turns of the heavy requests, and the threads their work runs on.
pub struct Gate {
    turns: Arc<Semaphore>,
    configured: usize,
    wait: Duration,
    deadline: Duration,
    tasks: std::sync::mpsc::Sender<Task>,
}

/// One request's work: whether its client is gone, and the statement to interrupt then.
#[derive(Default)]
pub struct Job {
    cancelled: AtomicBool,
    interrupt: Mutex<Option<rusqlite::InterruptHandle>>,
}

impl Job {
    /// Lets a cancellation interrupt `store`'s statements from now on.
    pub fn attach(&self, store: &Store) {
        *self
            .interrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(store.interrupt_handle());
    }

    /// Fails when the client is gone, so the work between statements stops too.
    pub fn check(&self) -> Result<(), ApiError> {
        match self.cancelled.load(Ordering::Relaxed) {
            true => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request was cancelled: its client went away",
            )),
            false => Ok(()),
        }
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
        if let Some(h) = self
            .interrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            h.interrupt();
        }
    }
}

/// Cancels the job when the request's future is dropped before the work returned.
struct CancelOnDrop(Option<Arc<Job>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            job.cancel();
        }
    }
}

/// Lowers the calling thread's CPU priority by [`LAB_NICE`] (Linux: the nice value is the
/// thread's own), and puts it in the idle scheduling class. A failure only leaves it at the
/// daemon's priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; get/setpriority and sched_setscheduler read and set
    // this thread's own scheduling
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if libc::setpriority(libc::PRIO_PROCESS, tid, (now + LAB_NICE).min(19)) != 0 {
            tracing::debug!(
                "unable to lower the lab thread's priority: {}",
                std::io::Error::last_os_error()
            );
        }
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            tracing::debug!(
                "unable to put the lab thread in the idle class: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

impl Gate {
    /// `turns` requests' work at once, on as many `lab` threads (they end with the gate).
    pub fn new(turns: usize, wait: Duration, deadline: Duration) -> Gate {
        let turns = turns.max(1);
        let (tasks, queue) = std::sync::mpsc::channel::<Task>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..turns {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("lab-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        match next {
                            Ok(task) => task(),
                            Err(_) => break,
                        }
                    }
                });
            if let Err(e) = started {
                tracing::error!("unable to start a lab thread: {e}; lab and history queries wait for the others");
            }
        }
        Gate {
            turns: Arc::new(Semaphore::new(turns)),
            configured: turns,
            wait,
            deadline,
            tasks,
        }
    }

    /// Runs `f` on a `lab` thread in its turn (see the module header).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Job) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let turn = tokio::time::timeout(self.wait, self.turns.clone().acquire_owned())
            .await
            .map_err(|_| {
                ApiError::busy(format!(
                    "busy: other lab or history queries are running (at most {} at once: [http] lab_queries); retry in {RETRY_AFTER_S} s",
                    self.configured
                ))
            })?
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
        let job = Arc::new(Job::default());
        let mut guard = CancelOnDrop(Some(job.clone()));
        let (done, work) = tokio::sync::oneshot::channel();
        let task: Task = Box::new(move || {
            let _turn = turn;
            // tract's products on this thread alone, not on the pool inference runs on; a
            // panic drops `done`, which answers 500
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tract_linalg::multithread::multithread_tract_scope(
                    tract_linalg::multithread::Executor::SingleThread,
                    || f(&job),
                )
            }));
            if let Ok(r) = r {
                let _ = done.send(r);
            }
        });
        self.tasks
            .send(task)
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
        // past the deadline the guard, dropped on return, cancels the work
        let done = tokio::time::timeout(self.deadline, work)
            .await
            .map_err(|_| {
                ApiError::busy(format!(
                    "the query took longer than {} s and was stopped; ask for fewer hours",
                    self.deadline.as_secs()
                ))
            })?;
        guard.0 = None;
        done.unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request failed: its work panicked (the daemon's log says where)",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use std::sync::mpsc::channel;
    use std::time::Instant;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// This thread's nice value.
    fn nice() -> i32 {
        // SAFETY: gettid has no preconditions; getpriority reads this thread's nice value
        unsafe {
            libc::getpriority(
                libc::PRIO_PROCESS,
                libc::syscall(libc::SYS_gettid) as libc::id_t,
            )
        }
    }

    #[test]
    fn the_work_runs_on_a_lab_thread_of_lower_priority_and_a_panic_answers_500() {
        let gate = Gate::new(1, Duration::from_secs(1), DEADLINE);
        let ours = nice();
        let (name, theirs) = runtime()
            .block_on(gate.run(|_| {
                let name = std::thread::current().name().map(str::to_string);
                // SAFETY: sched_getscheduler(0) reads this thread's policy
                Ok((name, (nice(), unsafe { libc::sched_getscheduler(0) })))
            }))
            .unwrap_or_else(|e| panic!("{:?}", e.into_response().status()));
        assert_eq!(name.as_deref(), Some("lab-0"));
        assert_eq!(theirs.0, (ours + LAB_NICE).min(19), "ours {ours}");
        assert_eq!(theirs.1, libc::SCHED_IDLE, "the idle scheduling class");
        let r = runtime().block_on(gate.run(|_| -> Result<(), ApiError> { panic!("a bug") }));
        assert_eq!(
            r.map_err(|e| e.into_response().status()),
            Err(StatusCode::INTERNAL_SERVER_ERROR)
        );
        // the thread survived the panic: the next request is served
        assert!(runtime().block_on(gate.run(|_| Ok(1))).is_ok());
    }

    #[test]
    fn a_second_query_waits_then_is_refused_with_retry_after() {
        let gate = Arc::new(Gate::new(1, Duration::from_millis(200), DEADLINE));
        runtime().block_on(async {
            let (release, held) = channel::<()>();
            let (started, running) = tokio::sync::oneshot::channel::<()>();
            let g = gate.clone();
            let first = tokio::spawn(async move {
                g.run(move |_| {
                    started.send(()).unwrap();
                    held.recv().ok();
                    Ok(1)
                })
                .await
            });
            running.await.unwrap();
            let t = Instant::now();
            let second = gate.run(|_| Ok(2)).await;
            let waited = t.elapsed();
            let Err(e) = second else {
                panic!("ran beside the first")
            };
            assert!(waited >= Duration::from_millis(150), "{waited:?}");
            let r = e.into_response();
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                r.headers()["retry-after"],
                RETRY_AFTER_S.to_string().as_str()
            );
            release.send(()).unwrap();
            assert_eq!(first.await.unwrap().ok(), Some(1));
            // the turn is free again
            assert_eq!(gate.run(|_| Ok(3)).await.ok(), Some(3));
        });
    }

    #[test]
    fn a_query_whose_client_leaves_stops_and_frees_its_turn() {
        let gate = Gate::new(1, Duration::from_secs(30), DEADLINE);
        let dir = std::env::temp_dir().join(format!("promptcam-work-{}", std::process::id()));
        drop(Store::open(&dir).unwrap());
        let (ended, end) = channel();
        let d = dir.clone();
        runtime().block_on(async {
            // the client leaves after 300 ms: its request's future is dropped
            let left = tokio::time::timeout(
                Duration::from_millis(300),
                gate.run(move |job| {
                    let path = d.join(crate::history::store::FILE_NAME);
                    let s = Store::open_read_only(&path).unwrap();
                    job.attach(&s);
                    let t = Instant::now();
                    let r = s.spin();
                    let cancelled = job.check().is_err();
                    ended.send((t.elapsed(), r.is_err(), cancelled)).unwrap();
                    Ok(())
                }),
            )
            .await;
            assert!(left.is_err(), "the client left before the work ended");
            // the next query gets the turn once the interrupted work has given it back
            let t = Instant::now();
            assert_eq!(gate.run(|_| Ok(5)).await.ok(), Some(5));
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        });
        let (took, interrupted, cancelled) = end.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(interrupted && cancelled, "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn work_past_the_deadline_is_stopped_and_answered_503() {
        let gate = Gate::new(1, Duration::from_secs(1), Duration::from_millis(300));
        let dir = std::env::temp_dir().join(format!("promptcam-deadline-{}", std::process::id()));
        drop(Store::open(&dir).unwrap());
        let (ended, end) = channel();
        let d = dir.clone();
        let t = Instant::now();
        let r = runtime().block_on(gate.run(move |job| {
            let s = Store::open_read_only(&d.join(crate::history::store::FILE_NAME)).unwrap();
            job.attach(&s);
            let r = s.spin();
            ended.send(r.is_err()).unwrap();
            Ok(())
        }));
        let Err(e) = r else {
            panic!("a query of minutes finished")
        };
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            end.recv_timeout(Duration::from_secs(5)).unwrap(),
            "interrupted"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lab_work_never_runs_on_the_inference_pool() {
        use tract_linalg::multithread::{current_tract_executor, set_default_executor, Executor};
        let before = current_tract_executor();
        set_default_executor(Executor::multithread(2));
        let gate = Gate::new(1, Duration::from_secs(1), DEADLINE);
        let inside = runtime().block_on(gate.run(|_| Ok(crate::threads::current_threads())));
        let outside = crate::threads::current_threads();
        set_default_executor(before);
        assert_eq!((inside.ok(), outside), (Some(1), 2));
    }
}
