//! Stdout: events as JSON lines (`{"type", "camera", "prompt", "score", "box"?, "started_at",
//! "ended_at"?, "id"}`), the daemon's output when no broker is configured. A closed stdout
//! (`| head`) ends this sink, not the daemon.

use std::io::Write;

use anyhow::{Context, Result};

use super::Sink;
use crate::event::Event;

#[derive(Default)]
pub struct StdoutSink {
    closed: bool,
}

impl Sink for StdoutSink {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn deliver(&mut self, e: &Event) -> Result<()> {
        let line = serde_json::to_string(e)
            .with_context(|| format!("unable to serialize event {}", e.id))?;
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            self.closed = true;
        }
        Ok(())
    }

    fn closed(&self) -> bool {
        self.closed
    }
}
