//! `promptcam classify` and `promptcam detect`: run CLIP or OWL-ViT / OWLv2 on image files and print
//! one result per image (a table, or one JSON object per line with `--json`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{ClassifyArgs, DetectArgs, ModelArgs};
use crate::annotate;
use crate::decode::read_image;
use crate::model::{examples, owlvit, Clip, ClipScore, Detection, Detector, ModelDir, Precision};

fn precision(m: &ModelArgs) -> Precision {
    if m.quantized {
        Precision::Quantized
    } else {
        Precision::Fp32
    }
}

#[derive(Serialize)]
struct ClassifyLine<'a> {
    image: String,
    results: &'a [ClipScore],
}

pub fn classify(args: ClassifyArgs) -> Result<()> {
    let dir = ModelDir::open(&args.model.model)?;
    let texts: Vec<Vec<String>> = args.model.prompts.iter().map(|p| vec![p.clone()]).collect();
    let mut clip = Clip::load_classes(&dir, precision(&args.model), &texts)?;
    for spec in &args.examples {
        examples::add_example_class(&mut clip, spec, spec)?;
    }
    let mut out = std::io::stdout().lock();
    for path in &args.images {
        let image = read_image(path)?;
        let results = clip.classify(&image)?;
        if args.model.json {
            let line = ClassifyLine {
                image: path.to_string_lossy().into_owned(),
                results: &results,
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
        } else {
            writeln!(
                out,
                "{} ({}x{})",
                path.display(),
                image.width(),
                image.height()
            )?;
            let width = results
                .iter()
                .map(|r| r.prompt.chars().count())
                .max()
                .unwrap_or(6)
                .max(6);
            writeln!(
                out,
                "  {:width$}  {:>7}  {:>10}",
                "prompt", "score", "similarity"
            )?;
            for r in &results {
                writeln!(
                    out,
                    "  {:width$}  {:>7.4}  {:>10.4}",
                    r.prompt, r.score, r.similarity
                )?;
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct DetectLine<'a> {
    image: String,
    width: u32,
    height: u32,
    detections: &'a [Detection],
}

pub fn detect(args: DetectArgs) -> Result<()> {
    let dir = ModelDir::open(&args.model.model)?;
    if !args.examples.is_empty() {
        return Err(examples::detector_refusal(dir.family));
    }
    let owl = Detector::load(&dir, precision(&args.model), &args.model.prompts, args.size)?;
    let several = args.images.len() > 1;
    prepare_out(args.out.as_deref(), several)?;
    let mut stdout = std::io::stdout().lock();
    for path in &args.images {
        let mut image = read_image(path)?;
        let mut dets = owl.detect(&image, args.threshold)?;
        if let Some(iou) = args.nms {
            dets = owlvit::nms(dets, iou);
        }
        if args.model.json {
            let line = DetectLine {
                image: path.to_string_lossy().into_owned(),
                width: image.width(),
                height: image.height(),
                detections: &dets,
            };
            writeln!(stdout, "{}", serde_json::to_string(&line)?)?;
        } else {
            writeln!(
                stdout,
                "{} ({}x{}): {} detection(s) above {}",
                path.display(),
                image.width(),
                image.height(),
                dets.len(),
                args.threshold
            )?;
            let width = dets
                .iter()
                .map(|d| d.prompt.chars().count())
                .max()
                .unwrap_or(6)
                .max(6);
            if !dets.is_empty() {
                writeln!(
                    stdout,
                    "  {:width$}  {:>6}  box [x0, y0, x1, y1]",
                    "prompt", "score"
                )?;
            }
            for d in &dets {
                let b = d.bbox;
                writeln!(
                    stdout,
                    "  {:width$}  {:>6.3}  [{:.0}, {:.0}, {:.0}, {:.0}]",
                    d.prompt, d.score, b[0], b[1], b[2], b[3]
                )?;
            }
        }
        if let Some(out) = &args.out {
            let target = output_path(out, path, several)?;
            let labels: Vec<String> = dets
                .iter()
                .map(|d| format!("{} {:.2}", d.prompt, d.score))
                .collect();
            let drawn: Vec<annotate::Label> = dets
                .iter()
                .zip(&labels)
                .map(|(d, text)| annotate::Label {
                    bbox: d.bbox,
                    text,
                    colour_index: d.prompt_index,
                })
                .collect();
            annotate::draw(&mut image, &drawn);
            save_drawn(&image, &target)?;
        }
    }
    Ok(())
}

/// Writes a drawn copy (`--out`), its format from the file name.
pub(super) fn save_drawn(image: &image::RgbImage, target: &Path) -> Result<()> {
    image.save(target).with_context(|| {
        format!(
            "unable to write {}; use a .jpg or .png name",
            target.display()
        )
    })
}

/// Creates `--out` as a directory when it names one (several images, or an existing directory).
pub(super) fn prepare_out(out: Option<&Path>, several: bool) -> Result<()> {
    if let Some(out) = out {
        if several || out.is_dir() {
            std::fs::create_dir_all(out).with_context(|| {
                format!(
                    "unable to create output directory {}; choose another --out",
                    out.display()
                )
            })?;
        }
    }
    Ok(())
}

/// Where the drawn copy of `input` goes: `--out` itself for one image, else a file of the same
/// name (as .png unless it is a JPEG or PNG) inside the `--out` directory, never the input.
pub(super) fn output_path(out: &Path, input: &Path, several: bool) -> Result<PathBuf> {
    if !(several || out.is_dir()) {
        return Ok(out.to_path_buf());
    }
    let name = input.file_name().with_context(|| {
        format!(
            "unable to name the output for {}: it has no file name",
            input.display()
        )
    })?;
    let mut p = out.join(name);
    if p.extension()
        .is_none_or(|e| !matches!(e.to_str(), Some("jpg" | "jpeg" | "png")))
    {
        p.set_extension("png");
    }
    if p == input {
        bail!(
            "unable to write {}: it would overwrite the input; choose another --out",
            p.display()
        );
    }
    Ok(p)
}
