//! Model: the zero-shot vision models, each a struct owning its tract runnable, its preprocessing
//! and its post-processing (`clip` for whole-frame states, `owlvit` and `owlv2` for boxed
//! objects, `clipseg` for masks and coverage; `kind` lists them), plus the pieces they share: the model directory
//! layout (`dir`), where models run (`device`: the CPU, or a GPU in a `cuda` build), ONNX loading and graph folding (`graph`, `skim` for a file's structure without
//! its weights, `grid` for running OWL models at other input sizes) and prompt tokenization
//! (`tokenize`).

pub mod attention;
pub mod clip;
pub mod clip_image;
pub mod clip_text;
pub mod clipseg;
pub mod detector;
pub mod device;
pub mod dir;
pub mod examples;
pub mod fused;
pub mod gelu;
pub mod graph;
pub mod grid;
pub mod heads;
pub mod identity;
#[cfg(test)]
mod int8_kernels;
pub mod kind;
pub mod norm;
pub mod owlv2;
pub mod owlvit;
pub mod qsimd;
pub mod quant;
pub mod quantize;
pub mod skim;
pub mod tokenize;
pub mod tree;

pub use clip::{Clip, ClipScore};
pub use clip_image::ClipImage;
pub use clip_text::ClipText;
pub use clipseg::{ClipSeg, Coverage, Masks};
pub use detector::Detector;
pub use dir::{ModelDir, Precision, PrecisionChoice};
pub use kind::ModelKind;
pub use owlv2::Owlv2;
pub use owlvit::{Detection, OwlVit};
