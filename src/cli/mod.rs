//! CLI: the `promptcam` command line — argument definitions and dispatch to the subcommands.
//! Each subcommand lives in its own module and turns validated arguments into work.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

pub mod vision;

#[derive(Parser, Debug)]
#[command(name = "promptcam", version, about = "A smart camera you configure with words: CLIP and OWL-ViT on any camera, events over MQTT")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Classify whole images against prompts with CLIP (zero-shot).
    Classify(ClassifyArgs),
    /// Find and box prompted objects in images with OWL-ViT (open-vocabulary).
    Detect(DetectArgs),
    /// Run the daemon: cameras -> motion gate -> models -> decisions -> events.
    Run(ConfigArgs),
    /// Validate a config file and load its models, opening nothing else; exit 0 when usable.
    Check(ConfigArgs),
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// The config file (every key is documented in config/promptcam.example.toml).
    #[arg(long, value_name = "FILE", default_value = "/etc/promptcam/promptcam.toml")]
    pub config: PathBuf,
}

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Model directory (config.json, tokenizer.json, processor config, onnx/*.onnx).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// A text prompt; repeat for several.
    #[arg(long = "prompt", value_name = "TEXT", required = true)]
    pub prompts: Vec<String>,
    /// Use the dynamic int8 `*_quantized.onnx` files.
    #[arg(long)]
    pub quantized: bool,
    /// Print one JSON object per image instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images to classify (JPEG or PNG).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Keep detections scoring above this (0..1).
    #[arg(long, default_value_t = 0.1, value_parser = unit_interval)]
    pub threshold: f32,
    /// Apply per-prompt non-maximum suppression, dropping boxes that overlap a better one by more
    /// than this IoU (0..1).
    #[arg(long, value_name = "IOU", value_parser = unit_interval)]
    pub nms: Option<f32>,
    /// Write the image with labelled boxes drawn here (a directory when several images are given).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Images to search (JPEG or PNG).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
}

fn unit_interval(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0..1"))
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Classify(a) => vision::classify(a),
        Command::Detect(a) => vision::detect(a),
        Command::Run(a) => crate::daemon::run(crate::config::load(&a.config)?),
        Command::Check(a) => check(&a.config),
    }
}

fn check(path: &std::path::Path) -> Result<()> {
    let config = crate::config::load(path)?;
    let cameras = crate::daemon::prepare(&config)?;
    println!("{}: valid", path.display());
    for m in [("clip", &config.clip), ("owlvit", &config.owlvit)] {
        if let (name, Some(mc)) = m {
            println!("  model {name}: {} ({:?}) loads", mc.dir.display(), mc.precision);
        }
    }
    for cam in &cameras {
        let c = &cam.config;
        println!("  camera {} ({}): {} prompt(s), source {}", c.id, c.name, c.prompts.len(), crate::source::redact(&c.source));
    }
    if config.mqtt.is_none() {
        println!("  no [mqtt] table: events go to stdout as JSON lines");
    }
    Ok(())
}
