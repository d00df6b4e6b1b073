//! Reload against the tiny CLIP model: the old prompts serve while the new models load behind a
//! gate, then swap in (their open events ended); a failed load keeps the old prompts; threshold
//! commands keep the configured hysteresis through a reload.

use std::sync::mpsc::{channel, sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::event::{Event, EventKind};
use crate::frame::Frame;

/// A config file in a fresh directory, removed when dropped.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(tag: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!("promptcam-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        ConfigFile(dir.join("promptcam.toml"))
    }

    /// One camera with the tiny CLIP model and one prompt against "a photo of a cat".
    fn write(&self, prompt: &str) {
        let text = format!(
            "[models.clip]\ndir = \"{}/models/tiny/clip\"\nquantized = false\n\n[motion]\nenabled = false\n\n[[cameras]]\nname = \"Launch pad\"\nsource = \"tests/fixtures/images\"\n\n\
             [[cameras.prompts]]\ntext = \"{prompt}\"\nmodel = \"clip\"\nnegatives = [\"a photo of a cat\"]\nthreshold = 0.6\nwindow = 1\nmin_frames = 1\noff_delay = 0\n",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::write(&self.0, text).expect("a writable config file");
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn rocket() -> Frame {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/images/rocket.png"
    );
    let image = image::open(path).expect("the rocket fixture").to_rgb8();
    Frame {
        image,
        seq: 0,
        captured_at: SystemTime::now(),
        monotonic: Instant::now(),
    }
}

/// The daemon's inference on the config file, with its reloads, and the events it sends.
fn running(file: &ConfigFile) -> (Inference, Reloads, Receiver<Event>) {
    let config = crate::config::load(&file.0).expect("a valid config");
    let (towers, cameras) =
        crate::daemon::prepare(&config, &crate::pipeline::start_cache::StartCache::off())
            .expect("the tiny models");
    let (tx, rx) = sync_channel(256);
    (
        Inference::new(cameras, tx, None),
        Reloads::new(towers, config.clone(), Default::default()),
        rx,
    )
}

/// One rocket frame through the camera.
fn frame(inf: &mut Inference) {
    inf.camera(0).slot.put(rocket());
    assert!(inf.step().expect("analysis"), "the frame was taken");
}

/// Polls until the load in flight is done (the bound only guards against a hang).
fn finish(reloads: &mut Reloads, inf: &mut Inference) {
    let end = Instant::now() + Duration::from_secs(60);
    while !reloads.poll(inf).expect("the event thread is there") {
        assert!(Instant::now() < end, "the reload never finished");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kinds(events: &[Event]) -> Vec<(String, EventKind)> {
    events.iter().map(|e| (e.prompt.clone(), e.kind)).collect()
}

#[test]
fn old_prompts_keep_serving_while_new_models_load_then_swap_in() {
    let file = ConfigFile::new("reload-swap");
    file.write("a rocket on the launch pad");
    let (mut inf, mut reloads, rx) = running(&file);
    // the new models load only when the test opens the gate
    let (open, gate) = channel::<()>();
    let gate = Mutex::new(gate);
    let real = reloads.load.clone();
    reloads.load = Arc::new(move |config, old| {
        let _ = gate.lock().map(|g| g.recv());
        real(config, old)
    });

    file.write("a rocket");
    reloads.reload(&inf, true);
    assert!(
        reloads.in_flight.is_some(),
        "the changed prompt loads in the background"
    );
    // a second SIGHUP during the load is queued, not a second load racing the first
    reloads.reload(&inf, true);
    assert!(reloads.queued);

    // frames are analysed with the old prompt meanwhile
    for _ in 0..3 {
        frame(&mut inf);
        assert!(
            !reloads.poll(&inf).unwrap(),
            "the load is still waiting at the gate"
        );
    }
    let during: Vec<Event> = rx.try_iter().collect();
    assert!(
        kinds(&during).contains(&("a_rocket_on_the_launch_pad".into(), EventKind::Start)),
        "{:?}",
        kinds(&during)
    );
    assert_eq!(
        inf.camera(0).config.prompts[0].id,
        "a_rocket_on_the_launch_pad"
    );

    open.send(()).expect("the reload thread waits at the gate");
    finish(&mut reloads, &mut inf);
    // the old prompt's open event ends as the new prompt takes over
    let swapped: Vec<Event> = rx.try_iter().collect();
    assert_eq!(
        kinds(&swapped),
        vec![("a_rocket_on_the_launch_pad".into(), EventKind::End)]
    );
    assert_eq!(inf.camera(0).config.prompts[0].text, "a rocket");
    let ids: Vec<String> = inf
        .camera(0)
        .status
        .prompts()
        .iter()
        .map(|p| p.id.clone())
        .collect();
    assert_eq!(ids, vec!["a_rocket".to_string()]);
    for _ in 0..3 {
        frame(&mut inf);
    }
    let after: Vec<Event> = rx.try_iter().collect();
    assert!(
        kinds(&after).contains(&("a_rocket".into(), EventKind::Start)),
        "{:?}",
        kinds(&after)
    );
    assert!(
        after.iter().all(|e| e.prompt == "a_rocket"),
        "{:?}",
        kinds(&after)
    );

    // the queued SIGHUP re-reads the file: its prompts are in already, so nothing loads again
    assert!(std::mem::take(&mut reloads.queued));
    reloads.reload(&inf, true);
    assert!(reloads.in_flight.is_none());
}

#[test]
fn threshold_commands_keep_the_configured_hysteresis_through_zero() {
    let file = ConfigFile::new("reload-gap");
    file.write("a rocket on the launch pad");
    let text = std::fs::read_to_string(&file.0)
        .expect("the config")
        .replace(
            "threshold = 0.6\n",
            "threshold = 0.6\noff_threshold = 0.4\n",
        );
    std::fs::write(&file.0, &text).expect("a writable config file");
    let (mut inf, mut reloads, _rx) = running(&file);
    let id = "a_rocket_on_the_launch_pad";
    let set = |inf: &mut Inference, value: f32| {
        assert!(inf.camera(0).status.request_threshold(id, value));
        inf.camera(0).apply_threshold_requests();
        let d = inf.camera(0).status.prompt_configs()[0].decide.clone();
        (d.threshold, d.off_threshold, format!("{}", d.threshold))
    };
    let near = |a: f32, b: f32| (a - b).abs() < 1e-6;
    // -0 is 0, shown as "0"; off cannot go below 0
    let (on, off, shown) = set(&mut inf, -0.0);
    assert!(
        on == 0.0 && on.is_sign_positive() && off == 0.0,
        "{on} {off}"
    );
    assert_eq!(shown, "0");
    // back up to 0.3: off sits the configured 0.2 below it again
    let (on, off, _) = set(&mut inf, 0.3);
    assert!(near(on, 0.3) && near(off, 0.1), "{on} {off}");
    let (on, off, _) = set(&mut inf, 0.0);
    assert!(on == 0.0 && off == 0.0, "{on} {off}");
    let (on, off, _) = set(&mut inf, 0.9);
    assert!(near(on, 0.9) && near(off, 0.7), "{on} {off}");
    // a reload takes the file's gap (and thresholds)
    std::fs::write(
        &file.0,
        text.replace("off_threshold = 0.4", "off_threshold = 0.5"),
    )
    .expect("a writable config file");
    reloads.reload(&inf, true);
    let (on, off, _) = set(&mut inf, 0.3);
    assert!(near(on, 0.3) && near(off, 0.2), "{on} {off}");
}

#[test]
fn models_that_fail_to_load_leave_the_old_prompts_serving() {
    let file = ConfigFile::new("reload-fail");
    file.write("a rocket on the launch pad");
    let (mut inf, mut reloads, rx) = running(&file);
    reloads.load = Arc::new(|_, _| Err(anyhow::anyhow!("unable to load CLIP: out of memory")));
    file.write("a rocket");
    reloads.reload(&inf, true);
    finish(&mut reloads, &mut inf);
    assert_eq!(
        inf.camera(0).config.prompts[0].text,
        "a rocket on the launch pad"
    );
    for _ in 0..3 {
        frame(&mut inf);
    }
    let events: Vec<Event> = rx.try_iter().collect();
    assert!(
        kinds(&events).contains(&("a_rocket_on_the_launch_pad".into(), EventKind::Start)),
        "{:?}",
        kinds(&events)
    );
}

#[test]
fn a_changed_tree_or_example_set_needs_new_models() {
    let parse = |prompt: &str| {
        let text = format!(
            "[models.clip]\ndir = \"{}/models/tiny/clip\"\nquantized = false\n\n[models.owlvit]\ndir = \"{}/models/tiny/owlvit\"\nquantized = false\n\n[[cameras]]\nname = \"Pad\"\nsource = \"tests/fixtures/images\"\n\n[[cameras.prompts]]\n{prompt}\n",
            env!("CARGO_MANIFEST_DIR"),
            env!("CARGO_MANIFEST_DIR")
        );
        crate::config::parse(&text, std::path::Path::new("t.toml"))
            .unwrap()
            .cameras
            .remove(0)
    };
    let tree = parse("tree = \"[a [b]]\"\nmodel = \"owlvit\"");
    assert!(same_models(
        &tree,
        &parse("tree = \"[a [b]]\"\nmodel = \"owlvit\"\nthreshold = 0.7")
    ));
    // another tree; the same tree with another tree_threshold (same leaves, same texts)
    assert!(!same_models(
        &tree,
        &parse("tree = \"(u, a [b])\"\nmodel = \"owlvit\"")
    ));
    assert!(!same_models(
        &tree,
        &parse("tree = \"[a [b]]\"\nmodel = \"owlvit\"\ntree_threshold = 0.3")
    ));
    let pets = "examples = [\"x\"]\nname = \"Pets\"\nmodel = \"clip\"\nnegatives = [\"n\"]";
    assert!(same_models(&parse(pets), &parse(pets)));
    assert!(!same_models(
        &parse(pets),
        &parse(&pets.replace("[\"x\"]", "[\"y\"]"))
    ));
}
