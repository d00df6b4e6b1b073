//! promptcam: a smart camera you configure with words.
//!
//! Data flows one way through the modules: `preprocess` (frame -> pixel tensor) -> `model`
//! (CLIP scores, OWL-ViT detections) -> `annotate` (boxes drawn for people). `cli` is the
//! command line around them.

pub mod annotate;
pub mod cli;
pub mod logging;
pub mod model;
pub mod preprocess;
