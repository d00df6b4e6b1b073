//! The GPU (`--features cuda`): with `PROMPTCAM_DEVICE=cuda` the fp32 models' graphs must be
//! planned on the GPU, and int8 stay on the CPU. Ignored by default: it needs an NVIDIA GPU, and
//! scripts/gpu-check.sh runs it there (`--ignored gpu::`), after the parity tests of `vision`,
//! `owl` and `segment` ran on the GPU against the same references as on the CPU.

use promptcam::model::device::{current, on_gpu, Device};
use promptcam::model::{ClipSeg, ModelDir, OwlVit, Precision};

use crate::fixture;

fn dir(name: &str) -> ModelDir {
    ModelDir::open(&fixture::path(&format!("models/tiny/{name}"))).unwrap()
}

#[test]
#[ignore = "needs an NVIDIA GPU and PROMPTCAM_DEVICE=cuda: scripts/gpu-check.sh run"]
fn fp32_models_run_on_the_gpu_and_int8_on_the_cpu() {
    assert_eq!(
        current(),
        Device::Cuda,
        "PROMPTCAM_DEVICE=cuda did not select the GPU (see the log for why)"
    );
    let prompts = vec![
        "a photo of a cat".to_string(),
        "a photo of a dog".to_string(),
    ];
    let clip = promptcam::model::Clip::load(&dir("clip"), Precision::Fp32, &prompts).unwrap();
    assert!(
        on_gpu(clip.image_tower().model()),
        "CLIP fp32 ran on the CPU"
    );
    let owl = OwlVit::load(&dir("owlvit"), Precision::Fp32, &prompts, None).unwrap();
    assert!(
        on_gpu(owl.runnable().model()),
        "OWL-ViT fp32 ran on the CPU"
    );
    let seg = ClipSeg::load(&dir("clipseg"), Precision::Fp32, &prompts).unwrap();
    assert!(
        on_gpu(seg.image_graph().model()),
        "CLIPSeg fp32 ran on the CPU"
    );
    let int8 = promptcam::model::Clip::load(&dir("clip"), Precision::Quantized, &prompts).unwrap();
    assert!(
        !on_gpu(int8.image_tower().model()),
        "int8 must stay on the CPU"
    );
}

/// `[models] device = "cuda"` where no GPU can be had (a build without the feature, or a machine
/// without a driver, as in CI) keeps the daemon running on the CPU, saying why.
#[test]
fn a_gpu_that_cannot_be_had_leaves_the_daemon_on_the_cpu() {
    if cfg!(feature = "cuda") && std::path::Path::new("/dev/nvidiactl").exists() {
        eprintln!("this machine has an NVIDIA device: gpu::fp32_models_run_on_the_gpu_and_int8_on_the_cpu covers it");
        return;
    }
    let tmp = fixture::TempDir::new("gpu-fallback");
    let config = tmp.path().join("promptcam.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[models]
device = "cuda"

[models.clip]
dir = "{model}"
quantized = false

[motion]
enabled = false

[[cameras]]
name = "Door"
source = "{image}"

[[cameras.prompts]]
text = "a cat"
model = "clip"
negatives = ["a dog"]
threshold = 0.0
min_frames = 1
"#,
            model = fixture::path("models/tiny/clip").display(),
            image = fixture::image("chelsea.png").display(),
        ),
    )
    .unwrap();
    let (code, out, err) = fixture::promptcam(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "daemon failed: {err}");
    assert!(
        out.contains("\"start\""),
        "no event on the CPU: {out}\n{err}"
    );
    let why = match cfg!(feature = "cuda") {
        true => "no usable CUDA runtime",
        false => "this build has no GPU support (build with --features cuda)",
    };
    let warning = err
        .lines()
        .find(|l| l.contains("models run on the CPU"))
        .unwrap_or_else(|| panic!("no word of the device: {err}"));
    assert!(
        warning.contains("WARN")
            && warning.contains("device = \"cuda\", but")
            && warning.contains(why),
        "{warning}"
    );
}
