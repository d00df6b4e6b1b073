//! Precision: which files a model runs from when its table says `quantized = "auto"` (the
//! default) or `true`. int8 is not faster everywhere: tract's int8 kernels differ by CPU (VNNI,
//! AVX2 without it, NEON with or without dot product) and issue 21 measured int8 CLIP at 60x its
//! fp32 time on one of them. So at start, and at a reload that brings a new model, the model is
//! loaded in both precisions and each is timed on a blank frame at the current thread count; the
//! faster one that fits the memory stays and both figures are logged. An explicit `true` keeps
//! int8 but says so, with the figures, when int8 runs more than 3x slower than fp32. fp32 is
//! only tried when the machine has twice its files' size available: on a 4 GB Pi running both
//! full-size models, int8 is chosen for memory before speed. With the models on a GPU
//! (`model::device`), "auto" means fp32: int8 runs on the CPU only. The timings are remembered
//! between starts (`start_cache`): a restart with the same files, binary and CPU loads only the
//! precision they chose.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use image::RgbImage;

use super::start_cache::{StartCache, Timing};
use crate::config::ModelConfig;
use crate::model::{ModelDir, ModelKind, Precision, PrecisionChoice};

/// Where [`load`] remembers its two timings between starts ([`StartCache`]) and under which key:
/// the model's files, its input size and the thread count on this machine.
pub struct Memo<'a> {
    pub cache: &'a StartCache,
    pub key: String,
    what: String,
    /// Set by [`load`]: the chosen precision's ms a frame at this thread count, when it was
    /// timed (now or at an earlier start), so that the thread measurement need not time it again.
    timed: std::cell::Cell<Option<(usize, f64)>>,
}

impl<'a> Memo<'a> {
    pub fn new(cache: &'a StartCache, kind: ModelKind, from: &ModelConfig) -> Memo<'a> {
        let threads = crate::threads::current_threads();
        let size = from
            .input_size
            .map(|s| format!("{s} px, "))
            .unwrap_or_default();
        let what = format!(
            "{} in {}, {size}{threads} thread(s)",
            kind.title(),
            from.dir.display()
        );
        let key = super::start_cache::key(&[
            &super::start_cache::machine(),
            kind.name(),
            &super::start_cache::files_stamp(&from.dir),
            &format!("{:?}", from.input_size),
            &threads.to_string(),
            &format!("{:?}", crate::model::device::current()),
        ]);
        Memo {
            cache,
            key,
            what,
            timed: Default::default(),
        }
    }

    /// What [`load`] timed of the precision it returned: (threads, ms a frame).
    pub fn timed(&self) -> Option<(usize, f64)> {
        self.timed.get()
    }

    fn set_timed(&self, p: Precision, int8_ms: f64, fp32_ms: f64) {
        let ms = match p {
            Precision::Quantized => int8_ms,
            Precision::Fp32 => fp32_ms,
        };
        self.timed
            .set(Some((crate::threads::current_threads(), ms)));
    }
}

/// An explicit `quantized = true` this many times slower than fp32 logs a warning.
pub const SLOW_INT8: f64 = 3.0;
/// fp32 must beat int8 by this fraction to be chosen: on a tie, int8 (a quarter of the memory).
const FP32_MARGIN: f64 = 0.03;

/// The frame models are timed on (both precisions here, the thread counts in the daemon): a
/// mid-gray VGA frame, since the models' cost does not depend on the content.
pub fn blank_frame() -> RgbImage {
    RgbImage::from_pixel(640, 480, image::Rgb([128, 128, 128]))
}

/// What "auto" picks from the two timings (ms a frame): fp32 only when it was timed and beats
/// int8 by more than [`FP32_MARGIN`].
pub fn choose(int8_ms: f64, fp32_ms: Option<f64>) -> Precision {
    match fp32_ms {
        Some(f) if f < int8_ms * (1.0 - FP32_MARGIN) => Precision::Fp32,
        _ => Precision::Quantized,
    }
}

/// The warning an explicit `quantized = true` gets when int8 runs more than [`SLOW_INT8`] times
/// slower than fp32.
pub fn slow_int8_warning(kind: ModelKind, int8_ms: f64, fp32_ms: f64) -> Option<String> {
    (int8_ms > SLOW_INT8 * fp32_ms).then(|| {
        format!(
            "{}: int8 runs {:.1}x slower than fp32 on this CPU ({int8_ms:.1} ms against {fp32_ms:.1} ms a frame); set quantized = \"auto\" (or false) in [models.{}] to run fp32, or keep true to save memory",
            kind.title(),
            int8_ms / fp32_ms,
            kind.name()
        )
    })
}

/// The files of one precision that `kind`'s image side loads, and their bytes: the split image
/// tower (CLIP, CLIPSeg) or the whole model. None when they are not all present.
fn files_bytes(dir: &ModelDir, kind: ModelKind, p: Precision) -> Option<u64> {
    let split: &[&str] = match kind {
        ModelKind::Clip => &["vision_model"],
        ModelKind::ClipSeg => &["vision_model", "decoder_model"],
        _ => &[],
    };
    let size = |stem: &str| {
        std::fs::metadata(dir.onnx_path(stem, p))
            .ok()
            .map(|m| m.len())
    };
    let split_bytes: Option<u64> = match split.is_empty() {
        true => None,
        false => split.iter().map(|s| size(s)).sum(),
    };
    split_bytes.or_else(|| size("model"))
}

/// MemAvailable from /proc/meminfo, in bytes (None where it cannot be read).
fn available_bytes(meminfo: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(meminfo).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// The memory available to this process now (MemAvailable), if the system says.
pub fn available_memory() -> Option<u64> {
    available_bytes(Path::new("/proc/meminfo"))
}

/// One run of `model`, in ms.
fn timed<M>(model: &mut M, run: &mut impl FnMut(&mut M) -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    run(model)?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Loads `kind`'s model in the precision `choice` resolves to on this machine (see the module
/// header): `load` builds it from one precision's files, `run` analyses one blank frame with it.
/// Each precision runs once to warm up, then the two alternate twice and each keeps its best
/// time, so a passing slowdown of the machine hits both. Timings remembered in `memo` from an
/// earlier start are used instead: only the precision they chose loads. Returns the model and
/// its precision.
pub fn load<M>(
    kind: ModelKind,
    choice: PrecisionChoice,
    dir: &ModelDir,
    memo: &Memo,
    mut load: impl FnMut(Precision) -> Result<M>,
    mut run: impl FnMut(&mut M) -> Result<()>,
) -> Result<(M, Precision)> {
    let title = kind.title();
    let int8_files = files_bytes(dir, kind, Precision::Quantized);
    let fp32_files = files_bytes(dir, kind, Precision::Fp32);
    let gpu = crate::model::device::current() == crate::model::device::Device::Cuda;
    match choice {
        PrecisionChoice::Fp32 => return Ok((load(Precision::Fp32)?, Precision::Fp32)),
        // the GPU runs fp32 (tract's CUDA runtime has no int8 matrix products for these graphs)
        PrecisionChoice::Auto if gpu && fp32_files.is_some() => {
            tracing::info!("{title}: fp32 (quantized = \"auto\" with the models on the GPU)");
            return Ok((load(Precision::Fp32)?, Precision::Fp32));
        }
        PrecisionChoice::Int8 if gpu => tracing::info!(
            "{title}: int8 runs on the CPU (quantized = true); set quantized = \"auto\" in [models.{}] to run fp32 on the GPU",
            kind.name()
        ),
        PrecisionChoice::Auto if int8_files.is_none() => {
            tracing::info!(
                "{title}: fp32 (quantized = \"auto\"; {} has no int8 files to time against it)",
                dir.root.display()
            );
            return Ok((load(Precision::Fp32)?, Precision::Fp32));
        }
        _ => {}
    }
    let available = available_memory();
    if let Some(t) = memo.cache.timing(&memo.key) {
        let p = match choice {
            PrecisionChoice::Int8 => Precision::Quantized,
            _ => t.chosen,
        };
        // fp32 chosen on a machine that had the memory for it: still so?
        let fits = p == Precision::Quantized
            || fp32_files
                .zip(available)
                .is_none_or(|(files, avail)| avail >= 2 * files);
        if fits {
            match load(p).and_then(|mut m| run(&mut m).map(|_| m)) {
                Ok(m) => {
                    let figures = format!(
                        "int8 {:.1} ms, fp32 {:.1} ms a frame, measured at an earlier start ({}; delete it to measure again)",
                        t.int8_ms,
                        t.fp32_ms,
                        memo.cache.path().map(|p| p.display().to_string()).unwrap_or_default()
                    );
                    report(
                        kind,
                        choice,
                        memo,
                        p,
                        (t.int8_ms, t.fp32_ms),
                        &figures,
                        true,
                    );
                    return Ok((m, p));
                }
                Err(e) => {
                    tracing::warn!(
                        "{title}: unable to run the {} model chosen at an earlier start: {e:#}; timing both precisions again",
                        p.name()
                    );
                    memo.cache.forget_timing(&memo.key);
                }
            }
        }
    }
    let mut int8 = load(Precision::Quantized)?;
    run(&mut int8).with_context(|| format!("unable to run {title}'s int8 model"))?;
    let Some(fp32_bytes) = fp32_files else {
        tracing::info!(
            "{title}: int8 ({} has no fp32 files to time against it)",
            dir.root.display()
        );
        return Ok((int8, Precision::Quantized));
    };
    if let Some(avail) = available {
        if avail < 2 * fp32_bytes {
            tracing::info!(
                "{title}: int8; fp32 not tried: its files take {} MB and {} MB of memory is available",
                fp32_bytes >> 20,
                avail >> 20
            );
            return Ok((int8, Precision::Quantized));
        }
    }
    // fp32 is a candidate here: one that fails to load or run leaves int8 running
    let mut fp32 = match load(Precision::Fp32).and_then(|mut m| run(&mut m).map(|_| m)) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("{title}: int8; unable to time fp32 against it: {e:#}");
            return Ok((int8, Precision::Quantized));
        }
    };
    let (mut int8_ms, mut fp32_ms) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..2 {
        int8_ms = int8_ms.min(timed(&mut int8, &mut run)?);
        fp32_ms = fp32_ms.min(timed(&mut fp32, &mut run)?);
    }
    let timed = format!(
        "int8 {int8_ms:.1} ms, fp32 {fp32_ms:.1} ms a frame on {} thread(s)",
        crate::threads::current_threads()
    );
    let chosen = choose(int8_ms, Some(fp32_ms));
    memo.cache.put_timing(
        &memo.key,
        Timing {
            int8_ms,
            fp32_ms,
            chosen,
            what: memo.what.clone(),
            measured: super::start_cache::stamp_now(),
        },
    );
    let p = match choice {
        PrecisionChoice::Int8 => Precision::Quantized,
        _ => chosen,
    };
    report(kind, choice, memo, p, (int8_ms, fp32_ms), &timed, false);
    Ok(match p {
        Precision::Quantized => (int8, p),
        Precision::Fp32 => (fp32, p),
    })
}

/// Logs the precision `load` returns with both figures (`figures`, which say where they come
/// from; a cached warning repeats them, a fresh one's text has them already) and remembers its
/// time in `memo` for the thread measurement.
fn report(
    kind: ModelKind,
    choice: PrecisionChoice,
    memo: &Memo,
    p: Precision,
    (int8_ms, fp32_ms): (f64, f64),
    figures: &str,
    cached: bool,
) {
    let title = kind.title();
    match choice {
        PrecisionChoice::Int8 => match slow_int8_warning(kind, int8_ms, fp32_ms) {
            Some(w) if cached => tracing::warn!("{w} ({figures})"),
            Some(w) => tracing::warn!("{w}"),
            None => tracing::info!("{title}: {figures}; using int8 (quantized = true)"),
        },
        _ => tracing::info!(
            "{title}: {figures}; using {} (quantized = \"auto\")",
            p.name()
        ),
    }
    memo.set_timed(p, int8_ms, fp32_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_int8_unless_fp32_is_clearly_faster() {
        assert_eq!(choose(100.0, None), Precision::Quantized);
        assert_eq!(choose(100.0, Some(120.0)), Precision::Quantized);
        // within the margin: int8, for its memory
        assert_eq!(choose(100.0, Some(98.0)), Precision::Quantized);
        assert_eq!(choose(100.0, Some(96.0)), Precision::Fp32);
        assert_eq!(choose(9074.0, Some(131.0)), Precision::Fp32);
    }

    #[test]
    fn explicit_int8_is_warned_about_past_three_times_fp32() {
        assert!(slow_int8_warning(ModelKind::Clip, 290.0, 100.0).is_none());
        let w = slow_int8_warning(ModelKind::Clip, 9074.0, 131.0).unwrap();
        assert!(
            w.contains("69.3x") && w.contains("9074.0 ms") && w.contains("131.0 ms"),
            "{w}"
        );
        assert!(w.contains("[models.clip]") && w.contains("\"auto\""), "{w}");
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let p = std::env::temp_dir().join(format!("promptcam-meminfo-{}", std::process::id()));
        std::fs::write(&p, "MemTotal: 4000000 kB\nMemAvailable:    2048 kB\n").unwrap();
        assert_eq!(available_bytes(&p), Some(2048 * 1024));
        std::fs::write(&p, "MemTotal: 4000000 kB\n").unwrap();
        assert_eq!(available_bytes(&p), None);
        std::fs::remove_file(&p).unwrap();
    }
}
