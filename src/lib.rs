//! promptcam: a smart camera you configure with words.
//!
//! Data flows one way through the modules: `source` (cameras and files -> `frame::Frame` in a
//! latest-wins slot) -> `motion` (gate) -> `preprocess` (frame -> pixel tensor) -> `model` (CLIP
//! scores, OWL-ViT detections) -> `decide` (smoothing, hysteresis) -> `event` (start/update/end).
//! `status` is the live state the edges (MQTT, HTTP) read and steer; `annotate` draws boxes for people; `config` validates the TOML; `daemon` wires the stages with
//! `signals`; `cli` is the command line around them.

pub mod annotate;
pub mod backoff;
pub mod bench;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod decode;
pub mod endpoint;
pub mod event;
pub mod frame;
pub mod history;
pub mod learn;
pub mod logging;
pub mod model;
pub mod motion;
pub mod mqtt;
pub mod pipeline;
pub mod preprocess;
pub mod runtime;
pub mod signals;
pub mod sink;
pub mod source;
pub mod status;
pub mod threads;
pub mod web;
