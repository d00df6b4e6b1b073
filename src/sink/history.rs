//! History: events (with their snapshots) into the history store, for the camera pages.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Result;

use super::Sink;
use crate::event::Event;
use crate::history::{History, Record};

pub struct HistorySink(pub Arc<History>);

impl Sink for HistorySink {
    fn name(&self) -> &'static str {
        "history"
    }

    fn deliver(&mut self, e: &Event) -> Result<()> {
        self.0.record(Record::Event(e.clone(), SystemTime::now()));
        Ok(())
    }
}
