//! The pages in a real browser: Debian's headless Chromium (through chromedriver) against the
//! daemon replaying fixture photos with `[http]` on. The overview shows the live frame, the
//! camera page plots each prompt's stored scores, the prompt lab scores a typed prompt on the
//! history, replays the decider, suggests a threshold from marks, and applying a threshold
//! changes the running prompt's (seen on `/metrics`). Screenshots go to
//! `target/tmp/web-screenshots/` for people to look at.

use std::time::Duration;

use crate::fixture::{self, TempDir};
use crate::history::{lab_config, Run};
use crate::webdriver::Browser;

const PROMPTS: &str = "text = \"a photo of a dog\"\nmodel = \"clip\"\nnegatives = [\"a photo of a cat\"]\nthreshold = 0.6";
const SECOND: &str = "\n[[cameras.prompts]]\ntext = \"a rocket on the launch pad\"\nmodel = \"clip\"\nnegatives = [\"a photo of a cat\"]";

#[test]
fn the_pages_work_in_a_real_browser() {
    let tmp = TempDir::new("web");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let photos = ["rocket.png", "chelsea.png", "camera_gray.png", "coffee.png"];
    // a thumbnail on every frame, so the lab's galleries have plenty to show
    let extra = format!("{SECOND}\n\n[history]\nthumbnail_interval = 0.1");
    let config = lab_config(tmp.path(), &photos, port, 4.0, PROMPTS, &extra);
    let run = Run::start(&config, port);
    run.wait_until("frames are stored", Duration::from_secs(60), || {
        run.json("/api/status")["history"]["frames"]
            .as_u64()
            .unwrap_or(0)
            >= 20
    });
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    let b = Browser::start(&tmp.path().join("chromium"));
    let long = Duration::from_secs(30);

    // the overview: the camera's live frame and both prompts' states
    b.goto(&run.url("/"));
    b.wait(
        "the live frame shows",
        "document.querySelector('img.frame').naturalWidth > 100",
        long,
    );
    b.wait(
        "both prompts are listed",
        "document.querySelectorAll('#cam-yard tr[data-prompt]').length == 2",
        long,
    );
    let row = b.text("#cam-yard tr[data-prompt='a_photo_of_a_dog']");
    assert!(
        row.contains("a photo of a dog") && (row.contains("ON") || row.contains("OFF")),
        "{row}"
    );
    b.screenshot(&shots.join("overview.png"));

    // the camera page: a plot per prompt, with the stored scores in it
    b.goto(&run.url("/camera/yard"));
    b.wait(
        "both plots have data points",
        "window.promptcam.plots.length == 2 && window.promptcam.plots.every(u => u.data[1].filter(v => v != null).length >= 4)",
        long,
    );
    b.wait(
        "the events are listed",
        "document.querySelectorAll('table.events tbody tr').length > 0",
        long,
    );
    b.screenshot(&shots.join("camera.png"));

    // the lab: type a prompt, score it on the history
    b.goto(&run.url("/lab/yard"));
    // it opens on the camera's first CLIP prompt, scored with that prompt's own negatives
    b.wait(
        "the lab scored the camera's first prompt",
        "document.querySelector('#lab-summary').textContent.startsWith('Scored \"a photo of a dog\"') \
         && !document.querySelector('#score-btn').disabled",
        long,
    );
    assert_eq!(
        b.exec("return document.querySelector('#negatives').value;"),
        "a photo of a cat"
    );
    b.type_into("#prompt", "a photo of a cat");
    b.type_into("#negatives", "a photo of a dog");
    b.click("#score-btn");
    b.wait(
        "the typed prompt is scored",
        "document.querySelector('#lab-summary').textContent.startsWith('Scored \"a photo of a cat\"') \
         && document.querySelectorAll('#top .shot').length > 0 && document.querySelector('#fired-count')",
        long,
    );
    let summary = b.text("#lab-summary");
    let n: usize = summary
        .split(" on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(n >= 8, "{summary}");
    assert!(
        summary.contains("a photo of a dog"),
        "scored against the typed negative: {summary}"
    );
    b.wait(
        "the lab plot has points",
        "window.promptcam.plots.length == 1 && window.promptcam.plots[0].data[1].length > 0",
        long,
    );
    // the best match is a cat photo: its score is high
    let best: f64 = b.text("#top .shot .meta b").parse().unwrap();
    assert!(best > 0.9, "{best}");
    b.screenshot(&shots.join("lab.png"));

    // marks: the best match is a cat, the worst is not; the suggested threshold separates them
    b.click("#top .shot button.yes");
    b.click("#bottom .shot button.no");
    b.wait(
        "the marks are saved",
        "document.querySelectorAll('button.active').length == 2",
        long,
    );
    b.click("#suggest-btn");
    b.wait(
        "a threshold is suggested",
        "document.querySelector('#suggestion').textContent.startsWith('Suggested threshold')",
        long,
    );
    let suggested: f64 = b
        .exec("return Number(document.querySelector('#threshold').value);")
        .as_f64()
        .unwrap();
    assert!(suggested > 0.05 && suggested < best, "{suggested}");

    // the marked frames become an example prompt: pictures saved, TOML lines shown
    b.type_into("#example-name", "Our cat");
    b.click("#examples-btn");
    b.wait(
        "the example prompt's TOML is shown",
        "document.querySelector('#examples-toml') && document.querySelector('#examples-toml').textContent.includes('examples = [')",
        long,
    );
    let toml_lines = b.text("#examples-toml");
    let glob_of = |key: &str| {
        let line = toml_lines
            .lines()
            .find(|l| l.starts_with(&format!("{key} = [")))
            .unwrap_or_else(|| panic!("no {key} in {toml_lines}"));
        line.split('"').nth(1).unwrap().to_string()
    };
    for (key, want) in [("examples", 1), ("negative_examples", 1)] {
        let glob = glob_of(key);
        let dir = std::path::Path::new(glob.strip_suffix("/*.jpg").unwrap());
        let files: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        assert_eq!(files.len(), want, "{key}: {glob}");
        let picture = image::open(files[0].path()).unwrap();
        assert!(picture.width() >= 32, "{key}: a thumbnail");
    }
    assert!(toml_lines.contains("name = \"Our cat\""), "{toml_lines}");
    assert!(
        toml_lines.contains("negatives = [\"a photo of a dog\"]"),
        "{toml_lines}"
    );
    // the lines are a prompt the config takes
    let config = format!(
        "[models.clip]\ndir = {:?}\nquantized = false\n[[cameras]]\nname = \"Yard\"\nsource = {:?}\n{toml_lines}",
        fixture::path("models/tiny/clip").display().to_string(),
        fixture::path("tests/fixtures/images").display().to_string(),
    );
    let parsed = promptcam::config::parse(&config, std::path::Path::new("examples.toml"))
        .unwrap_or_else(|e| panic!("{e:#}\n{config}"));
    assert_eq!(parsed.cameras[0].prompts[0].name, "Our cat");
    b.screenshot(&shots.join("lab-examples.png"));

    // apply a threshold to the running prompt: the daemon takes it
    b.exec("document.querySelector('#apply-prompt').value = 'a_photo_of_a_dog'; return true;");
    b.type_into("#threshold", "0.42");
    b.click("#apply-btn");
    b.wait("the TOML to keep it is shown", "document.querySelector('#toml') && document.querySelector('#toml').textContent.includes('threshold = 0.42')", long);
    run.wait_until("the running prompt's threshold is 0.42", long, || {
        run.get("/metrics").is_some_and(|(_, m)| {
            m.contains(
                "promptcam_prompt_threshold{camera=\"yard\",prompt=\"a_photo_of_a_dog\"} 0.42",
            )
        })
    });
    b.screenshot(&shots.join("lab-applied.png"));
}
