//! Net: the `mqtt-net` thread behind a [`super::Publisher`]. It polls the rumqttc connection and
//! forwards what happens to the worker; after a failure it waits a capped exponential backoff with
//! jitter before polling (= reconnecting) again, since rumqttc alone retries at once, and keeps a
//! clear, secret-free reason for `Publisher::last_error`. Before every (re)connect it gives
//! rumqttc a fresh session state: nothing of a dead connection (queued requests, buffered
//! acknowledgements and packet-id reports, a pending collision) may reach the next one, where
//! the worker would match it to the wrong message. A packet from the broker over the incoming
//! limit (a large, perhaps retained, payload on a command topic) raises the limit to its size
//! for the following connections, so it is read and refused once instead of dropping every
//! connection.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    ConnectReturnCode, Connection, ConnectionError, Event as MqttEvent, MqttState, Outgoing,
    Packet, StateError,
};

use super::shared::{Msg, Shared, INFLIGHT, OUTGOING_MAX};
use crate::backoff::{sleep_unless, Backoff};

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The largest packet MQTT can express (its remaining length is at most 268 435 455 bytes).
const MQTT_MAX: usize = 268_435_455 + 5;

fn explain(e: &ConnectionError, broker: &str) -> String {
    let text = format!("{e}");
    // rustls failures arrive wrapped in I/O errors: recognise them by their text
    let tls = super::tls::hint(&format!("{e:?} {text}"));
    let hint = match e {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized) => {
            "check mqtt.username and the password (mqtt.password, mqtt.password_file or PROMPTCAM_MQTT_PASSWORD)"
        }
        ConnectionError::ConnectionRefused(_) => "check mqtt.client_id and the broker's configuration",
        _ if tls.is_some() => tls.unwrap_or_default(),
        ConnectionError::Io(_) | ConnectionError::NetworkTimeout => "check that the broker runs and mqtt.host and mqtt.port; retrying with backoff",
        _ => "retrying with backoff",
    };
    format!("unable to connect to the MQTT broker {broker}: {text}; {hint}")
}

/// Polls the connection; after a failure waits the backoff before polling (= reconnecting) again.
pub fn net_loop(mut conn: Connection, tx: SyncSender<Msg>, shared: Arc<Shared>, broker: String) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut up = false;
    let mut epoch = 0;
    let mut last_logged = String::new();
    loop {
        if !up {
            if shared.shutdown.load(Ordering::SeqCst) {
                break;
            }
            // requests queued for the dead link would be matched to the wrong acks: drop them
            // (events stay in the spool and are resent; states are resent on connect), and
            // start from a fresh state: `clean` keeps buffered events, a pending collision and
            // the packet-id counter, which the next connection must not see
            conn.eventloop.clean();
            conn.eventloop.pending.clear();
            conn.eventloop.state = MqttState::new(INFLIGHT, false);
            shared.status(|s| s.stats.connection_attempts += 1);
        }
        let r = match conn.recv() {
            Ok(r) => r,
            Err(_) => break, // every client is gone: the worker stopped
        };
        match r {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                up = true;
                backoff.reset();
                epoch += 1;
                if let Ok(mut l) = shared.link.lock() {
                    (l.up, l.epoch) = (true, epoch);
                }
                tracing::info!("connected to the MQTT broker {broker}");
                last_logged.clear();
                if tx.send(Msg::Up(epoch)).is_err() {
                    break;
                }
            }
            Ok(ev) => {
                let disconnect = matches!(ev, MqttEvent::Outgoing(Outgoing::Disconnect));
                if tx.send(Msg::Mqtt(ev)).is_err() || disconnect {
                    break;
                }
            }
            Err(e) => {
                up = false;
                if let Ok(mut l) = shared.link.lock() {
                    l.up = false;
                }
                if let Some(size) = oversized(&e) {
                    let limit = conn.eventloop.mqtt_options.max_packet_size();
                    if size > limit && size <= MQTT_MAX {
                        tracing::warn!(
                            "the MQTT broker {broker} sent a packet of {size} bytes, over the {limit}-byte limit: reading it on the next connection to refuse it (a large payload on a command topic? if it is retained, clear it with `mosquitto_pub -r -n -t TOPIC`)"
                        );
                        conn.eventloop
                            .mqtt_options
                            .set_max_packet_size(size, OUTGOING_MAX);
                    }
                }
                let msg = explain(&e, &broker);
                let delay = backoff.next_wait();
                if msg != last_logged {
                    tracing::warn!("{msg} (next try in {:.1} s)", delay.as_secs_f64());
                    last_logged = msg.clone();
                } else {
                    tracing::debug!("{msg} (next try in {:.1} s)", delay.as_secs_f64());
                }
                if tx.send(Msg::Down(msg)).is_err() {
                    break;
                }
                sleep_unless(&shared.shutdown, delay);
            }
        }
    }
    if let Ok(mut l) = shared.link.lock() {
        l.up = false;
    }
}

/// The size of an incoming packet that was over the limit, if that is what failed.
fn oversized(e: &ConnectionError) -> Option<usize> {
    match e {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(size),
        )) => Some(size + 5),
        _ => None,
    }
}
