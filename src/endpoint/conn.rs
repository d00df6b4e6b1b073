//! Connections: the endpoint's accept loop, which keeps idle and slow clients from holding the
//! daemon's file descriptors (a camera, the spool and the models need them too):
//!
//! - time: a request head must be complete within `http.idle_timeout` of the connection opening
//!   or of the previous response (hyper's header read timeout covers slow heads and idle
//!   keep-alive alike), and a connection whose socket makes no progress for that long while no
//!   request is being answered (a client that stopped reading) is closed;
//! - number: at most [`Limits::max`] connections are open. One more closes the open connection
//!   that has been quiet longest and is not being answered, so a monitor's `/healthz` gets in even
//!   past a crowd of idle sockets; when every open connection is being answered, the new one is
//!   closed at once. The listening socket keeps further clients in the kernel's backlog;
//! - accept errors (e.g. out of descriptors) are logged at most every 10 s and retried after
//!   100 ms, never in a hot loop.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

/// How many connections may be open, and how long one may sit without progress.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub max: usize,
    pub idle: Duration,
}

/// `configured` lowered to a quarter of the process's open-file limit (`RLIMIT_NOFILE`), so the
/// endpoint can never take the descriptors the cameras and the spool need.
pub(super) fn max_connections(configured: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !ok || limit.rlim_cur == libc::RLIM_INFINITY {
        return configured;
    }
    configured.min(
        usize::try_from(limit.rlim_cur / 4)
            .unwrap_or(usize::MAX)
            .max(2),
    )
}

/// When a connection last made progress, and whether a request on it is being answered.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn quiet_for(&self) -> Duration {
        self.last().elapsed()
    }

    fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }
}

/// Marks a request as being answered while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client socket that records every read or write that moved bytes.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An open connection as the accept loop sees it.
struct Open {
    activity: Arc<Activity>,
    evict: Arc<Notify>,
}

type Table = Arc<Mutex<BTreeMap<u64, Open>>>;

fn lock(table: &Table) -> MutexGuard<'_, BTreeMap<u64, Open>> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes a connection out of the table when its task ends, however it ends.
struct Leave {
    id: u64,
    table: Table,
}

impl Drop for Leave {
    fn drop(&mut self) {
        lock(&self.table).remove(&self.id);
    }
}

/// Logs at most one warning every 10 s.
struct Throttled(Option<Instant>);

impl Throttled {
    fn warn(&mut self, message: impl FnOnce() -> String) {
        if self
            .0
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.0 = Some(Instant::now());
            tracing::warn!("{}", message());
        }
    }
}

/// What [`make_room`] did.
#[derive(Debug, PartialEq)]
enum Room {
    /// Below the limit.
    Free,
    /// The quietest connection not being answered was told to close.
    Evicted,
    /// Every open connection is being answered.
    Full,
}

/// Makes room for one more connection.
fn make_room(table: &Table, max: usize) -> Room {
    let mut open = lock(table);
    if open.len() < max {
        return Room::Free;
    }
    let quietest = open
        .iter()
        .filter(|(_, o)| !o.activity.is_busy())
        .max_by_key(|(_, o)| o.activity.quiet_for())
        .map(|(id, _)| *id);
    match quietest.and_then(|id| open.remove(&id)) {
        Some(o) => {
            o.evict.notify_one();
            Room::Evicted
        }
        None => Room::Full,
    }
}

/// Serves `router` on `listener` within `limits` until `stop` resolves; then stops accepting
/// and gives requests in flight 2 s to finish.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let table: Table = Arc::default();
    let (closing, closed) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let (mut next, mut evicted, mut refused) = (0u64, 0u64, 0u64);
    let (mut accept_warning, mut limit_warning) = (Throttled(None), Throttled(None));
    tokio::pin!(stop);
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_warning.warn(|| {
                    format!("unable to accept an HTTP connection: {e}; retrying (raise the open-file limit, LimitNOFILE= in the unit, if this repeats)")
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match make_room(&table, limits.max) {
            Room::Free => {}
            Room::Evicted => {
                // let the evicted connection's task run and release its descriptor first
                tokio::task::yield_now().await;
                evicted += 1;
                limit_warning.warn(|| format!("HTTP endpoint: {} connections open (`http.max_connections`, or a quarter of the open-file limit); closing the quietest to make room ({evicted} so far)", limits.max));
            }
            Room::Full => {
                refused += 1;
                limit_warning.warn(|| format!("HTTP endpoint: all {} connections are being answered; refusing new ones ({refused} so far)", limits.max));
                continue;
            }
        }
        let (activity, evict) = (Arc::new(Activity::new()), Arc::new(Notify::new()));
        lock(&table).insert(
            next,
            Open {
                activity: activity.clone(),
                evict: evict.clone(),
            },
        );
        let leave = Leave {
            id: next,
            table: table.clone(),
        };
        next += 1;
        let io = Tracked {
            inner: stream,
            activity: activity.clone(),
        };
        tasks.spawn(connection(
            io,
            router.clone(),
            limits.idle,
            (activity, evict, leave),
            closed.clone(),
        ));
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drained).await;
}

/// One connection, until the client closes it, it times out, it is evicted, or the endpoint
/// stops (then gracefully: the request in flight is answered, an idle connection closes).
async fn connection(
    io: Tracked,
    router: Router,
    idle: Duration,
    (activity, evict, _leave): (Arc<Activity>, Arc<Notify>, Leave),
    mut closing: watch::Receiver<bool>,
) {
    let tower = TowerToHyperService::new(router);
    let busy = activity.clone();
    let service = hyper::service::service_fn(move |request| {
        let answering = Busy::new(busy.clone());
        let response = tower.call(request);
        async move {
            let r = response.await;
            drop(answering);
            r
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true);
    let conn = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut graceful = false;
    loop {
        // while a request is being answered its time does not count (and the loop never spins)
        let mut deadline = activity.last() + idle;
        if activity.is_busy() {
            deadline = deadline.max(Instant::now() + idle);
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("HTTP connection closed: {e}");
                }
                return;
            }
            _ = evict.notified() => return tracing::debug!("HTTP connection evicted to make room"),
            _ = closing.changed(), if !graceful => {
                graceful = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(deadline) => {
                if !activity.is_busy() && activity.quiet_for() >= idle {
                    return tracing::debug!("HTTP connection closed: no progress for {idle:?}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(table: &Table, id: u64, quiet_ms: u64, busy: bool) {
        // backdate the creation so the connection has been quiet for `quiet_ms`
        let activity = Arc::new(Activity {
            base: Instant::now() - Duration::from_millis(quiet_ms),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(busy as usize),
        });
        lock(table).insert(
            id,
            Open {
                activity,
                evict: Arc::new(Notify::new()),
            },
        );
    }

    #[test]
    fn a_full_table_evicts_the_quietest_idle_connection_or_refuses() {
        let table: Table = Arc::default();
        assert_eq!(make_room(&table, 2), Room::Free, "room to spare");
        open(&table, 1, 5_000, false);
        open(&table, 2, 9_000, true);
        open(&table, 3, 1_000, false);
        // 2 is quieter but being answered: 1 goes
        assert_eq!(make_room(&table, 3), Room::Evicted);
        assert_eq!(lock(&table).keys().copied().collect::<Vec<_>>(), [2, 3]);
        lock(&table).remove(&3);
        assert_eq!(make_room(&table, 1), Room::Full, "the only one is busy");
    }

    #[test]
    fn the_limit_follows_the_open_file_limit() {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        let quarter = (limit.rlim_cur / 4) as usize;
        assert_eq!(max_connections(usize::MAX), quarter.max(2));
        assert_eq!(max_connections(1), 1);
    }
}
