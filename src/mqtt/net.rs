//! Net: the `mqtt-net` thread behind a [`super::Publisher`]. It polls the rumqttc connection and
//! forwards what happens to the worker; after a failure it waits a capped exponential backoff with
//! jitter before polling (= reconnecting) again, since rumqttc alone retries at once, and keeps a
//! clear, secret-free reason for `Publisher::last_error`.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    ConnectReturnCode, Connection, ConnectionError, Event as MqttEvent, Outgoing, Packet,
};

use super::worker::{Msg, Shared};

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The jitter source (no cryptographic use): rand's small fast generator, seeded from the OS.
pub struct Rng(rand::rngs::SmallRng);

impl Rng {
    pub fn new() -> Rng {
        Rng(rand::make_rng())
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        rand::RngExt::random(&mut self.0)
    }
}

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
    let mut rng = Rng::new();
    let mut backoff = BACKOFF_MIN;
    let mut up = false;
    let mut last_logged = String::new();
    loop {
        if !up {
            if shared.shutdown.load(Ordering::SeqCst) {
                break;
            }
            // requests queued for the dead link would be matched to the wrong acks: drop them
            // (events stay in the spool and are resent; states are resent on connect)
            conn.eventloop.clean();
            conn.eventloop.pending.clear();
            shared.status(|s| s.stats.connection_attempts += 1);
        }
        let r = match conn.recv() {
            Ok(r) => r,
            Err(_) => break, // every client is gone: the worker stopped
        };
        match r {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                up = true;
                backoff = BACKOFF_MIN;
                if let Ok(mut l) = shared.link.lock() {
                    *l = true;
                }
                tracing::info!("connected to the MQTT broker {broker}");
                last_logged.clear();
                if tx.send(Msg::Up).is_err() {
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
                    *l = false;
                }
                let msg = explain(&e, &broker);
                let delay = backoff.mul_f64(0.5 + 0.5 * rng.unit());
                backoff = (backoff * 2).min(BACKOFF_MAX);
                if msg != last_logged {
                    tracing::warn!("{msg} (next try in {:.1} s)", delay.as_secs_f64());
                    last_logged = msg.clone();
                } else {
                    tracing::debug!("{msg} (next try in {:.1} s)", delay.as_secs_f64());
                }
                if tx.send(Msg::Down(msg)).is_err() {
                    break;
                }
                let until = Instant::now() + delay;
                while Instant::now() < until && !shared.shutdown.load(Ordering::SeqCst) {
                    std::thread::sleep(
                        Duration::from_millis(50)
                            .min(until.saturating_duration_since(Instant::now())),
                    );
                }
            }
        }
    }
    if let Ok(mut l) = shared.link.lock() {
        *l = false;
    }
}
