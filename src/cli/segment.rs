//! `promptcam segment`: run CLIPSeg on image files and print, per image, how much of it each
//! prompt covers (a table, or one JSON object per line with `--json`); `--out` writes the image
//! with the masks overlaid in colour and labelled.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::vision::read_image;
use super::SegmentArgs;
use crate::model::{clipseg, ClipSeg, Coverage, ModelDir, Precision};

#[derive(Serialize)]
struct SegmentLine<'a> {
    image: String,
    width: u32,
    height: u32,
    results: &'a [Coverage],
}

pub fn segment(args: SegmentArgs) -> Result<()> {
    let dir = ModelDir::open(&args.model)?;
    let precision = if args.quantized { Precision::Quantized } else { Precision::Fp32 };
    let mut seg = ClipSeg::load(&dir, precision, &args.prompts)?;
    let several = args.images.len() > 1;
    if let Some(out) = &args.out {
        if several || out.is_dir() {
            std::fs::create_dir_all(out).with_context(|| format!("unable to create output directory {}; choose another --out", out.display()))?;
        }
    }
    let mut stdout = std::io::stdout().lock();
    for path in &args.images {
        let mut image = read_image(path)?;
        let results = seg.segment(&image, args.threshold, None)?;
        if args.json {
            let line = SegmentLine { image: path.to_string_lossy().into_owned(), width: image.width(), height: image.height(), results: &results };
            writeln!(stdout, "{}", serde_json::to_string(&line)?)?;
        } else {
            writeln!(stdout, "{} ({}x{}): coverage above {}", path.display(), image.width(), image.height(), args.threshold)?;
            let width = results.iter().map(|r| r.prompt.chars().count()).max().unwrap_or(6).max(6);
            writeln!(stdout, "  {:width$}  {:>8}  {:>6}", "prompt", "coverage", "max")?;
            for r in &results {
                writeln!(stdout, "  {:width$}  {:>7.2}%  {:>6.3}", r.prompt, r.coverage * 100.0, r.max)?;
            }
        }
        if let Some(out) = &args.out {
            let target = output_path(out, path, several)?;
            let masks = seg.last_masks().context("unable to draw the masks: the model has not run")?;
            let labels: Vec<String> = results.iter().map(|r| format!("{} {:.1}%", r.prompt, r.coverage * 100.0)).collect();
            let layers: Vec<clipseg::Layer> = labels
                .iter()
                .enumerate()
                .map(|(q, label)| clipseg::Layer { prompt: q, threshold: args.threshold, label, colour_index: q })
                .collect();
            clipseg::overlay(&mut image, masks, &layers);
            image.save(&target).with_context(|| format!("unable to write {}; use a .jpg or .png name", target.display()))?;
        }
    }
    Ok(())
}

fn output_path(out: &Path, input: &Path, several: bool) -> Result<PathBuf> {
    if !(several || out.is_dir()) {
        return Ok(out.to_path_buf());
    }
    let name = input.file_name().with_context(|| format!("unable to name the output for {}: it has no file name", input.display()))?;
    let mut p = out.join(name);
    if p.extension().is_none_or(|e| !matches!(e.to_str(), Some("jpg" | "jpeg" | "png"))) {
        p.set_extension("png");
    }
    if p == input {
        bail!("unable to write {}: it would overwrite the input; choose another --out", p.display());
    }
    Ok(p)
}
