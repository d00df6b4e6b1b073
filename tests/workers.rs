//! Inference workers end to end: the daemon with two cameras on two workers, sharing one CLIP
//! tower and one OWL-ViT detector, gives each camera the events one worker gives it.

use std::path::Path;

use crate::daemon::{event_scores, run_logged};
use crate::fixture::{self, TempDir};

/// A config of two cameras replaying the same frames (once) with the same prompts, on
/// `workers` workers of one thread each.
fn config(dir: &Path, workers: usize) -> std::path::PathBuf {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let shots = [
        "chelsea.png",
        "rocket.png",
        "rocket.png",
        "rocket.png",
        "chelsea.png",
        "chelsea.png",
    ];
    for (i, f) in shots.iter().enumerate() {
        std::fs::copy(fixture::image(f), frames.join(format!("{i:03}.png"))).unwrap();
    }
    let mut text = format!(
        r#"
[daemon]
inference_threads = 1
inference_workers = {workers}

[models.clip]
dir = "{clip}"
quantized = false

[models.owlvit]
dir = "{owl}"
quantized = false

[motion]
enabled = false
"#,
        clip = fixture::path("models/tiny/clip").display(),
        owl = fixture::path("models/tiny/owlvit").display(),
    );
    for name in ["East", "West"] {
        text += &format!(
            r#"
[[cameras]]
name = "{name}"
source = "{frames}"
fps = 4
loop = false

[[cameras.prompts]]
text = "a rocket on the launch pad"
model = "clip"
negatives = ["a photo of a cat"]
threshold = 0.6
window = 1
min_frames = 1
off_delay = 0

[[cameras.prompts]]
text = "a rocket"
model = "owlvit"
threshold = 0.0
window = 1
min_frames = 1
off_delay = 0
"#,
            frames = frames.display()
        );
    }
    let path = dir.join("promptcam.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A camera's events: type, prompt, score, in order.
type Events = Vec<(String, String, f64)>;

/// Each camera's events.
fn per_camera(out: &str) -> Vec<(String, Events)> {
    ["east", "west"]
        .iter()
        .map(|cam| {
            let lines: Vec<&str> = out
                .lines()
                .filter(|l| l.contains(&format!("\"camera\":\"{cam}\"")))
                .collect();
            (cam.to_string(), event_scores(&lines.join("\n")))
        })
        .collect()
}

#[test]
fn two_workers_give_each_camera_the_events_of_one_worker() {
    let tmp = TempDir::new("workers");
    let one = run_logged(&config(&tmp.path().join("one"), 1));
    assert_eq!(one.0, 0, "{}", one.2);
    let two = run_logged(&config(&tmp.path().join("two"), 2));
    assert_eq!(two.0, 0, "{}", two.2);
    assert!(
        two.2.contains("inference on 2 workers of 1 thread(s) each"),
        "{}",
        two.2
    );
    assert!(one.2.contains("inference on 1 thread(s)"), "{}", one.2);
    let (one, two) = (per_camera(&one.1), per_camera(&two.1));
    // both cameras see the same frames: the same events, from both prompts, on either count
    for (cam, events) in &one {
        assert!(
            events.iter().any(|e| e.1 == "a_rocket")
                && events.iter().any(|e| e.1 == "a_rocket_on_the_launch_pad"),
            "{cam}: {events:?}"
        );
    }
    assert_eq!(one[0].1, one[1].1);
    assert_eq!(one, two);
}

#[test]
fn the_worker_count_is_measured_at_the_first_start_and_taken_from_the_cache_at_the_next() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tmp = TempDir::new("workers-measured");
    let config = config(tmp.path(), 0);
    let first = run_logged(&config);
    assert_eq!(first.0, 0, "{}", first.2);
    let second = run_logged(&config);
    assert_eq!(second.0, 0, "{}", second.2);
    if cores < 2 {
        // one core: nothing to measure, one worker
        assert!(first.2.contains("inference on 1 thread(s)"), "{}", first.2);
        return;
    }
    let measured = first
        .2
        .lines()
        .find(|l| l.contains("inference workers measured on the loaded models, side by side"))
        .unwrap_or_else(|| panic!("{}", first.2));
    assert!(
        measured.contains("1 worker(s) ") && measured.contains("2 worker(s) "),
        "{measured}"
    );
    let cache = std::fs::read_to_string(tmp.path().join("start-cache.json")).unwrap();
    let cache: serde_json::Value = serde_json::from_str(&cache).unwrap();
    let entry = cache["workers"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    let chosen = entry["workers"].as_u64().unwrap();
    assert!(chosen == 1 || chosen == 2, "{entry}");
    assert!(
        measured.ends_with(&format!("using {chosen}")),
        "{measured} / {entry}"
    );
    assert!(
        second
            .2
            .contains("inference workers measured on these models and cameras at an earlier start"),
        "{}",
        second.2
    );
    assert!(!second.2.contains("side by side"), "{}", second.2);
    let running = match chosen {
        1 => "inference on 1 thread(s)".to_string(),
        n => format!("inference on {n} workers of 1 thread(s) each"),
    };
    assert!(second.2.contains(&running), "{running}: {}", second.2);
}
