//! The daemon end to end: `promptcam run` on a file source with the tiny fixture models and no
//! broker (events on stdout), its signals, its systemd notifications, `check`, and the unit file.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixture::{self, TempDir};

/// A running daemon, killed if the test ends early.
pub(crate) struct Daemon {
    child: Child,
    lines: Receiver<String>,
}

impl Daemon {
    pub(crate) fn start(config: &Path, notify: Option<&Path>) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_promptcam"));
        cmd.args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd.current_dir(fixture::repo());
        match notify {
            Some(p) => cmd.env("NOTIFY_SOCKET", p),
            None => cmd.env_remove("NOTIFY_SOCKET"),
        };
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Daemon { child, lines }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    pub(crate) fn next_event(&self, timeout: Duration) -> Option<Value> {
        self.lines
            .recv_timeout(timeout)
            .ok()
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l}: {e}")))
    }

    /// SIGTERM, and waits for a clean exit.
    pub(crate) fn stop(&mut self) {
        self.signal("-TERM");
        assert_eq!(self.wait(Duration::from_secs(20)), 0, "a clean stop");
    }

    pub(crate) fn wait(&mut self, timeout: Duration) -> i32 {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < end,
                "daemon did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A replay of `frames` fixture images (in order) in `dir/frames`, and a config running the CLIP
/// prompt "a rocket on the launch pad" against "a photo of a cat" on it.
pub(crate) fn replay(
    dir: &Path,
    frames: &[&str],
    looped: bool,
    threshold: f32,
) -> std::path::PathBuf {
    let frames_dir = dir.join("frames");
    std::fs::create_dir_all(&frames_dir).unwrap();
    for (i, f) in frames.iter().enumerate() {
        std::fs::copy(fixture::image(f), frames_dir.join(format!("{i:03}.png"))).unwrap();
    }
    let config = dir.join("promptcam.toml");
    write_config(&config, &frames_dir, looped, threshold);
    config
}

fn write_config(path: &Path, frames: &Path, looped: bool, threshold: f32) {
    let text = format!(
        r#"
[models.clip]
dir = "{clip}"
quantized = false

[motion]
enabled = false

[[cameras]]
name = "Launch pad"
source = "{frames}"
fps = 10
loop = {looped}

[[cameras.prompts]]
text = "a rocket on the launch pad"
model = "clip"
negatives = ["a photo of a cat"]
threshold = {threshold}
window = 1
min_frames = 2
off_delay = 0
"#,
        clip = fixture::path("models/tiny/clip").display(),
        frames = frames.display(),
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn run_without_a_broker_prints_start_and_end_events_in_order() {
    let tmp = TempDir::new("daemon-replay");
    // the tiny CLIP model scores the rocket photo as a rocket and the cat photo as a cat
    let frames = [
        "chelsea.png",
        "chelsea.png",
        "rocket.png",
        "rocket.png",
        "rocket.png",
        "chelsea.png",
        "chelsea.png",
    ];
    let config = replay(tmp.path(), &frames, false, 0.6);
    let mut d = Daemon::start(&config, None);
    assert_eq!(
        d.wait(Duration::from_secs(60)),
        0,
        "the daemon exits 0 when its only source ends"
    );
    let events: Vec<Value> = d
        .lines
        .try_iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"start"), "{events:?}");
    assert_eq!(kinds.last(), Some(&"end"), "{events:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "start").count(),
        1,
        "one event: {events:?}"
    );
    let id = &events[0]["id"];
    assert!(events.iter().all(|e| &e["id"] == id
        && e["camera"] == "launch_pad"
        && e["prompt"] == "a_rocket_on_the_launch_pad"));
    assert!(events[0]["score"].as_f64().unwrap() >= 0.6);
    assert!(events.last().unwrap()["ended_at"].is_string() && events[0].get("ended_at").is_none());
    // the event ends on the cat frames, not at end of stream: the end score is below threshold
    assert!(
        events.last().unwrap()["score"].as_f64().unwrap() < 0.6,
        "{events:?}"
    );
}

fn read_notifications(sock: &UnixDatagram, until: &str, timeout: Duration) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let end = Instant::now() + timeout;
    let mut seen = vec![];
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.lines().any(|l| l == until);
            seen.push(msg);
            if done {
                break;
            }
        }
    }
    seen
}

#[test]
fn sigterm_stops_gracefully_after_ready_and_notifies_stopping() {
    let tmp = TempDir::new("daemon-sigterm");
    let config = replay(tmp.path(), &["rocket.png", "chelsea.png"], true, 0.6);
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut d = Daemon::start(&config, Some(&sock_path));
    let ready = read_notifications(&sock, "READY=1", Duration::from_secs(30));
    assert!(ready.iter().any(|m| m.contains("READY=1")), "{ready:?}");
    std::thread::sleep(Duration::from_millis(500));
    d.signal("-TERM");
    assert_eq!(d.wait(Duration::from_secs(15)), 0, "SIGTERM exits 0");
    let after = read_notifications(&sock, "STOPPING=1", Duration::from_secs(2));
    assert!(after.iter().any(|m| m.contains("STOPPING=1")), "{after:?}");
}

#[test]
fn sighup_applies_changed_thresholds_and_prompts_and_rejects_a_broken_config() {
    let tmp = TempDir::new("daemon-sighup");
    // threshold 1.0: the rocket never reaches it
    let config = replay(tmp.path(), &["rocket.png", "rocket.png"], true, 1.0);
    let d = Daemon::start(&config, None);
    assert!(
        d.next_event(Duration::from_secs(6)).is_none(),
        "no event at threshold 1.0"
    );

    // a broken file is rejected and the daemon keeps running on the old config
    std::fs::write(&config, "[[cameras]]\nname = 3\n").unwrap();
    d.signal("-HUP");
    assert!(d.next_event(Duration::from_secs(2)).is_none());

    write_config(&config, &tmp.path().join("frames"), true, 0.6);
    d.signal("-HUP");
    let e = d
        .next_event(Duration::from_secs(15))
        .expect("an event after lowering the threshold");
    assert_eq!(e["type"], "start");
    assert!(e["score"].as_f64().unwrap() >= 0.6);

    // a changed prompt: the old occurrence ends, the new prompt's models load, the stream goes on
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "text = \"a rocket on the launch pad\"",
        "text = \"a rocket\"",
    );
    std::fs::write(&config, text).unwrap();
    d.signal("-HUP");
    let mut seen = vec![];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && !seen
            .iter()
            .any(|e: &Value| e["prompt"] == "a_rocket" && e["type"] == "start")
    {
        if let Some(e) = d.next_event(Duration::from_millis(500)) {
            seen.push(e);
        }
    }
    let end_old = seen
        .iter()
        .position(|e| e["prompt"] == "a_rocket_on_the_launch_pad" && e["type"] == "end");
    let start_new = seen
        .iter()
        .position(|e| e["prompt"] == "a_rocket" && e["type"] == "start");
    assert!(
        matches!((end_old, start_new), (Some(a), Some(b)) if a < b),
        "{seen:?}"
    );
}

#[test]
fn check_validates_config_and_models_and_names_bad_keys() {
    let demo = fixture::path("config/demo.toml");
    let (code, out, err) = fixture::promptcam(&["check", "--config", demo.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("valid") && out.contains("camera demo"),
        "{out}"
    );

    let tmp = TempDir::new("check-bad");
    let bad = tmp.path().join("bad.toml");
    let text = std::fs::read_to_string(&demo)
        .unwrap()
        .replace("threshold = 0.6\nmin_frames", "threshold = 6\nmin_frames");
    std::fs::write(&bad, text).unwrap();
    let (code, _, err) = fixture::promptcam(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cameras.prompts.threshold")
            && err.contains("line 21")
            && err.contains("0..=1"),
        "{err}"
    );

    // a bad [mqtt] value is refused with the file, before "valid" and before any model loads
    let bad_mqtt = tmp.path().join("bad-mqtt.toml");
    let demo_text = std::fs::read_to_string(&demo).unwrap();
    let port_line = demo_text.lines().count() + 4;
    std::fs::write(
        &bad_mqtt,
        format!("{demo_text}\n[mqtt]\nhost = \"127.0.0.1\"\nport = \"not a number\"\n"),
    )
    .unwrap();
    let (code, out, err) = fixture::promptcam(&["check", "--config", bad_mqtt.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(!out.contains("valid"), "{out}");
    assert!(
        err.contains("mqtt.port")
            && err.contains(&format!("line {port_line}, column 8"))
            && err.contains("expected an integer"),
        "{err}"
    );
    // ... and before any model directory is opened: with the models missing as well, the
    // error is still the [mqtt] one
    let bad_mqtt_no_models = tmp.path().join("bad-mqtt-no-models.toml");
    std::fs::write(
        &bad_mqtt_no_models,
        std::fs::read_to_string(&bad_mqtt)
            .unwrap()
            .replace("models/tiny/", "models/nowhere/"),
    )
    .unwrap();
    let (code, out, err) =
        fixture::promptcam(&["check", "--config", bad_mqtt_no_models.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(!out.contains("valid"), "{out}");
    assert!(
        err.contains("mqtt.port") && !err.contains("models/nowhere"),
        "{err}"
    );

    // a config whose model directory is missing fails at check, naming the directory
    let missing = tmp.path().join("missing.toml");
    std::fs::write(
        &missing,
        std::fs::read_to_string(&demo)
            .unwrap()
            .replace("models/tiny/owlvit", "models/nowhere"),
    )
    .unwrap();
    let (code, _, err) = fixture::promptcam(&["check", "--config", missing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("models/nowhere") && err.contains("models/fetch.sh"),
        "{err}"
    );
}

/// The `int8 X ms, fp32 Y ms` figures and the choice of `model`'s precision log line, if any.
fn precision_line(log: &str, model: &str) -> Option<(f64, f64, String)> {
    let line = log
        .lines()
        .find(|l| l.contains(&format!("{model}: int8 ")))?;
    let rest = line.split(&format!("{model}: int8 ")).nth(1)?;
    let int8: f64 = rest.split(" ms").next()?.parse().ok()?;
    let fp32: f64 = rest
        .split("fp32 ")
        .nth(1)?
        .split(" ms")
        .next()?
        .parse()
        .ok()?;
    let using = rest.split("using ").nth(1)?.split(' ').next()?.to_string();
    Some((int8, fp32, using))
}

#[test]
fn quantized_auto_times_both_precisions_and_keeps_the_faster() {
    let demo = fixture::path("config/demo.toml");
    let demo_text = std::fs::read_to_string(&demo).unwrap();
    assert!(
        !demo_text.contains("quantized"),
        "the demo relies on the default"
    );
    // the default is "auto": both precisions timed, both figures logged, the faster kept (int8
    // unless fp32 beats it by 3%), and `check` says which runs
    let (code, out, err) = fixture::promptcam(&["check", "--config", demo.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for (model, key) in [("CLIP", "clip"), ("OWL-ViT", "owlvit")] {
        let (int8, fp32, using) = precision_line(&err, model).unwrap_or_else(|| panic!("{err}"));
        let want = if fp32 < int8 * 0.97 { "fp32" } else { "int8" };
        assert_eq!(using, want, "{err}");
        assert!(
            out.contains(&format!("model {key}: ")) && out.contains(&format!("({want} (Auto))")),
            "{out}"
        );
    }

    let tmp = TempDir::new("precision");
    let with = |name: &str, line: &str| {
        let p = tmp.path().join(name);
        let text = demo_text.replace(
            "dir = \"models/tiny/clip\"\n",
            &format!("dir = \"models/tiny/clip\"\n{line}\n"),
        );
        std::fs::write(&p, text).unwrap();
        p
    };
    // an explicit true keeps int8 and logs both figures (a warning past 3x fp32)
    let (code, out, err) = fixture::promptcam(&[
        "check",
        "--config",
        with("true.toml", "quantized = true").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(int8 (Int8))"), "{out}");
    let (int8, fp32, _) = precision_line(&err, "CLIP").unwrap_or_else(|| panic!("{err}"));
    let warned = err.contains("slower than fp32 on this CPU");
    assert_eq!(warned, int8 > 3.0 * fp32, "{err}");
    // false runs fp32 without timing int8
    let (code, out, err) = fixture::promptcam(&[
        "check",
        "--config",
        with("false.toml", "quantized = false").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(fp32 (Fp32))") && precision_line(&err, "CLIP").is_none(),
        "{out}{err}"
    );
    // a word that is not a choice is refused with the choices
    let (code, _, err) = fixture::promptcam(&[
        "check",
        "--config",
        with("word.toml", "quantized = \"fast\"").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("models.clip.quantized") && err.contains("\"auto\"") && err.contains("line 7"),
        "{err}"
    );

    // a model directory without int8 files runs fp32 under "auto", and says why
    let fp32_only = tmp.path().join("clip");
    std::fs::create_dir_all(fp32_only.join("onnx")).unwrap();
    let src = fixture::path("models/tiny/clip");
    for e in std::fs::read_dir(&src).unwrap().map(Result::unwrap) {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), fp32_only.join(e.file_name())).unwrap();
        }
    }
    for e in std::fs::read_dir(src.join("onnx"))
        .unwrap()
        .map(Result::unwrap)
    {
        if !e.file_name().to_string_lossy().contains("_quantized") {
            std::fs::copy(e.path(), fp32_only.join("onnx").join(e.file_name())).unwrap();
        }
    }
    let p = tmp.path().join("fp32-only.toml");
    std::fs::write(
        &p,
        demo_text.replace("models/tiny/clip", fp32_only.to_str().unwrap()),
    )
    .unwrap();
    let (code, out, err) = fixture::promptcam(&["check", "--config", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("no int8 files to time against it") && out.contains("(fp32 (Auto))"),
        "{out}{err}"
    );
}

#[test]
fn the_systemd_unit_verifies_without_warnings() {
    let unit = std::fs::read_to_string(fixture::path("systemd/promptcam.service")).unwrap();
    assert!(
        unit.contains("Type=notify")
            && unit.contains("WatchdogSec=")
            && unit.contains("DeviceAllow=char-video4linux")
    );
    let tmp = TempDir::new("unit");
    // the packaged binary lives in /usr/bin; verify the unit against the one just built
    let path = tmp.path().join("promptcam.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/promptcam", env!("CARGO_BIN_EXE_promptcam")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output();
    let Ok(out) = out else {
        panic!("systemd-analyze is needed for this test (Debian package systemd)");
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    let sec = Command::new("systemd-analyze")
        .args(["security", "--offline=true", path.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&sec.stdout);
    let exposure = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no exposure line");
    eprintln!("systemd-analyze security: {exposure}");
    assert!(
        exposure.contains("OK") || exposure.contains("MEDIUM"),
        "{report}"
    );
}

#[test]
fn the_example_config_is_a_valid_file() {
    let path = fixture::path("config/promptcam.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // the password file only exists on a device; everything else in [mqtt] validates
    let line = text
        .lines()
        .find(|l| l.starts_with("password_file = "))
        .unwrap();
    let text = text.replace(line, "");
    let config = promptcam::config::parse(&text, &path).unwrap();
    assert_eq!(config.cameras[0].prompts.len(), 2);
    use promptcam::model::ModelKind;
    assert!(
        config.motion.is_some()
            && config.model(ModelKind::Clip).is_some()
            && config.model(ModelKind::OwlVit).is_some()
    );
    let m = config.mqtt.clone().unwrap();
    assert_eq!((m.host.as_str(), m.port), ("localhost", 1883));
}

/// Runs a finite replay of `frames` with a CLIP and an OWL-ViT prompt and returns its events.
fn cascade_events(tag: &str, frames: &[&str], owlvit_when: &str) -> Vec<Value> {
    let tmp = TempDir::new(tag);
    let config = replay(tmp.path(), frames, false, 0.6);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "loop = false",
        &format!("loop = false\nowlvit_when = \"{owlvit_when}\""),
    );
    let text = format!(
        "{text}\n[[cameras.prompts]]\ntext = \"a rocket\"\nmodel = \"owlvit\"\nthreshold = 0.3\nwindow = 1\nmin_frames = 1\n\n[models.owlvit]\ndir = \"{}\"\nquantized = false\n",
        fixture::path("models/tiny/owlvit").display()
    );
    std::fs::write(&config, text).unwrap();
    let mut d = Daemon::start(&config, None);
    assert_eq!(d.wait(Duration::from_secs(60)), 0);
    d.lines
        .try_iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

#[test]
fn the_cascade_runs_owlvit_only_while_a_clip_prompt_is_on() {
    let cats = ["chelsea.png"; 4];
    let prompts = |events: &[Value]| {
        events
            .iter()
            .map(|e| e["prompt"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // OWL-ViT finds "a rocket" in the cat photo when it runs on every frame...
    let always = cascade_events("cascade-always", &cats, "always");
    assert!(
        prompts(&always).iter().any(|p| p == "a_rocket"),
        "{always:?}"
    );
    // ...but the cascade never runs it while the CLIP prompt stays OFF
    let gated = cascade_events("cascade-clip-on", &cats, "clip_on");
    assert!(gated.is_empty(), "{gated:?}");
    // and runs it once the CLIP prompt is ON
    let on = cascade_events("cascade-on", &["rocket.png"; 4], "clip_on");
    assert!(prompts(&on).iter().any(|p| p == "a_rocket"), "{on:?}");
}

#[test]
fn owlv2_prompts_and_motion_cropped_detectors_run_in_the_daemon() {
    let tmp = TempDir::new("daemon-owlv2");
    // the rocket moves in from the right half of a grey canvas: motion in part of the frame
    let frames = tmp.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let rocket = image::open(fixture::image("rocket.png")).unwrap().to_rgb8();
    let small = image::imageops::resize(&rocket, 200, 120, image::imageops::FilterType::Triangle);
    for i in 0..6u32 {
        let mut canvas = image::RgbImage::from_pixel(1280, 720, image::Rgb([110, 110, 110]));
        image::imageops::overlay(&mut canvas, &small, 1000 - 60 * i as i64, 400);
        canvas.save(frames.join(format!("{i:03}.png"))).unwrap();
    }
    let config = tmp.path().join("promptcam.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[models.owlvit]
dir = "{owlvit}"
quantized = false
input_size = 384

[models.owlv2]
dir = "{owlv2}"
quantized = false
input_size = 480

[[cameras]]
name = "Launch pad"
source = "{frames}"
fps = 10
motion_crops = true
full_frame_every = 60

[[cameras.prompts]]
text = "a rocket"
model = "owlv2"
threshold = 0.0
window = 1
min_frames = 1

[[cameras.prompts]]
text = "a launch tower"
model = "owlvit"
threshold = 0.0
window = 1
min_frames = 1
"#,
            owlvit = fixture::path("models/tiny/owlvit").display(),
            owlv2 = fixture::path("models/tiny/owlv2").display(),
            frames = frames.display(),
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&config, None);
    assert_eq!(d.wait(Duration::from_secs(60)), 0);
    let events: Vec<Value> = d
        .lines
        .try_iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    for prompt in ["a_rocket", "a_launch_tower"] {
        let start = events
            .iter()
            .find(|e| e["prompt"] == prompt && e["type"] == "start")
            .unwrap_or_else(|| panic!("no start for {prompt}: {events:?}"));
        // a box in frame pixels (random weights: boxes may reach past the frame's edge, as
        // transformers' post-processing does not clip them)
        let b: Vec<f64> = start["box"]
            .as_array()
            .unwrap_or_else(|| panic!("{start}"))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            b.len() == 4 && b[0] < b[2] && b[1] < b[3] && b[0] < 1280.0 && b[1] < 720.0,
            "{start}"
        );
    }
}

#[test]
fn under_journald_log_lines_carry_syslog_priorities_and_no_timestamps() {
    let tmp = TempDir::new("journald");
    let config = replay(tmp.path(), &["rocket.png"], false, 0.6);
    let out = Command::new(env!("CARGO_BIN_EXE_promptcam"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("JOURNAL_STREAM", "8:12345")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("<6>") || l.starts_with("<4>") || l.starts_with("<3>")),
        "{stderr}"
    );
    assert!(!stderr.contains("T2"), "no timestamps: {stderr}");
}

/// `run` on `config` with model builds logged, until its source ends: (code, stdout, stderr).
pub(crate) fn run_logged(config: &Path) -> (i32, String, String) {
    let out = fixture::promptcam_command()
        .args(["run", "--config", config.to_str().unwrap()])
        .current_dir(fixture::repo())
        .env("RUST_LOG", "info,promptcam::model::graph=debug")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The ONNX files a run built into tract models (the graph's debug line), by file name.
fn built(log: &str) -> Vec<String> {
    let mut v: Vec<String> = log
        .lines()
        .filter(|l| l.contains(": import "))
        .filter_map(|l| {
            let path = l.split(".onnx: import").next()?;
            Some(format!("{}.onnx", path.rsplit('/').next()?))
        })
        .collect();
    v.sort();
    v
}

/// Each event's type, prompt and score, in order.
pub(crate) fn event_scores(out: &str) -> Vec<(String, String, f64)> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["prompt"].as_str().unwrap_or_default().to_string(),
                e["score"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

#[test]
fn a_restart_takes_the_measured_choices_from_the_start_cache() {
    let tmp = TempDir::new("start-cache");
    // copies of the tiny models, whose files the test can touch
    let clip = tmp.path().join("clip");
    fixture::copy_model(&fixture::path("models/tiny/clip"), &clip, |_| true);
    let owl = tmp.path().join("owlvit");
    fixture::copy_model(&fixture::path("models/tiny/owlvit"), &owl, |_| true);
    let config = tmp.path().join("promptcam.toml");
    let text = fixture::demo_without_http()
        .replace("loop = true", "loop = false")
        .replace("\"models/tiny/clip\"", &format!("{clip:?}"))
        .replace("\"models/tiny/owlvit\"", &format!("{owl:?}"));
    std::fs::write(&config, text).unwrap();
    let cache_file = tmp.path().join("start-cache.json");

    // a first start times both precisions of both models and the thread counts, and keeps them
    let (code, out1, err1) = run_logged(&config);
    assert_eq!(code, 0, "{err1}");
    let clip1 = precision_line(&err1, "CLIP").unwrap_or_else(|| panic!("{err1}"));
    let owl1 = precision_line(&err1, "OWL-ViT").unwrap_or_else(|| panic!("{err1}"));
    assert!(!err1.contains("at an earlier start"), "{err1}");
    assert!(
        err1.contains("inference threads measured on the loaded models"),
        "{err1}"
    );
    let both = built(&err1);
    for f in [
        "vision_model.onnx",
        "vision_model_quantized.onnx",
        "model.onnx",
        "model_quantized.onnx",
    ] {
        assert!(both.contains(&f.to_string()), "{f} not built: {both:?}");
    }
    let cache: Value = serde_json::from_slice(&std::fs::read(&cache_file).unwrap()).unwrap();
    assert_eq!(cache["timings"].as_object().unwrap().len(), 2, "{cache}");
    assert_eq!(cache["threads"].as_object().unwrap().len(), 1, "{cache}");
    assert_eq!(cache["texts"].as_object().unwrap().len(), 2, "{cache}");

    // a restart loads only the chosen precisions, embeds no text and times nothing, with the
    // first start's figures and the same events
    let (code, out2, err2) = run_logged(&config);
    assert_eq!(code, 0, "{err2}");
    assert_eq!(precision_line(&err2, "CLIP"), Some(clip1.clone()), "{err2}");
    assert_eq!(
        precision_line(&err2, "OWL-ViT"),
        Some(owl1.clone()),
        "{err2}"
    );
    assert!(
        err2.contains("CLIP: 2 of 2 text embedding(s) from the start cache"),
        "{err2}"
    );
    assert!(
        err2.contains("inference threads measured on these models at an earlier start"),
        "{err2}"
    );
    let suffix = |p: &str| {
        if p == "int8" {
            "_quantized.onnx"
        } else {
            ".onnx"
        }
    };
    assert_eq!(
        built(&err2),
        {
            let mut v = vec![
                format!("model{}", suffix(&owl1.2)),
                format!("vision_model{}", suffix(&clip1.2)),
            ];
            v.sort();
            v
        },
        "{err2}"
    );
    // each prompt's first start: the same frame, scored with the same (cached) embeddings (the
    // later events follow the wall clock's off_delay, which a busy machine shifts)
    let first_starts = |out: &str| {
        let mut v: Vec<(String, f64)> = vec![];
        for (kind, prompt, score) in event_scores(out) {
            if kind == "start" && !v.iter().any(|(p, _)| *p == prompt) {
                v.push((prompt, score));
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(first_starts(&out1).len(), 2, "{out1}");
    assert_eq!(first_starts(&out2), first_starts(&out1));

    // a changed model file (here: a new modification time) is measured again; the other is not
    let vision = clip.join("onnx/vision_model.onnx");
    std::fs::File::options()
        .append(true)
        .open(&vision)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    let (code, _, err3) = run_logged(&config);
    assert_eq!(code, 0, "{err3}");
    let clip3 = err3
        .lines()
        .find(|l| l.contains("CLIP: int8"))
        .unwrap_or_default();
    let owl3 = err3
        .lines()
        .find(|l| l.contains("OWL-ViT: int8"))
        .unwrap_or_default();
    assert!(
        !clip3.contains("earlier start") && owl3.contains("earlier start"),
        "{err3}"
    );
    assert!(
        built(&err3).contains(&"text_model.onnx".to_string())
            || built(&err3).contains(&"text_model_quantized.onnx".to_string()),
        "{err3}"
    );

    // a cache that does not parse is said so, measured again and rewritten
    std::fs::write(&cache_file, b"{\"format\": 1, \"timings\": {").unwrap();
    let (code, _, err4) = run_logged(&config);
    assert_eq!(code, 0, "{err4}");
    assert!(
        err4.contains("unable to use the start cache") && err4.contains("rewriting it"),
        "{err4}"
    );
    assert!(!err4.contains("at an earlier start"), "{err4}");
    let cache: Value = serde_json::from_slice(&std::fs::read(&cache_file).unwrap()).unwrap();
    assert_eq!(cache["timings"].as_object().unwrap().len(), 2, "{cache}");

    // OWL-ViT's files replaced by garbage of the same size and time: the cached choice matches
    // but does not load (while CLIP loads beside it), and the start fails with the reason
    for name in ["model.onnx", "model_quantized.onnx"] {
        let f = owl.join("onnx").join(name);
        let meta = std::fs::metadata(&f).unwrap();
        std::fs::write(&f, vec![0x5a_u8; meta.len() as usize]).unwrap();
        std::fs::File::options()
            .append(true)
            .open(&f)
            .unwrap()
            .set_modified(meta.modified().unwrap())
            .unwrap();
    }
    let (code, _, err5) = run_logged(&config);
    assert_ne!(code, 0, "{err5}");
    assert!(
        err5.contains("chosen at an earlier start")
            && err5.contains("timing both precisions again"),
        "{err5}"
    );
    assert!(
        err5.contains("as ONNX") && !err5.contains("panicked"),
        "{err5}"
    );
}
