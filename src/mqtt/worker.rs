//! Worker: the two threads behind a [`super::Publisher`]. `mqtt-net` (in `net`) polls the rumqttc
//! connection (reconnecting with capped exponential backoff and jitter, since rumqttc alone
//! retries at once) and forwards what happens; `mqtt` owns the client and sends discovery,
//! availability, states and spooled events (`pump`), matching each PUBACK to its spool entry
//! through the in-flight `window` so that an event leaves the spool only once the broker has it.
//! It also applies commands (`commands`) and keeps the retained topics that mirror the live
//! status and the prompts' states (`live`) current. Both watch the shutdown flag; every wait has
//! a timeout.

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::{
    Client, Event as MqttEvent, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport,
};

use super::announce::{self, Published};
use super::commands;
use super::discovery::{self, Topics, OFFLINE, ONLINE};
use super::live::Live;
use super::net;
use super::shared::{Msg, Shared, INCOMING_MAX, INFLIGHT, OUTGOING_MAX};
use super::window::{Tag, Window};
use crate::config::{CameraConfig, DiscoveryForm, MqttConfig};

/// QoS-1 publishes in flight at most: well under rumqttc's `inflight` (whose packet ids cycle
/// through 1..=INFLIGHT), so that its packet ids never collide and PUBACKs map back to ours.
const WINDOW: usize = 50;
/// Of those, at most this many that are not events (discovery, states, snapshots...).
const WINDOW_OTHERS: usize = 16;
const CONNECT_TIMEOUT_S: u64 = 3;
const STOP_FLUSH: Duration = Duration::from_millis(2500);
const STOP_TOTAL: Duration = Duration::from_secs(3);
/// How often pause, stream and threshold states are compared with the live status (and held
/// events retried on the spool).
const REFRESH: Duration = Duration::from_secs(1);

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
        .set_max_packet_size(INCOMING_MAX, OUTGOING_MAX)
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
        let config = super::tls::client_config(tls).context("unable to set up TLS for MQTT")?;
        opts.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(config),
        ));
    }
    let (client, mut connection) = Client::new(opts, 512);
    let mut net_opts = connection.eventloop.network_options();
    net_opts.set_connection_timeout(CONNECT_TIMEOUT_S);
    connection.eventloop.set_network_options(net_opts);
    // fails early on a payload that does not serialize, before any thread starts
    discovery::components(&topics, cameras).context("unable to build the discovery payloads")?;
    match cfg.discovery {
        DiscoveryForm::Device => tracing::info!(
            "Home Assistant discovery: one config per device (Home Assistant 2024.12 and later); set [mqtt] discovery = \"entity\" for older versions"
        ),
        DiscoveryForm::Entity => {
            tracing::info!("Home Assistant discovery: one config per entity")
        }
    }
    let record = super::announce::record_path(&cfg.spool_dir);
    let published = super::announce::load(&record);
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let net_shared = shared.clone();
    let net = std::thread::Builder::new()
        .name("mqtt-net".into())
        .spawn(move || net::net_loop(connection, tx, net_shared, broker))
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
        cameras: cameras.to_vec(),
        form: cfg.discovery,
        record,
        published,
        first: true,
        runtime_version: u64::MAX,
        running: Default::default(),
        connected: false,
        epoch: 0,
        control: VecDeque::new(),
        window: Window::new(WINDOW, WINDOW_OTHERS),
        cursor: 0,
        reannounce_at: None,
        rng: rand::make_rng(),
    };
    let worker = std::thread::Builder::new()
        .name("mqtt".into())
        .spawn(move || w.run())
        .context("unable to start the MQTT worker thread")?;
    Ok((worker, net))
}

pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) client: Client,
    rx: Receiver<Msg>,
    pub(super) topics: Topics,
    /// The cameras as configured; their prompts are read from the live status (run-time prompts
    /// come and go).
    cameras: Vec<CameraConfig>,
    form: DiscoveryForm,
    /// Where what was published is recorded.
    record: std::path::PathBuf,
    /// What Home Assistant was last told (from the record, before the first announcement).
    published: Option<Published>,
    /// Whether nothing was announced yet in this run.
    first: bool,
    /// The run-time prompts' version last published.
    runtime_version: u64,
    /// The prompts that run, as (camera, prompt): only their states are published.
    pub(super) running: HashSet<(String, String)>,
    /// Whether this thread has seen the connection come up (and not go down since).
    pub(super) connected: bool,
    /// The epoch of the connection this thread saw come up.
    pub(super) epoch: u64,
    /// Discovery and availability messages still to send on this connection.
    pub(super) control: VecDeque<(String, Vec<u8>)>,
    pub(super) window: Window,
    /// Next spool sequence number to send on this connection.
    pub(super) cursor: u64,
    reannounce_at: Option<Instant>,
    /// Draws the delay before discovery is announced again (no cryptographic use).
    rng: rand::rngs::SmallRng,
    /// The retained topics that mirror the live status and the prompts' states.
    pub(super) live: Live,
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
                self.follow_prompts();
                self.next_refresh = now + REFRESH;
                if diagnostics {
                    self.next_diagnostics = now + self.diagnostics_interval;
                }
                if let Ok(mut spool) = self.shared.spool.lock() {
                    spool.retry();
                }
            }
            self.pump(true);
        }
        self.stop();
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Up(epoch) => {
                self.connected = true;
                self.epoch = epoch;
                self.window.reset();
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
                self.window.reset();
                self.control.clear();
                if let Ok(mut q) = self.shared.camera_events.lock() {
                    q.clear();
                }
                self.shared.status(|s| {
                    s.last_error = Some(why);
                    s.stats.connected = false;
                });
            }
            Msg::Mqtt(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => self.window.outgoing(pkid),
            Msg::Mqtt(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                if let Some(Tag::Event(seq)) = self.window.acked(ack.pkid) {
                    if let Ok(mut spool) = self.shared.spool.lock() {
                        spool.ack(seq);
                    }
                    self.shared.status(|s| s.stats.delivered += 1);
                }
            }
            Msg::Mqtt(MqttEvent::Incoming(Packet::Publish(p))) => {
                if p.topic == self.topics.ha_status() && p.payload.as_ref() == b"online" {
                    let delay = Duration::from_secs_f64(rand::RngExt::random_range(
                        &mut self.rng,
                        0.5..3.0,
                    ));
                    tracing::info!(
                        "Home Assistant is online: re-announcing in {:.1} s",
                        delay.as_secs_f64()
                    );
                    self.reannounce_at = Some(Instant::now() + delay);
                } else if p.topic != self.topics.ha_status() {
                    self.command(&p.topic, &p.payload, p.retain);
                }
            }
            Msg::Mqtt(_) | Msg::Wake | Msg::Stop => {}
        }
    }

    /// A message on a command topic: checked, applied, then the new state is published
    /// (a threshold once the inference thread applied it); a rejected one changes nothing, and a
    /// refused run-time prompt change is answered on the camera's `prompts/error`.
    fn command(&mut self, topic: &str, payload: &[u8], retained: bool) {
        let now = std::time::SystemTime::now();
        let result = commands::parse(&self.topics, topic, payload, retained)
            .and_then(|c| commands::apply(self.live.status(), &c, now).map(|()| c));
        match result {
            Ok(c) => {
                if c.prompts_camera().is_none() {
                    tracing::info!("MQTT command on {topic}: {c:?}");
                }
                self.shared.status(|s| s.stats.commands_applied += 1);
                // publish pause and the prompts list at once; look for the threshold again shortly
                self.live.refresh(Instant::now(), false);
                self.follow_prompts();
                self.next_refresh = Instant::now() + Duration::from_millis(200);
            }
            Err(why) => {
                let hint = if retained {
                    format!(
                        " (a retained message: clear it with `mosquitto_pub -r -n -t '{topic}'`)"
                    )
                } else {
                    String::new()
                };
                tracing::warn!("MQTT command on {topic} rejected, nothing changed: {why}{hint}");
                self.shared.status(|s| s.stats.commands_rejected += 1);
                if let Some(camera) = commands::prompts_camera(&self.topics, topic) {
                    let camera = camera.to_string();
                    self.prompts_error(&camera, &format!("{why}{hint}"), Some((topic, payload)));
                }
            }
        }
    }

    /// Publishes a refusal on a camera's `prompts/error` (not retained).
    fn prompts_error(&mut self, camera: &str, why: &str, request: Option<(&str, &[u8])>) {
        let mut v = serde_json::json!({
            "error": why,
            "camera": camera,
            "at": crate::event::rfc3339(std::time::SystemTime::now()),
        });
        if let Some((topic, payload)) = request {
            let text = String::from_utf8_lossy(payload);
            v["topic"] = topic.into();
            v["payload"] = text.chars().take(256).collect::<String>().into();
        }
        let topic = self.topics.prompts_error(camera);
        if let Ok(mut q) = self.shared.camera_events.lock() {
            q.push_back((topic, v.to_string().into_bytes()));
        }
    }

    /// The cameras with the prompts that run now (the status holds each camera's prompts).
    fn cameras_now(&self) -> Vec<CameraConfig> {
        self.cameras
            .iter()
            .map(|c| {
                let mut c = c.clone();
                if let Some(s) = self.live.status().camera(&c.id) {
                    let prompts = s.prompt_configs();
                    if !prompts.is_empty() {
                        c.prompts = prompts;
                    }
                }
                c
            })
            .collect()
    }

    /// Queues the discovery that takes Home Assistant from what it was told to what runs now
    /// (`full`: every config again); prompts that went have their retained topics cleared.
    fn discover(&mut self, full: bool) {
        let cameras = self.cameras_now();
        let components = match discovery::components(&self.topics, &cameras) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("unable to build the discovery payloads: {e}");
                self.published
                    .as_ref()
                    .map(|p| p.components.clone())
                    .unwrap_or_default()
            }
        };
        let now = Published {
            form: self.form,
            components,
        };
        let before = match (&self.published, self.first) {
            // an earlier version published per entity and kept no record
            (None, true) if self.form == DiscoveryForm::Device => Some(Published {
                form: DiscoveryForm::Entity,
                components: now.components.clone(),
            }),
            (p, _) => p.clone(),
        };
        if !full && before.as_ref() == Some(&now) {
            return;
        }
        let msgs = announce::transition(&self.topics, before.as_ref(), &now, full);
        let running = cameras
            .iter()
            .flat_map(|c| c.prompts.iter().map(|p| (c.id.clone(), p.id.clone())))
            .collect();
        self.follow_running(running);
        self.control.extend(msgs);
        self.first = false;
        announce::save(&self.record, &now);
        self.published = Some(now);
    }

    /// The prompts that run now: one that stopped running has its retained state, score,
    /// threshold and snapshot cleared (so nothing stale stays on the broker); a new one starts
    /// `OFF`. Before the first announcement nothing ran.
    fn follow_running(&mut self, running: HashSet<(String, String)>) {
        let old = match self.first {
            true => HashSet::new(),
            false => std::mem::take(&mut self.running),
        };
        for (cam, prompt) in old.difference(&running) {
            self.shared.forget_state(cam, prompt);
            for t in [
                self.topics.state(cam, prompt),
                self.topics.score(cam, prompt),
                self.topics.threshold(cam, prompt),
                self.topics.snapshot(cam, prompt),
            ] {
                self.live.forget(&t);
                self.control.push_back((t, vec![]));
            }
        }
        for (cam, prompt) in running.difference(&old) {
            self.shared.ensure_state(cam, prompt);
        }
        self.running = running;
    }

    /// About every second: discovery follows the prompts that run, the retained list of run-time
    /// prompts and the "Watch for" state follow the runtime, refusals found late are published.
    fn follow_prompts(&mut self) {
        if !self.connected {
            return;
        }
        self.discover(false);
        let runtime = self.live.status().runtime.clone();
        for (camera, why) in runtime.take_errors() {
            self.prompts_error(&camera, &why, None);
        }
        let version = runtime.version();
        if version == self.runtime_version {
            return;
        }
        self.runtime_version = version;
        for cam in &self.cameras {
            let list = runtime.list(&cam.id);
            let watching = list
                .iter()
                .rev()
                .find(|e| e.meta.source == "home assistant")
                .and_then(|e| e.meta.keys.get("text").and_then(|t| t.as_str()))
                .unwrap_or_default()
                .to_string();
            let listing = runtime.listing(&cam.id).to_string();
            self.live
                .set(self.topics.prompts(&cam.id), listing.into_bytes());
            self.live
                .set(self.topics.watch(&cam.id), watching.into_bytes());
        }
    }

    /// Queues discovery, then `online`, then every retained state.
    fn announce(&mut self) {
        self.control.clear();
        self.discover(true);
        self.runtime_version = u64::MAX;
        self.control
            .push_back((self.topics.availability(), ONLINE.as_bytes().to_vec()));
        self.live.refresh(Instant::now(), false);
        self.follow_prompts();
        self.live.mark_all();
        self.shared.status(|s| s.stats.announcements += 1);
    }

    /// Graceful stop: flush, `offline` retained, disconnect; about 3 s at most. Says what stays
    /// in the spool (also when the broker is unreachable).
    fn stop(&mut self) {
        let start = Instant::now();
        if self.connected {
            // flush events and states first, then announce `offline` last
            while start.elapsed() < STOP_FLUSH
                && self.connected
                && !(self.pump(true) && self.window.is_empty())
            {
                self.wait(Duration::from_millis(50));
            }
            self.control.clear();
            self.control
                .push_back((self.topics.availability(), OFFLINE.as_bytes().to_vec()));
            while start.elapsed() < STOP_TOTAL
                && self.connected
                && !(self.pump(false) && self.window.is_empty())
            {
                self.wait(Duration::from_millis(50));
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
            l.up = false;
        }
        self.shared.status(|s| s.stats.connected = false);
        self.report_left();
    }

    fn report_left(&self) {
        let Ok(mut spool) = self.shared.spool.lock() else {
            return;
        };
        let held = spool.retry();
        let (left, dir) = (spool.len(), spool.dir().display().to_string());
        drop(spool);
        let stats = self.shared.status.lock().map(|s| s.stats.clone());
        if let Ok(s) = stats {
            tracing::info!(
                "MQTT: {} event(s) queued since start, {} delivered, {left} spooled",
                s.queued,
                s.delivered
            );
        }
        if left > held {
            tracing::info!(
                "MQTT: {} event(s) stay in the spool {dir} for the next start",
                left - held
            );
        }
        if held > 0 {
            tracing::error!(
                "MQTT: {held} event(s) could not be written to the spool {dir} and are lost; check free space, permissions and the open-file limit"
            );
        }
    }

    pub(super) fn wait(&mut self, d: Duration) {
        match self.rx.recv_timeout(d) {
            Ok(Msg::Stop) | Err(_) => {}
            Ok(m) => self.handle(m),
        }
    }
}
