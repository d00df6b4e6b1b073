//! MQTT: events to the publisher (spooled, then delivered in order), each start or update's
//! snapshot to the prompt's retained snapshot topic.

use anyhow::Result;

use super::Sink;
use crate::event::Event;
use crate::mqtt::Publisher;

pub struct MqttSink(pub Publisher);

impl Sink for MqttSink {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn deliver(&mut self, e: &Event) -> Result<()> {
        if let Some(jpeg) = e.snapshot.as_ref().and_then(|s| s.jpeg()) {
            self.0.publish_snapshot(&e.camera, &e.prompt, jpeg);
        }
        self.0.publish(e)
    }

    /// Publishes `offline` and flushes what it can (about 3 s at most).
    fn stop(self: Box<Self>) {
        self.0.stop();
    }
}
