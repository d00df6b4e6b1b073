//! Sinks: where events go. The `events` thread hands each event to every sink in turn — stdout
//! JSON lines, the MQTT publisher, the history — and counts, per sink, what it took and what it
//! refused, in the shared status. A snapshot is drawn and encoded once, on this thread, the first
//! time a sink asks for it (the inference thread never encodes one).
//!
//! Adding an output: a type implementing [`Sink`] and one line where the daemon lists its sinks.

mod history;
mod mqtt;
mod stdout;

pub use history::HistorySink;
pub use mqtt::MqttSink;
pub use stdout::StdoutSink;

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use crate::event::Event;
use crate::status::{SinkStatus, Status};

/// An output for events.
pub trait Sink: Send {
    /// A short name for logs and the `sink` label of `/metrics`.
    fn name(&self) -> &'static str;

    /// Takes one event (`e.snapshot`'s JPEG is rendered on first request); an error is logged
    /// and counted, and the next event is tried as usual.
    fn deliver(&mut self, e: &Event) -> Result<()>;

    /// Whether the sink can take no more (stdout closed): it is then left out.
    fn closed(&self) -> bool {
        false
    }

    /// The daemon stops: flush what can be flushed.
    fn stop(self: Box<Self>) {}
}

/// Starts the `events` thread: every event from `rx` to every sink, until the channel closes
/// (the inference thread ended); then each sink is stopped.
pub fn start(
    rx: Receiver<Event>,
    sinks: Vec<Box<dyn Sink>>,
    status: &Status,
) -> Result<JoinHandle<()>> {
    let counted: Vec<(Box<dyn Sink>, Arc<SinkStatus>)> = sinks
        .into_iter()
        .map(|s| {
            let st = Arc::new(SinkStatus::new(s.name()));
            status.add_output(st.clone());
            (s, st)
        })
        .collect();
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || fan_out(rx, counted))
        .context("unable to start the event thread")
}

fn fan_out(rx: Receiver<Event>, mut sinks: Vec<(Box<dyn Sink>, Arc<SinkStatus>)>) {
    for e in rx {
        for (sink, st) in sinks.iter_mut() {
            if sink.closed() {
                continue;
            }
            match sink.deliver(&e) {
                Ok(()) => st.delivered.fetch_add(1, Ordering::Relaxed),
                Err(err) => {
                    tracing::error!("{}: unable to take event {}: {err:#}", sink.name(), e.id);
                    st.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    }
    for (sink, _) in sinks {
        sink.stop();
    }
}
