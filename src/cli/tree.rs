//! `promptcam tree`: run a tree prompt (NanoOWL's grammar: `[detect]`, `(classify, ...)`,
//! nested) on image files and print one result per image: an indented table, or with `--json`
//! one object per line (`image`, `width`, `height`, scene `classes`, `detections` with `parent`
//! indices and their `classes`, and `leaves`: each leaf path's score). `--out` draws the boxes
//! with their winning classes; `--bench` times the tree instead.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::vision::{output_path, prepare_out};
use crate::annotate;
use crate::decode::read_image;
use crate::model::tree::{
    models::{Models, Timed},
    ClassScore, LeafScore, Tree, TreeDetection, TreeOutput,
};
use crate::model::{ModelDir, Precision};

#[derive(Args, Debug)]
pub struct TreeArgs {
    /// Detector directory (OWL-ViT or OWLv2), needed when the tree has `[...]` groups.
    #[arg(long, value_name = "DIR")]
    pub detector: Option<PathBuf>,
    /// CLIP directory, needed when the tree has `(...)` groups.
    #[arg(long, value_name = "DIR")]
    pub clip: Option<PathBuf>,
    /// The tree prompt, e.g. "[a person (a hard hat, no hard hat)]": `[a, b]` detects, `(a, b)`
    /// classifies among alternatives, a group written after a prompt applies to what it found.
    #[arg(long, value_name = "TREE")]
    pub tree: String,
    /// Keep detections scoring above this (0..1), at every level.
    #[arg(long, default_value_t = 0.1, value_parser = super::unit_interval)]
    pub threshold: f32,
    /// Use the dynamic int8 `*_quantized.onnx` files.
    #[arg(long)]
    pub quantized: bool,
    /// Run the detector at N x N pixels instead of its native size (a multiple of its patch size).
    #[arg(long, value_name = "N")]
    pub size: Option<u32>,
    /// Print one JSON object per image instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the image with the tree's boxes and labels drawn here (a directory when several
    /// images are given).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Instead of the results, time the tree: run it this many times per image (after one
    /// warm-up run) and print the per-frame time, split by model.
    #[arg(long, value_name = "FRAMES", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub bench: Option<u32>,
    /// With --bench: threads for matrix products (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Images to run the tree on (JPEG or PNG).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Serialize)]
struct TreeLine<'a> {
    image: String,
    width: u32,
    height: u32,
    #[serde(flatten)]
    output: &'a TreeOutput,
    /// Each leaf path's score (what the daemon thresholds), in tree order.
    leaves: Vec<LeafScore>,
}

/// Parses `--tree`, pointing at the column of a parse error under the text.
pub fn parse(source: &str) -> Result<Tree> {
    Tree::parse(source).map_err(|e| {
        let pad = " ".repeat(e.column.saturating_sub(1));
        anyhow::anyhow!(
            "unable to parse the tree prompt: {e}\n  {source}\n  {pad}^\nfix the prompt at that column"
        )
    })
}

fn winners(classes: &[ClassScore]) -> String {
    classes
        .iter()
        .filter(|c| c.won)
        .map(|c| format!("{} {:.2}", c.prompt, c.score))
        .collect::<Vec<_>>()
        .join(", ")
}

fn all_classes(classes: &[ClassScore]) -> String {
    classes
        .iter()
        .map(|c| {
            format!(
                "{}{} {:.3}",
                if c.won { "*" } else { "" },
                c.prompt,
                c.score
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn depth(dets: &[TreeDetection], mut i: usize) -> usize {
    let mut d = 0;
    while let Some(p) = dets[i].parent {
        d += 1;
        i = p;
    }
    d
}

pub fn tree(args: TreeArgs) -> Result<()> {
    let tree = parse(&args.tree)?;
    let open = |d: &Option<PathBuf>| d.as_deref().map(ModelDir::open).transpose();
    let precision = match args.quantized {
        true => Precision::Quantized,
        false => Precision::Fp32,
    };
    let mut models = Models::load(
        &tree,
        open(&args.detector)?.as_ref(),
        open(&args.clip)?.as_ref(),
        precision,
        args.size,
    )?;
    if let Some(frames) = args.bench {
        crate::threads::set_threads(args.threads);
        return bench(&tree, &mut models, &args, frames);
    }
    let several = args.images.len() > 1;
    prepare_out(args.out.as_deref(), several)?;
    let mut stdout = std::io::stdout().lock();
    for path in &args.images {
        let mut image = read_image(path)?;
        let out = tree
            .run(&mut models, &image, args.threshold)
            .with_context(|| format!("unable to run the tree on {}", path.display()))?;
        if args.json {
            let line = TreeLine {
                image: path.to_string_lossy().into_owned(),
                width: image.width(),
                height: image.height(),
                output: &out,
                leaves: out.leaf_scores(&tree),
            };
            writeln!(stdout, "{}", serde_json::to_string(&line)?)?;
        } else {
            writeln!(
                stdout,
                "{} ({}x{}): {} detection(s) above {}",
                path.display(),
                image.width(),
                image.height(),
                out.detections.len(),
                args.threshold
            )?;
            if !out.classes.is_empty() {
                writeln!(stdout, "  frame: {}", all_classes(&out.classes))?;
            }
            for leaf in out.leaf_scores(&tree) {
                writeln!(stdout, "  leaf {:?}: {:.3}", leaf.path, leaf.score)?;
            }
            for (i, d) in out.detections.iter().enumerate() {
                let b = d.bbox;
                writeln!(
                    stdout,
                    "  {}#{i} {} {:.3} [{:.0}, {:.0}, {:.0}, {:.0}]{}{}",
                    "  ".repeat(depth(&out.detections, i)),
                    d.prompt,
                    d.score,
                    b[0],
                    b[1],
                    b[2],
                    b[3],
                    d.parent.map(|p| format!(" in #{p}")).unwrap_or_default(),
                    match d.classes.is_empty() {
                        true => String::new(),
                        false => format!(": {}", all_classes(&d.classes)),
                    }
                )?;
            }
        }
        if let Some(dir) = &args.out {
            let target = output_path(dir, path, several)?;
            let texts: Vec<String> = out
                .detections
                .iter()
                .map(|d| {
                    let w = winners(&d.classes);
                    match w.is_empty() {
                        true => format!("{} {:.2}", d.prompt, d.score),
                        false => format!("{} {:.2}: {w}", d.prompt, d.score),
                    }
                })
                .collect();
            let drawn: Vec<annotate::Label> = out
                .detections
                .iter()
                .zip(&texts)
                .map(|(d, text)| annotate::Label {
                    bbox: d.bbox,
                    text,
                    colour_index: d.label,
                })
                .collect();
            annotate::draw(&mut image, &drawn);
            let scene = winners(&out.classes);
            if !scene.is_empty() {
                let scale = (image.width().min(image.height()) / 400 + 1).clamp(1, 4);
                annotate::text(&mut image, 0, 0, &scene, scale, annotate::colour(0));
            }
            super::vision::save_drawn(&image, &target)?;
        }
    }
    Ok(())
}

/// `--bench`: per image, the median per-frame time of the whole tree over `frames` runs, and how
/// many times each model ran per frame and for how long.
fn bench(tree: &Tree, models: &mut Models, args: &TreeArgs, frames: u32) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    for path in &args.images {
        let image = read_image(path)?;
        let out = tree.run(models, &image, args.threshold)?;
        let mut totals = vec![];
        let mut timed = Timed::new(models);
        for _ in 0..frames {
            let t = std::time::Instant::now();
            tree.run(&mut timed, &image, args.threshold)?;
            totals.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        totals.sort_by(f64::total_cmp);
        let median = totals[totals.len() / 2];
        let n = frames as f64;
        let per = |(runs, time): (usize, std::time::Duration)| {
            let runs = runs as f64 / n;
            let ms = time.as_secs_f64() * 1000.0 / n;
            (runs, ms, if runs > 0.0 { ms / runs } else { 0.0 })
        };
        let (dr, dms, dper) = per(timed.detect);
        let (cr, cms, cper) = per(timed.classify);
        let nested = out.detections.iter().filter(|d| d.parent.is_some()).count();
        writeln!(
            stdout,
            "{} ({}x{}): {median:.1} ms per frame (median of {frames}); detector {dr:.0} run(s) {dms:.1} ms ({dper:.1} ms each), CLIP {cr:.0} run(s) {cms:.1} ms ({cper:.1} ms each); {} detection(s), {nested} nested, at threshold {}",
            path.display(),
            image.width(),
            image.height(),
            out.detections.len(),
            args.threshold
        )?;
    }
    Ok(())
}
