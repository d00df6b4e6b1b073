//! CLI: the `promptcam` command line — argument definitions and dispatch to the subcommands.
//! Each subcommand lives in its own module and turns validated arguments into work.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

pub mod check;
pub mod learn;
pub mod search;
pub mod segment;
pub mod tree;
pub mod vision;

#[derive(Parser, Debug)]
#[command(
    name = "promptcam",
    version,
    about = "A smart camera you configure with words: CLIP and OWL-ViT on any camera, events over MQTT"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Classify whole images against prompts with CLIP (zero-shot).
    Classify(ClassifyArgs),
    /// Find and box prompted objects in images with OWL-ViT or OWLv2 (open-vocabulary).
    Detect(DetectArgs),
    /// Measure how much of images prompted things cover, with CLIPSeg masks (zero-shot).
    Segment(SegmentArgs),
    /// Run a tree prompt: detect, classify the boxes, detect inside them (NanoOWL's grammar,
    /// e.g. "[a person (a hard hat, no hard hat)]").
    Tree(tree::TreeArgs),
    /// Run the daemon: cameras -> motion gate -> models -> decisions -> events.
    Run(ConfigArgs),
    /// Validate a config file, its sources and spool directory, and load its models, connecting
    /// nowhere; exit 0 when `run` would start with it.
    Check(ConfigArgs),
    /// List V4L2 cameras and the formats and sizes each offers.
    Devices,
    /// Grab frames from a source and print their size, rate and decode time.
    Probe(ProbeArgs),
    /// Time one model's stages (decode, preprocess, model, post-process) and its memory.
    Bench(BenchArgs),
    /// Find a camera's stored frames that match a prompt, best first (the prompt lab's search).
    Search(search::SearchArgs),
    /// Teach a prompt from a lab question's yes/no marks (a linear classifier on the frames'
    /// CLIP embeddings, cross-validated) and write it to learned/<name>.json.
    Learn(learn::LearnArgs),
    /// Measure a text or learned prompt on the marked frames: precision, recall, F1.
    Evaluate(learn::EvaluateArgs),
    /// Move a question's marks between devices: export to one file, import from it.
    Labels(learn::LabelsArgs),
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model directory (CLIP, OWL-ViT, OWLv2 or CLIPSeg).
    #[arg(long, value_name = "DIR", required_unless_present = "capture")]
    pub model: Option<PathBuf>,
    /// Use the dynamic int8 `*_quantized.onnx` files.
    #[arg(long)]
    pub quantized: bool,
    /// Threads for matrix products (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Where the model runs: cpu, cuda (an NVIDIA GPU, in a build with the `cuda` feature) or
    /// auto (the GPU when there is one).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: crate::model::device::DeviceChoice,
    /// Frames to time after two warm-up frames.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100000))]
    pub frames: u32,
    /// The image decoded and analysed every frame.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "tests/fixtures/images/coffee.png"
    )]
    pub image: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also time every node of one frame and print the model time by op type.
    #[arg(long)]
    pub profile: bool,
    /// Instead, measure the history with this many stored frames (a CLIP `--model` embeds the
    /// lab's query): the inference thread's cost per frame, write rate, disk per frame and
    /// camera-day, and a prompt lab query over all of them.
    #[arg(long, value_name = "FRAMES", value_parser = clap::value_parser!(u32).range(10..=10_000_000))]
    pub history: Option<u32>,
    /// With --history: keep the history it made (camera `bench`, the last frame now) as
    /// DIR/history.sqlite, for load tests against a running daemon (`scripts/lab-load.py`).
    #[arg(long, value_name = "DIR", requires = "history")]
    pub keep_history: Option<std::path::PathBuf>,
    /// Instead, measure learned prompts (a CLIP `--model`): teaching from this many marks and
    /// evaluating on them in a history of `--history` frames (default 100 000), and a learned
    /// prompt's cost per frame next to the image tower's.
    #[arg(long, value_name = "MARKS", value_parser = clap::value_parser!(u32).range(6..=1_000_000))]
    pub learn: Option<u32>,
    /// OWL-ViT / OWLv2: run at N x N pixels instead of the native size (a multiple of the patch
    /// size).
    #[arg(long, value_name = "N")]
    pub size: Option<u32>,
    /// Instead, measure what capturing this source costs the capture thread (a camera faster
    /// than the analysis: frames decoded as they arrive, then decoded only when taken), taking
    /// frames at --fps for --seconds per phase.
    #[arg(long, value_name = "SOURCE", conflicts_with_all = ["model", "history"])]
    pub capture: Option<String>,
    /// With --capture: frames analysed per second.
    #[arg(long, default_value_t = 2.0)]
    pub fps: f64,
    /// With --capture: seconds per phase.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// OWL-ViT / OWLv2: also write the ONNX graph adapted to --size here (to run the same graph
    /// in onnxruntime, as models/bench_ort.py does).
    #[arg(long, value_name = "FILE")]
    pub save_graph: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// A source as in the config: /dev/videoN[@WxH], http://host/stream (MJPEG),
    /// snapshot+http://host/image.jpg, rtsp://host/stream (H.264), an image file, a directory
    /// or a glob.
    #[arg(long, value_name = "URL|DEVICE|PATH")]
    pub source: String,
    /// How many frames to grab.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub frames: u32,
    /// Save the frames here as PNG files.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// The config file (every key is documented in config/promptcam.example.toml).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/promptcam/promptcam.toml"
    )]
    pub config: PathBuf,
}

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Model directory (config.json, tokenizer.json, processor config, onnx/*.onnx).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// A text prompt; repeat for several.
    #[arg(
        long = "prompt",
        value_name = "TEXT",
        required_unless_present = "examples"
    )]
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
    /// A prompt made of pictures: a directory of images or a glob; the mean of their CLIP
    /// embeddings competes with the text prompts like one more prompt, named as given. Repeat
    /// for several.
    #[arg(long = "example", value_name = "DIR_OR_GLOB")]
    pub examples: Vec<String>,
    /// Images to classify (JPEG or PNG).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Find objects like the one in this picture (image-guided detection); needs an export with
    /// class embeddings: see models/README.md.
    #[arg(long = "example", value_name = "IMAGE")]
    pub examples: Vec<PathBuf>,
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
    /// Run the model at N x N pixels instead of its native size (a multiple of its patch size,
    /// e.g. 384, 480 or 576 for OWL-ViT B/32): faster, less detail.
    #[arg(long, value_name = "N")]
    pub size: Option<u32>,
    /// Images to search (JPEG or PNG).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SegmentArgs {
    /// CLIPSeg model directory (config.json, tokenizer.json, processor config, onnx/*.onnx).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// A text prompt; repeat for several.
    #[arg(long = "prompt", value_name = "TEXT", required = true)]
    pub prompts: Vec<String>,
    /// A pixel counts towards a prompt's coverage when its probability exceeds this (0..1).
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    pub threshold: f32,
    /// Use the dynamic int8 `*_quantized.onnx` files.
    #[arg(long)]
    pub quantized: bool,
    /// Print one JSON object per image instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the image with the masks overlaid and labelled here (a directory when several images are given).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Images to segment (JPEG or PNG).
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
        Command::Segment(a) => segment::segment(a),
        Command::Tree(a) => tree::tree(a),
        Command::Run(a) => crate::daemon::run(crate::config::load(&a.config)?),
        Command::Check(a) => check::check(&a.config),
        Command::Devices => {
            let lines = crate::source::v4l2::list_devices();
            if lines.is_empty() {
                println!("no V4L2 cameras found (no /dev/video* device nodes); plug in a USB webcam, or enable the camera interface (Raspberry Pi) so that /dev/videoN appears");
            }
            for l in lines {
                println!("{l}");
            }
            Ok(())
        }
        Command::Probe(a) => probe(a),
        Command::Search(a) => search::search(a),
        Command::Learn(a) => learn::learn(a),
        Command::Evaluate(a) => learn::evaluate(a),
        Command::Labels(a) => learn::labels(a),
        Command::Bench(a) if a.capture.is_some() => {
            let spec = a.capture.as_deref().unwrap_or_default();
            if !(a.fps > 0.0 && a.seconds > 0.0) {
                anyhow::bail!("unable to bench the capture: --fps and --seconds must be above 0");
            }
            let r = crate::source::bench::run(spec, a.fps, a.seconds)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{r}");
            }
            Ok(())
        }
        Command::Bench(a) if a.learn.is_some() => {
            let marks = a.learn.unwrap_or_default() as usize;
            let frames = a.history.unwrap_or(100_000) as usize;
            let model = a.model.as_deref().unwrap_or(std::path::Path::new(""));
            let r = crate::learn::bench::run(model, a.quantized, frames, marks, &a.image)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{r}");
            }
            Ok(())
        }
        Command::Bench(a) if a.history.is_some() => {
            let n = a.history.unwrap_or_default() as usize;
            let model = a.model.as_deref().unwrap_or(std::path::Path::new(""));
            let keep = a.keep_history.as_deref();
            let r = crate::history::bench::run(model, a.quantized, n, &a.image, keep)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{r}");
            }
            Ok(())
        }
        Command::Bench(a) => {
            let r = crate::bench::run(&crate::bench::Options {
                dir: a.model.as_deref().unwrap_or(std::path::Path::new("")),
                quantized: a.quantized,
                threads: a.threads,
                device: a.device,
                frames: a.frames as usize,
                image: &a.image,
                profile: a.profile,
                size: a.size,
                save_graph: a.save_graph.as_deref(),
            })?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{r}");
            }
            Ok(())
        }
    }
}

fn parse_device(word: &str) -> std::result::Result<crate::model::device::DeviceChoice, String> {
    crate::model::device::DeviceChoice::parse(word)
        .ok_or_else(|| format!("use {}", crate::model::device::DeviceChoice::WORDS))
}

fn probe(a: ProbeArgs) -> Result<()> {
    use anyhow::Context;
    let mut source = crate::source::open(&a.source, 1000.0, false)?;
    println!("{}", source.describe());
    if let Some(dir) = &a.save {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("unable to create {}", dir.display()))?;
    }
    let start = std::time::Instant::now();
    let mut got = 0;
    for i in 0..a.frames {
        let t = std::time::Instant::now();
        let Some(frame) = source.next_frame()? else {
            println!("end of stream after {got} frame(s)");
            break;
        };
        got += 1;
        println!(
            "frame {i}: {}x{} in {:.1} ms",
            frame.width(),
            frame.height(),
            t.elapsed().as_secs_f64() * 1000.0
        );
        if let Some(dir) = &a.save {
            let p = dir.join(format!("frame-{i:04}.png"));
            frame
                .save(&p)
                .with_context(|| format!("unable to write {}", p.display()))?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if got > 1 {
        println!("{got} frames in {secs:.2} s: {:.1} fps", got as f64 / secs);
    }
    Ok(())
}
