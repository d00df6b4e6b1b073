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

/// Each camera's events (type, prompt, score), in order.
fn per_camera(out: &str) -> Vec<(String, Vec<(String, String, f64)>)> {
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
