//! Device: where the models run. Always possible: the CPU, through tract's own kernels. In a
//! build with the `cuda` feature: an NVIDIA GPU, through tract's CUDA runtime (`tract-cuda`),
//! which loads the driver, NVRTC, cuBLAS and cuDNN at run time, so that build starts on a
//! machine without them.
//!
//! The daemon selects once at start (`[models] device`), `promptcam bench` from `--device`,
//! everything else from `PROMPTCAM_DEVICE` (default "cpu"), so the parity tests run on the GPU
//! unchanged. "auto" takes the GPU when the feature is built and a device answers, else the CPU;
//! an explicit "cuda" without a usable device runs on the CPU and logs why. Models are then
//! built for the selected device (`graph::build` leaves a GPU-bound model decluttered and marks
//! it, since tract's CUDA transform works on that form) and planned by [`plan`]: on the GPU,
//! and per model back on the CPU, with the reason logged, when the CUDA runtime refuses one
//! (an op it lacks, a first run that fails). int8 models always run on the CPU.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use tract_onnx::prelude::*;

/// The environment variable that selects the device outside the daemon and the bench.
pub const DEVICE_ENV: &str = "PROMPTCAM_DEVICE";

/// What a config or a command line asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The GPU when this build has CUDA and a device answers, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl DeviceChoice {
    pub const WORDS: &'static str = "\"auto\", \"cpu\" or \"cuda\"";

    pub fn parse(word: &str) -> Option<DeviceChoice> {
        match word {
            "auto" => Some(DeviceChoice::Auto),
            "cpu" => Some(DeviceChoice::Cpu),
            "cuda" => Some(DeviceChoice::Cuda),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
        }
    }
}

/// Where models built from now on run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

/// The outcome of [`select`]: the device, and what to log about it (the GPU's name, or why the
/// CPU was taken).
#[derive(Clone, Debug)]
pub struct Selected {
    pub device: Device,
    pub detail: String,
    /// An explicit "cuda" that could not be had: worth a warning, not an info line.
    pub refused: bool,
}

impl std::fmt::Display for Selected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = match self.device {
            Device::Cpu => "the CPU",
            Device::Cuda => "the GPU",
        };
        write!(f, "models run on {on} ({})", self.detail)
    }
}

const UNSET: u8 = 0;
const CPU: u8 = 1;
const CUDA: u8 = 2;
static SELECTED: AtomicU8 = AtomicU8::new(UNSET);

/// Selects where models built from now on run, from `choice` and what this build and machine
/// have. Models already built keep their device.
pub fn select(choice: DeviceChoice) -> Selected {
    let selected = resolve(choice, gpu);
    let v = match selected.device {
        Device::Cpu => CPU,
        Device::Cuda => CUDA,
    };
    SELECTED.store(v, Ordering::SeqCst);
    selected
}

/// The selected device; the first call without a [`select`] before it selects from
/// `PROMPTCAM_DEVICE` (absent: the CPU), logging the outcome.
pub fn current() -> Device {
    match SELECTED.load(Ordering::SeqCst) {
        CPU => Device::Cpu,
        CUDA => Device::Cuda,
        _ => {
            static FROM_ENV: OnceLock<Selected> = OnceLock::new();
            let s = FROM_ENV.get_or_init(|| {
                let word = std::env::var(DEVICE_ENV).unwrap_or_default();
                let choice = match DeviceChoice::parse(word.trim()) {
                    Some(c) => c,
                    None if word.trim().is_empty() => DeviceChoice::Cpu,
                    None => {
                        tracing::warn!(
                            "{DEVICE_ENV}={word:?} is not a device; running on the CPU (use {})",
                            DeviceChoice::WORDS
                        );
                        DeviceChoice::Cpu
                    }
                };
                let s = select(choice);
                if choice != DeviceChoice::Cpu {
                    tracing::info!("{DEVICE_ENV}={}: {s}", choice.name());
                }
                s
            });
            s.device
        }
    }
}

/// What a GPU probe found: the device's name, or why there is none.
pub type Probe = std::result::Result<String, String>;

/// `choice` against the GPU probe (pure: the probe is an argument).
pub fn resolve(choice: DeviceChoice, probe: impl FnOnce() -> Probe) -> Selected {
    match choice {
        DeviceChoice::Cpu => Selected {
            device: Device::Cpu,
            detail: "device = \"cpu\"".into(),
            refused: false,
        },
        DeviceChoice::Auto | DeviceChoice::Cuda => match probe() {
            Ok(name) => Selected {
                device: Device::Cuda,
                detail: format!("{name}; device = \"{}\"", choice.name()),
                refused: false,
            },
            Err(why) => Selected {
                device: Device::Cpu,
                detail: match choice {
                    DeviceChoice::Cuda => format!("device = \"cuda\", but {why}"),
                    _ => format!("device = \"auto\": {why}"),
                },
                refused: choice == DeviceChoice::Cuda,
            },
        },
    }
}

/// The property that marks a model built for the GPU (decluttered, not yet optimized); its value
/// is the model's file, for the log lines of [`plan`].
const GPU_MARK: &str = "promptcam.gpu";

/// Marks `model` (decluttered) to be planned on the GPU by [`plan`].
pub fn mark_for_gpu(model: &mut TypedModel, file: &str) {
    model
        .properties
        .insert(GPU_MARK.into(), tensor0(file.to_string()).into_arc_tensor());
}

/// Plans `model` for running: on the GPU when it was built for it ([`mark_for_gpu`]), falling
/// back to the CPU with the reason logged; on the CPU otherwise.
pub fn plan(mut model: TypedModel) -> Result<Arc<TypedRunnableModel>> {
    let Some(file) = model.properties.remove(GPU_MARK) else {
        return cpu_plan(model);
    };
    let file = file
        .try_as_plain_ram()
        .ok()
        .and_then(|t| t.as_slice::<String>().ok()?.first().cloned())
        .unwrap_or_default();
    match gpu_plan(model.clone()) {
        Ok((plan, ms)) => {
            tracing::info!("{file}: on the GPU, first run {ms:.1} ms");
            Ok(plan)
        }
        Err(e) => {
            tracing::warn!("unable to run {file} on the GPU: {e:#}; it runs on the CPU");
            let optimized = model
                .into_optimized()
                .with_context(|| format!("unable to optimize {file} with tract"))?;
            cpu_plan(optimized)
        }
    }
}

/// Whether a planned model runs on the GPU: tract's GPU plans move tensors to and from the
/// device through `DeviceSync` nodes, which a CPU plan never has.
pub fn on_gpu(model: &TypedModel) -> bool {
    model
        .nodes()
        .iter()
        .any(|n| n.op.name().starts_with("DeviceSync"))
}

fn cpu_plan(model: TypedModel) -> Result<Arc<TypedRunnableModel>> {
    model
        .into_runnable()
        .context("unable to plan the model for running")
}

#[cfg(not(feature = "cuda"))]
fn gpu() -> Probe {
    Err("this build has no GPU support (build with --features cuda)".into())
}

#[cfg(not(feature = "cuda"))]
fn gpu_plan(_model: TypedModel) -> Result<(Arc<TypedRunnableModel>, f64)> {
    anyhow::bail!("this build has no GPU support (build with --features cuda)")
}

#[cfg(feature = "cuda")]
use cuda::{gpu, gpu_plan};

#[cfg(feature = "cuda")]
mod cuda {
    //! The `cuda` feature's side: probing for a device and planning on it. tract-cuda panics
    //! where it cannot create its context, so its calls run under `catch_unwind`: a GPU that
    //! fails costs one model its speed, never the daemon.

    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::time::Instant;

    use anyhow::{anyhow, Context, Result};
    use tract_onnx::prelude::*;

    use super::Probe;

    fn caught<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(anyhow!("{what} panicked: {msg}"))
        })
    }

    pub(super) fn gpu() -> Probe {
        caught("the CUDA probe", || {
            tract_cuda::utils::ensure_cuda_runtime_dependencies("no usable CUDA runtime")
                .map_err(|e| anyhow!("{e:#}"))?;
            let ctx = cudarc::driver::CudaContext::new(0)
                .map_err(|e| anyhow!("unable to open CUDA device 0: {e:?}"))?;
            let name = ctx.name().unwrap_or_else(|_| "CUDA device 0".into());
            let mem = ctx.total_mem().map(|b| b >> 20).unwrap_or(0);
            Ok(format!("{name}, {mem} MiB"))
        })
        .map_err(|e| format!("{e:#}"))
    }

    pub(super) fn gpu_plan(model: TypedModel) -> Result<(Arc<TypedRunnableModel>, f64)> {
        caught("tract's CUDA runtime", || {
            let facts: Vec<TypedFact> = model
                .input_outlets()?
                .iter()
                .map(|o| model.outlet_fact(*o).cloned())
                .collect::<TractResult<_>>()?;
            let runtime = tract_onnx::tract_core::runtime::runtime_for_name("cuda")?
                .context("tract's CUDA runtime is not linked in")?;
            let runnable = runtime.prepare(model)?;
            let plan = runnable
                .typed_plan()
                .cloned()
                .context("tract's CUDA runtime gave no plan")?;
            // a first run on zeros: an op the runtime accepts but cannot run shows here, at
            // start, not on the first camera frame
            let inputs = facts
                .iter()
                .map(|f| {
                    let shape = f.shape.as_concrete().context("an input of unknown shape")?;
                    Ok(Tensor::zero_dt(f.datum_type, shape)?.into_tvalue())
                })
                .collect::<Result<TVec<_>>>()?;
            let t = Instant::now();
            plan.run(inputs).context("the first run failed")?;
            Ok((plan, t.elapsed().as_secs_f64() * 1000.0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_resolve_against_the_probe() {
        let found = || Ok::<_, String>("NVIDIA H100, 81000 MiB".to_string());
        let none = || Err::<String, _>("no NVIDIA driver".to_string());
        let s = resolve(DeviceChoice::Auto, found);
        assert_eq!(s.device, Device::Cuda);
        assert!(s.detail.contains("H100") && !s.refused, "{s}");
        // cpu never probes
        let s = resolve(DeviceChoice::Cpu, || panic!("probed"));
        assert_eq!(s.device, Device::Cpu);
        let s = resolve(DeviceChoice::Auto, none);
        assert_eq!(s.device, Device::Cpu);
        assert!(!s.refused && s.detail.contains("no NVIDIA driver"), "{s}");
        // an explicit cuda that cannot be had runs on the CPU, loudly
        let s = resolve(DeviceChoice::Cuda, none);
        assert_eq!(s.device, Device::Cpu);
        assert!(s.refused && s.to_string().contains("the CPU"), "{s}");
        assert!(s.detail.contains("no NVIDIA driver"), "{s}");
    }

    /// x + [1, 2], decluttered and marked for the GPU as `graph::build` leaves it.
    fn marked_model() -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([2])).unwrap();
        let c = m.add_const("c", tensor1(&[1f32, 2.0])).unwrap();
        let y = m
            .wire_node("y", tract_onnx::tract_core::ops::math::add(), &[x, c])
            .unwrap();
        m.select_output_outlets(&y).unwrap();
        let mut m = m.into_decluttered().unwrap();
        mark_for_gpu(&mut m, "tiny.onnx");
        m
    }

    #[test]
    fn a_marked_model_runs_where_it_can() {
        let plan = plan(marked_model()).unwrap();
        assert!(!plan.model().properties.contains_key(GPU_MARK));
        // without a GPU (this build or this machine) planning there fails and the model must
        // still run, on the CPU; with one, it runs there
        assert_eq!(on_gpu(plan.model()), gpu().is_ok());
        let out = plan
            .run(tvec![tensor1(&[1f32, 1.0]).into_tvalue()])
            .unwrap();
        let y = out[0].cast_to::<f32>().unwrap();
        assert_eq!(
            y.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
            &[2.0, 3.0]
        );
    }

    #[test]
    fn words_parse() {
        for c in [DeviceChoice::Auto, DeviceChoice::Cpu, DeviceChoice::Cuda] {
            assert_eq!(DeviceChoice::parse(c.name()), Some(c));
        }
        assert_eq!(DeviceChoice::parse("gpu"), None);
    }
}
