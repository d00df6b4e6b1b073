//! MQTT against hostile or failing surroundings, with a real mosquitto: an oversized (retained)
//! command is refused without dropping the connection, long and non-ASCII prompts make short,
//! distinct topics, hostile spool files are set aside and never resent, an event survives a spool
//! that refuses writes, and a full spool drops its oldest events, counted.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use promptcam::event::{Event, EventKind};
use promptcam::mqtt::Publisher;
use serde_json::Value;

use crate::fixture::TempDir;
use crate::mqtt::{
    event, free_port, mqtt_config, start, status, status_of, wait_until, Broker, Sub, EVENTS, SECS,
};

const PAUSED_SET: &str = "promptcam/garage_pi/driveway/paused/set";

/// A retained message of `size` bytes on `topic`, published with mosquitto_pub.
fn retain_big(port: u16, topic: &str, size: usize, dir: &Path) {
    let file = dir.join(format!("payload-{size}"));
    std::fs::write(&file, vec![b'7'; size]).unwrap();
    let ok = Command::new("mosquitto_pub")
        .args(["-p", &port.to_string(), "-q", "1", "-r", "-t", topic, "-f"])
        .arg(&file)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mosquitto_pub of {size} bytes");
}

#[test]
fn an_oversized_retained_command_is_refused_without_dropping_the_connection() {
    let dir = TempDir::new("mqtt-big-command");
    let broker = Broker::start(dir.path(), "");
    retain_big(broker.port, PAUSED_SET, 1_000_000, dir.path());
    let live = status();
    let cam = live.camera("driveway").unwrap().clone();
    let publisher = Publisher::start(
        mqtt_config(broker.port, &dir.path().join("spool"), ""),
        "garage_pi",
        &crate::mqtt::cameras(),
        live,
    )
    .unwrap();
    assert!(wait_until(SECS(10), || publisher.stats().commands_rejected >= 1));
    std::thread::sleep(SECS(3));
    let s = publisher.stats();
    assert!(
        s.connected && s.connections == 1 && s.commands_rejected == 1,
        "{s:?} {:?}",
        publisher.last_error()
    );
    assert!(!cam.is_paused());
    // a command that is fine still works on the same connection
    let sub = Sub::new(
        broker.port,
        "big-cmd",
        &["promptcam/garage_pi/driveway/paused"],
        true,
    );
    sub.publish(PAUSED_SET, "ON");
    assert!(wait_until(SECS(5), || cam.is_paused()));

    // over the incoming limit (8 MiB): one reconnect reads it and refuses it, then no more
    retain_big(
        broker.port,
        "promptcam/garage_pi/driveway/a_delivery_van/threshold/set",
        10_000_000,
        dir.path(),
    );
    assert!(wait_until(SECS(15), || publisher.stats().commands_rejected >= 3));
    std::thread::sleep(SECS(5));
    let s = publisher.stats();
    assert!(
        s.connected && s.connections == 2,
        "{s:?} {:?}",
        publisher.last_error()
    );
    let events = Sub::new(broker.port, "big-cmd-events", &[EVENTS], false);
    publisher.publish(&event(EventKind::Start, 1)).unwrap();
    assert_eq!(
        events.events(EVENTS, 1, SECS(5)).len(),
        1,
        "events still flow"
    );
    publisher.stop();
}

const LONG_PROMPTS: &str = r#"
[models.clip]
dir = "models/tiny/clip"
quantized = false

[[cameras]]
name = "Driveway"
source = "tests/fixtures/images"

[[cameras.prompts]]
text = "LONG10"
model = "clip"

[[cameras.prompts]]
text = "LONG70"
model = "clip"

[[cameras.prompts]]
text = "猫"
model = "clip"

[[cameras.prompts]]
text = "犬"
model = "clip"
"#;

#[test]
fn long_and_non_ascii_prompts_make_short_distinct_topics() {
    let dir = TempDir::new("mqtt-long-prompts");
    let broker = Broker::start(dir.path(), "");
    let words = |n: usize| "a very long prompt ".repeat(n / 19 + 1)[..n].to_string();
    // the longest text a prompt may have, and one a character shorter (`MAX_TEXT`)
    let max = promptcam::config::MAX_TEXT;
    let text = LONG_PROMPTS
        .replace("LONG10", &words(max - 1))
        .replace("LONG70", &words(max));
    let cameras = promptcam::config::parse(&text, Path::new("t.toml"))
        .expect("four distinct prompts")
        .cameras;
    // longer is refused, naming the limit (a 70 kB text too)
    for n in [max + 1, 70_000] {
        let long = LONG_PROMPTS
            .replace("LONG10", &"x".repeat(n))
            .replace("LONG70", "y");
        let e = promptcam::config::parse(&long, Path::new("t.toml")).unwrap_err();
        assert!(
            format!("{e:#}").contains(&format!("at most {max}")),
            "{e:#}"
        );
    }
    let ids: Vec<&str> = cameras[0].prompts.iter().map(|p| p.id.as_str()).collect();
    assert!(
        ids.iter().all(|i| !i.is_empty() && i.len() <= 64),
        "{ids:?}"
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 4, "{ids:?}");
    let sub = Sub::new(
        broker.port,
        "long",
        &["promptcam/#", "homeassistant/#"],
        true,
    );
    let publisher = Publisher::start(
        mqtt_config(broker.port, &dir.path().join("spool"), ""),
        "garage_pi",
        &cameras,
        status_of(&cameras),
    )
    .unwrap();
    for (i, p) in cameras[0].prompts.iter().enumerate() {
        for kind in [EventKind::Start, EventKind::End] {
            publisher
                .publish(&Event {
                    prompt: p.id.clone(),
                    id: format!("1-driveway-{}", p.id),
                    ..event(kind, i)
                })
                .unwrap();
        }
    }
    let mut topics = HashSet::new();
    let mut events = vec![];
    while let Some(m) = sub.wait_for(SECS(3), |_| true) {
        if m.topic == EVENTS {
            events.push(m.payload.clone());
        }
        topics.insert(m.topic);
    }
    assert_eq!(events.len(), 8, "4 starts and 4 ends delivered: {events:?}");
    let longest = topics.iter().map(|t| t.len()).max().unwrap();
    assert!(longest <= 160, "a {longest}-byte topic");
    for id in &ids {
        let state = format!("promptcam/garage_pi/driveway/{id}/state");
        assert!(topics.contains(&state), "{state} in {topics:?}");
    }
    assert_eq!(publisher.stats().connections, 1);
    publisher.stop();
}

fn write_event(dir: &Path, name: &str, id: &str) -> String {
    let mut e = event(EventKind::Update, 0);
    e.id = id.into();
    let text = serde_json::to_string(&e).unwrap();
    std::fs::write(dir.join(name), &text).unwrap();
    text
}

#[test]
fn hostile_spool_files_are_set_aside_and_never_resent() {
    let dir = TempDir::new("mqtt-hostile-spool");
    let broker = Broker::start(dir.path(), "");
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join("00000000000000000001.json"), "[]").unwrap();
    write_event(&spool, "00000000000000000003.json", "third");
    write_event(&spool, "18446744073709551615.json", "last");
    write_event(&spool, "7.json", "unpadded");
    let mut huge = event(EventKind::Update, 0);
    huge.id = "x".repeat(10 << 20);
    std::fs::write(
        spool.join("00000000000000000002.json"),
        serde_json::to_string(&huge).unwrap(),
    )
    .unwrap();
    let sub = Sub::new(broker.port, "hostile", &[EVENTS], false);
    let publisher = start(mqtt_config(broker.port, &spool, ""));
    assert_eq!(
        publisher.stats().spooled,
        2,
        "only the two well-formed entries"
    );
    let mut new = event(EventKind::End, 0);
    new.id = "new".into();
    publisher.publish(&new).unwrap();
    let mut ids = vec![];
    while let Some(m) = sub.wait_for(SECS(3), |m| m.topic == EVENTS) {
        let v: Value = serde_json::from_str(&m.payload).unwrap();
        ids.push(v["id"].as_str().unwrap_or("?").to_string());
    }
    assert_eq!(ids, ["third", "last", "new"], "each once, in order");
    assert!(wait_until(SECS(5), || publisher.stats().spooled == 0));
    publisher.stop();
    let mut rejected: Vec<String> = std::fs::read_dir(spool.join("rejected"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    rejected.sort();
    assert_eq!(
        rejected,
        [
            "00000000000000000001.json",
            "00000000000000000002.json",
            "7.json"
        ],
        "set aside, kept for a look"
    );
    // a restart resends nothing
    let publisher = start(mqtt_config(broker.port, &spool, ""));
    assert_eq!(publisher.stats().spooled, 0);
    assert!(sub.wait_for(SECS(2), |m| m.topic == EVENTS).is_none());
    publisher.stop();
}

/// Replaces the spool directory by a file (every write fails with ENOTDIR, as with ENOSPC or
/// EMFILE) until the returned guard is dropped.
struct Unwritable<'a>(&'a Path);

impl<'a> Unwritable<'a> {
    fn new(spool: &'a Path) -> Unwritable<'a> {
        std::fs::rename(spool, spool.with_extension("away")).unwrap();
        std::fs::write(spool, b"").unwrap();
        Unwritable(spool)
    }
}

impl Drop for Unwritable<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
        let _ = std::fs::rename(self.0.with_extension("away"), self.0);
    }
}

#[test]
fn an_event_survives_a_spool_that_refuses_writes() {
    let dir = TempDir::new("mqtt-held");
    let mut broker = Broker::start(dir.path(), "");
    let spool = dir.path().join("spool");
    let sub = Sub::new(broker.port, "held", &[EVENTS], false);
    let publisher = start(mqtt_config(broker.port, &spool, ""));
    assert!(wait_until(SECS(10), || publisher.stats().connected));
    // connected: delivered from memory while the spool refuses writes
    let broken = Unwritable::new(&spool);
    publisher.publish(&event(EventKind::Start, 1)).unwrap();
    let got = sub.events(EVENTS, 1, SECS(5));
    assert_eq!(got.len(), 1, "delivered from memory");
    assert!(wait_until(SECS(5), || publisher.stats().spooled == 0));
    // broker down too: held in memory, written once the spool takes writes, then delivered
    broker.stop();
    assert!(wait_until(SECS(5), || !publisher.stats().connected));
    publisher.publish(&event(EventKind::End, 2)).unwrap();
    assert_eq!((publisher.stats().spooled, publisher.stats().held), (1, 1));
    drop(broken);
    assert!(
        wait_until(SECS(5), || publisher.stats().held == 0),
        "written to the spool once it takes writes"
    );
    assert!(spool.join(format!("{:020}.json", 2)).exists());
    broker.restart();
    let got = sub.events(EVENTS, 1, SECS(15));
    assert_eq!(got.first().map(|v| v["id"].clone()), Some("evt-2".into()));
    publisher.stop();
}

#[test]
fn a_full_spool_drops_its_oldest_events_and_counts_them() {
    let dir = TempDir::new("mqtt-overflow");
    let port = free_port();
    let spool = dir.path().join("spool");
    let publisher = start(mqtt_config(port, &spool, "spool_max_events = 5"));
    for i in 0..8 {
        publisher.publish(&event(EventKind::Update, i)).unwrap();
    }
    let s = publisher.stats();
    assert_eq!((s.spooled, s.dropped, s.queued), (5, 3, 8), "{s:?}");
    publisher.stop();
    // a broker at last: the newest five arrive, in order
    let broker = Broker::start(dir.path(), "");
    let sub = Sub::new(broker.port, "overflow", &[EVENTS], false);
    let publisher = start(mqtt_config(broker.port, &spool, "spool_max_events = 5"));
    let got = sub.events(EVENTS, 5, SECS(10));
    let ids: Vec<&str> = got.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["evt-3", "evt-4", "evt-5", "evt-6", "evt-7"]);
    publisher.stop();
}
