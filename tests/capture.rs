//! Capture from HTTP cameras against real peers on loopback: ffmpeg serving MJPEG (killed and
//! restarted mid-stream), and small Rust servers that send corrupt parts, hang, or demand basic
//! auth for snapshots. Every wait is bounded and every child process is killed on drop.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use image::RgbImage;
use promptcam::source::http::{MjpegSource, SnapshotSource};
use promptcam::source::{self, FrameSource};

use crate::fixture::read_request;

/// A JPEG of a textured picture (so most of the file is scan data).
fn jpeg(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x as u8) ^ seed,
            (y as u8).wrapping_mul(3),
            ((x + y) as u8) ^ seed,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&image)
        .unwrap();
    out
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ffmpeg serving a 320x240 test pattern as MJPEG at 10 fps to one client on `port`.
fn ffmpeg_mjpeg(port: u16) -> Killed {
    let child = Command::new("/usr/bin/ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=10",
            "-t",
            "30",
        ])
        .args([
            "-f",
            "mpjpeg",
            "-listen",
            "1",
            "-content_type",
            "multipart/x-mixed-replace;boundary=ffmpeg",
        ])
        .arg(format!("http://127.0.0.1:{port}/stream"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run /usr/bin/ffmpeg");
    Killed(child)
}

/// Calls `next_frame` until it yields `count` frames (errors are retried after a short sleep,
/// as the capture loop would) or `deadline` passes. Returns the frames and the errors seen.
fn frames_until(
    source: &mut dyn FrameSource,
    count: usize,
    deadline: Instant,
) -> (Vec<RgbImage>, Vec<String>) {
    let (mut frames, mut errors) = (Vec::new(), Vec::new());
    while frames.len() < count && Instant::now() < deadline {
        match source.next_frame() {
            Ok(Some(image)) => frames.push(image),
            Ok(None) => panic!("an HTTP source never ends"),
            Err(e) => {
                errors.push(format!("{e:#}"));
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    (frames, errors)
}

#[test]
fn mjpeg_from_ffmpeg_survives_a_restart() {
    let started = Instant::now();
    let port = free_port();
    let server = ffmpeg_mjpeg(port);
    let mut source = source::open(&format!("http://127.0.0.1:{port}/stream"), 10.0, false).unwrap();
    assert_eq!(
        source.describe(),
        format!("MJPEG http://127.0.0.1:{port}/stream")
    );
    let (frames, _) = frames_until(source.as_mut(), 5, started + Duration::from_secs(8));
    assert_eq!(frames.len(), 5, "no stream from ffmpeg within 8 s");
    assert!(frames.iter().all(|f| f.dimensions() == (320, 240)));

    // kill the camera mid-stream: at most a few buffered frames, then an error
    drop(server);
    let mut error = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while error.is_none() && Instant::now() < deadline {
        if let Err(e) = source.next_frame() {
            error = Some(format!("{e:#}"));
        }
    }
    let error = error.expect("next_frame kept yielding after ffmpeg died");
    eprintln!("after the kill: {error}");
    assert!(error.contains("unable to"), "{error}");

    // back on the same port: the source reconnects by itself
    let _server = ffmpeg_mjpeg(port);
    let (frames, errors) =
        frames_until(source.as_mut(), 3, Instant::now() + Duration::from_secs(8));
    assert_eq!(
        frames.len(),
        3,
        "no frames after the restart; errors: {errors:?}"
    );
    assert!(frames.iter().all(|f| f.dimensions() == (320, 240)));
    eprintln!(
        "reconnected after {} error(s), first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

/// A loopback HTTP server running `handler` on a thread per connection; stopped on drop.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let (handler, flag) = (handler.clone(), flag.clone());
                if let Ok(conn) = conn {
                    thread::spawn(move || handler(conn, &flag));
                }
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, scheme: &str, credentials: &str, path: &str) -> String {
        format!("{scheme}://{credentials}127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Holds a connection open without answering until the server stops.
fn hang(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(50));
    }
}

/// The body of an MJPEG stream: `bodies` as parts, alternating with and without Content-Length.
fn multipart(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        out.extend_from_slice(b"--frame\r\nContent-Type: image/jpeg\r\n");
        if i % 2 == 0 {
            out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--frame\r\n");
    out
}

#[test]
fn corrupt_part_is_skipped_and_counted() {
    let good = jpeg(160, 120, 1);
    let truncated = good[..good.len() / 2].to_vec();
    let stream = multipart(&[good.clone(), truncated, jpeg(160, 120, 2)]);
    for chunked in [false, true] {
        let body = stream.clone();
        let server = Server::start(move |conn, _| {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            read_request(&mut reader);
            let mut conn = conn;
            let encoding = if chunked {
                "Transfer-Encoding: chunked"
            } else {
                "Connection: close"
            };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n{encoding}\r\n\r\n");
            let _ = conn.write_all(head.as_bytes());
            // small writes, so that parts and delimiters straddle reads
            for piece in body.chunks(777) {
                let _ = if chunked {
                    conn.write_all(
                        &[format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat(),
                    )
                } else {
                    conn.write_all(piece)
                };
                let _ = conn.flush();
            }
            if chunked {
                let _ = conn.write_all(b"0\r\n\r\n");
            }
        });
        let mut source = MjpegSource::open(&server.url("http", "", "/stream")).unwrap();
        let started = Instant::now();
        for _ in 0..2 {
            let frame = source.next_frame().unwrap().unwrap();
            assert_eq!(frame.dimensions(), (160, 120));
        }
        assert_eq!(source.undecodable(), 1, "chunked: {chunked}");
        let e = format!("{:#}", source.next_frame().unwrap_err());
        assert!(e.contains("closed the connection"), "{e}");
        assert_eq!(source.connects(), 1);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[test]
fn a_stream_of_only_garbage_is_dropped_and_reconnected() {
    let server = Server::start(|conn, stop| {
        read_request(&mut BufReader::new(conn.try_clone().unwrap()));
        let mut conn = conn;
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n";
        let parts: Vec<Vec<u8>> = (0..12)
            .map(|i| format!("not a picture {i}").into_bytes())
            .collect();
        let _ = conn.write_all(&[head.as_bytes(), &multipart(&parts)].concat());
        hang(stop);
    });
    let mut source = MjpegSource::open(&server.url("http", "", "/stream")).unwrap();
    let started = Instant::now();
    let e = format!("{:#}", source.next_frame().unwrap_err());
    assert!(e.contains("10 parts in a row were not pictures"), "{e}");
    assert_eq!((source.undecodable(), source.connects()), (10, 1));
    // the next call starts over on a new connection rather than reading on
    assert!(source.next_frame().is_err());
    assert_eq!((source.undecodable(), source.connects()), (20, 2));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn silent_or_stalled_camera_errors_within_the_timeout() {
    // accepts, reads the request, never answers
    let silent = Server::start(|conn, stop| {
        let mut reader = BufReader::new(conn);
        read_request(&mut reader);
        hang(stop);
    });
    // answers with one frame, then stalls mid-stream
    let frame = jpeg(64, 48, 3);
    let stalled = Server::start(move |mut conn, stop| {
        read_request(&mut BufReader::new(conn.try_clone().unwrap()));
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\n\r\n";
        let _ =
            conn.write_all(&[head.as_bytes(), &multipart(std::slice::from_ref(&frame))].concat());
        hang(stop);
    });
    let urls = [
        silent.url("http", "", "/stream"),
        silent.url("snapshot+http", "", "/snap.jpg"),
        stalled.url("http", "", "/stream"),
    ];
    let runs: Vec<_> = urls
        .into_iter()
        .map(|url| {
            thread::spawn(move || {
                let mut source = source::open(&url, 5.0, false).unwrap();
                let mut got = 0;
                let started = Instant::now();
                loop {
                    match source.next_frame() {
                        Ok(Some(_)) => got += 1,
                        Ok(None) => panic!("an HTTP source never ends"),
                        Err(e) => return (url, got, started.elapsed(), format!("{e:#}")),
                    }
                }
            })
        })
        .collect();
    for run in runs {
        let (url, got, waited, error) = run.join().unwrap();
        eprintln!("{url}: {got} frame(s), then after {waited:?}: {error}");
        assert!(waited < Duration::from_secs(12), "{url}: waited {waited:?}");
        assert!(
            waited >= Duration::from_secs(8),
            "{url}: gave up after only {waited:?}: {error}"
        );
        assert!(
            error.to_ascii_lowercase().contains("timeout") || error.contains("timed out"),
            "{url}: {error}"
        );
        let expected = usize::from(url.contains(&format!(":{}/", stalled.port)));
        assert_eq!(got, expected, "{url}");
    }
}

#[test]
fn snapshots_with_basic_auth() {
    let picture = jpeg(200, 150, 4);
    let server = Server::start(move |conn, _| {
        // keep-alive: answer every request on the connection
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut conn = conn;
        while let Some(head) = read_request(&mut reader) {
            let authorized = head
                .lines()
                .any(|l| l.eq_ignore_ascii_case("authorization: basic dXNlcjpwYXNz"));
            let reply = if authorized {
                [
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                        picture.len()
                    )
                    .as_bytes(),
                    &picture,
                ]
                .concat()
            } else {
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\nContent-Length: 0\r\n\r\n".to_vec()
            };
            if conn.write_all(&reply).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut source = source::open(
        &server.url("snapshot+http", "user:pass@", "/snap.jpg"),
        20.0,
        false,
    )
    .unwrap();
    assert_eq!(
        source.describe(),
        server.url("snapshots snapshot+http", "***@", "/snap.jpg")
    );
    for _ in 0..3 {
        assert_eq!(
            source.next_frame().unwrap().unwrap().dimensions(),
            (200, 150)
        );
    }
    // paced at 20 fps: three fetches span at least two 50 ms gaps
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );

    let mut wrong = SnapshotSource::open(
        &server.url("snapshot+http", "user:hunter2-secret@", "/snap.jpg"),
        20.0,
    )
    .unwrap();
    let e = format!("{:#}", wrong.next_frame().unwrap_err());
    assert!(e.contains("HTTP 401") && e.contains("password"), "{e}");
    assert!(
        !e.contains("hunter2") && !wrong.describe().contains("hunter2"),
        "{e}"
    );
    assert_eq!(wrong.undecodable(), 0);

    // pointing the MJPEG source at the snapshot URL says what to do instead
    let mut mjpeg = MjpegSource::open(&server.url("http", "user:pass@", "/snap.jpg")).unwrap();
    let e = format!("{:#}", mjpeg.next_frame().unwrap_err());
    assert!(
        e.contains("snapshot+http://") && !e.contains("pass@"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn garbage_snapshot_is_an_error_and_counted() {
    let server = Server::start(|conn, _| {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut conn = conn;
        if read_request(&mut reader).is_some() {
            let body = b"\xff\xd8 definitely not a picture";
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = conn.write_all(&[head.as_bytes(), body].concat());
        }
        let _ = conn.read(&mut [0; 1]);
    });
    let mut source =
        SnapshotSource::open(&server.url("snapshot+http", "", "/x.jpg"), 50.0).unwrap();
    let e = format!("{:#}", source.next_frame().unwrap_err());
    assert!(e.contains("unable to decode frame"), "{e}");
    assert_eq!(source.undecodable(), 1);
}

#[test]
fn mjpeg_frames_wait_in_the_slot_undecoded_and_are_decoded_by_the_taker() {
    use promptcam::frame::{FrameSlot, Picture, SourceStats};
    // a whole JPEG whose header is garbage: it passes the capture side's check (markers in
    // place) and fails when the inference side decodes it
    let mut corrupt = vec![0xFF, 0xD8];
    corrupt.extend((0..500u32).map(|i| (i * 37 % 251) as u8));
    corrupt.extend([0xFF, 0xDA, 1, 2, 3, 0xFF, 0xD9]);
    let parts = vec![jpeg(160, 120, 1), corrupt, jpeg(160, 120, 2)];
    let body = multipart(&parts);
    let server = Server::start(move |conn, stop| {
        read_request(&mut BufReader::new(conn.try_clone().unwrap()));
        let mut conn = conn;
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n";
        let _ = conn.write_all(&[head.as_bytes(), &body].concat());
        hang(stop);
    });
    let source = Box::new(MjpegSource::open(&server.url("http", "", "/stream")).unwrap());
    let (slot, stats) = (FrameSlot::new(), Arc::new(SourceStats::default()));
    let shutdown = Arc::new(AtomicBool::new(false));
    let (s, st, sd) = (slot.clone(), stats.clone(), shutdown.clone());
    let capture = thread::spawn(move || source::capture_loop(source, 100.0, s, st, sd));
    let mut taken = vec![];
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.captured.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
        if let Some(c) = slot.wait_take(Duration::from_millis(50)) {
            taken.push(c);
        }
    }
    shutdown.store(true, Ordering::SeqCst);
    drop(server);
    let _ = capture.join();
    taken.extend(slot.take());
    assert_eq!(stats.captured.load(Ordering::SeqCst), 3);
    // the capture side counted nothing as undecodable: it never decoded
    assert_eq!(stats.undecodable.load(Ordering::SeqCst), 0);
    assert!(!taken.is_empty());
    for c in taken {
        let Picture::Compressed(bytes) = &c.picture else {
            panic!("frame {} arrived decoded", c.seq);
        };
        let whole = parts.iter().any(|p| p == bytes);
        assert!(
            whole,
            "frame {}: {} bytes, not a part as sent",
            c.seq,
            bytes.len()
        );
        match c.decode() {
            Ok(f) => assert_eq!(f.image.dimensions(), (160, 120)),
            Err(e) => assert!(format!("{e:#}").contains("unable to decode frame"), "{e:#}"),
        }
    }
}
