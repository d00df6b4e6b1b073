//! Worker: the two threads behind a [`super::Publisher`]. `mqtt-net` (in `net`) polls the rumqttc
//! connection (reconnecting with capped exponential backoff and jitter, since rumqttc alone
//! retries at once) and forwards what happens; `mqtt` owns the client and sends discovery, availability, states
//! and spooled events, matching each PUBACK to its spool entry so that an event leaves the spool
//! only once the broker has it. It also applies commands (`commands`) and keeps the retained
//! topics that mirror the live status (`live`) current. Both watch the shutdown flag; every
//! wait has a timeout.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::{
    Client, Event as MqttEvent, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport,
};

use super::commands;
use super::discovery::{self, Topics, OFF, OFFLINE, ON, ONLINE};
use super::live::Live;
use super::spool::Spool;
use super::{MqttConfig, Stats};
use crate::config::CameraConfig;
use crate::event::{Event, EventKind};

/// QoS-1 publishes sent and not yet acknowledged, at most: well under rumqttc's `inflight` so
/// that its packet ids never collide and PUBACKs map back to our messages.
const WINDOW: usize = 50;
const INFLIGHT: u16 = 100;
const CONNECT_TIMEOUT_S: u64 = 3;
const STOP_FLUSH: Duration = Duration::from_millis(2500);
const STOP_TOTAL: Duration = Duration::from_secs(3);
/// How often pause, stream and threshold states are compared with the live status.
const REFRESH: Duration = Duration::from_secs(1);
/// Messages for Home Assistant's event entities kept while they cannot be sent (oldest dropped).
const CAMERA_EVENTS_MAX: usize = 256;

/// What the worker thread is told.
pub enum Msg {
    /// The connection thread connected.
    Up,
    /// The connection thread lost (or failed to make) the connection: the reason.
    Down(String),
    /// Something happened on the connection.
    Mqtt(MqttEvent),
    /// New events or states to send.
    Wake,
    Stop,
}

#[derive(Default)]
pub struct Status {
    pub last_error: Option<String>,
    pub stats: Stats,
}

#[derive(Clone, Copy)]
struct PromptState {
    on: bool,
    score: Option<f32>,
    dirty: bool,
}

/// (camera id, prompt id).
/// A prompt's latest JPEG and whether it still has to be sent.
type Snapshot = (Arc<Vec<u8>>, bool);

/// State shared by the publisher handle and its threads.
pub struct Shared {
    pub spool: Mutex<Spool>,
    pub status: Mutex<Status>,
    pub shutdown: AtomicBool,
    /// Whether the connection is up; the worker sends only while holding it true, so nothing
    /// it sends can slip into a connection it has not seen come up.
    pub(super) link: Mutex<bool>,
    states: Mutex<BTreeMap<(String, String), PromptState>>,
    /// The latest snapshot per prompt, and per camera (prompt `None`: its last detection),
    /// and whether it still has to be sent (latest wins).
    snapshots: Mutex<BTreeMap<(String, Option<String>), Snapshot>>,
    /// `{"event_type": ...}` messages for the cameras' event entities: live only, so dropped
    /// while disconnected (the spooled events topic is the lossless record).
    camera_events: Mutex<VecDeque<(String, Vec<u8>)>>,
}

impl Shared {
    pub fn new(spool: Spool, cameras: &[CameraConfig]) -> Shared {
        let mut states = BTreeMap::new();
        for c in cameras {
            for p in &c.prompts {
                states.insert(
                    (c.id.clone(), p.id.clone()),
                    PromptState {
                        on: false,
                        score: None,
                        dirty: true,
                    },
                );
            }
        }
        Shared {
            spool: Mutex::new(spool),
            status: Mutex::new(Status::default()),
            shutdown: AtomicBool::new(false),
            link: Mutex::new(false),
            states: Mutex::new(states),
            snapshots: Mutex::new(BTreeMap::new()),
            camera_events: Mutex::new(VecDeque::new()),
        }
    }

    /// Queues an event for its camera's Home Assistant event entity (`type` becomes `event_type`).
    pub fn push_camera_event(&self, topic: String, e: &Event) {
        let mut v = match serde_json::to_value(e) {
            Ok(v) => v,
            Err(err) => return tracing::warn!("unable to serialize event {}: {err}", e.id),
        };
        if let Some(obj) = v.as_object_mut() {
            if let Some(t) = obj.remove("type") {
                obj.insert("event_type".into(), t);
            }
        }
        let connected = self.link.lock().map(|l| *l).unwrap_or(false);
        if let (true, Ok(mut q)) = (connected, self.camera_events.lock()) {
            if q.len() >= CAMERA_EVENTS_MAX {
                q.pop_front();
            }
            q.push_back((topic, v.to_string().into_bytes()));
        }
    }

    /// Records a prompt's latest snapshot, which is also its camera's last detection; both are
    /// sent retained, and only the newest of each is kept.
    pub fn set_snapshot(&self, camera: &str, prompt: &str, jpeg: Arc<Vec<u8>>) {
        if let Ok(mut s) = self.snapshots.lock() {
            s.insert(
                (camera.to_string(), Some(prompt.to_string())),
                (jpeg.clone(), true),
            );
            s.insert((camera.to_string(), None), (jpeg, true));
        }
    }

    /// Records an event's prompt state (latest wins).
    pub fn set_state(&self, e: &Event) {
        if let Ok(mut states) = self.states.lock() {
            let s = states
                .entry((e.camera.clone(), e.prompt.clone()))
                .or_insert(PromptState {
                    on: false,
                    score: None,
                    dirty: true,
                });
            s.on = e.kind != EventKind::End;
            s.score = Some(e.score);
            s.dirty = true;
        }
    }

    pub(super) fn status(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}

/// Starts the connection and worker threads.
pub fn spawn(
    cfg: MqttConfig,
    device_id: &str,
    cameras: &[CameraConfig],
    status: crate::status::Status,
    shared: Arc<Shared>,
    tx: SyncSender<Msg>,
    rx: Receiver<Msg>,
) -> Result<(JoinHandle<()>, JoinHandle<()>)> {
    let topics = Topics {
        prefix: cfg.topic_prefix.clone(),
        device_id: device_id.to_string(),
        discovery_prefix: cfg.discovery_prefix.clone(),
    };
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| format!("promptcam-{device_id}"));
    let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    opts.set_keep_alive(Duration::from_secs(30))
        // our spool, not the broker session, carries unacknowledged events across reconnects
        .set_clean_session(true)
        .set_inflight(INFLIGHT)
        .set_max_packet_size(256 * 1024, 8 * 1024 * 1024)
        .set_last_will(LastWill::new(
            topics.availability(),
            OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        opts.set_credentials(u.clone(), p.expose().to_string());
    } else if let Some(u) = &cfg.username {
        opts.set_credentials(u.clone(), String::new());
    }
    if let Some(tls) = &cfg.tls {
        let config = tls
            .client_config()
            .context("unable to set up TLS for MQTT")?;
        opts.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(config),
        ));
    }
    let (client, mut connection) = Client::new(opts, 512);
    let mut net_opts = connection.eventloop.network_options();
    net_opts.set_connection_timeout(CONNECT_TIMEOUT_S);
    connection.eventloop.set_network_options(net_opts);
    let discovery =
        discovery::messages(&topics, cameras).context("unable to build the discovery payloads")?;
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let net_shared = shared.clone();
    let net = std::thread::Builder::new()
        .name("mqtt-net".into())
        .spawn(move || super::net::net_loop(connection, tx, net_shared, broker))
        .context("unable to start the MQTT connection thread")?;
    let now = Instant::now();
    let mut w = Worker {
        shared,
        client,
        rx,
        live: Live::new(topics.clone(), status, now),
        next_refresh: now,
        next_diagnostics: now,
        diagnostics_interval: cfg.diagnostics_interval,
        topics,
        discovery,
        connected: false,
        control: VecDeque::new(),
        sent: VecDeque::new(),
        inflight: HashMap::new(),
        window: 0,
        cursor: 0,
        reannounce_at: None,
        rng: super::net::Rng::new(),
    };
    let worker = std::thread::Builder::new()
        .name("mqtt".into())
        .spawn(move || w.run())
        .context("unable to start the MQTT worker thread")?;
    Ok((worker, net))
}

struct Worker {
    shared: Arc<Shared>,
    client: Client,
    rx: Receiver<Msg>,
    topics: Topics,
    discovery: Vec<discovery::Message>,
    /// Whether this thread has seen the connection come up (and not go down since).
    connected: bool,
    /// Discovery and availability messages still to send on this connection.
    control: VecDeque<(String, Vec<u8>)>,
    /// Publishes handed to rumqttc, waiting for their packet id: the spool entry, if an event.
    sent: VecDeque<Option<u64>>,
    /// Packet id -> spool entry (if an event) of publishes waiting for their PUBACK.
    inflight: HashMap<u16, Option<u64>>,
    window: usize,
    /// Next spool sequence number to send on this connection.
    cursor: u64,
    reannounce_at: Option<Instant>,
    rng: super::net::Rng,
    /// The retained topics that mirror the live status, and the controls' targets.
    live: Live,
    next_refresh: Instant,
    next_diagnostics: Instant,
    diagnostics_interval: Duration,
}

impl Worker {
    fn run(&mut self) {
        loop {
            let next = [
                self.reannounce_at,
                Some(self.next_refresh),
                Some(self.next_diagnostics),
            ]
            .into_iter()
            .flatten()
            .min();
            let wait = next
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(REFRESH);
            match self.rx.recv_timeout(wait.min(REFRESH)) {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(m) => self.handle(m),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.reannounce_at.is_some_and(|t| Instant::now() >= t) {
                self.reannounce_at = None;
                if self.connected {
                    self.announce();
                }
            }
            let now = Instant::now();
            let diagnostics = now >= self.next_diagnostics;
            if diagnostics || now >= self.next_refresh {
                self.live.refresh(now, diagnostics);
                self.next_refresh = now + REFRESH;
                if diagnostics {
                    self.next_diagnostics = now + self.diagnostics_interval;
                }
            }
            self.pump(true);
        }
        self.stop();
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Up => {
                self.connected = true;
                self.reset();
                self.cursor = self.shared.spool.lock().map(|s| s.first_seq()).unwrap_or(0);
                self.shared.status(|s| {
                    s.last_error = None;
                    s.stats.connected = true;
                    s.stats.connections += 1;
                });
                let status = self.topics.ha_status();
                if self.with_link(|c| c.try_subscribe(status, QoS::AtLeastOnce).is_ok())
                    != Some(true)
                {
                    tracing::warn!("unable to subscribe to {}: Home Assistant restarts will not trigger re-announcement", self.topics.ha_status());
                }
                for filter in self.topics.command_filters() {
                    if self.with_link(|c| c.try_subscribe(filter.clone(), QoS::AtLeastOnce).is_ok())
                        != Some(true)
                    {
                        tracing::warn!("unable to subscribe to {filter}: its commands will be ignored until the next connect");
                    }
                }
                self.announce();
            }
            Msg::Down(why) => {
                self.connected = false;
                self.reset();
                if let Ok(mut q) = self.shared.camera_events.lock() {
                    q.clear();
                }
                self.shared.status(|s| {
                    s.last_error = Some(why);
                    s.stats.connected = false;
                });
            }
            Msg::Mqtt(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(seq) = self.sent.pop_front() {
                    self.inflight.insert(pkid, seq);
                }
            }
            Msg::Mqtt(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                if let Some(seq) = self.inflight.remove(&ack.pkid) {
                    self.window = self.window.saturating_sub(1);
                    if let (Some(seq), Ok(mut spool)) = (seq, self.shared.spool.lock()) {
                        spool.ack(seq);
                    }
                }
            }
            Msg::Mqtt(MqttEvent::Incoming(Packet::Publish(p))) => {
                if p.topic == self.topics.ha_status() && p.payload.as_ref() == b"online" {
                    let delay = Duration::from_secs_f64(0.5 + 2.5 * self.rng.unit());
                    tracing::info!(
                        "Home Assistant is online: re-announcing in {:.1} s",
                        delay.as_secs_f64()
                    );
                    self.reannounce_at = Some(Instant::now() + delay);
                } else if p.topic != self.topics.ha_status() {
                    self.command(&p.topic, &p.payload);
                }
            }
            Msg::Mqtt(_) | Msg::Wake | Msg::Stop => {}
        }
    }

    /// A message on a command topic: checked, applied, then the new state is published
    /// (a threshold once the inference thread applied it); a rejected one changes nothing.
    fn command(&mut self, topic: &str, payload: &[u8]) {
        let result = commands::parse(&self.topics, topic, payload)
            .and_then(|c| commands::apply(self.live.status(), &c).map(|()| c));
        match result {
            Ok(c) => {
                tracing::info!("MQTT command on {topic}: {c:?}");
                self.shared.status(|s| s.stats.commands_applied += 1);
                // publish pause at once; look for the applied threshold again shortly
                self.live.refresh(Instant::now(), false);
                self.next_refresh = Instant::now() + Duration::from_millis(200);
            }
            Err(why) => {
                tracing::warn!("MQTT command on {topic} rejected, nothing changed: {why}");
                self.shared.status(|s| s.stats.commands_rejected += 1);
            }
        }
    }

    /// Forgets everything in flight on the previous connection.
    fn reset(&mut self) {
        self.control.clear();
        self.sent.clear();
        self.inflight.clear();
        self.window = 0;
    }

    /// Queues discovery, then `online`, then every state.
    fn announce(&mut self) {
        self.control.clear();
        for m in &self.discovery {
            self.control
                .push_back((m.topic.clone(), m.payload.clone().into_bytes()));
        }
        self.control
            .push_back((self.topics.availability(), ONLINE.as_bytes().to_vec()));
        if let Ok(mut states) = self.shared.states.lock() {
            states.values_mut().for_each(|s| s.dirty = true);
        }
        self.live.refresh(Instant::now(), false);
        self.live.mark_all();
        self.shared.status(|s| s.stats.announcements += 1);
    }

    /// Runs `f` on the client if the connection is up, holding the link lock.
    fn with_link<T>(&self, f: impl FnOnce(&Client) -> T) -> Option<T> {
        let link = self.shared.link.lock().ok()?;
        if !*link || !self.connected {
            return None;
        }
        Some(f(&self.client))
    }

    /// Hands one QoS-1 publish to rumqttc if the window and the link allow.
    fn send(&mut self, topic: &str, payload: Vec<u8>, retain: bool, seq: Option<u64>) -> bool {
        if self.window >= WINDOW {
            return false;
        }
        let ok = self.with_link(|c| {
            c.try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .is_ok()
        }) == Some(true);
        if ok {
            self.sent.push_back(seq);
            self.window += 1;
        }
        ok
    }

    /// Sends what is waiting: discovery and availability, then states, then (if `events`)
    /// spooled events in order. Returns true when nothing is left to send.
    fn pump(&mut self, events: bool) -> bool {
        if !self.connected {
            return false;
        }
        while let Some((topic, payload)) = self.control.front().cloned() {
            if !self.send(&topic, payload, true, None) {
                return false;
            }
            self.control.pop_front();
        }
        let dirty: Vec<((String, String), PromptState)> = match self.shared.states.lock() {
            Ok(s) => s
                .iter()
                .filter(|(_, v)| v.dirty)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            Err(_) => vec![],
        };
        for ((cam, prompt), st) in dirty {
            let state = if st.on { ON } else { OFF };
            let (state_topic, score_topic) = (
                self.topics.state(&cam, &prompt),
                self.topics.score(&cam, &prompt),
            );
            if !self.send(&state_topic, state.as_bytes().to_vec(), true, None) {
                return false;
            }
            if let Some(score) = st.score {
                // a state sent without its score is simply sent again with it next time
                if !self.send(&score_topic, format!("{score:.3}").into_bytes(), true, None) {
                    return false;
                }
            }
            if let Ok(mut s) = self.shared.states.lock() {
                if let Some(v) = s.get_mut(&(cam, prompt)) {
                    // a newer event may have changed it meanwhile: then it stays dirty
                    if v.on == st.on && v.score == st.score {
                        v.dirty = false;
                    }
                }
            }
        }
        for (topic, payload) in self.live.pending() {
            if !self.send(&topic, payload, true, None) {
                return false;
            }
            self.live.sent(&topic);
        }
        let snapshots: Vec<((String, Option<String>), Arc<Vec<u8>>)> =
            match self.shared.snapshots.lock() {
                Ok(s) => s
                    .iter()
                    .filter(|(_, v)| v.1)
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect(),
                Err(_) => vec![],
            };
        for ((cam, prompt), jpeg) in snapshots {
            let topic = match &prompt {
                Some(p) => self.topics.snapshot(&cam, p),
                None => self.topics.camera_snapshot(&cam),
            };
            if !self.send(&topic, jpeg.to_vec(), true, None) {
                return false;
            }
            if let Ok(mut s) = self.shared.snapshots.lock() {
                if let Some(v) = s.get_mut(&(cam, prompt)) {
                    if Arc::ptr_eq(&v.0, &jpeg) {
                        v.1 = false;
                    }
                }
            }
        }
        loop {
            let next = self
                .shared
                .camera_events
                .lock()
                .ok()
                .and_then(|q| q.front().cloned());
            let Some((topic, payload)) = next else { break };
            if !self.send(&topic, payload, false, None) {
                return false;
            }
            if let Ok(mut q) = self.shared.camera_events.lock() {
                q.pop_front();
            }
        }
        if !events {
            return true;
        }
        let events_topic = self.topics.events();
        loop {
            let next = self
                .shared
                .spool
                .lock()
                .ok()
                .and_then(|s| s.next_from(self.cursor).cloned());
            let Some(e) = next else { return true };
            if !self.send(&events_topic, e.payload.into_bytes(), false, Some(e.seq)) {
                return false;
            }
            self.cursor = e.seq + 1;
        }
    }

    /// Graceful stop: flush, `offline` retained, disconnect; about 3 s at most.
    fn stop(&mut self) {
        let start = Instant::now();
        if self.connected {
            // flush events and states first, then announce `offline` last
            while start.elapsed() < STOP_FLUSH
                && self.connected
                && !(self.pump(true) && self.window == 0)
            {
                self.wait(Duration::from_millis(50));
            }
            self.control.clear();
            self.control
                .push_back((self.topics.availability(), OFFLINE.as_bytes().to_vec()));
            while start.elapsed() < STOP_TOTAL
                && self.connected
                && !(self.pump(false) && self.window == 0)
            {
                self.wait(Duration::from_millis(50));
            }
            let left = self.shared.spool.lock().map(|s| s.len()).unwrap_or(0);
            if left > 0 {
                tracing::info!("MQTT: {left} event(s) stay in the spool for the next start");
            }
            if self.with_link(|c| c.try_disconnect().is_ok()) == Some(true) {
                // wait for the disconnect to be written (the connection thread then ends)
                let until = Instant::now() + Duration::from_millis(500);
                while Instant::now() < until {
                    match self.rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(Msg::Mqtt(MqttEvent::Outgoing(Outgoing::Disconnect)))
                        | Ok(Msg::Down(_)) => break,
                        Err(RecvTimeoutError::Disconnected) => break,
                        _ => {}
                    }
                }
            }
        }
        if let Ok(mut l) = self.shared.link.lock() {
            *l = false;
        }
        self.shared.status(|s| s.stats.connected = false);
    }

    fn wait(&mut self, d: Duration) {
        match self.rx.recv_timeout(d) {
            Ok(Msg::Stop) | Err(_) => {}
            Ok(m) => self.handle(m),
        }
    }
}
