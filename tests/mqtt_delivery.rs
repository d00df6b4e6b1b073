//! MQTT delivery under load, against a real mosquitto: the daemon with three cameras delivers
//! every event it spools, once and in order, while its retained states stay at about one message
//! per change; a backlog of 3000 spooled events drains while states keep changing; a SIGTERM with
//! the broker down says what stays spooled; a daemon killed with SIGKILL has its open events
//! ended (`"reason": "restart"`) by the next start.
//!
//! How events are counted: the daemon logs each event it spools (`MQTT: spooled event <seq>:
//! <type> <id>`, at debug level) and a persistent QoS 1 subscriber (fixed client id,
//! clean_session=false) records what the broker delivers. With no reconnect in these runs, any
//! repeated payload is a duplicate and fails the test; the delivered (type, id) sequence must be
//! the spooled one, in spool order.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use promptcam::event::EventKind;
use rumqttc::QoS;
use serde_json::Value;

use crate::fixture::{self, TempDir};
use crate::mqtt::{
    event, free_port, mqtt_config, start, wait_until, Broker, Msg, Sub, EVENTS, SECS,
};

/// The daemon's events topic (device id `promptcam`).
const DAEMON_EVENTS: &str = "promptcam/promptcam/events";

/// `promptcam run` with its log (RUST_LOG: MQTT at debug) in a file; killed if the test ends early.
pub(crate) struct Run {
    child: Child,
    log: PathBuf,
}

impl Run {
    pub(crate) fn start(config: &Path, log: &Path) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_promptcam"));
        cmd.args(["run", "--config", config.to_str().unwrap()]);
        Run::spawn(cmd, log)
    }

    /// Runs `cmd`, which ends by executing `promptcam run` in its own process (so that killing
    /// it kills the daemon), with the environment and log of [`Run::start`].
    pub(crate) fn spawn(mut cmd: Command, log: &Path) -> Run {
        let child = cmd
            .current_dir(fixture::repo())
            .env("RUST_LOG", "info,promptcam::mqtt=debug")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .unwrap();
        Run {
            child,
            log: log.to_path_buf(),
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn term(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit code, once the process has ended.
    pub(crate) fn exited(&mut self) -> Option<i32> {
        let status = self.child.try_wait().unwrap()?;
        Some(status.code().unwrap_or(-1))
    }

    pub(crate) fn wait(&mut self, timeout: Duration) -> i32 {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < end,
                "the daemon did not exit in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (type, id) of every event the daemon spooled, in spool order.
    pub(crate) fn spooled(&self) -> Vec<(String, String)> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("MQTT: spooled event ").map(|(_, r)| r))
            .filter_map(|r| {
                let mut w = r.split_whitespace().skip(1);
                Some((w.next()?.to_string(), w.next()?.to_string()))
            })
            .collect()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The bundled demo (`config/demo.toml`) with its camera copied three times (Demo0..Demo2, the
/// same prompts) and an `[mqtt]` table.
fn three_cameras(dir: &Path, port: u16) -> PathBuf {
    let demo = fixture::demo_without_http();
    let (head, camera) = demo.split_once("[[cameras]]").unwrap();
    let mut text = head.to_string();
    for i in 0..3 {
        let camera = camera.replacen("name = \"Demo\"", &format!("name = \"Demo{i}\""), 1);
        assert_ne!(camera, demo, "the demo camera is named Demo");
        text.push_str(&format!("[[cameras]]{camera}"));
    }
    text.push_str(&format!(
        "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nspool_dir = \"{}\"\n",
        dir.join("spool").display()
    ));
    let path = dir.join("three.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Everything `sub` receives until it has been quiet for `quiet`.
fn drain(sub: &Sub, quiet: Duration, limit: Duration) -> Vec<Msg> {
    let until = Instant::now() + limit;
    let mut got = vec![];
    while let Some(m) = sub.wait_for(quiet, |_| true) {
        got.push(m);
        if Instant::now() > until {
            break;
        }
    }
    got
}

fn type_and_id(m: &Msg) -> (String, String) {
    let v: Value = serde_json::from_str(&m.payload).unwrap();
    (
        v["type"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

fn duplicates(msgs: &[Msg]) -> usize {
    let mut seen = std::collections::HashSet::new();
    msgs.iter().filter(|m| !seen.insert(&m.payload)).count()
}

#[test]
fn three_cameras_deliver_every_event_once_in_order_and_states_stay_bounded() {
    let tmp = TempDir::new("mqtt-three");
    let broker = Broker::start(tmp.path(), "");
    let events = Sub::new(broker.port, "three-events", &[DAEMON_EVENTS], false);
    let states = Sub::with_qos(
        broker.port,
        "three-states",
        &["promptcam/promptcam/+/+/state"],
        true,
        QoS::AtMostOnce,
    );
    let config = three_cameras(tmp.path(), broker.port);
    let mut d = Run::start(&config, &tmp.path().join("daemon.log"));
    std::thread::sleep(SECS(12));
    d.term();
    assert_eq!(d.wait(SECS(20)), 0, "SIGTERM exits 0");
    let delivered = drain(&events, SECS(3), SECS(30));
    let state_msgs = drain(&states, Duration::from_millis(500), SECS(10));
    let log = d.log();
    let spooled = d.spooled();
    assert!(
        delivered.len() >= 30,
        "{} events delivered, {} spooled; {} state messages",
        delivered.len(),
        spooled.len(),
        state_msgs.len()
    );
    assert_eq!(
        log.matches("connected to the MQTT broker").count(),
        1,
        "one connection: no redelivery expected\n{log}"
    );
    assert_eq!(
        duplicates(&delivered),
        0,
        "no duplicates without a reconnect"
    );
    let got: Vec<(String, String)> = delivered.iter().map(type_and_id).collect();
    assert_eq!(
        got, spooled,
        "every spooled event delivered, in spool order"
    );
    assert!(
        log.contains(&format!(
            "{n} event(s) queued since start, {n} delivered, 0 spooled",
            n = spooled.len()
        )),
        "{log}"
    );
    // per occurrence: a start first, an end last (SIGTERM ends what is open)
    let mut by_id: HashMap<&str, Vec<&str>> = HashMap::new();
    for (t, id) in &got {
        by_id.entry(id).or_default().push(t);
    }
    for (id, kinds) in &by_id {
        assert!(
            kinds.first() == Some(&"start") && kinds.last() == Some(&"end"),
            "{id}: {kinds:?}"
        );
        assert!(kinds[1..kinds.len() - 1].iter().all(|k| *k == "update"));
    }
    // states: the initial OFF, then one message per change at most (coalesced, latest wins)
    let mut changes: HashMap<String, usize> = HashMap::new();
    for m in &delivered {
        let v: Value = serde_json::from_str(&m.payload).unwrap();
        if v["type"] != "update" {
            let topic = format!(
                "promptcam/promptcam/{}/{}/state",
                v["camera"].as_str().unwrap(),
                v["prompt"].as_str().unwrap()
            );
            *changes.entry(topic).or_default() += 1;
        }
    }
    assert_eq!(changes.len(), 6, "3 cameras x 2 prompts changed state");
    let mut per_topic: HashMap<&str, Vec<&str>> = HashMap::new();
    for m in &state_msgs {
        per_topic.entry(&m.topic).or_default().push(&m.payload);
    }
    for (topic, n) in &changes {
        let msgs = per_topic.get(topic.as_str()).cloned().unwrap_or_default();
        assert!(
            !msgs.is_empty() && msgs.len() <= n + 1,
            "{topic}: {} state messages for {n} changes",
            msgs.len()
        );
        assert_eq!(msgs.last(), Some(&"OFF"), "{topic}: {msgs:?}");
    }
}

/// Writes `n` valid events into a spool directory as a previous run would have left them.
fn prespool(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 1..=n {
        let mut e = event(EventKind::Update, i);
        e.id = format!("pre-{i}");
        std::fs::write(
            dir.join(format!("{i:020}.json")),
            serde_json::to_string(&e).unwrap(),
        )
        .unwrap();
    }
}

#[test]
fn a_backlog_of_3000_events_drains_while_states_keep_changing() {
    let dir = TempDir::new("mqtt-backlog");
    // mosquitto queues at most 1000 QoS-1 messages for a subscriber by default and drops the
    // rest: under a full `cargo test` this test's subscriber fell behind the 3000-event burst
    // and lost messages the publisher had delivered (its PUBACKs all came back). The test is
    // about the publisher, so its subscriber's queue is unbounded.
    let broker = Broker::start(dir.path(), "max_queued_messages 0");
    let spool = dir.path().join("spool");
    prespool(&spool, 3000);
    let sub = Sub::new(broker.port, "backlog-events", &[EVENTS], false);
    let publisher = start(mqtt_config(broker.port, &spool, ""));
    assert_eq!(publisher.stats().spooled, 3000);
    // live events meanwhile: the prompt's state flips ON and OFF, its score changes
    for i in 0..100 {
        let kind = if i % 2 == 0 {
            EventKind::Start
        } else {
            EventKind::End
        };
        let mut e = event(kind, i / 2);
        e.id = format!("live-{}", i / 2);
        publisher.publish(&e).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    // alone this drains in 2-4 s (also beside six busy loops); the limit is generous: what is
    // asserted is that everything arrives, in order
    let started = std::time::Instant::now();
    let delivered = sub.events(EVENTS, 3100, SECS(180));
    let ids: Vec<String> = delivered
        .iter()
        .map(|v| {
            format!(
                "{}-{}",
                v["type"].as_str().unwrap(),
                v["id"].as_str().unwrap()
            )
        })
        .collect();
    let mut want: Vec<String> = (1..=3000).map(|i| format!("update-pre-{i}")).collect();
    want.extend((0..100).map(|i| {
        let kind = if i % 2 == 0 { "start" } else { "end" };
        format!("{kind}-live-{}", i / 2)
    }));
    if ids.len() != want.len() {
        let dropped = broker
            .log()
            .matches("being dropped for client backlog-events")
            .count();
        eprintln!("the broker reported dropping messages for the subscriber {dropped} time(s)");
    }
    assert_eq!(
        ids.len(),
        want.len(),
        "delivered {} of 3100 in {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(ids, want, "in spool order");
    // the counters follow the acknowledgements, a moment after the subscriber has the messages
    assert!(
        wait_until(SECS(10), || {
            let s = publisher.stats();
            s.spooled == 0 && s.delivered == 3100
        }),
        "{:?}",
        publisher.stats()
    );
    let s = publisher.stats();
    assert_eq!((s.connections, s.delivered), (1, 3100), "{s:?}");
    publisher.stop();
}

/// The rocket photo replayed in a loop: one event starts and never ends until the daemon stops.
fn rocket_forever(dir: &Path, port: u16) -> PathBuf {
    let config = crate::daemon::replay(dir, &["rocket.png"], true, 0.6);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nspool_dir = \"{}\"\n",
        dir.join("spool").display()
    ));
    std::fs::write(&config, text).unwrap();
    config
}

fn spool_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.len() == 25 && n.ends_with(".json")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn sigterm_with_the_broker_down_says_how_many_events_stay_spooled() {
    let tmp = TempDir::new("mqtt-term-down");
    let config = rocket_forever(tmp.path(), free_port());
    let spool = tmp.path().join("spool");
    let mut d = Run::start(&config, &tmp.path().join("daemon.log"));
    assert!(
        wait_until(SECS(30), || spool_entries(&spool) >= 1),
        "no event spooled\n{}",
        d.log()
    );
    d.term();
    assert_eq!(d.wait(SECS(15)), 0);
    let log = d.log();
    let left = spool_entries(&spool);
    assert_eq!(left, 2, "the start and the end of the rocket\n{log}");
    assert!(
        log.contains(&format!("MQTT: {left} event(s) stay in the spool")),
        "{log}"
    );
}

#[test]
fn a_killed_daemon_s_open_events_end_on_the_next_start() {
    let tmp = TempDir::new("mqtt-crash");
    let broker = Broker::start(tmp.path(), "");
    let sub = Sub::new(broker.port, "crash-events", &[DAEMON_EVENTS], false);
    let config = rocket_forever(tmp.path(), broker.port);
    let mut d = Run::start(&config, &tmp.path().join("first.log"));
    let start = sub
        .wait_for(SECS(30), |m| m.payload.contains("\"type\":\"start\""))
        .expect("a start event");
    let start: Value = serde_json::from_str(&start.payload).unwrap();
    d.kill(); // SIGKILL: the event stays open
    let mut d = Run::start(&config, &tmp.path().join("second.log"));
    let end = sub
        .wait_for(SECS(30), |m| {
            m.payload.contains("\"type\":\"end\"")
                && m.payload.contains(start["id"].as_str().unwrap())
        })
        .unwrap_or_else(|| panic!("no end for {}\n{}", start["id"], d.log()));
    let end: Value = serde_json::from_str(&end.payload).unwrap();
    assert_eq!(end["reason"], "restart", "{end}");
    assert_eq!(end["started_at"], start["started_at"]);
    assert!(end["ended_at"]
        .as_str()
        .is_some_and(|t| t > start["started_at"].as_str().unwrap()));
    // the second run's own event ends normally, without a reason
    let second = sub
        .wait_for(SECS(30), |m| m.payload.contains("\"type\":\"start\""))
        .expect("the second run's start");
    let second: Value = serde_json::from_str(&second.payload).unwrap();
    assert_ne!(second["id"], start["id"]);
    d.term();
    assert_eq!(d.wait(SECS(15)), 0);
    let end = sub
        .wait_for(SECS(10), |m| m.payload.contains("\"type\":\"end\""))
        .expect("the second run's end");
    let end: Value = serde_json::from_str(&end.payload).unwrap();
    assert_eq!((&end["id"], end.get("reason")), (&second["id"], None));
}
