//! MQTT: the [`Publisher`] that sends events, retained per-prompt states and scores, availability and Home Assistant
//! discovery to a broker. Events are spooled on disk until the broker acknowledges them
//! (`spool`), discovery payloads live in `discovery`, the connection threads in `worker`.
//!
//! Topics (`<prefix>` = `topic_prefix`, default `promptcam`):
//! - `<prefix>/<device_id>/availability`: `online` / `offline`, retained, with a last will;
//! - `<prefix>/<device_id>/events`: event JSON, QoS 1, not retained;
//! - `<prefix>/<device_id>/<camera>/<prompt>/state` and `.../score`: retained, latest wins;
//! - `<prefix>/<device_id>/<camera>/<prompt>/snapshot`: annotated JPEG of the event, retained;
//! - `<prefix>/<device_id>/<camera>/<prompt>/threshold` (+ `/set`): the prompt's `on` threshold;
//! - `<prefix>/<device_id>/<camera>/paused` (+ `/set`): `ON` while detection is paused;
//! - `<prefix>/<device_id>/<camera>/event`: `{"event_type": "start", ...}` for Home Assistant;
//! - `<prefix>/<device_id>/<camera>/stream`: `online` / `offline`, retained;
//! - `<prefix>/<device_id>/<camera>/diagnostics`: JSON counters every `diagnostics_interval`;
//! - `<prefix>/<device_id>/<camera>/prompts/add` and `.../prompts/remove`: run-time prompts
//!   (`crate::runtime`); `.../prompts` lists them (retained), `.../prompts/error` says why a
//!   change was refused; `.../watch` (+ `/set`) is Home Assistant's "Watch for" and
//!   `.../<prompt>/stop` a run-time prompt's "Stop watching" button;
//! - `<discovery_prefix>/device/<device>/config` (one per device, the default) or
//!   `<discovery_prefix>/<component>/<unique_id>/config` (`discovery = "entity"`): retained
//!   discovery, kept in step with the prompts that run (`announce`).
//!
//! The `[mqtt]` table is validated with the rest of the file (`crate::config::MqttConfig`).
//! Commands (`.../set`) are checked in `commands`, TLS settings become a rustls config in `tls`;
//! the `Publisher` handle is in `publisher`, what its threads share in `shared`, the in-flight
//! bookkeeping in `window`, the record of open events in `open`.

mod announce;
mod commands;
pub mod discovery;
mod live;
mod net;
mod open;
mod publisher;
mod pump;
mod shared;
pub mod spool;
pub(crate) mod tls;
mod window;
mod worker;

pub use publisher::{Publisher, Stats, StatsHandle};
