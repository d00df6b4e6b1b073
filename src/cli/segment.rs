//! `promptcam segment`: run CLIPSeg on image files and print, per image, how much of it each
//! prompt covers (a table, or one JSON object per line with `--json`); `--out` writes the image
//! with the masks overlaid in colour and labelled.

use std::io::Write;

use anyhow::{Context, Result};
use serde::Serialize;

use super::vision::{output_path, prepare_out};
use super::SegmentArgs;
use crate::decode::read_image;
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
    let precision = if args.quantized {
        Precision::Quantized
    } else {
        Precision::Fp32
    };
    let mut seg = ClipSeg::load(&dir, precision, &args.prompts)?;
    let several = args.images.len() > 1;
    prepare_out(args.out.as_deref(), several)?;
    let mut stdout = std::io::stdout().lock();
    for path in &args.images {
        let mut image = read_image(path)?;
        let results = seg.segment(&image, args.threshold, None)?;
        if args.json {
            let line = SegmentLine {
                image: path.to_string_lossy().into_owned(),
                width: image.width(),
                height: image.height(),
                results: &results,
            };
            writeln!(stdout, "{}", serde_json::to_string(&line)?)?;
        } else {
            writeln!(
                stdout,
                "{} ({}x{}): coverage above {}",
                path.display(),
                image.width(),
                image.height(),
                args.threshold
            )?;
            let width = results
                .iter()
                .map(|r| r.prompt.chars().count())
                .max()
                .unwrap_or(6)
                .max(6);
            writeln!(
                stdout,
                "  {:width$}  {:>8}  {:>6}",
                "prompt", "coverage", "max"
            )?;
            for r in &results {
                writeln!(
                    stdout,
                    "  {:width$}  {:>7.2}%  {:>6.3}",
                    r.prompt,
                    r.coverage * 100.0,
                    r.max
                )?;
            }
        }
        if let Some(out) = &args.out {
            let target = output_path(out, path, several)?;
            let masks = seg
                .last_masks()
                .context("unable to draw the masks: the model has not run")?;
            let labels: Vec<String> = results
                .iter()
                .map(|r| format!("{} {:.1}%", r.prompt, r.coverage * 100.0))
                .collect();
            let layers: Vec<clipseg::Layer> = labels
                .iter()
                .enumerate()
                .map(|(q, label)| clipseg::Layer {
                    prompt: q,
                    threshold: args.threshold,
                    label,
                    colour_index: q,
                })
                .collect();
            clipseg::overlay(&mut image, masks, &layers);
            super::vision::save_drawn(&image, &target)?;
        }
    }
    Ok(())
}
