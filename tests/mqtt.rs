//! The MQTT stage against a real broker: a mosquitto started per test on a free loopback port
//! (killed by a Drop guard), a rumqttc subscriber, and the `Publisher`: discovery payloads and
//! their snapshot, availability with the last will, events spooled through a broker outage and
//! a publisher restart, re-announcement on Home Assistant's birth message, a wrong password,
//! commands (pause switch, threshold number) checked and applied, diagnostics, stream status
//! and the event entity's stream, and TLS (right CA, wrong CA, mutual TLS) with certificates
//! made by `openssl` in the test's directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use promptcam::config::CameraConfig;
use promptcam::config::{parse_mqtt, MqttConfig};
use promptcam::event::{Event, EventKind};
use promptcam::frame::FrameSlot;
use promptcam::mqtt::{discovery, Publisher};
use promptcam::status::{CameraStatus, PromptStatus, Status};
use rumqttc::{Client, MqttOptions, Packet, QoS};
use serde_json::Value;

use crate::fixture::{self, TempDir};

// ------------------------------------------------------------------------------------ broker

/// A mosquitto process on 127.0.0.1:`port`, with persistence in its directory.
pub(crate) struct Broker {
    pub(crate) port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Broker {
    pub(crate) fn start(dir: &Path, extra: &str) -> Broker {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        let log = dir.join("mosquitto.log");
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nlog_dest file {}\nlog_type all\nuser root\n{extra}\n",
            dir.display(),
            log.display()
        );
        std::fs::write(&conf, text).unwrap();
        let mut b = Broker {
            port,
            conf,
            log,
            child: None,
        };
        b.restart();
        b
    }

    /// Starts (again) on the same port and waits until it accepts connections.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "mosquitto did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (mosquitto saves its sessions), then waits for the exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let t = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if t.elapsed() > Duration::from_secs(5) {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.wait();
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// -------------------------------------------------------------------------------- subscriber

#[derive(Clone, Debug)]
pub(crate) struct Msg {
    pub(crate) topic: String,
    pub(crate) payload: String,
    pub(crate) raw: Vec<u8>,
    pub(crate) retain: bool,
}

/// A rumqttc subscriber on its own thread; re-subscribes on every connect, waits 200 ms between
/// reconnects, and ends when dropped.
pub(crate) struct Sub {
    client: Client,
    rx: Receiver<Msg>,
}

impl Sub {
    pub(crate) fn new(port: u16, id: &str, filters: &[&str], clean: bool) -> Sub {
        Sub::with_qos(port, id, filters, clean, QoS::AtLeastOnce)
    }

    /// A subscriber whose subscriptions ask for `qos`.
    pub(crate) fn with_qos(port: u16, id: &str, filters: &[&str], clean: bool, qos: QoS) -> Sub {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        // snapshots are JPEGs of whole frames: well over rumqttc's 10 KiB default
        opts.set_clean_session(clean)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(8 << 20, 1 << 20);
        let (client, mut conn) = Client::new(opts, 100);
        let (tx, rx) = sync_channel(10_000);
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let c = client.clone();
        let subscribed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = subscribed.clone();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            let _ = c.try_subscribe(f.clone(), qos);
                        }
                    }
                    Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                        let m = Msg {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            raw: p.payload.to_vec(),
                            retain: p.retain,
                        };
                        if tx.try_send(m).is_err() {
                            return;
                        }
                    }
                    Ok(rumqttc::Event::Incoming(Packet::SubAck(_))) => {
                        flag.store(true, std::sync::atomic::Ordering::SeqCst)
                    }
                    Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        // the subscription must be in place before anything is published
        assert!(
            wait_until(SECS(5), || subscribed
                .load(std::sync::atomic::Ordering::SeqCst)),
            "the subscriber never subscribed"
        );
        Sub { client, rx }
    }

    /// Waits for a message matching `f`, skipping the others.
    pub(crate) fn wait_for(&self, timeout: Duration, f: impl Fn(&Msg) -> bool) -> Option<Msg> {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) if f(&m) => return Some(m),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Event payloads (parsed) on `topic` until `n` distinct (type, id) have arrived.
    pub(crate) fn events(&self, topic: &str, n: usize, timeout: Duration) -> Vec<Value> {
        self.events_after(&[], topic, n, timeout)
    }

    /// [`Sub::events`], also skipping the (type, id) of `before`: a consumer that dedupes
    /// across its whole life, as at-least-once delivery asks (a persistent session gets again,
    /// after a broker restart, what it received but had not acknowledged yet).
    pub(crate) fn events_after(
        &self,
        before: &[Value],
        topic: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Value> {
        let key = |v: &Value| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["type"].as_str().unwrap().to_string(),
            )
        };
        let mut seen: HashSet<_> = before.iter().map(key).collect();
        let mut out = vec![];
        while out.len() < n {
            let Some(m) = self.wait_for(timeout, |m| m.topic == topic) else {
                break;
            };
            let v: Value = serde_json::from_str(&m.payload).unwrap();
            // at least once: a consumer dedupes on (id, type)
            if seen.insert(key(&v)) {
                out.push(v);
            }
        }
        out
    }

    pub(crate) fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .unwrap();
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
    }
}

// ----------------------------------------------------------------------------------- helpers

const CONFIG: &str = r#"
[daemon]
device_id = "garage_pi"

[models.clip]
dir = "models/tiny/clip"
quantized = false

[[cameras]]
name = "Driveway"
source = "tests/fixtures/images"

[[cameras.prompts]]
text = "a delivery van"
model = "clip"
negatives = ["an empty driveway"]
device_class = "occupancy"

[[cameras.prompts]]
text = "the garage door is open"
name = "Garage door"
model = "clip"
negatives = ["the garage door is closed"]
device_class = "garage_door"
"#;

pub(crate) fn cameras() -> Vec<CameraConfig> {
    promptcam::config::parse(CONFIG, Path::new("t.toml"))
        .unwrap()
        .cameras
}

/// A live status for `cameras()`, as the daemon's `status_of` builds it.
pub(crate) fn status() -> Status {
    status_of(&cameras())
}

/// A live status for `cameras`, as the daemon's `status_of` builds it.
pub(crate) fn status_of(cameras: &[CameraConfig]) -> Status {
    let cameras = cameras
        .iter()
        .map(|c| {
            let prompts = c
                .prompts
                .iter()
                .map(|p| PromptStatus {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    threshold: p.decide.threshold,
                    score: 0.0,
                    on: false,
                })
                .collect();
            Arc::new(CameraStatus::new(
                &c.id,
                &c.name,
                Arc::default(),
                FrameSlot::new(),
                prompts,
            ))
        })
        .collect();
    Status::new(cameras)
}

pub(crate) fn start(cfg: MqttConfig) -> Publisher {
    Publisher::start(cfg, "garage_pi", &cameras(), status()).unwrap()
}

pub(crate) fn mqtt_config(port: u16, spool: &Path, extra: &str) -> MqttConfig {
    // the per-entity form, whose topics these tests count, unless `extra` names one
    let form = if extra.contains("discovery") {
        ""
    } else {
        "discovery = \"entity\"\n"
    };
    let text = format!(
        "host = \"127.0.0.1\"\nport = {port}\nspool_dir = \"{}\"\n{form}{extra}",
        spool.display()
    );
    parse_mqtt(&text, Path::new("/etc/promptcam/promptcam.toml")).unwrap()
}

pub(crate) fn event(kind: EventKind, n: usize) -> Event {
    Event {
        kind,
        camera: "driveway".into(),
        prompt: "a_delivery_van".into(),
        score: 0.5 + n as f32 / 100.0,
        bbox: None,
        started_at: "2025-01-01T00:00:00.000Z".into(),
        ended_at: (kind == EventKind::End).then(|| "2025-01-01T00:01:00.000Z".to_string()),
        id: format!("evt-{n}"),
        runtime: false,
        reason: None,
        once: false,
        snapshot: None,
    }
}

pub(crate) fn wait_until(timeout: Duration, f: impl Fn() -> bool) -> bool {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

const AVAIL: &str = "promptcam/garage_pi/availability";
/// Discovery messages of `cameras()` in the per-entity form (`mqtt_config`'s default here):
/// 1 + 8 per camera + 4 per prompt.
const DISCOVERED: usize = 1 + 8 + 2 * 4;
pub(crate) const EVENTS: &str = "promptcam/garage_pi/events";
pub(crate) const SECS: fn(u64) -> Duration = Duration::from_secs;

// ------------------------------------------------------------------------------------- tests

/// The discovery payloads carry what Home Assistant requires, and their shape is pinned by
/// `tests/fixtures/mqtt/discovery.json` (regenerate with PROMPTCAM_UPDATE_SNAPSHOTS=1).
#[test]
fn discovery_payloads_match_the_snapshot() {
    let topics = discovery::Topics {
        prefix: "promptcam".into(),
        device_id: "garage_pi".into(),
        discovery_prefix: "homeassistant".into(),
    };
    let msgs = discovery::messages(&topics, &cameras()).unwrap();
    assert_eq!(
        msgs.len(),
        DISCOVERED,
        "the daemon's status; per camera 8 entities; per prompt 4"
    );
    let mut unique = HashSet::new();
    let mut components = std::collections::BTreeMap::new();
    let mut snapshot = vec![];
    for m in &msgs {
        let v: Value = serde_json::from_str(&m.payload).unwrap();
        let component = m.topic.split('/').nth(1).unwrap().to_string();
        *components.entry(component.clone()).or_insert(0) += 1;
        for key in ["name", "unique_id", "default_entity_id", "object_id"] {
            assert!(v[key].is_string(), "{key} missing in {}", m.topic);
        }
        let uid = v["unique_id"].as_str().unwrap();
        assert!(
            unique.insert(format!("{component}.{uid}")),
            "unique_id {uid} twice"
        );
        assert!(m.topic.ends_with(&format!("/{uid}/config")), "{}", m.topic);
        assert_eq!(
            v["default_entity_id"].as_str().unwrap(),
            format!("{component}.{uid}")
        );
        assert!(!v["dev"]["identifiers"].as_array().unwrap().is_empty());
        assert_eq!(v["o"]["name"], "promptcam");
        if uid != "garage_pi_status" {
            assert_eq!(v["availability_topic"], AVAIL, "{}", m.topic);
            assert_eq!(
                v["dev"]["via_device"], "garage_pi",
                "every camera entity is on a camera device: {}",
                m.topic
            );
        }
        // what Home Assistant requires of each platform
        let required: &[&str] = match component.as_str() {
            "binary_sensor" | "sensor" => &["state_topic"],
            "image" => &["image_topic", "content_type"],
            "event" => &["state_topic", "event_types"],
            "switch" | "number" | "text" => &["state_topic", "command_topic"],
            "button" => &["command_topic"],
            other => panic!("unexpected component {other}"),
        };
        for key in required {
            assert!(!v[key].is_null(), "{key} missing in {}", m.topic);
        }
        match component.as_str() {
            "binary_sensor" if uid.ends_with("_stream") || uid == "garage_pi_status" => {
                assert_eq!(
                    (v["payload_on"].as_str(), v["device_class"].as_str()),
                    (Some("online"), Some("connectivity"))
                );
            }
            "binary_sensor" => assert_eq!(
                (v["payload_on"].as_str(), v["payload_off"].as_str()),
                (Some("ON"), Some("OFF"))
            ),
            "sensor" if uid.ends_with("_score") => assert_eq!(v["state_class"], "measurement"),
            "sensor" => {
                assert_eq!(v["entity_category"], "diagnostic");
                assert_eq!(v["state_topic"], "promptcam/garage_pi/driveway/diagnostics");
                assert!(
                    v["value_template"]
                        .as_str()
                        .unwrap()
                        .starts_with("{{ value_json."),
                    "{}",
                    m.topic
                );
            }
            "image" => {
                assert_eq!(v["content_type"], "image/jpeg");
                assert!(v["image_topic"].as_str().unwrap().ends_with("/snapshot"));
            }
            "event" => {
                assert_eq!(
                    v["event_types"],
                    serde_json::json!(["start", "update", "end"])
                );
                assert_eq!(v["state_topic"], "promptcam/garage_pi/driveway/event");
            }
            "switch" => {
                assert_eq!(
                    v["command_topic"],
                    format!("{}/set", v["state_topic"].as_str().unwrap())
                );
                assert_eq!(
                    (v["payload_on"].as_str(), v["payload_off"].as_str()),
                    (Some("ON"), Some("OFF"))
                );
            }
            "number" => {
                assert_eq!(
                    v["command_topic"],
                    format!("{}/set", v["state_topic"].as_str().unwrap())
                );
                assert_eq!(
                    (v["min"].as_f64(), v["max"].as_f64(), v["step"].as_f64()),
                    (Some(0.0), Some(1.0), Some(0.01))
                );
            }
            "text" => {
                assert_eq!(v["command_topic"], "promptcam/garage_pi/driveway/watch/set");
                assert_eq!((v["min"].as_u64(), v["max"].as_u64()), (Some(0), Some(255)));
            }
            _ => {}
        }
        let mut v = v;
        // the version changes with every release; the shape must not
        for block in ["dev", "o"] {
            v[block]["sw_version"] = Value::String("<version>".into());
        }
        snapshot.push(serde_json::json!({"topic": m.topic, "payload": v}));
    }
    let want_components: std::collections::BTreeMap<String, i32> = [
        ("binary_sensor", 4),
        ("event", 1),
        ("image", 3),
        ("number", 2),
        ("sensor", 5),
        ("switch", 1),
        ("text", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(components, want_components);
    let path = fixture::path("tests/fixtures/mqtt/discovery.json");
    let got = Value::Array(snapshot);
    if std::env::var_os("PROMPTCAM_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        got, want,
        "discovery changed: review, then PROMPTCAM_UPDATE_SNAPSHOTS=1 to accept"
    );

    // the device form holds the same entities, one config per device, without `dev` and `o`
    // in the components (they are the device's)
    let components = discovery::components(&topics, &cameras()).unwrap();
    let devices = discovery::device_messages(&topics, &components, &[]);
    let names: Vec<&str> = devices.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        names,
        [
            "homeassistant/device/garage_pi/config",
            "homeassistant/device/garage_pi_driveway/config"
        ]
    );
    let mut held = 0;
    for m in &devices {
        let v: Value = serde_json::from_str(&m.payload).unwrap();
        assert_eq!(v["o"]["name"], "promptcam");
        for (id, c) in v["cmps"].as_object().unwrap() {
            let entity = msgs
                .iter()
                .find(|e| e.topic.ends_with(&format!("/{id}/config")))
                .unwrap_or_else(|| panic!("{id} is not an entity of the per-entity form"));
            let mut per_entity: Value = serde_json::from_str(&entity.payload).unwrap();
            assert_eq!(v["dev"], per_entity["dev"], "{id}");
            let o = per_entity.as_object_mut().unwrap();
            o.remove("dev");
            o.remove("o");
            o.insert("p".into(), entity.topic.split('/').nth(1).unwrap().into());
            assert_eq!(c, &per_entity, "{id}");
            held += 1;
        }
    }
    assert_eq!(held, DISCOVERED);
}

/// Over a real broker: retained discovery, `online`, an event with its retained state and
/// score, and `offline` retained after `stop()`.
#[test]
fn publishes_discovery_availability_events_and_states() {
    let dir = TempDir::new("mqtt-basic");
    let broker = Broker::start(dir.path(), "");
    let publisher = start(mqtt_config(broker.port, &dir.path().join("spool"), ""));
    let sub = Sub::new(
        broker.port,
        "t-basic",
        &["promptcam/#", "homeassistant/#"],
        true,
    );
    assert!(
        sub.wait_for(SECS(10), |m| m.topic == AVAIL && m.payload == "online")
            .is_some(),
        "no online"
    );
    publisher.publish(&event(EventKind::Start, 1)).unwrap();
    // the state and the event travel on different topics: either may arrive first
    let (mut event_msg, mut on) = (None, false);
    while event_msg.is_none() || !on {
        let m = sub
            .wait_for(SECS(5), |m| {
                m.topic == EVENTS || m.topic.ends_with("/a_delivery_van/state")
            })
            .expect("no event or state");
        on |= m.payload == "ON";
        if m.topic == EVENTS {
            event_msg = Some(m);
        }
    }
    let e = event_msg.unwrap();
    assert!(!e.retain);
    let v: Value = serde_json::from_str(&e.payload).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["id"].as_str()),
        (Some("start"), Some("evt-1"))
    );
    publisher.publish(&event(EventKind::End, 1)).unwrap();
    assert!(sub
        .wait_for(SECS(5), |m| m.topic
            == "promptcam/garage_pi/driveway/a_delivery_van/state"
            && m.payload == "OFF")
        .is_some());
    let t = Instant::now();
    publisher.stop();
    assert!(t.elapsed() < SECS(4), "stop took {:?}", t.elapsed());
    assert!(
        sub.wait_for(SECS(5), |m| m.topic == AVAIL && m.payload == "offline")
            .is_some(),
        "no offline after stop"
    );

    // a newcomer sees the retained picture: discovery, offline, last state and score
    let late = Sub::new(
        broker.port,
        "t-late",
        &["promptcam/#", "homeassistant/#"],
        true,
    );
    let mut got = std::collections::BTreeMap::new();
    while let Some(m) = late.wait_for(Duration::from_millis(1500), |_| true) {
        assert!(m.retain, "{m:?}");
        got.insert(m.topic, m.payload);
    }
    assert_eq!(got.get(AVAIL).map(String::as_str), Some("offline"));
    assert_eq!(
        got.get("promptcam/garage_pi/driveway/a_delivery_van/state")
            .map(String::as_str),
        Some("OFF")
    );
    assert_eq!(
        got.get("promptcam/garage_pi/driveway/a_delivery_van/score")
            .map(String::as_str),
        Some("0.510")
    );
    assert_eq!(
        got.get("promptcam/garage_pi/driveway/the_garage_door_is_open/state")
            .map(String::as_str),
        Some("OFF")
    );
    assert!(!got.contains_key(EVENTS), "events must not be retained");
    let configs: Vec<&String> = got
        .keys()
        .filter(|t| t.starts_with("homeassistant/") && t.ends_with("/config"))
        .collect();
    assert_eq!(configs.len(), DISCOVERED, "{configs:?}");
    for t in configs {
        let v: Value = serde_json::from_str(&got[t]).unwrap();
        assert!(
            v["unique_id"].is_string()
                && (v["state_topic"].is_string() || v["image_topic"].is_string())
                && v["dev"]["identifiers"].is_array(),
            "{t}"
        );
    }
    // the controls' and diagnostics' states are retained too
    assert_eq!(
        got.get("promptcam/garage_pi/driveway/paused")
            .map(String::as_str),
        Some("OFF")
    );
    assert_eq!(
        got.get("promptcam/garage_pi/driveway/a_delivery_van/threshold")
            .map(String::as_str),
        Some("0.5")
    );
    assert_eq!(
        got.get("promptcam/garage_pi/driveway/stream")
            .map(String::as_str),
        Some("offline"),
        "no frame was ever captured"
    );
    let diag: Value = serde_json::from_str(
        got.get("promptcam/garage_pi/driveway/diagnostics")
            .expect("diagnostics"),
    )
    .unwrap();
    assert!(
        diag["inference_ms"].is_null() && diag["dropped_frames"] == 0,
        "{diag}"
    );
}

/// Run only by `last_will_is_published_when_the_process_dies`, in a child process.
#[test]
#[ignore = "helper: a child process for the last-will test"]
fn will_child() {
    let Ok(port) = std::env::var("PROMPTCAM_TEST_MQTT_PORT") else {
        return;
    };
    let spool = PathBuf::from(std::env::var("PROMPTCAM_TEST_MQTT_SPOOL").unwrap());
    let p = start(mqtt_config(port.parse().unwrap(), &spool, ""));
    std::thread::sleep(SECS(30));
    drop(p);
}

/// A publisher killed with SIGKILL leaves `offline` behind through its last will.
#[test]
fn last_will_is_published_when_the_process_dies() {
    let dir = TempDir::new("mqtt-will");
    let broker = Broker::start(dir.path(), "");
    let sub = Sub::new(broker.port, "t-will", &[AVAIL], true);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "mqtt::will_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PROMPTCAM_TEST_MQTT_PORT", broker.port.to_string())
        .env("PROMPTCAM_TEST_MQTT_SPOOL", dir.path().join("spool"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    assert!(
        sub.wait_for(SECS(15), |m| m.payload == "online").is_some(),
        "the child never came online"
    );
    drop(guard); // SIGKILL: no graceful stop, so only the will can say offline
    assert!(
        sub.wait_for(SECS(5), |m| m.payload == "offline").is_some(),
        "no last will"
    );
}

/// Events published while the broker is down are spooled and all delivered, in order, after it
/// comes back, also across a publisher restart with the same spool directory.
#[test]
fn events_survive_a_broker_outage_and_a_publisher_restart() {
    let dir = TempDir::new("mqtt-spool");
    let mut broker = Broker::start(dir.path(), "");
    let spool = dir.path().join("spool");
    // a persistent session: the broker keeps what arrives while this subscriber reconnects
    let sub = Sub::new(broker.port, "t-spool", &[EVENTS], false);
    let publisher = start(mqtt_config(broker.port, &spool, ""));
    assert!(wait_until(SECS(10), || publisher.stats().connected));
    publisher.publish(&event(EventKind::Start, 0)).unwrap();
    let mut seen = sub.events(EVENTS, 1, SECS(5));
    assert_eq!(seen.len(), 1);
    assert!(
        wait_until(SECS(5), || publisher.stats().spooled == 0),
        "acknowledged events leave the spool"
    );

    broker.stop();
    assert!(wait_until(SECS(5), || !publisher.stats().connected));
    let kinds = [
        EventKind::Start,
        EventKind::Update,
        EventKind::Update,
        EventKind::Update,
        EventKind::End,
    ];
    for (i, k) in kinds.iter().enumerate() {
        let t = Instant::now();
        publisher.publish(&event(*k, i + 1)).unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "publish blocked for {:?}",
            t.elapsed()
        );
    }
    assert_eq!(publisher.stats().spooled, 5);
    broker.restart();
    let first = sub.events_after(&seen, EVENTS, 5, SECS(15));
    let ids: Vec<&str> = first.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["evt-1", "evt-2", "evt-3", "evt-4", "evt-5"]);
    seen.extend(first);
    assert!(wait_until(SECS(5), || publisher.stats().spooled == 0));

    // down again: stop the publisher with events spooled, start a new one on the same spool
    broker.stop();
    assert!(wait_until(SECS(5), || !publisher.stats().connected));
    for i in 6..9 {
        publisher.publish(&event(EventKind::Update, i)).unwrap();
    }
    let t = Instant::now();
    publisher.stop();
    assert!(
        t.elapsed() < SECS(4),
        "stop took {:?} without a broker",
        t.elapsed()
    );
    let publisher = start(mqtt_config(broker.port, &spool, ""));
    // the spool survives a restart; and the eight ids started or updated above and never
    // ended (evt-0..4, evt-6..8) get their `end` (reason `restart`) after them
    assert_eq!(
        publisher.stats().spooled,
        3 + 8,
        "the spool survives a restart"
    );
    broker.restart();
    // the subscriber may get evt-4 and evt-5 again: received, not yet acknowledged when the
    // broker stopped (seen once in a full run)
    let got = sub.events_after(&seen, EVENTS, 3, SECS(15));
    let ids: Vec<&str> = got.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["evt-6", "evt-7", "evt-8"]);
    assert!(wait_until(SECS(5), || publisher.stats().spooled == 0));
    publisher.stop();
}

/// Home Assistant's birth message (`online` on `homeassistant/status`) makes the publisher send
/// discovery, `online` and the states again.
#[test]
fn home_assistant_birth_triggers_reannouncement() {
    let dir = TempDir::new("mqtt-birth");
    let broker = Broker::start(dir.path(), "");
    let sub = Sub::new(
        broker.port,
        "t-birth",
        &["homeassistant/+/+/config", AVAIL],
        true,
    );
    let publisher = start(mqtt_config(broker.port, &dir.path().join("spool"), ""));
    assert!(sub
        .wait_for(SECS(10), |m| m.topic == AVAIL && m.payload == "online")
        .is_some());
    while sub.wait_for(Duration::from_millis(300), |_| true).is_some() {}
    assert_eq!(publisher.stats().announcements, 1);
    let t = Instant::now();
    sub.publish("homeassistant/status", "online");
    let mut configs = HashSet::new();
    while configs.len() < DISCOVERED {
        let m = sub
            .wait_for(SECS(6), |m| m.topic.ends_with("/config"))
            .expect("discovery was not sent again");
        configs.insert(m.topic);
    }
    let delay = t.elapsed();
    assert!(
        delay >= Duration::from_millis(400) && delay < SECS(5),
        "re-announced after {delay:?}"
    );
    assert!(sub
        .wait_for(SECS(3), |m| m.topic == AVAIL && m.payload == "online")
        .is_some());
    assert_eq!(publisher.stats().announcements, 2);
    publisher.stop();
}

/// A wrong password gives a clear error (without the password) and reconnects back off.
#[test]
fn a_wrong_password_is_reported_and_retries_back_off() {
    let dir = TempDir::new("mqtt-auth");
    let pwfile = dir.path().join("passwd");
    let ok = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&pwfile)
        .args(["cam", "right-horse"])
        .status()
        .unwrap();
    assert!(ok.success());
    let broker = Broker::start(
        dir.path(),
        &format!("password_file {}\nallow_anonymous false", pwfile.display()),
    );
    let base = broker.log_count("New connection from");
    let spool = dir.path().join("spool");
    let publisher = start(mqtt_config(
        broker.port,
        &spool,
        "username = \"cam\"\npassword = \"battery-staple\"",
    ));
    std::thread::sleep(Duration::from_millis(5500));
    let err = publisher.last_error().expect("an error");
    assert!(
        err.contains("127.0.0.1")
            && err.contains("mqtt.username")
            && (err.contains("NotAuthorized") || err.contains("BadUserNamePassword")),
        "{err}"
    );
    assert!(
        !err.contains("battery-staple"),
        "the password leaked: {err}"
    );
    let attempts = publisher.stats().connection_attempts;
    let seen = broker.log_count("New connection from") - base;
    assert!(
        (2..=6).contains(&attempts),
        "{attempts} connection attempts in 5.5 s"
    );
    assert!(seen <= 6, "the broker saw {seen} connections in 5.5 s");
    assert!(!publisher.stats().connected);
    publisher.stop();

    // the right password connects
    let publisher = start(mqtt_config(
        broker.port,
        &spool,
        "username = \"cam\"\npassword = \"right-horse\"",
    ));
    assert!(
        wait_until(SECS(10), || publisher.stats().connected),
        "{:?}",
        publisher.last_error()
    );
    assert_eq!(publisher.last_error(), None);
    publisher.stop();
}

#[test]
fn the_daemon_publishes_discovery_availability_and_events_in_order() {
    // a file source replaying photos -> the tiny CLIP model -> real mosquitto -> a subscriber
    let tmp = TempDir::new("daemon-mqtt");
    let broker = Broker::start(tmp.path(), "");
    let sub = Sub::new(
        broker.port,
        "e2e-sub",
        &["promptcam/#", "homeassistant/#"],
        true,
    );
    let frames = [
        "chelsea.png",
        "chelsea.png",
        "rocket.png",
        "rocket.png",
        "rocket.png",
        "chelsea.png",
        "chelsea.png",
    ];
    let config = crate::daemon::replay(tmp.path(), &frames, false, 0.6);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nspool_dir = \"{}\"\ndiscovery = \"entity\"\n",
        broker.port,
        tmp.path().join("spool").display()
    ));
    std::fs::write(&config, text).unwrap();
    let mut d = crate::daemon::Daemon::start(&config, None);
    assert_eq!(
        d.wait(SECS(60)),
        0,
        "the daemon exits 0 when its source ends"
    );

    let mut seen: Vec<Msg> = vec![];
    let deadline = Instant::now() + SECS(30);
    while let Some(m) = sub.wait_for(SECS(3), |_| true) {
        seen.push(m);
        assert!(
            Instant::now() < deadline,
            "messages keep coming: {:?}",
            seen.iter()
                .rev()
                .take(5)
                .map(|m| &m.topic)
                .collect::<Vec<_>>()
        );
    }
    let pos = |f: &dyn Fn(&Msg) -> bool| seen.iter().position(f);
    let discovery = pos(&|m| {
        m.topic
            == "homeassistant/binary_sensor/promptcam_launch_pad_a_rocket_on_the_launch_pad/config"
    });
    let online = pos(&|m| m.topic == "promptcam/promptcam/availability" && m.payload == "online");
    let offline = seen
        .iter()
        .rposition(|m| m.topic == "promptcam/promptcam/availability" && m.payload == "offline");
    let events: Vec<Value> = seen
        .iter()
        .filter(|m| m.topic == "promptcam/promptcam/events")
        .map(|m| serde_json::from_str(&m.payload).unwrap())
        .collect();
    let topics: Vec<&str> = seen.iter().map(|m| m.topic.as_str()).collect();
    let (Some(discovery), Some(online), Some(offline)) = (discovery, online, offline) else {
        panic!("discovery, online and offline expected in {topics:?}");
    };
    assert!(discovery < online && online < offline, "{topics:?}");
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"start"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"end"), "{kinds:?}");
    assert!(
        events.iter().all(|e| e["id"] == events[0]["id"]),
        "one occurrence: {events:?}"
    );
    let state = seen
        .iter()
        .rev()
        .find(|m| m.topic == "promptcam/promptcam/launch_pad/a_rocket_on_the_launch_pad/state")
        .expect("a state");
    assert_eq!(state.payload, "OFF");
    assert!(
        seen.iter()
            .any(|m| m.topic.ends_with("/state") && m.payload == "ON"),
        "{topics:?}"
    );
    // the annotated frame of the event, retained on the prompt's snapshot topic
    let snap =
        pos(&|m| m.topic == "promptcam/promptcam/launch_pad/a_rocket_on_the_launch_pad/snapshot")
            .expect("a snapshot");
    let jpeg = image::load_from_memory(&seen[snap].raw).expect("a JPEG snapshot");
    assert_eq!(
        (jpeg.width(), jpeg.height()),
        (640, 427),
        "the rocket frame"
    );
    // and the same frame as the camera's last detection (its own `image` entity)
    let last = seen
        .iter()
        .rev()
        .find(|m| m.topic == "promptcam/promptcam/launch_pad/snapshot")
        .expect("the camera's last detection");
    assert!(
        image::load_from_memory(&last.raw).is_ok(),
        "a JPEG last detection"
    );
    // states are retained: a late subscriber gets the last one
    let late = Sub::new(
        broker.port,
        "e2e-late",
        &["promptcam/promptcam/launch_pad/#"],
        true,
    );
    let m = late
        .wait_for(SECS(5), |m| m.topic.ends_with("/state"))
        .expect("a retained state");
    assert!(m.retain && m.payload == "OFF", "{m:?}");
}

#[test]
fn sigterm_publishes_offline_and_exits_0() {
    let tmp = TempDir::new("daemon-mqtt-term");
    let broker = Broker::start(tmp.path(), "");
    let sub = Sub::new(
        broker.port,
        "term-sub",
        &["promptcam/promptcam/availability"],
        true,
    );
    let config = crate::daemon::replay(tmp.path(), &["rocket.png", "chelsea.png"], true, 0.6);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nspool_dir = \"{}\"\n",
        broker.port,
        tmp.path().join("spool").display()
    ));
    std::fs::write(&config, text).unwrap();
    let mut d = crate::daemon::Daemon::start(&config, None);
    assert!(
        sub.wait_for(SECS(20), |m| m.payload == "online").is_some(),
        "online"
    );
    let ok = Command::new("kill")
        .args(["-TERM", &d.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(d.wait(SECS(15)), 0, "SIGTERM exits 0");
    let m = sub
        .wait_for(SECS(5), |m| m.payload == "offline")
        .expect("offline published on SIGTERM");
    assert_eq!(m.topic, "promptcam/promptcam/availability");
}

const PAUSED: &str = "promptcam/garage_pi/driveway/paused";
const THRESHOLD: &str = "promptcam/garage_pi/driveway/a_delivery_van/threshold";

/// Commands: malformed and out-of-range payloads are rejected and change nothing (neither the
/// live status nor the published state); valid ones are applied and the new state published.
#[test]
fn commands_are_checked_then_applied_and_echoed() {
    let dir = TempDir::new("mqtt-commands");
    let broker = Broker::start(dir.path(), "");
    let sub = Sub::new(
        broker.port,
        "t-cmd",
        &["promptcam/garage_pi/driveway/#"],
        true,
    );
    let live = status();
    let cam = live.camera("driveway").unwrap().clone();
    let publisher = Publisher::start(
        mqtt_config(broker.port, &dir.path().join("spool"), ""),
        "garage_pi",
        &cameras(),
        live,
    )
    .unwrap();
    // the initial states, in either order
    let (mut paused, mut threshold) = (false, false);
    while !(paused && threshold) {
        let m = sub
            .wait_for(SECS(10), |m| m.topic == PAUSED || m.topic == THRESHOLD)
            .expect("no paused or threshold state");
        paused |= m.topic == PAUSED && m.payload == "OFF";
        threshold |= m.topic == THRESHOLD && m.payload == "0.5";
    }

    let long = "0.".to_string() + &"5".repeat(100);
    let bad: &[(&str, &str)] = &[
        ("promptcam/garage_pi/driveway/paused/set", "on"),
        ("promptcam/garage_pi/driveway/paused/set", "1"),
        ("promptcam/garage_pi/driveway/paused/set", "ON "),
        ("promptcam/garage_pi/driveway/paused/set", "true"),
        ("promptcam/garage_pi/nowhere/paused/set", "ON"),
        (
            "promptcam/garage_pi/driveway/a_delivery_van/threshold/set",
            "1.5",
        ),
        (
            "promptcam/garage_pi/driveway/a_delivery_van/threshold/set",
            "-0.1",
        ),
        (
            "promptcam/garage_pi/driveway/a_delivery_van/threshold/set",
            "NaN",
        ),
        (
            "promptcam/garage_pi/driveway/a_delivery_van/threshold/set",
            "inf",
        ),
        (
            "promptcam/garage_pi/driveway/a_delivery_van/threshold/set",
            "half",
        ),
        (
            "promptcam/garage_pi/driveway/a_delivery_van/threshold/set",
            "",
        ),
        (
            "promptcam/garage_pi/driveway/a_delivery_van/threshold/set",
            &long,
        ),
        ("promptcam/garage_pi/driveway/a_cat/threshold/set", "0.3"),
    ];
    for (topic, payload) in bad {
        sub.publish(topic, payload);
    }
    assert!(
        wait_until(SECS(5), || publisher.stats().commands_rejected
            == bad.len() as u64),
        "{:?}",
        publisher.stats()
    );
    assert_eq!(publisher.stats().commands_applied, 0);
    assert!(!cam.is_paused(), "a rejected command paused the camera");
    assert!(
        cam.take_threshold_requests().is_empty(),
        "a rejected threshold reached the inference thread"
    );
    assert!(
        sub.wait_for(Duration::from_millis(1500), |m| m.topic == PAUSED
            || m.topic == THRESHOLD)
            .is_none(),
        "a rejected command changed a published state"
    );

    // valid: the switch pauses at once and says so; the threshold goes to the inference thread
    sub.publish("promptcam/garage_pi/driveway/paused/set", "ON");
    assert!(
        sub.wait_for(SECS(5), |m| m.topic == PAUSED && m.payload == "ON")
            .is_some(),
        "no ON after pausing"
    );
    assert!(cam.is_paused());
    sub.publish(
        "promptcam/garage_pi/driveway/a_delivery_van/threshold/set",
        "0.42",
    );
    assert!(wait_until(SECS(5), || publisher.stats().commands_applied == 2));
    assert_eq!(
        cam.take_threshold_requests(),
        vec![("a_delivery_van".to_string(), 0.42)]
    );
    // once the inference thread applied it (here: by hand), the state follows
    cam.update_prompt(0, 0.0, false, 0.42);
    assert!(
        sub.wait_for(SECS(5), |m| m.topic == THRESHOLD && m.payload == "0.42")
            .is_some(),
        "the threshold state did not follow"
    );
    sub.publish("promptcam/garage_pi/driveway/paused/set", "OFF");
    assert!(sub
        .wait_for(SECS(5), |m| m.topic == PAUSED && m.payload == "OFF")
        .is_some());
    assert!(!cam.is_paused());
    publisher.stop();
}

/// Diagnostics every `diagnostics_interval`, the stream status from the capture counter, and the
/// camera's `event_type` stream for Home Assistant's event entity.
#[test]
fn diagnostics_stream_status_and_event_entity() {
    let dir = TempDir::new("mqtt-diag");
    let broker = Broker::start(dir.path(), "");
    let sub = Sub::new(
        broker.port,
        "t-diag",
        &["promptcam/garage_pi/driveway/#"],
        true,
    );
    let live = status();
    let cam = live.camera("driveway").unwrap().clone();
    let cfg = mqtt_config(
        broker.port,
        &dir.path().join("spool"),
        "diagnostics_interval = 1",
    );
    let publisher = Publisher::start(cfg, "garage_pi", &cameras(), live).unwrap();
    let stream = "promptcam/garage_pi/driveway/stream";
    assert!(
        sub.wait_for(SECS(10), |m| m.topic == stream && m.payload == "offline")
            .is_some(),
        "no frames yet: offline"
    );
    cam.source
        .captured
        .fetch_add(5, std::sync::atomic::Ordering::Relaxed);
    assert!(
        sub.wait_for(SECS(5), |m| m.topic == stream && m.payload == "online")
            .is_some(),
        "frames arrive: online"
    );
    let diag = sub
        .wait_for(SECS(5), |m| {
            m.topic == "promptcam/garage_pi/driveway/diagnostics"
                && m.payload.contains("\"captured_frames\":5")
        })
        .expect("diagnostics with the new count");
    let d: Value = serde_json::from_str(&diag.payload).unwrap();
    for key in ["inference_ms", "analysed_fps", "dropped_frames"] {
        assert!(d.get(key).is_some(), "{key} missing in {d}");
    }
    assert_eq!(d["stream"], "online");
    // reported again after the interval even when nothing changed
    let t = Instant::now();
    assert!(sub
        .wait_for(SECS(3), |m| m.topic.ends_with("/diagnostics"))
        .is_some());
    assert!(t.elapsed() < Duration::from_millis(2500));

    publisher.publish(&event(EventKind::Start, 7)).unwrap();
    let m = sub
        .wait_for(SECS(5), |m| m.topic == "promptcam/garage_pi/driveway/event")
        .expect("an event for the event entity");
    assert!(!m.retain, "momentary events are not retained");
    let v: Value = serde_json::from_str(&m.payload).unwrap();
    assert_eq!(
        (
            v["event_type"].as_str(),
            v["prompt"].as_str(),
            v["id"].as_str()
        ),
        (Some("start"), Some("a_delivery_van"), Some("evt-7"))
    );
    assert!(v.get("type").is_none(), "{v}");
    publisher.stop();
}

// --------------------------------------------------------------------------------------- TLS

/// A CA, a broker certificate for 127.0.0.1 and a client certificate it signed, plus a second,
/// unrelated CA; made with Debian's `openssl` in `dir`.
pub(crate) fn make_certs(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian package openssl) is needed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, pem, subj) = (
            format!("{ca}.key"),
            format!("{ca}.pem"),
            format!("/CN=promptcam test {ca}"),
        );
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj],
            ]
            .concat(),
        );
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (key, csr, pem, ext, subj) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
            format!("/CN={who}"),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", &subj],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    // mosquitto drops to its own user only when not root; make the keys readable either way
    for f in ["server.key", "client.key"] {
        let _ = Command::new("chmod").arg("644").arg(dir.join(f)).status();
    }
}

fn tls_listener(dir: &Path, require_certificate: bool) -> String {
    let d = dir.display();
    format!("cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate {require_certificate}")
}

/// TLS with the CA made by the test: connects; with mutual TLS only when the client presents
/// its certificate, and without it the error says what to do.
#[test]
fn tls_with_the_right_ca_and_mutual_tls() {
    let dir = TempDir::new("mqtt-tls");
    make_certs(dir.path());
    let d = dir.path().display();
    let broker = Broker::start(dir.path(), &tls_listener(dir.path(), true));
    let spool = dir.path().join("spool");
    let mtls = format!("[tls]\nca_file = \"{d}/ca.pem\"\ncert_file = \"{d}/client.pem\"\nkey_file = \"{d}/client.key\"");
    let publisher = start(mqtt_config(broker.port, &spool, &mtls));
    assert!(
        wait_until(SECS(10), || publisher.stats().connected),
        "mutual TLS: {:?}",
        publisher.last_error()
    );
    assert_eq!(publisher.last_error(), None);
    publisher.publish(&event(EventKind::Start, 1)).unwrap();
    assert!(
        wait_until(SECS(5), || publisher.stats().spooled == 0),
        "the event was not acknowledged over TLS"
    );
    publisher.stop();

    // the right CA but no client certificate: refused, and the error names the keys to set
    let publisher = start(mqtt_config(
        broker.port,
        &spool,
        &format!("[tls]\nca_file = \"{d}/ca.pem\""),
    ));
    assert!(
        wait_until(SECS(5), || publisher.last_error().is_some()),
        "no error without a client certificate"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!publisher.stats().connected);
    let err = publisher.last_error().unwrap();
    eprintln!("no client certificate: {err}");
    assert!(
        err.contains("127.0.0.1") && err.contains("mqtt.tls.cert_file"),
        "{err}"
    );
    publisher.stop();
}

/// A broker certificate from another CA: a clear error (not trusted, set mqtt.tls.ca_file) and
/// reconnects that back off instead of spinning.
#[test]
fn tls_with_a_wrong_ca_is_reported_and_retries_back_off() {
    let dir = TempDir::new("mqtt-tls-wrong");
    make_certs(dir.path());
    let d = dir.path().display();
    let broker = Broker::start(dir.path(), &tls_listener(dir.path(), false));
    let spool = dir.path().join("spool");
    let base = broker.log_count("New connection from");
    let publisher = start(mqtt_config(
        broker.port,
        &spool,
        &format!("[tls]\nca_file = \"{d}/other-ca.pem\""),
    ));
    std::thread::sleep(Duration::from_millis(5500));
    let err = publisher.last_error().expect("an error");
    eprintln!("wrong CA: {err}");
    assert!(
        err.contains("127.0.0.1")
            && err.contains("not trusted")
            && err.contains("mqtt.tls.ca_file"),
        "{err}"
    );
    let attempts = publisher.stats().connection_attempts;
    assert!(
        (2..=6).contains(&attempts),
        "{attempts} connection attempts in 5.5 s"
    );
    let seen = broker.log_count("New connection from") - base;
    assert!(seen <= 6, "the broker saw {seen} connections in 5.5 s");
    assert!(!publisher.stats().connected);
    publisher.stop();

    // the same broker with the right CA (server authentication only)
    let publisher = start(mqtt_config(
        broker.port,
        &spool,
        &format!("[tls]\nca_file = \"{d}/ca.pem\""),
    ));
    assert!(
        wait_until(SECS(10), || publisher.stats().connected),
        "{:?}",
        publisher.last_error()
    );
    publisher.stop();

    // insecure: connects to the untrusted certificate, only because the config says so
    let publisher = start(mqtt_config(broker.port, &spool, "[tls]\ninsecure = true"));
    assert!(
        wait_until(SECS(10), || publisher.stats().connected),
        "{:?}",
        publisher.last_error()
    );
    publisher.stop();
}

/// The daemon end to end: a threshold command reaches the inference thread, which applies it
/// between frames, and the published threshold state follows; the pause switch pauses.
#[test]
fn the_daemon_applies_threshold_and_pause_commands() {
    let tmp = TempDir::new("daemon-mqtt-cmd");
    let broker = Broker::start(tmp.path(), "");
    let base = "promptcam/promptcam/launch_pad";
    let sub = Sub::new(broker.port, "cmd-sub", &[&format!("{base}/#")], true);
    let config = crate::daemon::replay(tmp.path(), &["rocket.png", "chelsea.png"], true, 0.6);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nspool_dir = \"{}\"\n",
        broker.port,
        tmp.path().join("spool").display()
    ));
    std::fs::write(&config, text).unwrap();
    let mut d = crate::daemon::Daemon::start(&config, None);
    let threshold = format!("{base}/a_rocket_on_the_launch_pad/threshold");
    assert!(
        sub.wait_for(SECS(20), |m| m.topic == threshold && m.payload == "0.6")
            .is_some(),
        "the configured threshold"
    );
    sub.publish(&format!("{threshold}/set"), "2");
    sub.publish(&format!("{threshold}/set"), "0.35");
    let m = sub
        .wait_for(SECS(10), |m| m.topic == threshold)
        .expect("the applied threshold");
    assert_eq!(m.payload, "0.35", "the rejected value must not appear");
    // -0 is taken as 0, and shown as 0
    sub.publish(&format!("{threshold}/set"), "-0");
    let m = sub
        .wait_for(SECS(10), |m| m.topic == threshold && m.payload != "0.35")
        .expect("the threshold after -0");
    assert_eq!(m.payload, "0");
    sub.publish(&format!("{base}/paused/set"), "ON");
    assert!(sub
        .wait_for(SECS(5), |m| m.topic == format!("{base}/paused")
            && m.payload == "ON")
        .is_some());
    // retained: a new subscriber gets the stream status at once
    let late = Sub::new(broker.port, "cmd-late", &[&format!("{base}/stream")], true);
    assert!(
        late.wait_for(SECS(5), |m| m.payload == "online").is_some(),
        "frames keep coming while paused"
    );
    let ok = Command::new("kill")
        .args(["-TERM", &d.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(d.wait(SECS(15)), 0);
}
