//! Window: the QoS-1 publishes the worker has handed to rumqttc and not yet seen acknowledged,
//! and which spool entry (if any) each one carries. rumqttc assigns packet ids itself and reports
//! them, in request order, as `Outgoing::Publish(pkid)`; a PUBACK names the packet id. The window
//! bounds how many publishes are in flight (well under rumqttc's `inflight`, so its packet ids
//! never collide) and how many of them may be anything but events, so that states, discovery and
//! snapshots can never take every slot and starve the spooled events (and events never starve
//! them: the worker offers the other messages a free slot first). Pure bookkeeping: the worker
//! feeds it what rumqttc reports on one connection and resets it on every new one.

use std::collections::{HashMap, VecDeque};

/// What a publish carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// A spooled event: its sequence number, removed from the spool on its PUBACK.
    Event(u64),
    /// Discovery, availability, a state, a snapshot...: nothing to do on its PUBACK.
    Other,
}

/// Publishes in flight on the current connection.
pub struct Window {
    /// Handed to rumqttc, waiting for their packet id, in request order.
    sent: VecDeque<Tag>,
    /// Packet id -> what it carries, waiting for the PUBACK.
    inflight: HashMap<u16, Tag>,
    /// In flight (sent or waiting for the PUBACK), per kind.
    events: usize,
    others: usize,
    max: usize,
    max_others: usize,
}

impl Window {
    /// At most `max` publishes in flight, of which at most `max_others` are not events.
    pub fn new(max: usize, max_others: usize) -> Window {
        Window {
            sent: VecDeque::new(),
            inflight: HashMap::new(),
            events: 0,
            others: 0,
            max,
            max_others: max_others.min(max),
        }
    }

    /// Whether a publish of this kind may be handed to rumqttc now.
    pub fn has_room(&self, event: bool) -> bool {
        self.events + self.others < self.max && (event || self.others < self.max_others)
    }

    /// A publish was handed to rumqttc.
    pub fn sent(&mut self, tag: Tag) {
        match tag {
            Tag::Event(_) => self.events += 1,
            Tag::Other => self.others += 1,
        }
        self.sent.push_back(tag);
    }

    /// rumqttc wrote the oldest waiting publish with this packet id.
    pub fn outgoing(&mut self, pkid: u16) {
        if let Some(tag) = self.sent.pop_front() {
            if let Some(old) = self.inflight.insert(pkid, tag) {
                // cannot happen while the window stays under rumqttc's inflight; if it did,
                // the older publish's slot would leak: free it
                tracing::warn!("MQTT packet id {pkid} reused while in flight");
                self.release(old);
            }
        }
    }

    /// A PUBACK: what the acknowledged publish carried, if it was ours.
    pub fn acked(&mut self, pkid: u16) -> Option<Tag> {
        let tag = self.inflight.remove(&pkid)?;
        self.release(tag);
        Some(tag)
    }

    fn release(&mut self, tag: Tag) {
        match tag {
            Tag::Event(_) => self.events = self.events.saturating_sub(1),
            Tag::Other => self.others = self.others.saturating_sub(1),
        }
    }

    /// Nothing in flight.
    pub fn is_empty(&self) -> bool {
        self.events + self.others == 0
    }

    /// A new connection: nothing of the previous one will be acknowledged.
    pub fn reset(&mut self) {
        self.sent.clear();
        self.inflight.clear();
        self.events = 0;
        self.others = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_map_back_through_packet_ids_in_any_order() {
        let mut w = Window::new(4, 2);
        w.sent(Tag::Event(7));
        w.sent(Tag::Other);
        w.sent(Tag::Event(8));
        w.outgoing(11);
        w.outgoing(12);
        w.outgoing(13);
        assert_eq!(w.acked(13), Some(Tag::Event(8)));
        assert_eq!(w.acked(13), None, "a second ack of the same id is not ours");
        assert_eq!(w.acked(99), None);
        assert_eq!(w.acked(11), Some(Tag::Event(7)));
        assert_eq!(w.acked(12), Some(Tag::Other));
        assert!(w.is_empty());
    }

    #[test]
    fn other_messages_never_take_the_slots_events_need() {
        let mut w = Window::new(4, 2);
        w.sent(Tag::Other);
        w.sent(Tag::Other);
        assert!(!w.has_room(false), "the others' share is full");
        assert!(w.has_room(true), "events still have room");
        w.sent(Tag::Event(1));
        w.sent(Tag::Event(2));
        assert!(!w.has_room(true) && !w.has_room(false));
        w.outgoing(1);
        w.outgoing(2);
        w.outgoing(3);
        w.outgoing(4);
        assert_eq!(w.acked(1), Some(Tag::Other));
        assert!(w.has_room(false) && w.has_room(true));
        w.reset();
        assert!(w.is_empty() && w.acked(2).is_none());
    }
}
