//! The HTTP endpoint under a crowd of idle and slow clients, against the real daemon started with
//! a low open-file limit (64 descriptors): `/healthz` keeps answering, the camera keeps reading
//! its files and analysing, idle sockets, idle keep-alive connections and a client that trickles
//! its request head are all closed, and nothing in the log says a descriptor ran out.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::fixture::{self, TempDir};
use crate::spawn::{Exit, Proc};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// GET over a fresh connection: (status, body), or None when no answer came within 5 s.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut r = agent.get(&format!("http://{addr}{path}")).call().ok()?;
    let body = r.body_mut().read_to_string().ok()?;
    Some((r.status().as_u16(), body))
}

fn analysed(addr: SocketAddr) -> f64 {
    let (code, body) = get(addr, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("promptcam_frames_analysed_total{camera=\"demo\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no analysed count in {body}"))
}

/// Whether the server closed the connection (end of stream or reset) — without waiting.
fn closed(mut s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer; the close follows it
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Raises this test process's own soft open-file limit to its hard one: the test holds a few
/// hundred sockets while other tests run in the same process.
fn raise_own_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// The daemon on `config` (listening on `port`, under `nofile` descriptors), once `/healthz`
/// answers 200.
fn start(config: &std::path::Path, port: u16, nofile: Option<u64>) -> (Proc, SocketAddr) {
    let mut d = Proc::run(config, nofile);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = Instant::now();
    while !matches!(get(addr, "/healthz"), Some((200, _))) {
        assert!(d.running(), "the daemon exited: {}", d.log());
        assert!(up.elapsed() < Duration::from_secs(60), "{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    (d, addr)
}

#[test]
fn idle_and_slow_clients_neither_exhaust_descriptors_nor_stay_open() {
    raise_own_limit();
    let tmp = TempDir::new("http-limits");
    let port = free_port();
    let config = tmp.path().join("promptcam.toml");
    let demo = fixture::demo_without_http();
    // the demo's files at 5 fps, every frame analysed; the endpoint with its default limits
    std::fs::write(
        &config,
        format!(
            "{}\n[motion]\nenabled = false\n\n[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n",
            demo.replace("fps = 2", "fps = 5")
        ),
    )
    .unwrap();
    let (mut d, addr) = start(&config, port, Some(64));
    let before = analysed(addr);

    // a client that trickles its request head, and 300 idle sockets (the daemon has 64
    // descriptors in all)
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(idle.len() >= 100, "only {} connected", idle.len());
    let crowd = Instant::now();

    // the monitor still gets in, again and again
    for _ in 0..3 {
        let r = get(addr, "/healthz");
        assert!(
            matches!(&r, Some((200, body)) if body.starts_with("ok")),
            "/healthz with {} idle sockets open: {r:?}\n{}",
            idle.len(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // and a keep-alive client that stops after one answer
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();

    // every idle, slow and kept-alive connection is closed within the idle timeout (10 s)
    let deadline = crowd + Duration::from_secs(16);
    loop {
        let _ = slow.write_all(b"X-Trickle: 1\r\n");
        let open = idle.iter().filter(|s| !closed(s)).count()
            + usize::from(!closed(&slow))
            + usize::from(!closed(&kept));
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connection(s) still open {:?} after they went idle",
            crowd.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        crowd.elapsed() >= Duration::from_secs(5),
        "the trickling and kept-alive clients were closed before the idle timeout: {:?}",
        crowd.elapsed()
    );

    // the camera kept reading its files and analysing throughout
    let after = analysed(addr);
    assert!(
        after >= before + 20.0,
        "analysed {before} -> {after} in {:?}",
        crowd.elapsed()
    );
    let log = d.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(!log.contains("skipping"), "{log}");
    assert!(
        log.contains("at most 16 connections"),
        "the limit follows the open-file limit: {log}"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(Exit::Code(0)));
}

/// Everything the server sends on `s` until it closes, waiting at most `timeout`.
fn read_all(mut s: &TcpStream, timeout: Duration) -> String {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut out = vec![];
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn busy_connections_leave_healthz_a_slot_and_stalled_requests_meet_their_deadline() {
    let tmp = TempDir::new("http-reserved");
    let port = free_port();
    let config = tmp.path().join("promptcam.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 4\nrequest_timeout = 4\n",
            fixture::demo_without_http()
        ),
    )
    .unwrap();
    let (mut d, addr) = start(&config, port, None);
    // four uploads that announce a body and never send it: every connection is being answered
    let stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(
                format!("POST /api/lab/mark HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{")
                    .as_bytes(),
            )
            .unwrap();
            s
        })
        .collect();
    let stalled_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    // the monitor still gets its answer, on a slot kept for it; anything else is told to retry
    let health = get(addr, "/healthz");
    assert!(
        matches!(&health, Some((200, body)) if body.starts_with("ok")),
        "/healthz with every connection busy: {health:?}\n{}",
        d.log()
    );
    let other = get(addr, "/api/status");
    assert!(
        matches!(&other, Some((503, body)) if body.contains("only /healthz")),
        "{other:?}"
    );
    assert!(
        stalled.iter().all(|s| !closed(s)),
        "the stalled uploads are still open"
    );
    // past request_timeout (4 s) each stalled upload is answered 503 and the connections free up
    for s in &stalled {
        let answer = read_all(s, Duration::from_secs(10));
        assert!(
            answer.starts_with("HTTP/1.1 503") && answer.contains("http.request_timeout"),
            "{answer}"
        );
    }
    let took = stalled_at.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(9),
        "the deadline is 4 s: answered after {took:?}"
    );
    let status = get(addr, "/api/status");
    assert!(matches!(&status, Some((200, _))), "{status:?}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(Exit::Code(0)));
}
