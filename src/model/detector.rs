//! Detector: the open-vocabulary detectors behind one type, OWL-ViT or OWLv2 by the model
//! directory's family, for the callers that only want boxes (`promptcam detect`, the daemon).

use anyhow::{Context, Result};
use image::RgbImage;
use tract_onnx::prelude::tvec;

use super::dir::{ModelDir, Precision};
use super::graph::run;
use super::kind::ModelKind;
use super::owlvit::{post_process_scaled, read_patches_among};
use super::{Detection, OwlVit, Owlv2};

pub enum Detector {
    OwlVit(Box<OwlVit>),
    Owlv2(Box<Owlv2>),
}

impl Detector {
    /// Loads the directory's detector with `prompts` folded in, at `input_size` (None: native).
    pub fn load(
        dir: &ModelDir,
        precision: Precision,
        prompts: &[String],
        input_size: Option<u32>,
    ) -> Result<Detector> {
        Ok(match dir.family {
            ModelKind::Owlv2 => {
                Detector::Owlv2(Box::new(Owlv2::load(dir, precision, prompts, input_size)?))
            }
            _ => Detector::OwlVit(Box::new(OwlVit::load(dir, precision, prompts, input_size)?)),
        })
    }

    /// Detections scoring above `threshold`, best first.
    pub fn detect(&self, image: &RgbImage, threshold: f32) -> Result<Vec<Detection>> {
        match self {
            Detector::OwlVit(m) => m.detect(image, threshold),
            Detector::Owlv2(m) => m.detect(image, threshold),
        }
    }

    /// The square input size the graph runs at, in pixels.
    pub fn input_size(&self) -> u32 {
        match self {
            Detector::OwlVit(m) => m.input_size(),
            Detector::Owlv2(m) => m.input_size(),
        }
    }

    pub fn prompts(&self) -> &[String] {
        match self {
            Detector::OwlVit(m) => m.prompts(),
            Detector::Owlv2(m) => m.prompts(),
        }
    }
}

impl Detector {
    /// One run for several prompt groups (cameras sharing this detector, each with its own
    /// prompts among the detector's): per group, the detections above `threshold` with each box
    /// labelled by its best prompt *in that group*, as if the graph held that group alone.
    /// Prompt indices stay the detector's.
    pub fn detect_groups(
        &self,
        image: &RgbImage,
        threshold: f32,
        groups: &[&[usize]],
    ) -> Result<Vec<Vec<Detection>>> {
        let (w, h) = image.dimensions();
        let (out, (sx, sy), what) = match self {
            Detector::OwlVit(m) => {
                let px = m.pixels(image)?;
                (
                    run(m.runnable(), tvec![px]),
                    (w as f32, h as f32),
                    "OWL-ViT",
                )
            }
            Detector::Owlv2(m) => {
                let px = m.pixels(image)?;
                let scale = m.box_scale(w, h);
                (run(m.runnable(), tvec![px]), scale, "OWLv2")
            }
        };
        let out = out.with_context(|| format!("unable to run the {what} model"))?;
        let prompts = self.prompts();
        groups
            .iter()
            .map(|g| {
                let p = read_patches_among(&out[0], &out[1], prompts.len(), Some(g))?;
                Ok(post_process_scaled(&p, prompts, threshold, sx, sy))
            })
            .collect()
    }
}
