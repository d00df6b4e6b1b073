//! Connections: the endpoint's accept loop, which keeps idle and slow clients from holding the
//! daemon's file descriptors (a camera, the spool and the models need them too):
//!
//! - time: a request head must be complete within `http.idle_timeout` of the connection opening
//!   or of the previous response (hyper's header read timeout covers slow heads and idle
//!   keep-alive alike), and a connection whose socket makes no progress for that long while no
//!   request is being answered (a client that stopped reading) is closed;
//! - number: at most [`Limits::max`] connections are open. One more closes the open connection
//!   that has been quiet longest and is not being answered, so a monitor's `/healthz` gets in even
//!   past a crowd of idle sockets. When every open connection is being answered, the new one
//!   takes one of [`RESERVED`] slots kept for the monitor: it answers one `/healthz` (or, for any
//!   other path, 503 with `Retry-After`) and closes; past those it is closed at once. The
//!   listening socket keeps further clients in the kernel's backlog;
//! - a deadline on every request ([`Limits::request`], `http.request_timeout`): a request not
//!   answered by then (a stalled upload, a handler waiting on something slow) is dropped, which
//!   stops its work, and answered 503;
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

/// How many connections may be open, how long one may sit without progress, and how long a
/// request may take.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub max: usize,
    pub idle: Duration,
    pub request: Duration,
}

/// Connections beyond [`Limits::max`] kept for `/healthz` while every other one is being answered.
pub(super) const RESERVED: usize = 2;

/// The one path a reserved connection serves.
const HEALTHZ: &str = "/healthz";

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
    /// Every open connection is being answered: the new one takes a slot kept for `/healthz`.
    Reserved,
    /// Every open connection is being answered and the reserved slots are taken.
    Full,
}

/// Makes room for one more connection; `reserved` is how many reserved slots are in use.
fn make_room(table: &Table, max: usize, reserved: usize) -> Room {
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
        None if reserved < RESERVED => Room::Reserved,
        None => Room::Full,
    }
}

/// Holds a reserved slot while its connection lives.
struct ReservedSlot(Arc<AtomicUsize>);

impl Drop for ReservedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener` within `limits` until `stop` resolves; then stops accepting
/// and gives requests in flight 2 s to finish.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let table: Table = Arc::default();
    let reserved = Arc::new(AtomicUsize::new(0));
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
        let mut slot = None;
        match make_room(&table, limits.max, reserved.load(Ordering::Relaxed)) {
            Room::Free => {}
            Room::Evicted => {
                // let the evicted connection's task run and release its descriptor first
                tokio::task::yield_now().await;
                evicted += 1;
                limit_warning.warn(|| format!("HTTP endpoint: {} connections open (`http.max_connections`, or a quarter of the open-file limit); closing the quietest to make room ({evicted} so far)", limits.max));
            }
            Room::Reserved => {
                reserved.fetch_add(1, Ordering::Relaxed);
                slot = Some(ReservedSlot(reserved.clone()));
                limit_warning.warn(|| format!("HTTP endpoint: all {} connections are being answered; new ones get /healthz only until one is free", limits.max));
            }
            Room::Full => {
                refused += 1;
                limit_warning.warn(|| format!("HTTP endpoint: all {} connections are being answered; refusing new ones ({refused} so far)", limits.max));
                continue;
            }
        }
        let io = Tracked {
            inner: stream,
            activity: Arc::new(Activity::new()),
        };
        if let Some(slot) = slot {
            // outside the table: it is never evicted, and never counted as a connection to evict
            let (tls, router) = (tls.clone(), router.clone());
            tasks.spawn(async move {
                match handshake(tls, io, limits.idle).await {
                    Some(Io::Plain(io)) => reserved_connection(io, router, limits, slot).await,
                    Some(Io::Tls(io)) => reserved_connection(io, router, limits, slot).await,
                    None => {}
                }
            });
            continue;
        }
        let (activity, evict) = (io.activity.clone(), Arc::new(Notify::new()));
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
        let (tls, router, closed) = (tls.clone(), router.clone(), closed.clone());
        tasks.spawn(async move {
            let held = (activity, evict, leave);
            match handshake(tls, io, limits.idle).await {
                Some(Io::Plain(io)) => connection(io, router, limits, held, closed).await,
                Some(Io::Tls(io)) => connection(io, router, limits, held, closed).await,
                None => {}
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drained).await;
}

/// A connection's byte stream: the socket, or TLS over it.
enum Io {
    Plain(Tracked),
    Tls(Box<tokio_rustls::server::TlsStream<Tracked>>),
}

/// The stream to serve: `io` itself without TLS, else the TLS session once its handshake is done
/// (within `idle`, like a request head); None when the handshake failed (logged at debug: port
/// scanners and plain-HTTP clients end here).
async fn handshake(
    tls: Option<tokio_rustls::TlsAcceptor>,
    io: Tracked,
    idle: Duration,
) -> Option<Io> {
    let Some(acceptor) = tls else {
        return Some(Io::Plain(io));
    };
    match tokio::time::timeout(idle, acceptor.accept(io)).await {
        Ok(Ok(s)) => Some(Io::Tls(Box::new(s))),
        Ok(Err(e)) => {
            tracing::debug!("HTTPS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("HTTPS handshake took longer than {idle:?}");
            None
        }
    }
}

/// `router`'s answer to `request`, or 503 past `deadline` (dropping the handler stops its work).
async fn answer(
    tower: TowerToHyperService<Router>,
    request: hyper::Request<hyper::body::Incoming>,
    deadline: Duration,
) -> Result<axum::response::Response, std::convert::Infallible> {
    match tokio::time::timeout(deadline, tower.call(request)).await {
        Ok(r) => r,
        Err(_) => Ok(unavailable(format!(
            "the request was not answered within {} s (http.request_timeout) and was stopped; retry, or send its body faster",
            deadline.as_secs_f64()
        ))),
    }
}

/// 503 with `Retry-After`, plain text.
fn unavailable(why: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [
            (axum::http::header::RETRY_AFTER, "2"),
            (axum::http::header::CONNECTION, "close"),
        ],
        why + "\n",
    )
        .into_response()
}

/// A connection in a reserved slot: one request, `/healthz` only, within the idle and request
/// limits, then closed.
async fn reserved_connection<I>(io: I, router: Router, limits: Limits, _slot: ReservedSlot)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tower = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
        let tower = tower.clone();
        async move {
            if request.uri().path() == HEALTHZ {
                answer(tower, request, limits.request).await
            } else {
                Ok(unavailable(
                    "busy: every connection is being answered; only /healthz is served until one is free"
                        .into(),
                ))
            }
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle)
        .keep_alive(false);
    let conn = http.serve_connection(TokioIo::new(io), service);
    let limit = limits.idle + limits.request;
    match tokio::time::timeout(limit, conn).await {
        Ok(Err(e)) => tracing::debug!("HTTP connection (reserved slot) closed: {e}"),
        Ok(Ok(())) => {}
        Err(_) => tracing::debug!("HTTP connection (reserved slot) closed after {limit:?}"),
    }
}

/// One connection, until the client closes it, it times out, it is evicted, or the endpoint
/// stops (then gracefully: the request in flight is answered, an idle connection closes).
async fn connection<I>(
    io: I,
    router: Router,
    limits: Limits,
    (activity, evict, _leave): (Arc<Activity>, Arc<Notify>, Leave),
    mut closing: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = limits.idle;
    let tower = TowerToHyperService::new(router);
    let busy = activity.clone();
    let service = hyper::service::service_fn(move |request| {
        let answering = Busy::new(busy.clone());
        let response = answer(tower.clone(), request, limits.request);
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
        assert_eq!(make_room(&table, 2, 0), Room::Free, "room to spare");
        open(&table, 1, 5_000, false);
        open(&table, 2, 9_000, true);
        open(&table, 3, 1_000, false);
        // 2 is quieter but being answered: 1 goes
        assert_eq!(make_room(&table, 3, 0), Room::Evicted);
        assert_eq!(lock(&table).keys().copied().collect::<Vec<_>>(), [2, 3]);
        lock(&table).remove(&3);
        assert_eq!(
            make_room(&table, 1, 0),
            Room::Reserved,
            "the only one is busy: a slot kept for /healthz"
        );
        assert_eq!(make_room(&table, 1, RESERVED - 1), Room::Reserved);
        assert_eq!(
            make_room(&table, 1, RESERVED),
            Room::Full,
            "and those are taken"
        );
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
