//! Run-time prompts end to end: `promptcam run` on a looping file source with the tiny CLIP
//! model and a real mosquitto. Prompts are added, refused, stopped, fired `once`, expired and
//! brought back by a restart over MQTT, and a burst of 50 changes leaves exactly the prompts,
//! entities, states and events it should. The device-based discovery is checked as published.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{replay, Daemon};
use crate::fixture::TempDir;
use crate::mqtt::{Broker, Msg, Sub};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const BASE: &str = "promptcam/promptcam/launch_pad";
const EVENTS: &str = "promptcam/promptcam/events";
const DEVICE: &str = "homeassistant/device/promptcam_launch_pad/config";

/// Every message seen so far, and the retained picture they leave (topic -> last payload).
struct Log {
    sub: Sub,
    seen: Vec<Msg>,
}

impl Log {
    fn new(port: u16, id: &str) -> Log {
        Log {
            sub: Sub::new(port, id, &["promptcam/#", "homeassistant/#"], true),
            seen: vec![],
        }
    }

    /// Reads messages until `done` holds for what was seen (panics with `what` on timeout).
    fn until(&mut self, timeout: Duration, what: &str, done: impl Fn(&[Msg]) -> bool) {
        let end = Instant::now() + timeout;
        while !done(&self.seen) {
            let left = end.saturating_duration_since(Instant::now());
            match self.sub.wait_for(left, |_| true) {
                Some(m) => self.seen.push(m),
                None => panic!(
                    "{what}: not seen within {timeout:?}; last: {:?}",
                    self.tail()
                ),
            }
        }
    }

    fn tail(&self) -> Vec<(&str, String)> {
        self.seen
            .iter()
            .rev()
            .take(8)
            .map(|m| (m.topic.as_str(), m.payload.chars().take(120).collect()))
            .collect()
    }

    fn events(&self) -> Vec<Value> {
        self.seen
            .iter()
            .filter(|m| m.topic == EVENTS)
            .map(|m| serde_json::from_str(&m.payload).unwrap())
            .collect()
    }
}

fn event_of(seen: &[Msg], prompt: &str, kind: &str) -> Option<Value> {
    seen.iter()
        .filter(|m| m.topic == EVENTS)
        .map(|m| serde_json::from_str::<Value>(&m.payload).unwrap())
        .find(|v| v["prompt"] == prompt && v["type"] == kind)
}

fn listing_ids(payload: Option<&str>) -> Option<Vec<String>> {
    let v: Value = serde_json::from_str(payload?).ok()?;
    Some(
        v.as_array()?
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_default().to_string())
            .collect(),
    )
}

fn last_listing(seen: &[Msg]) -> Option<Vec<String>> {
    let topic = format!("{BASE}/prompts");
    listing_ids(
        seen.iter()
            .rev()
            .find(|m| m.topic == topic)
            .map(|m| m.payload.as_str()),
    )
}

/// The camera device's components in its last device config.
fn components(seen: &[Msg]) -> BTreeMap<String, Value> {
    let Some(m) = seen.iter().rev().find(|m| m.topic == DEVICE) else {
        return BTreeMap::new();
    };
    let v: Value = serde_json::from_str(&m.payload).unwrap();
    v["cmps"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// A daemon config on a looping rocket/cat replay, with MQTT on `port` and its state in `dir`.
fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let config = replay(dir, &["rocket.png", "chelsea.png"], true, 0.6);
    // OWL-ViT is configured, and loaded only when a run-time prompt asks for it
    let mut text = format!(
        "[models.owlvit]\ndir = \"{}\"\nquantized = false\n{}",
        crate::fixture::path("models/tiny/owlvit").display(),
        std::fs::read_to_string(&config).unwrap()
    );
    text.push_str(&format!(
        "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nspool_dir = \"{}\"\n",
        dir.join("spool").display()
    ));
    std::fs::write(&config, text).unwrap();
    config
}

/// A prompt that is ON from its first frame (threshold 0).
fn always(text: &str, extra: &str) -> String {
    format!(r#"{{"text": "{text}", "threshold": 0, "window": 1, "min_frames": 1{extra}}}"#)
}

#[test]
fn prompts_added_refused_stopped_once_expired_and_back_after_a_restart() {
    let tmp = TempDir::new("runtime-prompts");
    let broker = Broker::start(tmp.path(), "");
    let mut log = Log::new(broker.port, "rt-sub");
    let config = config(tmp.path(), broker.port);
    let mut d = Daemon::start(&config, None);
    log.until(SECS(60), "the camera's device config", |s| {
        components(s).contains_key("promptcam_launch_pad_watch")
    });
    let comps = components(&log.seen);
    assert_eq!(comps["promptcam_launch_pad_watch"]["p"], "text");
    assert!(
        !log.seen
            .iter()
            .any(|m| m.topic.starts_with("homeassistant/binary_sensor/")
                && !m.payload.is_empty()
                && !m.payload.contains("migrate")),
        "the device form publishes no per-entity configs"
    );

    // add: entities, state and a runtime event within seconds
    let add = format!("{BASE}/prompts/add");
    let t = Instant::now();
    log.sub.publish(&add, &always("a photo of a rocket", ""));
    let id = "a_photo_of_a_rocket";
    let entity = format!("promptcam_launch_pad_{id}");
    log.until(SECS(30), "the new prompt's start", |s| {
        event_of(s, id, "start").is_some()
    });
    log.until(SECS(10), "its entities", |s| {
        let c = components(s);
        c.contains_key(&entity) && c.contains_key(&format!("{entity}_stop"))
    });
    let comps = components(&log.seen);
    assert_eq!(comps[&entity]["p"], "binary_sensor");
    assert_eq!(
        comps[&format!("{entity}_stop")]["command_topic"],
        format!("{BASE}/{id}/stop")
    );
    let start = event_of(&log.seen, id, "start").unwrap();
    assert_eq!(start["runtime"], true, "{start}");
    log.until(SECS(10), "its state ON", |s| {
        s.iter()
            .any(|m| m.topic == format!("{BASE}/{id}/state") && m.payload == "ON")
    });
    assert_eq!(last_listing(&log.seen), Some(vec![id.to_string()]));
    eprintln!("added and ON in {:?}", t.elapsed());
    // the file's prompt keeps running, and is not a run-time one
    assert!(comps.contains_key("promptcam_launch_pad_a_rocket_on_the_launch_pad"));

    // refused, with the reason, and nothing changes
    let refused: [(&str, String, &str); 7] = [
        (
            BASE,
            r#"{"text": "x", "model": "yolo"}"#.into(),
            "is not a model",
        ),
        (
            BASE,
            r#"{"text": "x", "threshold": 2}"#.into(),
            "out of range",
        ),
        (
            BASE,
            format!(r#"{{"text": "{}"}}"#, "a".repeat(70_000)),
            "at most 16384",
        ),
        (
            BASE,
            r#"{"text": "a rocket on the launch pad", "model": "clip"}"#.into(),
            "config file",
        ),
        (BASE, "{not json".into(), "not valid JSON"),
        (
            BASE,
            r#"{"text": "x", "colour": 1}"#.into(),
            "unknown field",
        ),
        (
            "promptcam/promptcam/garden",
            "a ladder".into(),
            "no camera \"garden\"",
        ),
    ];
    let errors_before = log.seen.len();
    for (base, payload, _) in &refused {
        log.sub.publish(&format!("{base}/prompts/add"), payload);
    }
    for (base, _, why) in &refused {
        let topic = format!("{base}/prompts/error");
        log.until(SECS(10), why, |s| {
            s[errors_before..].iter().any(|m| {
                m.topic == topic
                    && serde_json::from_str::<Value>(&m.payload)
                        .is_ok_and(|v| v["error"].as_str().is_some_and(|e| e.contains(why)))
            })
        });
    }
    // too many: the default max_prompts is 8
    for i in 0..8 {
        log.sub.publish(
            &add,
            &format!(r#"{{"text": "thing {i}", "threshold": 0.99}}"#),
        );
    }
    log.until(SECS(10), "the ninth refused", |s| {
        s.iter().any(|m| {
            m.topic == format!("{BASE}/prompts/error") && m.payload.contains("max_prompts")
        })
    });
    for i in 0..7 {
        log.sub
            .publish(&format!("{BASE}/prompts/remove"), &format!("thing_{i}"));
    }
    log.until(SECS(10), "the list back to one", |s| {
        last_listing(s) == Some(vec![id.to_string()])
    });

    // a change: the same id with other settings is one prompt still, with the new threshold,
    // and its open event goes on
    log.sub.publish(
        &add,
        r#"{"text": "a photo of a rocket", "threshold": 0.05, "window": 1, "min_frames": 1}"#,
    );
    log.until(SECS(30), "the changed threshold", |s| {
        s.iter()
            .any(|m| m.topic == format!("{BASE}/{id}/threshold") && m.payload == "0.05")
    });
    assert_eq!(last_listing(&log.seen), Some(vec![id.to_string()]));
    assert!(
        event_of(&log.seen, id, "end").is_none(),
        "a change of settings is not an end"
    );

    // "Stop watching": the entities go (a component with only its platform), the state is
    // cleared, the open event ends "removed"
    log.sub.publish(&format!("{BASE}/{id}/stop"), "PRESS");
    log.until(SECS(30), "the end of the stopped prompt", |s| {
        event_of(s, id, "end").is_some()
    });
    assert_eq!(event_of(&log.seen, id, "end").unwrap()["reason"], "removed");
    log.until(SECS(10), "the tombstones", |s| {
        components(s).get(&entity) == Some(&serde_json::json!({"p": "binary_sensor"}))
    });
    log.until(SECS(10), "the state cleared", |s| {
        s.iter()
            .any(|m| m.topic == format!("{BASE}/{id}/state") && m.payload.is_empty())
    });

    // once: a start, then an end with the reason, and the prompt is gone
    log.sub
        .publish(&add, &always("a rocket", r#", "once": true"#));
    log.until(SECS(30), "the once prompt's end", |s| {
        event_of(s, "a_rocket", "end").is_some()
    });
    let end = event_of(&log.seen, "a_rocket", "end").unwrap();
    assert_eq!(
        (&end["reason"], &end["runtime"]),
        (&"once".into(), &true.into()),
        "{end}"
    );
    assert!(event_of(&log.seen, "a_rocket", "start").is_some());
    log.until(SECS(10), "the list empty", |s| {
        last_listing(s) == Some(vec![])
    });

    // expires, next to one that stays
    log.sub
        .publish(&add, &always("a cat", r#", "expires": "4s""#));
    log.sub.publish(
        &add,
        &always("a tree", r#", "model": "owlvit", "expires": "1h""#),
    );
    log.until(SECS(30), "the expiring prompt's start", |s| {
        event_of(s, "a_cat", "start").is_some()
    });
    log.until(SECS(20), "its end on expiry", |s| {
        event_of(s, "a_cat", "end").is_some()
    });
    assert_eq!(
        event_of(&log.seen, "a_cat", "end").unwrap()["reason"],
        "expired"
    );
    log.until(SECS(10), "the list with the tree", |s| {
        last_listing(s) == Some(vec!["a_tree".to_string()])
    });
    log.until(SECS(60), "the detector prompt's start", |s| {
        event_of(s, "a_tree", "start").is_some()
    });
    assert_eq!(
        components(&log.seen)["promptcam_launch_pad_a_tree"]["p"],
        "binary_sensor"
    );

    // a SIGHUP re-reads the file and keeps the run-time prompts (their events stay open)
    let before = log.seen.len();
    d.signal("-HUP");
    std::thread::sleep(SECS(3));
    while let Some(m) = log.sub.wait_for(Duration::from_millis(500), |_| true) {
        log.seen.push(m);
    }
    assert!(
        event_of(&log.seen[before..], "a_tree", "end").is_none(),
        "the reload ended the run-time prompt"
    );
    assert!(components(&log.seen)["promptcam_launch_pad_a_tree"]
        .get("unique_id")
        .is_some());

    // `check` validates the saved prompts: this one holds
    let (code, out, err) =
        crate::fixture::promptcam(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(1 added at run time)"), "{out}");

    // a restart: the one that stays comes back, with its entities (the retained list and
    // device config are cleared first: the new daemon must publish them itself)
    d.stop();
    let saved = tmp.path().join("runtime-prompts/launch_pad.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(saved["prompts"][0]["id"], "a_tree", "{saved}");
    for topic in [format!("{BASE}/prompts"), DEVICE.to_string()] {
        let ok = std::process::Command::new("mosquitto_pub")
            .args(["-p", &broker.port.to_string(), "-r", "-n", "-t", &topic])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let mut late = Log::new(broker.port, "rt-late");
    let mut d = Daemon::start(&config, None);
    late.until(SECS(60), "the tree back", |s| {
        s.iter()
            .any(|m| m.topic == "promptcam/promptcam/availability" && m.payload == "online")
            && last_listing(s) == Some(vec!["a_tree".to_string()])
            && components(s).contains_key("promptcam_launch_pad_a_tree_stop")
    });
    late.until(SECS(30), "the tree's event after the restart", |s| {
        event_of(s, "a_tree", "start").is_some_and(|e| e["runtime"] == true)
    });
    // `check` refuses a saved prompt the config no longer allows, naming it and the file
    let file = tmp.path().join("runtime-prompts/launch_pad.json");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, good.replace("\"owlvit\"", "\"yolo\"")).unwrap();
    let (code, out, err) =
        crate::fixture::promptcam(&["check", "--config", config.to_str().unwrap()]);
    assert_ne!(
        code,
        0,
        "{out} {err} {}",
        std::fs::read_to_string(&file).unwrap()
    );
    assert!(
        err.contains("\"a_tree\" dropped") && err.contains("is not a model"),
        "{err}"
    );
    std::fs::write(&file, good).unwrap();
    // the expired one is not an entity any more (at most a removal: `{"p": ...}`)
    let cat = components(&late.seen).remove("promptcam_launch_pad_a_cat");
    assert!(
        cat.as_ref().is_none_or(|c| c.get("unique_id").is_none()),
        "{cat:?}"
    );
    d.stop();
}

#[test]
fn fifty_changes_in_a_burst_leave_exactly_the_prompts_they_should() {
    let tmp = TempDir::new("runtime-burst");
    let broker = Broker::start(tmp.path(), "");
    let mut log = Log::new(broker.port, "burst-sub");
    let config = config(tmp.path(), broker.port);
    let mut d = Daemon::start(&config, None);
    log.until(SECS(60), "online", |s| {
        s.iter()
            .any(|m| m.topic == "promptcam/promptcam/availability" && m.payload == "online")
    });
    // 26 adds and 24 removes, each remove two adds behind, while frames flow
    let (add, remove) = (
        format!("{BASE}/prompts/add"),
        format!("{BASE}/prompts/remove"),
    );
    for i in 0..26 {
        log.sub.publish(&add, &always(&format!("thing {i}"), ""));
        if i >= 2 {
            log.sub.publish(&remove, &format!("thing_{}", i - 2));
        }
    }
    let expected = vec!["thing_24".to_string(), "thing_25".to_string()];
    log.until(SECS(90), "the burst settled", |s| {
        last_listing(s).as_ref() == Some(&expected)
            && ["thing_24", "thing_25"].iter().all(|p| {
                s.iter()
                    .any(|m| m.topic == format!("{BASE}/{p}/state") && m.payload == "ON")
            })
    });
    // let the last swaps and clears go out
    while let Some(m) = log.sub.wait_for(SECS(3), |_| true) {
        log.seen.push(m);
    }
    assert!(
        !log.seen.iter().any(|m| m.topic.ends_with("/prompts/error")),
        "nothing refused: {:?}",
        log.seen
            .iter()
            .filter(|m| m.topic.ends_with("/prompts/error"))
            .map(|m| &m.payload)
            .collect::<Vec<_>>()
    );
    // entities: exactly the file's prompt and the two that stay (the others only as removals)
    let comps = components(&log.seen);
    let live: Vec<&String> = comps
        .iter()
        .filter(|(k, v)| k.contains("thing") && v.get("unique_id").is_some())
        .map(|(k, _)| k)
        .collect();
    let mut want: Vec<String> = vec![];
    for p in ["thing_24", "thing_25"] {
        for suffix in ["", "_score", "_snapshot", "_threshold", "_stop"] {
            want.push(format!("promptcam_launch_pad_{p}{suffix}"));
        }
    }
    want.sort();
    assert_eq!(live, want.iter().collect::<Vec<_>>());
    // events: no lost end, no duplicate start; every start of a removed prompt has its end
    let mut starts: HashMap<String, usize> = HashMap::new();
    let mut ends: HashMap<String, Value> = HashMap::new();
    for e in log.events() {
        let id = e["id"].as_str().unwrap().to_string();
        match e["type"].as_str().unwrap() {
            "start" => *starts.entry(id).or_default() += 1,
            "end" => {
                assert!(
                    ends.insert(id.clone(), e.clone()).is_none(),
                    "two ends of {id}"
                );
            }
            _ => {}
        }
    }
    for (id, n) in &starts {
        assert_eq!(*n, 1, "{id} started {n} times");
        let prompt = id.split("-launch_pad-").nth(1).unwrap_or_default();
        if prompt.starts_with("thing_") && !["thing_24", "thing_25"].contains(&prompt) {
            let end = ends.get(id).unwrap_or_else(|| panic!("no end of {id}"));
            assert_eq!(end["reason"], "removed", "{end}");
        }
    }
    assert!(starts.keys().any(|k| k.ends_with("thing_25")));
    // what a newcomer finds retained: states only of prompts that run
    let late = Log::new(broker.port, "burst-late");
    let mut retained: BTreeMap<String, String> = BTreeMap::new();
    while let Some(m) = late.sub.wait_for(Duration::from_millis(1500), |_| true) {
        retained.insert(m.topic.clone(), m.payload);
    }
    let states: Vec<&String> = retained
        .keys()
        .filter(|t| t.contains("/thing_") && t.ends_with("/state"))
        .collect();
    assert_eq!(
        states,
        vec![
            &format!("{BASE}/thing_24/state"),
            &format!("{BASE}/thing_25/state")
        ]
    );
    d.stop();
}

/// The prompt lab's "Add to this camera" in a real browser: the prompt being tried runs on the
/// camera, seen as a new state on MQTT, and its "Remove" ends it.
#[test]
fn the_labs_add_to_this_camera_in_a_real_browser() {
    use crate::history::{free_port, write_lab_config, Run};
    use crate::webdriver::Browser;
    let tmp = TempDir::new("runtime-lab");
    let broker = Broker::start(tmp.path(), "");
    let mut log = Log::new(broker.port, "lab-sub");
    let frames = tmp.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for (i, f) in ["rocket.png", "chelsea.png"].iter().enumerate() {
        std::fs::copy(crate::fixture::image(f), frames.join(format!("{i:03}.png"))).unwrap();
    }
    let port = free_port();
    let mqtt = format!(
        "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nspool_dir = \"{}\"\n",
        broker.port,
        tmp.path().join("spool").display()
    );
    let prompt = "text = \"a photo of a cat\"\nmodel = \"clip\"\nnegatives = [\"a rocket\"]";
    let cfg = write_lab_config(tmp.path(), &frames, port, 4.0, prompt, &mqtt);
    let run = Run::start(&cfg, port);
    let b = Browser::start(&tmp.path().join("chromium"));
    b.goto(&run.url("/lab/yard"));
    b.wait(
        "the lab lists the run-time prompts",
        "document.querySelector('#runtime-prompts p, #runtime-prompts table')",
        SECS(30),
    );
    b.exec(
        "const p = document.querySelector('#prompt'); p.value = 'a photo of a rocket'; \
         document.querySelector('#threshold').value = 0; document.querySelector('#off_threshold').value = 0; \
         document.querySelector('#min_frames').value = 1; return true;",
    );
    b.click("#add-btn");
    b.wait(
        "the added prompt runs",
        "document.querySelector('#runtime-prompts tr[data-prompt=a_photo_of_a_rocket][data-running=yes]')",
        SECS(60),
    );
    let state = "promptcam/promptcam/yard/a_photo_of_a_rocket/state";
    // the state and the event are two publishes: wait for both (the event came second once)
    log.until(SECS(30), "its state ON and its start event on MQTT", |s| {
        s.iter().any(|m| m.topic == state && m.payload == "ON")
            && event_of(s, "a_photo_of_a_rocket", "start").is_some()
    });
    let start = event_of(&log.seen, "a_photo_of_a_rocket", "start").expect("a start event");
    assert_eq!(start["runtime"], true);
    b.exec("document.querySelector('#run-it').scrollIntoView(); return true;");
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    b.screenshot(&shots.join("lab-runtime.png"));
    // a bad one is refused in the page, with the validator's reason
    b.exec("document.querySelector('#threshold').value = 3; return true;");
    b.click("#add-btn");
    b.wait(
        "the refusal",
        "document.querySelector('#add-out .error')",
        SECS(20),
    );
    assert!(
        b.text("#add-out").contains("out of range"),
        "{}",
        b.text("#add-out")
    );
    // "Remove" ends it, and its state goes
    b.click("#runtime-prompts tr[data-prompt=a_photo_of_a_rocket] button.remove");
    log.until(SECS(30), "its end, removed", |s| {
        event_of(s, "a_photo_of_a_rocket", "end").is_some_and(|e| e["reason"] == "removed")
    });
    log.until(SECS(10), "its state cleared", |s| {
        s.iter().any(|m| m.topic == state && m.payload.is_empty())
    });
    b.wait(
        "the list empty",
        "!document.querySelector('#runtime-prompts tr[data-prompt]')",
        SECS(20),
    );
}

/// A saved run-time prompt whose models no longer load (its pictures are gone) does not keep the
/// camera down: the daemon starts without it, says why, and forgets it.
#[test]
fn a_saved_prompt_that_no_longer_loads_does_not_stop_the_start() {
    let tmp = TempDir::new("runtime-unloadable");
    // two rockets in a row: the file's prompt (min_frames = 2) starts
    let frames = ["rocket.png", "rocket.png", "chelsea.png"];
    let config = replay(tmp.path(), &frames, true, 0.6);
    let saved = tmp.path().join("runtime-prompts/launch_pad.json");
    std::fs::create_dir_all(saved.parent().unwrap()).unwrap();
    let gone = tmp.path().join("gone");
    let file = serde_json::json!({"version": 1, "camera": "launch_pad", "prompts": [{
        "id": "our_car", "added_ms": 1, "source": "lab",
        "keys": {"name": "our car", "model": "clip", "examples": [format!("{}/*.jpg", gone.display())]},
    }]});
    std::fs::write(&saved, file.to_string()).unwrap();
    let d = Daemon::start(&config, None);
    let start = d.next_event(SECS(60)).expect("the file's prompt runs");
    assert_eq!(start["prompt"], "a_rocket_on_the_launch_pad");
    assert!(!saved.exists(), "the prompt that cannot load is forgotten");
}
