//! The history and the prompt lab end to end: `promptcam run` with `[http]` on a free port
//! replays fixture photos with the tiny models; the tests read the API, the CLI and the SQLite
//! file. The lab's scores equal `promptcam classify` on the same photos, its replayed decider
//! fires where the daemon did, a `kill -9` leaves a database that opens with at most the last
//! second lost, a corrupt file is set aside, pages keep answering while the daemon writes, and
//! the listener refuses what it must (tokens, foreign hosts and origins).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use promptcam::history::store::{Store, FILE_NAME};

use crate::fixture::{self, TempDir};

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon whose log goes to a file, killed when dropped.
pub(crate) struct Run {
    child: Child,
    pub log: PathBuf,
    pub port: u16,
}

impl Run {
    pub(crate) fn start(config: &Path, port: u16) -> Run {
        let log = config.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_promptcam"))
            .args(["run", "--config", config.to_str().unwrap()])
            .current_dir(fixture::repo())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("STATE_DIRECTORY")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let run = Run { child, log, port };
        run.wait_until("the HTTP endpoint answers", Duration::from_secs(30), || {
            run.get("/healthz").is_some()
        });
        run
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GET: (status, body) or None when the endpoint does not answer.
    pub(crate) fn get(&self, path: &str) -> Option<(u16, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let mut r = agent.get(&self.url(path)).call().ok()?;
        let code = r.status().as_u16();
        Some((code, r.body_mut().read_to_string().unwrap_or_default()))
    }

    pub(crate) fn json(&self, path: &str) -> Value {
        let (code, body) = self
            .get(path)
            .unwrap_or_else(|| panic!("{path}: no answer"));
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub(crate) fn wait_until(&self, what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
        let end = Instant::now() + timeout;
        while !ok() {
            assert!(
                Instant::now() < end,
                "timed out waiting until {what}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A config replaying `frames` (copied in order) with one CLIP prompt, `[http]` on `port`.
pub(crate) fn lab_config(
    dir: &Path,
    frames: &[&str],
    port: u16,
    fps: f64,
    prompt: &str,
    extra: &str,
) -> PathBuf {
    let frames_dir = dir.join("frames");
    std::fs::create_dir_all(&frames_dir).unwrap();
    for (i, f) in frames.iter().enumerate() {
        std::fs::copy(fixture::image(f), frames_dir.join(format!("{i:03}.png"))).unwrap();
    }
    write_lab_config(dir, &frames_dir, port, fps, prompt, extra)
}

/// A config replaying the images in `frames_dir` (looped) with `prompt`, `[http]` on `port`.
pub(crate) fn write_lab_config(
    dir: &Path,
    frames_dir: &Path,
    port: u16,
    fps: f64,
    prompt: &str,
    extra: &str,
) -> PathBuf {
    let config = dir.join("promptcam.toml");
    let text = format!(
        r#"
[models.clip]
dir = "{clip}"
quantized = false

[motion]
enabled = false

[http]
enabled = true
listen = "127.0.0.1:{port}"

[[cameras]]
name = "Yard"
source = "{frames}"
fps = {fps}
loop = true

[[cameras.prompts]]
{prompt}
{extra}
"#,
        clip = fixture::path("models/tiny/clip").display(),
        frames = frames_dir.display(),
    );
    std::fs::write(&config, text).unwrap();
    config
}

const DOG: &str =
    "text = \"a photo of a dog\"\nmodel = \"clip\"\nnegatives = [\"a photo of a cat\"]";
const PHOTOS: [&str; 6] = [
    "astronaut_portrait.png",
    "camera_gray.png",
    "chelsea.png",
    "coffee.png",
    "logo_rgba.png",
    "rocket.png",
];

fn classify(image: &str) -> f64 {
    let img = fixture::image(image);
    let (code, out, err) = fixture::promptcam(&[
        "classify",
        "--model",
        fixture::path("models/tiny/clip").to_str().unwrap(),
        "--prompt",
        "a photo of a dog",
        "--prompt",
        "a photo of a cat",
        "--json",
        img.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let s = v["results"].as_array().unwrap_or_else(|| panic!("{v}"));
    s.iter()
        .find(|p| p["prompt"] == "a photo of a dog")
        .unwrap()["score"]
        .as_f64()
        .unwrap()
}

#[test]
fn lab_and_search_scores_equal_classify_on_the_same_frames() {
    let tmp = TempDir::new("history-lab");
    let port = free_port();
    let config = lab_config(tmp.path(), &PHOTOS, port, 5.0, DOG, "threshold = 0.6");
    let run = Run::start(&config, port);
    run.wait_until(
        "two rounds of photos are stored",
        Duration::from_secs(60),
        || {
            run.json("/api/status")["history"]["frames"]
                .as_u64()
                .unwrap_or(0)
                >= 12
        },
    );
    let reference: Vec<f64> = PHOTOS.iter().map(|p| classify(p)).collect();
    assert!(
        reference.iter().any(|s| *s > 0.9) && reference.iter().any(|s| *s < 0.05),
        "{reference:?}"
    );

    // a typed prompt, scored on every stored frame from the embeddings: frame k shows photo k mod 6
    let r = run.json("/api/search?camera=yard&q=a%20photo%20of%20a%20dog&negative=a%20photo%20of%20a%20cat&limit=1000");
    assert_eq!(
        (r["camera"].as_str(), r["prompt"].as_str()),
        (Some("yard"), Some("a photo of a dog"))
    );
    let mut hits: Vec<&Value> = r["results"].as_array().unwrap().iter().collect();
    assert_eq!(hits.len() as u64, r["searched"].as_u64().unwrap());
    assert!(hits.len() >= 12);
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "highest first: {scores:?}"
    );
    hits.sort_by_key(|h| h["frame"].as_i64().unwrap());
    let first = hits[0]["frame"].as_i64().unwrap();
    for h in &hits {
        let k = (h["frame"].as_i64().unwrap() - first) as usize % PHOTOS.len();
        let (got, want) = (h["score"].as_f64().unwrap(), reference[k]);
        assert!(
            (got - want).abs() < 0.01,
            "frame {} ({}): lab {got} vs classify {want}",
            h["frame"],
            PHOTOS[k]
        );
        assert!(h["time"].as_str().unwrap().ends_with('Z'));
    }
    // thumbnails: URLs that serve JPEGs, on at least the first frame
    let thumb = hits[0]["thumbnail"]
        .as_str()
        .expect("the first frame has a thumbnail");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(&run.url(thumb)).call().unwrap();
    let mut jpeg = vec![];
    resp.body_mut().as_reader().read_to_end(&mut jpeg).unwrap();
    let img = image::load_from_memory(&jpeg).unwrap();
    assert_eq!(
        img.width(),
        300,
        "the astronaut portrait is 300 wide: never upscaled"
    );

    // the same from a shell
    let (code, out, err) = fixture::promptcam(&[
        "search",
        "--config",
        config.to_str().unwrap(),
        "--camera",
        "yard",
        "a photo of a dog",
        "--negative",
        "a photo of a cat",
        "--limit",
        "3",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    // the daemon kept storing frames meanwhile: compare the frames both saw, score for score
    let seen: std::collections::HashMap<i64, String> = hits
        .iter()
        .map(|h| (h["frame"].as_i64().unwrap(), h["score"].to_string()))
        .collect();
    let both: Vec<&Value> = cli["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| seen.contains_key(&h["frame"].as_i64().unwrap()))
        .collect();
    assert!(!both.is_empty(), "{cli}");
    for h in both {
        assert_eq!(
            h["score"].to_string(),
            seen[&h["frame"].as_i64().unwrap()],
            "{h}"
        );
    }

    // without negatives, a prompt beats the camera's other CLIP prompts: here there are none
    let (code, body) = run
        .get("/api/search?camera=yard&q=a%20photo%20of%20a%20dog")
        .unwrap();
    assert!(code == 400 && body.contains("negative"), "{code} {body}");
    let (code, body) = run.get("/api/search?camera=nowhere&q=x").unwrap();
    assert!(code == 404 && body.contains("yard"), "{code} {body}");

    // each negative and template runs the text tower: counts and lengths are capped, with a 400
    // that names the limit, on every route that takes them
    let negatives = |n: usize| "&negative=a%20cat".repeat(n);
    for route in [
        "/api/search",
        "/api/lab",
        "/api/lab/replay",
        "/api/lab/suggest",
    ] {
        let (code, body) = run
            .get(&format!("{route}?camera=yard&q=a%20dog{}", negatives(17)))
            .unwrap();
        assert!(
            code == 400 && body.contains("at most 16 `negative`"),
            "{route}: {code} {body}"
        );
        let (code, _) = run
            .get(&format!("{route}?camera=yard&q=a%20dog{}", negatives(16)))
            .unwrap();
        assert_eq!(code, 200, "{route}: 16 negatives are fine");
    }
    let long = "a".repeat(301);
    let (code, body) = run
        .get(&format!("/api/lab?camera=yard&q={long}&negative=a%20cat"))
        .unwrap();
    assert!(code == 400 && body.contains("at most 300"), "{code} {body}");
    let (code, body) = run
        .get(&format!(
            "/api/lab?camera=yard&q=a%20dog&negative=a%20cat{}",
            "&template=a%20photo%20of%20{}".repeat(9)
        ))
        .unwrap();
    assert!(
        code == 400 && body.contains("at most 8 `template`"),
        "{code} {body}"
    );
}

#[test]
fn the_replayed_decider_fires_where_the_daemon_did() {
    let tmp = TempDir::new("history-replay");
    let port = free_port();
    // dog-like, dog-like, cat, cat, cat: on for two frames, off after 0.3 s below 0.5
    let frames = [
        "rocket.png",
        "camera_gray.png",
        "chelsea.png",
        "coffee.png",
        "chelsea.png",
    ];
    let decide = "threshold = 0.6\noff_threshold = 0.5\nwindow = 1\nmin_frames = 1\noff_delay = 0.3\ncooldown = 0.4";
    let config = lab_config(tmp.path(), &frames, port, 5.0, DOG, decide);
    let run = Run::start(&config, port);
    run.wait_until("four events ended", Duration::from_secs(60), || {
        let h = run.json("/api/history?camera=yard&hours=1");
        h["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "end")
            .count()
            >= 4
    });
    let h = run.json("/api/history?camera=yard&hours=1");
    let events = h["events"].as_array().unwrap();
    let starts: Vec<i64> = events
        .iter()
        .filter(|e| e["kind"] == "start")
        .map(|e| e["t_ms"].as_i64().unwrap())
        .collect();
    let ends: Vec<i64> = events
        .iter()
        .filter(|e| e["kind"] == "end")
        .map(|e| e["t_ms"].as_i64().unwrap())
        .collect();
    let params = "camera=yard&q=a%20photo%20of%20a%20dog&negative=a%20photo%20of%20a%20cat&hours=1\
                  &threshold=0.6&off_threshold=0.5&window=1&min_frames=1&off_delay=0.3&cooldown=0.4";
    let r = run.json(&format!("/api/lab/replay?{params}"));
    let fires = r["fires"].as_array().unwrap();
    let ms = |s: &Value| {
        humantime::parse_rfc3339(s.as_str().unwrap())
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    // the replay ran on frames stored a little later than the events: compare what both saw
    let replayed: Vec<i64> = fires
        .iter()
        .map(|f| ms(&f["start"]))
        .filter(|t| *t <= *starts.last().unwrap())
        .collect();
    assert_eq!(replayed, starts, "replay {fires:?}\ndaemon {events:?}");
    // events the replay saw end (the newest may still be on in what it read)
    for (f, end) in fires
        .iter()
        .zip(&ends)
        .filter(|(f, _)| f["end"].is_string())
    {
        let replayed_end = ms(&f["end"]);
        // the daemon wakes up when an event is due to end: within a few milliseconds
        assert!(
            (end - replayed_end).abs() <= 150,
            "end {end} vs replayed {replayed_end}"
        );
    }
    assert_eq!(r["fired"].as_u64().unwrap() as usize, fires.len());
    // a higher threshold fires less: nothing scores 0.99
    let r = run.json(&format!(
        "/api/lab/replay?{}",
        params.replace(
            "threshold=0.6&off_threshold=0.5",
            "threshold=0.99&off_threshold=0.9"
        )
    ));
    assert_eq!(r["fired"], 0, "{r}");
}

fn max_time_ms(dir: &Path) -> i64 {
    let s = Store::open(dir).expect("the database opens");
    let frames = s.frames("yard", 0, i64::MAX).unwrap();
    frames.last().map(|f| f.t_ms).unwrap_or(0)
}

#[test]
fn kill_9_leaves_a_database_that_opens_with_at_most_a_second_lost() {
    let tmp = TempDir::new("history-kill9");
    let port = free_port();
    let config = lab_config(tmp.path(), &PHOTOS, port, 20.0, DOG, "");
    let history = tmp.path().join("history");
    for round in 0..3 {
        let mut run = Run::start(&config, port);
        std::thread::sleep(Duration::from_millis(1500 + 300 * round));
        let killed_at = SystemTime::now();
        run.kill9();
        let newest = max_time_ms(&history);
        let killed_ms = killed_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        // committed every 250 ms, a frame every 50 ms: far less than a second is lost
        assert!(
            killed_ms - newest < 1000,
            "round {round}: newest frame {} ms before the kill",
            killed_ms - newest
        );
        let aside = std::fs::read_dir(&history)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("corrupt")
            })
            .count();
        assert_eq!(aside, 0, "round {round}: the database was not damaged");
    }
    let conn = rusqlite::Connection::open(history.join(FILE_NAME)).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn a_corrupt_database_is_set_aside_logged_and_replaced() {
    let tmp = TempDir::new("history-corrupt");
    let port = free_port();
    let config = lab_config(tmp.path(), &PHOTOS, port, 5.0, DOG, "");
    let history = tmp.path().join("history");
    std::fs::create_dir_all(&history).unwrap();
    std::fs::write(history.join(FILE_NAME), vec![0x5Au8; 64 * 1024]).unwrap();
    let run = Run::start(&config, port);
    run.wait_until("frames are stored", Duration::from_secs(30), || {
        run.json("/api/status")["history"]["frames"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    });
    let log = run.log_text();
    assert!(log.contains("corrupt") && log.contains("moved to"), "{log}");
    let aside: Vec<_> = std::fs::read_dir(&history)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.starts_with("history.sqlite.corrupt-").then_some(n)
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(history.join(&aside[0])).unwrap(),
        vec![0x5Au8; 64 * 1024],
        "the old file is kept as it was"
    );
    assert!(
        run.json("/api/history?camera=yard")["frames"]
            .as_u64()
            .unwrap()
            >= 3
    );
}

#[test]
fn a_history_that_cannot_open_leaves_the_daemon_running_healthz_degraded_and_opens_once_it_can() {
    let tmp = TempDir::new("history-blocked");
    let port = free_port();
    let config = lab_config(tmp.path(), &PHOTOS, port, 5.0, DOG, "");
    // the history's directory cannot be made: a file holds its name
    std::fs::write(tmp.path().join("history"), b"not a directory").unwrap();
    // check refuses it, naming the directory and the key
    let (code, _, err) = fixture::promptcam(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("history directory")
            && err.contains("not a directory")
            && err.contains("history.path"),
        "{err}"
    );
    let run = Run::start(&config, port);
    let mut last = String::new();
    run.wait_until("/healthz says degraded", Duration::from_secs(30), || {
        let (code, body) = run.get("/healthz").unwrap_or_default();
        last = body.clone();
        code == 200 && body.starts_with("degraded") && body.contains("history")
    });
    assert!(last.contains("camera yard"), "{last}");
    let log = run.log_text();
    assert!(log.contains("running without the history"), "{log}");
    // the cameras' work goes on: frames are analysed after the failed start
    run.wait_until("frames are analysed", Duration::from_secs(30), || {
        let (_, body) = run.get("/healthz").unwrap_or_default();
        let analysed = body
            .split("camera yard: ")
            .nth(1)
            .and_then(|r| r.split(' ').next()?.parse::<u64>().ok());
        analysed.unwrap_or(0) >= 3
    });
    let (code, _) = run.get("/snapshot/yard.jpg").unwrap();
    assert_eq!(code, 200);
    // the cause goes: the history opens by itself, records, and /healthz is ok again
    std::fs::remove_file(tmp.path().join("history")).unwrap();
    run.wait_until("/healthz is ok again", Duration::from_secs(60), || {
        let (code, body) = run.get("/healthz").unwrap_or_default();
        last = body;
        code == 200 && last.starts_with("ok")
    });
    run.wait_until("frames are recorded", Duration::from_secs(30), || {
        tmp.path().join("history").join(FILE_NAME).exists()
            && max_time_ms(&tmp.path().join("history")) > 0
    });
    assert!(run.log_text().contains("opened; recording again"));
}

#[test]
fn pages_and_api_answer_while_the_daemon_writes() {
    let tmp = TempDir::new("history-concurrent");
    let port = free_port();
    let config = lab_config(tmp.path(), &PHOTOS, port, 15.0, DOG, "");
    let run = Run::start(&config, port);
    run.wait_until("frames are stored", Duration::from_secs(30), || {
        run.json("/api/status")["history"]["frames"]
            .as_u64()
            .unwrap_or(0)
            >= 6
    });
    let paths = [
        "/",
        "/camera/yard",
        "/lab/yard",
        "/api/status",
        "/api/history?camera=yard&hours=24",
        "/api/lab?camera=yard&q=a%20photo%20of%20a%20dog&negative=a%20photo%20of%20a%20cat",
        "/api/search?camera=yard&q=a%20cat&negative=a%20dog&limit=5",
        "/assets/app.js",
        "/assets/uplot.iife.min.js",
    ];
    let url = run.url("");
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut codes = vec![];
                for i in 0..15 {
                    let p = paths[(w + i) % paths.len()];
                    let code = agent
                        .get(&format!("{url}{p}"))
                        .call()
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    codes.push((p, code));
                }
                codes
            })
        })
        .collect();
    for w in workers {
        for (p, code) in w.join().unwrap() {
            assert_eq!(code, 200, "{p}");
        }
    }
    let before = run.json("/api/status")["history"]["frames"]
        .as_u64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        run.json("/api/status")["history"]["frames"]
            .as_u64()
            .unwrap()
            > before,
        "the daemon kept writing"
    );
    assert_eq!(run.json("/api/status")["history"]["dropped"], 0);
}

pub(crate) fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    s.write_all(format!("{head}\r\n{body}").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[test]
fn example_pictures_live_per_camera_under_capped_names_and_move_when_re_marked() {
    let tmp = TempDir::new("history-examples");
    let port = free_port();
    let config = lab_config(tmp.path(), &PHOTOS, port, 5.0, DOG, "");
    let run = Run::start(&config, port);
    let q = "a photo of a dog";
    let mut top: Vec<i64> = vec![];
    run.wait_until("two frames have pictures", Duration::from_secs(30), || {
        let v = run.json(
            "/api/lab?camera=yard&q=a%20photo%20of%20a%20dog&negative=a%20photo%20of%20a%20cat",
        );
        top = v["top"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["frame"].as_i64())
            .collect();
        top.len() >= 2
    });
    let host = format!("127.0.0.1:{port}");
    let post = |path: &str, body: String| {
        let (code, out) = request(
            port,
            "POST",
            path,
            &[("Host", &host), ("Content-Type", "application/json")],
            &body,
        );
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (code, body)
    };
    let mark = |frame: i64, yes: bool| {
        let (code, body) = post(
            "/api/lab/mark",
            format!(r#"{{"camera":"yard","q":"{q}","frame":{frame},"yes":{yes}}}"#),
        );
        assert_eq!(code, 204, "{body}");
    };
    let examples = |name: &str| -> std::path::PathBuf {
        let (code, body) = post(
            "/api/lab/examples",
            format!(
                r#"{{"camera":"yard","q":"{q}","name":"{name}","negatives":["a photo of a cat"]}}"#
            ),
        );
        assert_eq!(code, 200, "{name}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        std::path::PathBuf::from(v["dir"].as_str().unwrap())
    };
    let (a, b) = (top[0], top[1]);
    mark(a, true);
    mark(b, false);
    // a name without ASCII letters gets a hashed id; the directory is the camera's own
    let dir = examples("猫");
    assert!(dir.parent().unwrap().ends_with("examples/yard"), "{dir:?}");
    assert!(
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("id_"),
        "{dir:?}"
    );
    let not = dir.with_file_name(format!(
        "{}-not",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let has = |d: &std::path::Path, f: i64| d.join(format!("frame-{f}.jpg")).exists();
    assert!(has(&dir, a) && has(&not, b) && !has(&dir, b) && !has(&not, a));
    // re-marked the other way: each picture moves, none stays in both
    mark(a, false);
    mark(b, true);
    assert_eq!(examples("猫"), dir);
    assert!(has(&dir, b) && has(&not, a) && !has(&dir, a) && !has(&not, b));
    // a long name is capped like a config id instead of failing on the file system
    let long = examples(&"a very long name ".repeat(40));
    let leaf = long.file_name().unwrap().to_string_lossy().into_owned();
    assert!(leaf.len() <= 64, "{leaf}");

    // pictures are revalidated, never cached as immutable: their row ids can come back
    let v = run
        .json("/api/lab?camera=yard&q=a%20photo%20of%20a%20dog&negative=a%20photo%20of%20a%20cat");
    let url = v["top"][0]["thumbnail"].as_str().unwrap().to_string();
    // HEAD: the helper reads text, and a JPEG body is not
    let (code, head) = request(port, "HEAD", &url, &[("Host", &host)], "");
    let head = head.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(
        code == 200
            && head.contains("cache-control: private, no-cache")
            && !head.contains("immutable"),
        "{head}"
    );
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap_or_else(|| panic!("{head}"))
        .to_string();
    let (code, _) = request(
        port,
        "GET",
        &url,
        &[("Host", &host), ("If-None-Match", &etag)],
        "",
    );
    assert_eq!(code, 304);
}

#[test]
fn the_listener_needs_a_token_beyond_loopback_and_refuses_foreign_hosts_and_origins() {
    let tmp = TempDir::new("history-auth");
    let port = free_port();
    let open = lab_config(tmp.path(), &PHOTOS, port, 2.0, DOG, "");
    // beyond loopback without a token: refused before anything starts
    let wide = tmp.path().join("wide.toml");
    std::fs::write(
        &wide,
        std::fs::read_to_string(&open)
            .unwrap()
            .replace("127.0.0.1:", "0.0.0.0:"),
    )
    .unwrap();
    let (code, _, err) = fixture::promptcam(&["check", "--config", wide.to_str().unwrap()]);
    assert!(
        code == 2 && err.contains("http.listen") && err.contains("token_file"),
        "{err}"
    );

    // loopback: a page reached through another host name is refused (DNS rebinding)
    {
        let run = Run::start(&open, port);
        let loopback = format!("127.0.0.1:{port}");
        let (code, _) = request(port, "GET", "/api/status", &[("Host", "evil.example")], "");
        assert_eq!(code, 403);
        assert_eq!(
            request(port, "GET", "/api/status", &[("Host", &loopback)], "").0,
            200
        );
        // a state change from another site is refused; from the page's own origin it is taken
        let body = r#"{"camera":"yard","prompt":"a_photo_of_a_dog","threshold":0.35}"#;
        let json = ("Content-Type", "application/json");
        let evil = request(
            port,
            "POST",
            "/api/threshold",
            &[("Host", &loopback), ("Origin", "http://evil.example"), json],
            body,
        );
        assert_eq!(evil.0, 403, "{}", evil.1);
        let own = format!("http://{loopback}");
        let ok = request(
            port,
            "POST",
            "/api/threshold",
            &[("Host", &loopback), ("Origin", &own), json],
            body,
        );
        assert_eq!(ok.0, 200, "{}", ok.1);
        assert!(
            ok.1.contains("threshold = 0.35") && ok.1.contains("a photo of a dog"),
            "{}",
            ok.1
        );
        run.wait_until("the inference thread applied it", Duration::from_secs(10), || {
            run.get("/metrics").is_some_and(|(_, m)| m.contains("promptcam_prompt_threshold{camera=\"yard\",prompt=\"a_photo_of_a_dog\"} 0.35"))
        });
        assert_eq!(
            request(port, "GET", "/api/threshold", &[("Host", &loopback)], "").0,
            405,
            "a GET changes nothing"
        );
        // reads refuse other sites too (a page the operator visits, through the ssh tunnel),
        // except a link that opens a page
        let from = |site: &'static str, mode: &'static str, dest: &'static str, path: &str| {
            let h = [
                ("Host", loopback.as_str()),
                ("Sec-Fetch-Site", site),
                ("Sec-Fetch-Mode", mode),
                ("Sec-Fetch-Dest", dest),
            ];
            request(port, "GET", path, &h, "").0
        };
        assert_eq!(from("cross-site", "cors", "empty", "/api/status"), 403);
        assert_eq!(from("same-site", "cors", "empty", "/api/status"), 403);
        assert_eq!(
            from("cross-site", "no-cors", "image", "/snapshot/yard.jpg"),
            403
        );
        assert_eq!(from("cross-site", "navigate", "document", "/lab/yard"), 200);
        assert_eq!(from("same-origin", "cors", "empty", "/api/status"), 200);
        let foreign = [
            ("Host", loopback.as_str()),
            ("Origin", "http://evil.example"),
        ];
        assert_eq!(request(port, "GET", "/api/status", &foreign, "").0, 403);
        drop(run);
    }

    // with a token: every request needs it; pages send browsers to the login form
    let token = "t0ken-for-the-test-0123456789";
    std::fs::write(tmp.path().join("token"), format!("{token}\n")).unwrap();
    let text = std::fs::read_to_string(&open).unwrap().replace(
        "enabled = true\n",
        "enabled = true\ntoken_file = \"token\"\n",
    );
    let guarded = tmp.path().join("guarded.toml");
    std::fs::write(&guarded, text.replace("127.0.0.1:", "0.0.0.0:")).unwrap();
    let log = guarded.with_extension("log");
    let child = Command::new(env!("CARGO_BIN_EXE_promptcam"))
        .args(["run", "--config", guarded.to_str().unwrap()])
        .current_dir(fixture::repo())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let run = Run { child, log, port };
    let host = format!("127.0.0.1:{port}");
    let bearer = format!("Bearer {token}");
    run.wait_until("it answers", Duration::from_secs(30), || {
        request(
            port,
            "GET",
            "/healthz",
            &[("Host", &host), ("Authorization", &bearer)],
            "",
        )
        .0 == 200
    });
    for path in ["/healthz", "/metrics", "/api/status", "/snapshot/yard.jpg"] {
        let (code, body) = request(port, "GET", path, &[("Host", &host)], "");
        assert_eq!(code, 401, "{path}: {body}");
        assert!(!body.contains(token));
    }
    let (code, page) = request(port, "GET", "/lab/yard", &[("Host", &host)], "");
    assert!(code == 303 && page.contains("location: /login"), "{page}");
    let wrong = request(
        port,
        "POST",
        "/login",
        &[
            ("Host", &host),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        "token=nope",
    );
    assert_eq!(wrong.0, 401);
    let login = request(
        port,
        "POST",
        "/login",
        &[
            ("Host", &host),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("token={token}"),
    );
    assert!(
        login.0 == 303 && login.1.contains("HttpOnly") && login.1.contains("SameSite=Strict"),
        "{}",
        login.1
    );
    let cookie = format!("promptcam_token={token}");
    let (code, page) = request(
        port,
        "GET",
        "/lab/yard",
        &[("Host", &host), ("Cookie", &cookie)],
        "",
    );
    assert!(
        code == 200 && !page.contains(token),
        "the page never shows the token"
    );
    assert_eq!(
        request(
            port,
            "GET",
            "/api/status",
            &[("Host", &host), ("Authorization", &bearer)],
            ""
        )
        .0,
        200
    );
    assert!(!run.log_text().contains(token), "the token is never logged");
}
