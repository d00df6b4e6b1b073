//! Publisher: the handle the daemon's event thread holds. It spools each event (on disk before
//! `publish` returns, or held in memory when the disk refuses), notes which events are open (so a
//! killed daemon's next start can end them), hands states and snapshots to the worker (latest
//! wins) and wakes it. Its counters feed `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use super::open::OpenEvents;
use super::shared::{Msg, Shared};
use super::{discovery, spool, worker};
use crate::config::{CameraConfig, MqttConfig};
use crate::event::{Event, EventKind};
use crate::status::Status;

/// A snapshot of the publisher's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub connected: bool,
    /// Connection attempts since start (the first one included).
    pub connection_attempts: u64,
    /// Successful connections since start.
    pub connections: u64,
    /// Events spooled and not yet acknowledged by the broker.
    pub spooled: usize,
    /// Of those, events held in memory because the spool could not be written.
    pub held: usize,
    /// Events dropped because the spool was full.
    pub dropped: u64,
    /// Events queued since start (spooled, or held in memory).
    pub queued: u64,
    /// Events the broker acknowledged since start.
    pub delivered: u64,
    /// Times discovery was (re-)sent.
    pub announcements: u64,
    /// Commands (pause, threshold) accepted and applied.
    pub commands_applied: u64,
    /// Commands rejected (malformed, out of range, unknown camera or prompt).
    pub commands_rejected: u64,
}

fn stats(shared: &Shared) -> Stats {
    let mut s = shared
        .status
        .lock()
        .map(|s| s.stats.clone())
        .unwrap_or_default();
    if let Ok(spool) = shared.spool.lock() {
        (s.spooled, s.held, s.dropped) = (spool.len(), spool.held(), spool.dropped());
    }
    s
}

/// The publisher's counters, readable from any thread while the publisher runs.
#[derive(Clone)]
pub struct StatsHandle(Arc<Shared>);

impl StatsHandle {
    pub fn stats(&self) -> Stats {
        stats(&self.0)
    }
}

impl crate::status::OutputStats for StatsHandle {
    /// The spool and the connection, as `/metrics` shows them.
    fn metrics(&self) -> Vec<crate::status::OutputMetric> {
        let s = self.stats();
        let m = |name, help, counter, value: f64| crate::status::OutputMetric {
            name,
            help,
            counter,
            unit: None,
            labels: vec![],
            value,
        };
        vec![
            m(
                "promptcam_mqtt_spool_depth",
                "Events spooled on disk and not yet acknowledged by the broker.",
                false,
                s.spooled as f64,
            ),
            m(
                "promptcam_mqtt_connected",
                "1 while connected to the broker.",
                false,
                s.connected as u8 as f64,
            ),
            m(
                "promptcam_mqtt_spool_dropped",
                "Events dropped because the spool was full.",
                true,
                s.dropped as f64,
            ),
            m(
                "promptcam_mqtt_connections",
                "Successful connections to the broker.",
                true,
                s.connections as f64,
            ),
        ]
    }
}

/// Publishes events, states and discovery to an MQTT broker from two background threads (the
/// rumqttc connection and the worker that owns the spool).
pub struct Publisher {
    shared: Arc<Shared>,
    topics: discovery::Topics,
    tx: SyncSender<Msg>,
    worker: Option<JoinHandle<()>>,
    net: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Opens the spool and starts connecting in the background (never blocks on the broker).
    /// Events a killed previous run left open get their `end` first (reason `restart`).
    /// Reconnects back off exponentially with jitter (1 s doubling to 30 s). The last will is
    /// `offline`, retained, on `<prefix>/<device_id>/availability`; after each connect the
    /// publisher sends discovery for every camera and prompt, then `online`, then the states.
    /// `status` is the daemon's live view: commands steer it (pause, thresholds) and the
    /// retained pause, threshold, stream and diagnostics topics mirror it.
    pub fn start(
        cfg: MqttConfig,
        device_id: &str,
        cameras: &[CameraConfig],
        status: Status,
    ) -> Result<Publisher> {
        let mut spool = spool::Spool::open(&cfg.spool_dir, cfg.spool_max_events)?;
        let (mut open, ends) = OpenEvents::load(&cfg.spool_dir, &spool, SystemTime::now());
        let queued = ends.len() as u64;
        for (id, end) in ends {
            let seq = spool.push(end);
            tracing::debug!("MQTT: spooled event {seq}: end {id}");
        }
        open.save();
        let topics = discovery::Topics {
            prefix: cfg.topic_prefix.clone(),
            device_id: device_id.to_string(),
            discovery_prefix: cfg.discovery_prefix.clone(),
        };
        let (tx, rx) = sync_channel(1024);
        let shared = Arc::new(Shared::new(spool, open, cameras));
        shared.status(|s| s.stats.queued = queued);
        let (worker, net) = worker::spawn(
            cfg,
            device_id,
            cameras,
            status,
            shared.clone(),
            tx.clone(),
            rx,
        )
        .context("unable to start the MQTT threads")?;
        Ok(Publisher {
            shared,
            topics,
            tx,
            worker: Some(worker),
            net: Some(net),
        })
    }

    /// Spools one event (written to disk before this returns; held in memory and retried if the
    /// write fails) and updates its prompt's state; the worker delivers it in order once the
    /// broker is reachable.
    pub fn publish(&self, event: &Event) -> Result<()> {
        let payload = serde_json::to_string(event)
            .with_context(|| format!("unable to serialize event {}", event.id))?;
        // an event is noted open before it can be sent, and closed once its end is spooled: a
        // daemon killed at any point leaves no delivered start without a record of it
        let record = || {
            if let Ok(mut open) = self.shared.open.lock() {
                open.record(event);
            }
        };
        if event.kind != EventKind::End {
            record();
        }
        {
            let mut spool = self
                .shared
                .spool
                .lock()
                .map_err(|_| anyhow::anyhow!("the MQTT worker panicked; restart the daemon"))?;
            let seq = spool.push(payload);
            let kind = match event.kind {
                EventKind::Start => "start",
                EventKind::Update => "update",
                EventKind::End => "end",
            };
            tracing::debug!("MQTT: spooled event {seq}: {kind} {}", event.id);
        }
        self.shared.status(|s| s.stats.queued += 1);
        if event.kind == EventKind::End {
            record();
        }
        self.shared.set_state(event);
        self.shared
            .push_camera_event(self.topics.camera_event(&event.camera), event);
        // a full channel already holds a wake-up for the worker
        let _ = self.tx.try_send(Msg::Wake);
        Ok(())
    }

    /// Publishes the annotated JPEG of a prompt's event, retained on
    /// `<prefix>/<device_id>/<camera>/<prompt>/snapshot` (latest wins, not spooled).
    pub fn publish_snapshot(&self, camera: &str, prompt: &str, jpeg: Arc<Vec<u8>>) {
        self.shared.set_snapshot(camera, prompt, jpeg);
        let _ = self.tx.try_send(Msg::Wake);
    }

    /// Why the publisher is not connected now (secrets never appear here), if it is not.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .status
            .lock()
            .ok()
            .and_then(|s| s.last_error.clone())
    }

    pub fn stats(&self) -> Stats {
        stats(&self.shared)
    }

    /// A clonable handle on [`Publisher::stats`] for other threads (the HTTP endpoint's `/metrics`).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.shared.clone())
    }

    /// Graceful stop: flushes what it can, publishes `offline` retained (brokers send no will on
    /// a clean disconnect) and disconnects, all within about 3 s; logs what stays spooled.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Stop);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        if let Some(n) = self.net.take() {
            // the connection thread ends once the worker's client is gone, or after at most one
            // connect timeout when it was connecting: do not wait for that
            let deadline = Instant::now() + Duration::from_secs(1);
            while !n.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if n.is_finished() {
                let _ = n.join();
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.worker.is_some() {
            self.shutdown();
        }
    }
}
