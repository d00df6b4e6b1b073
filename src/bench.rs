//! Bench: `promptcam bench` — per-stage timings of one model on one image (decode, preprocess,
//! model, post-process) as median and p90 over N frames after warm-up, load + optimize time and
//! peak RSS. Benchmarks print figures; tests don't time things.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tract_onnx::prelude::tvec;

use std::path::Path;

use crate::model::{owlvit, Clip, ClipSeg, ModelDir, ModelKind, OwlVit, Owlv2, Precision};

#[derive(Serialize)]
pub struct Stage {
    pub median_ms: f64,
    pub p90_ms: f64,
    /// The fastest frame: on a shared machine, the closest to the code's own speed.
    pub min_ms: f64,
}

#[derive(Serialize)]
pub struct Report {
    pub model: String,
    pub family: &'static str,
    pub quantized: bool,
    pub threads: usize,
    /// Where the timed graph ran: "cpu", or "cuda" and the GPU's name.
    pub device: String,
    pub frames: usize,
    pub image: String,
    pub image_size: [u32; 2],
    /// OWL-ViT / OWLv2: the square size the model ran at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_size: Option<u32>,
    pub load_ms: f64,
    pub decode: Stage,
    pub preprocess: Stage,
    pub model_run: Stage,
    pub postprocess: Stage,
    pub peak_rss_mb: f64,
    /// The kernels tract chose for the image tower's (or detector's) matrix products.
    pub kernels: Vec<crate::model::graph::KernelUse>,
    /// Model time by op type, each op's median over the frames (with `--profile`), slowest
    /// first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<crate::model::graph::OpTime>>,
}

fn stage(mut v: Vec<Duration>) -> Stage {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    Stage {
        median_ms: at(0.5),
        p90_ms: at(0.9),
        min_ms: at(0.0),
    }
}

/// Peak resident set size of this process (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// A figure of `/proc/self/status` given in kB (`VmHWM:`, `RssAnon:`), in MB; 0 if absent.
pub fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The most anonymous memory (heap: not the mapped files) this process held while `f` ran, in
/// MB, sampled every millisecond by another thread, with `f`'s result.
pub fn peak_anon_mb<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = status_mb("RssAnon:");
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(status_mb("RssAnon:"));
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            peak.max(status_mb("RssAnon:"))
        });
        let r = f();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (r, sampler.join().unwrap_or(0.0))
    })
}

/// What `promptcam bench` measures.
pub struct Options<'a> {
    pub dir: &'a Path,
    pub quantized: bool,
    /// 0 = all cores.
    pub threads: usize,
    pub device: crate::model::device::DeviceChoice,
    pub frames: usize,
    pub image: &'a Path,
    pub profile: bool,
    /// OWL-ViT / OWLv2 input size (None: native).
    pub size: Option<u32>,
    /// OWL-ViT / OWLv2: where to write the graph adapted to `size`.
    pub save_graph: Option<&'a Path>,
}

pub fn run(o: &Options) -> Result<Report> {
    let Options {
        dir,
        quantized,
        frames,
        image,
        profile,
        size,
        ..
    } = *o;
    let threads = crate::threads::set_threads(o.threads);
    let selected = crate::model::device::select(o.device);
    if selected.refused {
        anyhow::bail!(
            "unable to bench on the GPU: {}; run on the CPU with --device cpu",
            selected.detail
        );
    }
    let precision = if quantized {
        Precision::Quantized
    } else {
        Precision::Fp32
    };
    let bytes =
        std::fs::read(image).with_context(|| format!("unable to read {}", image.display()))?;
    let decode = || -> Result<image::RgbImage> {
        crate::decode::decode_image(&bytes).context("unable to decode the bench image")
    };
    let first = decode()?;
    let model = ModelDir::open(dir)?;
    if let Some(out) = o.save_graph {
        crate::model::owlvit::write_adapted(&model, precision, size, out)?;
    }
    if size.is_some() && !model.family.has_input_size() {
        anyhow::bail!(
            "unable to bench {} at --size: input sizes apply to OWL-ViT and OWLv2 models; drop --size",
            dir.display()
        );
    }
    let prompts = vec![
        "a photo of a person".to_string(),
        "a photo of a delivery van".to_string(),
    ];
    let t = Instant::now();
    enum M {
        Clip(Box<Clip>),
        Owl(Box<OwlVit>),
        Owl2(Box<Owlv2>),
        Seg(Box<ClipSeg>),
    }
    let mut m = match model.family {
        ModelKind::Clip => M::Clip(Box::new(Clip::load(&model, precision, &prompts)?)),
        ModelKind::OwlVit => M::Owl(Box::new(OwlVit::load(&model, precision, &prompts, size)?)),
        ModelKind::Owlv2 => M::Owl2(Box::new(Owlv2::load(&model, precision, &prompts, size)?)),
        ModelKind::ClipSeg => M::Seg(Box::new(ClipSeg::load(&model, precision, &prompts)?)),
    };
    let load = t.elapsed();
    let (mut d, mut p, mut r, mut q) = (vec![], vec![], vec![], vec![]);
    let warmup = 2;
    for i in 0..frames + warmup {
        let t0 = Instant::now();
        let img = decode()?;
        let t1 = Instant::now();
        // each arm returns the instants after preprocess, model and post-process
        let (t2, t3, t4) = match &mut m {
            M::Clip(c) => {
                let px = c.preprocessor().run(&img)?;
                let t2 = Instant::now();
                let emb = c.embed_pixels(px)?;
                let t3 = Instant::now();
                std::hint::black_box(c.scores(&emb));
                (t2, t3, Instant::now())
            }
            M::Owl(o) => {
                let px = o.preprocessor().run(&img)?;
                let t2 = Instant::now();
                let patches = o.patch_scores(px)?;
                let t3 = Instant::now();
                std::hint::black_box(owlvit::post_process(
                    &patches,
                    o.prompts(),
                    0.1,
                    img.width(),
                    img.height(),
                ));
                (t2, t3, Instant::now())
            }
            M::Owl2(o) => {
                let px = o.preprocessor().run(&img)?;
                let t2 = Instant::now();
                let patches = o.patch_scores(px)?;
                let t3 = Instant::now();
                std::hint::black_box(o.post_process(&patches, 0.1, img.width(), img.height()));
                (t2, t3, Instant::now())
            }
            M::Seg(s) => {
                let px = s.preprocessor().run(&img)?;
                let t2 = Instant::now();
                let masks = s.run_pixels(px)?;
                let t3 = Instant::now();
                for q in 0..masks.prompts {
                    std::hint::black_box(masks.coverage(q, img.width(), img.height(), None, 0.5));
                }
                (t2, t3, Instant::now())
            }
        };
        if i >= warmup {
            d.push(t1 - t0);
            p.push(t2 - t1);
            r.push(t3 - t2);
            q.push(t4 - t3);
        }
    }
    // the graph that takes the pixels: its kernels are reported, and --profile times it
    let graph = |m: &M| match m {
        M::Clip(c) => c.image_tower().clone(),
        M::Owl(o) => o.runnable().clone(),
        M::Owl2(o) => o.runnable().clone(),
        M::Seg(s) => s.image_graph().clone(),
    };
    let kernels = crate::model::graph::kernels(graph(&m).model());
    // a model the GPU refused runs on the CPU (`device::plan` logged why): say where it ran
    let device = match (
        selected.device,
        crate::model::device::on_gpu(graph(&m).model()),
    ) {
        (crate::model::device::Device::Cuda, true) => format!("cuda ({})", selected.detail),
        (crate::model::device::Device::Cuda, false) => {
            "cpu (the GPU refused the model; see the log)".into()
        }
        _ => "cpu".into(),
    };
    let profile = if profile {
        let pixels = match &mut m {
            M::Clip(c) => c.preprocessor().run(&first)?,
            M::Owl(o) => o.preprocessor().run(&first)?,
            M::Owl2(o) => o.preprocessor().run(&first)?,
            M::Seg(_) => anyhow::bail!("unable to profile a CLIPSeg model: --profile covers CLIP, OWL-ViT and OWLv2; drop --profile"),
        };
        let model = graph(&m);
        // every op's median over the frames: one frame on a busy machine is noise
        let runs = (0..frames.clamp(1, 50))
            .map(|_| crate::model::graph::profile(&model, tvec![pixels.clone()]))
            .collect::<Result<Vec<_>>>()?;
        Some(crate::model::graph::median_profile(&runs))
    } else {
        None
    };
    Ok(Report {
        model: dir.display().to_string(),
        family: model.family.title(),
        quantized,
        threads,
        device,
        frames,
        image: image.display().to_string(),
        image_size: [first.width(), first.height()],
        input_size: match &m {
            M::Owl(o) => Some(o.input_size()),
            M::Owl2(o) => Some(o.input_size()),
            _ => None,
        },
        load_ms: load.as_secs_f64() * 1000.0,
        decode: stage(d),
        preprocess: stage(p),
        model_run: stage(r),
        postprocess: stage(q),
        peak_rss_mb: peak_rss_mb(),
        kernels,
        profile,
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} ({}{}), {} thread(s), {}, {} frames of {} ({}x{})",
            self.model,
            self.family,
            if self.quantized { ", quantized" } else { "" },
            self.threads,
            self.device,
            self.frames,
            self.image,
            self.image_size[0],
            self.image_size[1]
        )?;
        if let Some(n) = self.input_size {
            writeln!(f, "  model input      {n}x{n}")?;
        }
        writeln!(f, "  load + optimize  {:>9.1} ms", self.load_ms)?;
        for (name, s) in [
            ("decode", &self.decode),
            ("preprocess", &self.preprocess),
            ("model", &self.model_run),
            ("post-process", &self.postprocess),
        ] {
            writeln!(
                f,
                "  {name:<15}  median {:>8.2} ms   p90 {:>8.2} ms",
                s.median_ms, s.p90_ms
            )?;
        }
        write!(f, "  peak RSS         {:>9.1} MB", self.peak_rss_mb)?;
        let kernels: Vec<String> = self
            .kernels
            .iter()
            .map(|k| format!("{} x{}", k.kernel, k.nodes))
            .collect();
        write!(
            f,
            "\n  matmul kernels   {}",
            if kernels.is_empty() {
                "none (no optimized matrix product)".to_string()
            } else {
                kernels.join(", ")
            }
        )?;
        if let Some(ops) = &self.profile {
            let total: f64 = ops.iter().map(|o| o.ms).sum();
            write!(
                f,
                "\n  profile by op, medians over the frames ({total:.1} ms in all):"
            )?;
            for o in ops.iter().take(15) {
                write!(
                    f,
                    "\n    {:<40} {:>4} nodes {:>9.2} ms {:>5.1}%",
                    o.op,
                    o.nodes,
                    o.ms,
                    100.0 * o.ms / total.max(1e-9)
                )?;
            }
        }
        Ok(())
    }
}
