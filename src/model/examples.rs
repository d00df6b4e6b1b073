//! Example-image prompts (issue 15): a prompt defined by pictures instead of words.
//!
//! CLIP: the prompt's embedding is the mean of the examples' L2-normalized image embeddings,
//! normalized again (CLIP compares normalized embeddings, so the mean is scored exactly like a
//! text prompt: cosine similarity times the learned logit scale, softmax against the other
//! classes). The examples go through the same preprocessing as frames.
//!
//! Detectors: OWL-ViT's image-guided detection (transformers'
//! `OwlViTForObjectDetection.image_guided_detection`) uses the query image's per-patch
//! `class_embeds` as the class query, and runs the class head with that query instead of text.
//! The published exports (transformers.js, optimum's `zero-shot-object-detection` task) output
//! `logits`, `pred_boxes`, `text_embeds` and `image_embeds` only and take text as the query, so
//! [`detector_refusal`] says so and points at the recipe in `models/README.md`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::clip::class_embedding;
use super::{Clip, ClipImage, ModelKind};
use crate::decode::read_image;

/// The example images a `DIR_OR_GLOB` names (a file, a directory's images, a glob's matches),
/// sorted; an error when there are none.
pub fn example_files(spec: &str) -> Result<Vec<PathBuf>> {
    let files = crate::source::file::image_files(spec)
        .with_context(|| format!("unable to read the examples {spec:?}"))?;
    if files.is_empty() {
        bail!(
            "unable to use the examples {spec:?}: no image files there (looked for .jpg, .jpeg, .png and .ppm); give a directory of pictures or a glob such as \"/var/lib/promptcam/examples/driveway/our_car/*.jpg\""
        );
    }
    Ok(files)
}

/// The example prompt's embedding: the normalized mean of the images' normalized embeddings.
pub fn example_embedding(clip: &mut Clip, files: &[PathBuf]) -> Result<Vec<f32>> {
    mean_embedding(files, |image| clip.image_embedding(image))
}

/// [`example_embedding`] through a bare image tower, for the pictures every spec names.
pub fn tower_embedding(tower: &ClipImage, specs: &[String]) -> Result<Vec<f32>> {
    let mut files = vec![];
    for spec in specs {
        files.extend(example_files(spec)?);
    }
    let mut pre = tower.preprocessor();
    mean_embedding(&files, |image| tower.embed_pixels(pre.run(image)?))
}

fn mean_embedding(
    files: &[PathBuf],
    mut embed: impl FnMut(&image::RgbImage) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    let mut rows = Vec::with_capacity(files.len());
    for f in files {
        let image = read_image(f)?;
        rows.push(
            embed(&image)
                .with_context(|| format!("unable to embed the example {}", f.display()))?,
        );
    }
    Ok(class_embedding(rows.iter().map(Vec::as_slice)))
}

/// The key an example class's embedding is kept under, next to the text embeddings (it cannot
/// collide with a text: texts hold no control characters here).
pub fn example_key(specs: &[String]) -> String {
    format!("\u{1}examples\u{1}{}", specs.join("\u{1}"))
}

/// Adds a class named `name` made of the images `spec` names; returns how many there were.
pub fn add_example_class(clip: &mut Clip, name: &str, spec: &str) -> Result<usize> {
    let files = example_files(spec)?;
    let embedding = example_embedding(clip, &files)?;
    clip.push_class(name.to_string(), embedding);
    Ok(files.len())
}

/// Why a detector cannot take example images, and how to get an export that could.
pub fn detector_refusal(family: ModelKind) -> anyhow::Error {
    let (what, query) = match family {
        ModelKind::Owlv2 => (
            "OWLv2",
            "the query image's highest-objectness box embedding",
        ),
        _ => (
            "OWL-ViT",
            "the class embedding of the query image's box that best covers it and stands out from the others",
        ),
    };
    anyhow::anyhow!(
        "unable to detect with example images: {what}'s image-guided detection uses {query} (its per-patch `class_embeds`) as the class query, and the published ONNX exports (transformers.js, optimum's zero-shot-object-detection) output only logits, pred_boxes, text_embeds and image_embeds and take text as the query; an export with a `class_embeds` output and a `query_embeds` input is needed (recipe: models/README.md, \"Image-guided detection\"); meanwhile describe the object in words (--prompt), or classify with examples (promptcam classify --example)"
    )
}
