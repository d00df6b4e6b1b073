//! The HTTP endpoint end to end: `promptcam run` with `[http]` enabled on a free port, a
//! snapshot camera served by the test (so the test decides when frames stop), the tiny CLIP
//! model, and MQTT pointed at a closed port (events spool). `/healthz` is 200 while frames flow
//! (also on a quiet, motion-gated camera) and 503 once the camera stops answering; `/metrics`
//! parses as Prometheus text with the expected families and moving counts; `/snapshot` is a
//! JPEG of the camera's size; a busy port fails the start naming the address and the key.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::fixture::{self, TempDir};

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A camera's snapshot URL: serves `jpeg` to every request until `serving` is cleared, then
/// closes its socket (connections are refused from then on).
fn snapshot_camera(jpeg: Vec<u8>) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = Arc::new(AtomicBool::new(true));
    let flag = serving.clone();
    std::thread::spawn(move || {
        while flag.load(Ordering::SeqCst) {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            // a client that hangs up early still gets its answer written (and lost)
            let _ =
                crate::fixture::read_request(&mut std::io::BufReader::new(s.try_clone().unwrap()));
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", jpeg.len());
            let _ = s
                .write_all(head.as_bytes())
                .and_then(|_| s.write_all(&jpeg));
        }
    });
    (addr, serving)
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GET: (status, content type, body).
pub(crate) fn get(agent: &ureq::Agent, url: &str) -> Option<(u16, String, Vec<u8>)> {
    let mut r = agent.get(url).call().ok()?;
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = r.body_mut().read_to_vec().ok()?;
    Some((r.status().as_u16(), ct, body))
}

/// A strict parser of the Prometheus text format (0.0.4): every line is a `# HELP`, a `# TYPE`
/// or a sample `name{label="value",...} number`; samples follow their family's TYPE. Returns
/// (TYPE per family, samples keyed by `name{labels}` with labels sorted).
pub(crate) fn parse_prometheus(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, f64>) {
    let (mut types, mut samples) = (BTreeMap::new(), BTreeMap::new());
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(name_ok(rest.split(' ').next().unwrap()), "bad HELP: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad TYPE: {line}"));
            assert!(
                name_ok(name)
                    && ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                "bad TYPE: {line}"
            );
            assert!(
                types.insert(name.to_string(), t.to_string()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.trim().is_empty(),
            "unexpected line: {line:?}"
        );
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, vec![]),
            Some((n, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = vec![];
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label in {line}"));
                    assert!(
                        name_ok(k) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "bad label {pair} in {line}"
                    );
                    labels.push(format!("{k}={v}"));
                }
                labels.sort();
                (n, labels)
            }
        };
        assert!(name_ok(name), "bad metric name in {line}");
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)));
        assert!(
            types.contains_key(name) || family.is_some(),
            "sample before its TYPE: {line}"
        );
        assert!(
            samples
                .insert(format!("{name}{{{}}}", labels.join(",")), value)
                .is_none(),
            "duplicate series: {line}"
        );
    }
    (types, samples)
}

#[test]
fn healthz_metrics_and_snapshot_follow_the_camera() {
    let tmp = TempDir::new("endpoint");
    let image = image::open(fixture::image("rocket.png")).unwrap().to_rgb8();
    let mut jpeg = vec![];
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&image)
        .unwrap();
    let (camera, serving) = snapshot_camera(jpeg);
    let port = free_port();
    let config = tmp.path().join("promptcam.toml");
    // the motion gate holds back every frame after the first (a still picture): a quiet camera
    std::fs::write(
        &config,
        format!(
            r#"
[models.clip]
dir = "{clip}"
quantized = false

[[cameras]]
name = "Porch"
source = "snapshot+http://{camera}/snap.jpg"
fps = 5

[[cameras.prompts]]
text = "a rocket on the launch pad"
model = "clip"
negatives = ["a photo of a cat"]
threshold = 0.6
window = 1
min_frames = 1

[http]
enabled = true
listen = "127.0.0.1:{port}"
stale_after = 3

[mqtt]
host = "127.0.0.1"
port = {closed}
spool_dir = "{spool}"
"#,
            clip = fixture::path("models/tiny/clip").display(),
            closed = free_port(),
            spool = tmp.path().join("spool").display(),
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&config, None);
    let (agent, base) = (agent(), format!("http://127.0.0.1:{port}"));
    let metrics = |agent: &ureq::Agent| {
        let (code, ct, body) = get(agent, &format!("{base}/metrics")).expect("/metrics answers");
        assert_eq!(code, 200);
        assert!(
            ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
            "{ct}"
        );
        parse_prometheus(&String::from_utf8(body).unwrap())
    };

    // wait until the first frame was analysed
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some((200, _, _)) = get(&agent, &format!("{base}/metrics")) {
            let m = metrics(&agent);
            if m.1
                .get("promptcam_frames_analysed_total{camera=\"porch\"}")
                .is_some_and(|v| *v >= 1.0)
            {
                break m;
            }
        }
        assert!(Instant::now() < deadline, "no frame analysed within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (types, samples) = &first;
    for (family, t) in [
        ("promptcam_frames_captured_total", "counter"),
        ("promptcam_frames_dropped_total", "counter"),
        ("promptcam_frames_undecodable_total", "counter"),
        ("promptcam_source_reconnects_total", "counter"),
        ("promptcam_frames_analysed_total", "counter"),
        ("promptcam_frames_skipped_no_motion_total", "counter"),
        ("promptcam_events_total", "counter"),
        ("promptcam_inference_duration_seconds", "histogram"),
        ("promptcam_prompt_on", "gauge"),
        ("promptcam_mqtt_spool_depth", "gauge"),
        ("promptcam_mqtt_connected", "gauge"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(t),
            "{family} in {types:?}"
        );
    }
    let cam = "{camera=\"porch\"}";
    let count = samples[&format!("promptcam_inference_duration_seconds_count{cam}")];
    assert!(count >= 1.0);
    assert_eq!(
        samples["promptcam_inference_duration_seconds_bucket{camera=\"porch\",le=\"+Inf\"}"],
        count
    );
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|(k, _)| k.starts_with("promptcam_inference_duration_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(buckets.len(), 13, "12 bounds and +Inf");
    assert!(
        samples.contains_key(
            "promptcam_prompt_score{camera=\"porch\",prompt=\"a_rocket_on_the_launch_pad\"}"
        ),
        "{samples:?}"
    );
    assert_eq!(
        samples["promptcam_mqtt_connected{}"], 0.0,
        "the broker port is closed"
    );

    let (code, _, body) = get(&agent, &format!("{base}/healthz")).unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    // longer than stale_after: a still scene held back by the motion gate stays healthy
    std::thread::sleep(Duration::from_millis(4000));
    let (code, _, body) = get(&agent, &format!("{base}/healthz")).unwrap();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("camera porch"), "{body}");
    let (_, later) = metrics(&agent);
    let captured = |s: &BTreeMap<String, f64>| s[&format!("promptcam_frames_captured_total{cam}")];
    assert!(
        captured(&later) >= captured(samples) + 8.0,
        "frames keep coming at 5 fps: {} -> {}",
        captured(samples),
        captured(&later)
    );
    assert!(
        later[&format!("promptcam_frames_skipped_no_motion_total{cam}")] >= 1.0,
        "the still frames are held back"
    );

    let (code, ct, jpeg) = get(&agent, &format!("{base}/snapshot/porch.jpg")).unwrap();
    assert_eq!((code, ct.as_str()), (200, "image/jpeg"));
    let snap = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .expect("a decodable JPEG");
    assert_eq!((snap.width(), snap.height()), image.dimensions());
    let (code, _, body) = get(&agent, &format!("{base}/snapshot/garage.jpg")).unwrap();
    assert_eq!(code, 404);
    assert!(
        String::from_utf8_lossy(&body).contains("porch"),
        "lists the cameras"
    );

    // the camera stops answering: unhealthy within the window (plus a sampling tick)
    serving.store(false, Ordering::SeqCst);
    let stopped = Instant::now();
    let body = loop {
        let (code, _, body) = get(&agent, &format!("{base}/healthz")).unwrap();
        if code == 503 {
            break String::from_utf8_lossy(&body).into_owned();
        }
        assert_eq!(code, 200);
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "/healthz still 200 15 s after the camera stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "not before the window: {:?}",
        stopped.elapsed()
    );
    assert!(
        body.starts_with("unhealthy") && body.contains("camera porch") && body.contains("no frame"),
        "{body}"
    );

    // a graceful stop takes the endpoint down with the daemon
    let ok = Command::new("kill")
        .args(["-TERM", &d.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(d.wait(Duration::from_secs(20)), 0);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port is closed after the stop"
    );
}

#[test]
fn a_busy_port_fails_the_start_naming_the_address_and_key() {
    let tmp = TempDir::new("endpoint-busy");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let config = crate::daemon::replay(tmp.path(), &["rocket.png"], false, 0.6);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[http]\nenabled = true\nlisten = \"{addr}\"\n"),
    )
    .unwrap();
    let (code, _, err) = fixture::promptcam(&["run", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&addr.to_string()) && err.contains("http.listen"),
        "{err}"
    );
    drop(busy);
}
