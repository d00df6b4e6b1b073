//! Capture from RTSP cameras against a real peer on loopback: GStreamer's RTSP server
//! (`tests/rtsp_server.py`, python3-gi) streaming a solid colour as H.264 or H.265, with and
//! without basic/digest auth, killed and restarted under a running capture loop. The server must
//! start (CI installs its packages); every wait is bounded and every server is killed on drop.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use image::RgbImage;
use promptcam::frame::{FrameSlot, SourceStats};
use promptcam::source::{self, FrameSource};

use crate::fixture;

/// The server's colour: big-endian ARGB for videotestsrc, and the RGB expected back.
const COLOR: &str = "0xffe08020";
const RGB: [f64; 3] = [224.0, 128.0, 32.0];

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GStreamer's RTSP server on 127.0.0.1, killed (and reaped) when dropped.
struct RtspServer {
    child: Child,
    port: u16,
}

impl RtspServer {
    /// Starts `tests/rtsp_server.py` with `args` on `port` and waits (at most 10 s) for it to
    /// say it listens. Panics if it cannot start: CI installs python3-gi and the plugins.
    fn start(port: u16, args: &[&str]) -> RtspServer {
        let mut child = Command::new("/usr/bin/python3")
            .arg(fixture::path("tests/rtsp_server.py"))
            .args(["--port", &port.to_string(), "--color", COLOR])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run /usr/bin/python3 tests/rtsp_server.py (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let server = RtspServer { child, port };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.trim() == "ready" => server,
            other => panic!("the GStreamer RTSP server did not start (needs python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-ugly/bad): {other:?}"),
        }
    }

    fn url(&self, credentials: &str) -> String {
        format!("rtsp://{credentials}127.0.0.1:{}/cam", self.port)
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls `next_frame` until it yields `count` frames or `deadline` passes; the first error ends
/// the run. Returns the frames and the error, if any.
fn frames_until(
    source: &mut dyn FrameSource,
    count: usize,
    deadline: Instant,
) -> (Vec<RgbImage>, Option<String>) {
    let mut frames = Vec::new();
    while frames.len() < count && Instant::now() < deadline {
        match source.next_frame() {
            Ok(Some(image)) => frames.push(image),
            Ok(None) => panic!("an RTSP source never ends"),
            Err(e) => return (frames, Some(format!("{e:#}"))),
        }
    }
    (frames, None)
}

/// The mean of each channel.
fn mean_rgb(image: &RgbImage) -> [f64; 3] {
    let mut sum = [0f64; 3];
    for p in image.pixels() {
        for (s, &v) in sum.iter_mut().zip(&p.0) {
            *s += v as f64;
        }
    }
    sum.map(|s| s / (image.width() * image.height()) as f64)
}

fn assert_colour(frame: &RgbImage) {
    assert_eq!(frame.dimensions(), (320, 240));
    let mean = mean_rgb(frame);
    for c in 0..3 {
        assert!(
            (mean[c] - RGB[c]).abs() < 12.0,
            "mean RGB {mean:?}, expected about {RGB:?}"
        );
    }
}

#[test]
fn h264_frames_arrive_with_the_size_and_colour() {
    let started = Instant::now();
    let server = RtspServer::start(free_port(), &[]);
    let mut source = source::open(&server.url(""), 10.0, false).unwrap();
    assert_eq!(source.describe(), format!("RTSP {}", server.url("")));
    let (frames, error) = frames_until(source.as_mut(), 5, started + Duration::from_secs(15));
    assert_eq!(frames.len(), 5, "error: {error:?}");
    frames.iter().for_each(assert_colour);
    assert_eq!(source.undecodable(), 0);
    eprintln!(
        "5 frames in {:?}, mean RGB {:?}",
        started.elapsed(),
        mean_rgb(&frames[4])
    );
}

#[test]
fn credentials_basic_and_digest_right_and_wrong() {
    for auth in ["basic", "digest"] {
        let server = RtspServer::start(
            free_port(),
            &[
                "--user",
                "viewer",
                "--password",
                "s3cret-pw",
                "--auth",
                auth,
            ],
        );
        let started = Instant::now();
        let mut right = source::open(&server.url("viewer:s3cret-pw@"), 10.0, false).unwrap();
        assert!(!right.describe().contains("s3cret"), "{}", right.describe());
        let (frames, error) = frames_until(right.as_mut(), 2, started + Duration::from_secs(15));
        assert_eq!(frames.len(), 2, "{auth}: {error:?}");
        frames.iter().for_each(assert_colour);

        let mut wrong = source::open(&server.url("viewer:hunter2-wrong@"), 10.0, false).unwrap();
        let e = format!("{:#}", wrong.next_frame().unwrap_err());
        eprintln!("{auth}, wrong password: {e}");
        assert!(
            e.contains("rejected the credentials") && e.contains("401"),
            "{auth}: {e}"
        );
        assert!(
            !e.contains("hunter2") && !e.contains("viewer:"),
            "{auth}: {e}"
        );

        let mut none = source::open(&server.url(""), 10.0, false).unwrap();
        let e = format!("{:#}", none.next_frame().unwrap_err());
        assert!(e.contains("asks for a user and password"), "{auth}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{auth}: took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn h265_is_refused_naming_the_codec() {
    let server = RtspServer::start(free_port(), &["--codec", "h265"]);
    let mut source = source::open(&server.url(""), 10.0, false).unwrap();
    let started = Instant::now();
    let e = format!("{:#}", source.next_frame().unwrap_err());
    eprintln!("H.265: {e}");
    assert!(
        e.contains("H.265") && e.contains("only H.264") && e.contains("substream"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn silent_or_stalled_camera_errors_within_the_timeout() {
    // listens (the kernel completes the connection), never answers DESCRIBE
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!(
        "rtsp://u:hunter2@127.0.0.1:{}/cam",
        silent.local_addr().unwrap().port()
    );
    // plays, then freezes (SIGSTOP) with the connection open
    let server = RtspServer::start(free_port(), &[]);
    let mut stalled = source::open(&server.url(""), 10.0, false).unwrap();
    assert_eq!(
        frames_until(
            stalled.as_mut(),
            2,
            Instant::now() + Duration::from_secs(15)
        )
        .0
        .len(),
        2
    );
    // the shell's built-in kill: no procps needed
    let stopped = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -STOP {}", server.child.id()))
        .status()
        .unwrap();
    assert!(stopped.success());
    let runs = [(silent_url, None), (server.url(""), Some(stalled))].map(|(url, source)| {
        thread::spawn(move || {
            let mut source = source.unwrap_or_else(|| source::open(&url, 10.0, false).unwrap());
            let started = Instant::now();
            loop {
                match source.next_frame() {
                    // frames already buffered before the stop
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("an RTSP source never ends"),
                    Err(e) => return (url, started.elapsed(), format!("{e:#}")),
                }
            }
        })
    });
    for run in runs {
        let (url, waited, error) = run.join().unwrap();
        eprintln!("{}: after {waited:?}: {error}", source::redact(&url));
        assert!(
            (Duration::from_secs(8)..Duration::from_secs(13)).contains(&waited),
            "{url}: waited {waited:?}: {error}"
        );
        assert!(
            error.contains("(timeout)") && !error.contains("hunter2"),
            "{url}: {error}"
        );
    }
    drop(silent);
}

/// Runs `capture_loop` on a thread; stops it (and joins) on drop.
struct Capture {
    slot: FrameSlot,
    stats: Arc<SourceStats>,
    shutdown: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Capture {
    fn start(spec: &str, fps: f64) -> Capture {
        let source = source::open(spec, fps, false).unwrap();
        let (slot, stats, shutdown) = (
            FrameSlot::new(),
            Arc::new(SourceStats::default()),
            Arc::new(AtomicBool::new(false)),
        );
        let (s, st, sd) = (slot.clone(), stats.clone(), shutdown.clone());
        let thread = thread::spawn(move || source::capture_loop(source, fps, s, st, sd));
        Capture {
            slot,
            stats,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Takes `count` frames, each within `wait`; returns how many arrived.
    fn frames(&self, count: usize, wait: Duration) -> usize {
        (0..count)
            .take_while(|_| {
                self.slot
                    .wait_take(wait)
                    .map(|f| f.decode().unwrap())
                    .inspect(|f| assert_colour(&f.image))
                    .is_some()
            })
            .count()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn capture_loop_reconnects_after_a_server_restart() {
    let started = Instant::now();
    let port = free_port();
    let server = RtspServer::start(port, &[]);
    let capture = Capture::start(&server.url(""), 10.0);
    assert_eq!(
        capture.frames(3, Duration::from_secs(10)),
        3,
        "no frames from the RTSP server"
    );
    assert_eq!(capture.stats.reconnects.load(Ordering::SeqCst), 0);

    // kill the camera: the session fails, the loop backs off and retries
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(12);
    while capture.stats.reconnects.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        capture.stats.reconnects.load(Ordering::SeqCst) >= 1,
        "the capture loop never noticed the server was gone"
    );
    while capture.slot.take().is_some() {}

    // back on the same port: frames again, without help
    let _server = RtspServer::start(port, &[]);
    let restarted = Instant::now();
    assert_eq!(
        capture.frames(3, Duration::from_secs(15)),
        3,
        "no frames after the restart; stats {:?}",
        capture.stats.snapshot()
    );
    let stats = capture.stats.snapshot();
    eprintln!(
        "frames again {:?} after the restart; {stats:?}",
        restarted.elapsed()
    );
    assert!(stats.reconnects >= 1 && stats.undecodable == 0, "{stats:?}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn wrong_password_backs_off_instead_of_hammering() {
    let server = RtspServer::start(
        free_port(),
        &["--user", "viewer", "--password", "s3cret-pw"],
    );
    let capture = Capture::start(&server.url("viewer:wrong@"), 10.0);
    thread::sleep(Duration::from_millis(2500));
    // backoff 0.5 s, 1 s, 2 s, each jittered to 50-100%: the waits before a fourth try add up to
    // at least 0.25 + 0.5 + 1 s, so at most four failed tries in 2.5 s (a hot loop makes
    // hundreds), and no frame
    let reconnects = capture.stats.reconnects.load(Ordering::SeqCst);
    assert!((1..=4).contains(&reconnects), "{reconnects} tries in 2.5 s");
    assert!(capture.slot.take().is_none());
}

#[test]
fn probe_grabs_frames_from_rtsp() {
    let server = RtspServer::start(
        free_port(),
        &[
            "--user",
            "viewer",
            "--password",
            "s3cret-pw",
            "--auth",
            "digest",
        ],
    );
    let (code, stdout, stderr) = fixture::promptcam(&[
        "probe",
        "--source",
        &server.url("viewer:s3cret-pw@"),
        "--frames",
        "3",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with(&format!("RTSP {}", server.url("***@"))),
        "{stdout}"
    );
    assert!(stdout.contains("frame 2: 320x240"), "{stdout}");
    assert!(
        !stdout.contains("s3cret") && !stderr.contains("s3cret"),
        "{stdout}\n{stderr}"
    );
}
