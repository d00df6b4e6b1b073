//! `promptcam search`: the prompt lab's search from a shell (for devices reached only over SSH):
//! a prompt scored on every frame a camera's history holds, best first, as the daemon would
//! score it on that camera.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::learn::{Lab, On};
use crate::web::search::{self, Query};
use crate::web::teach;

#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    pub on: On,
    /// What to look for.
    #[arg(value_name = "TEXT", required_unless_present = "learned")]
    pub text: Option<String>,
    /// Rank by a learned prompt (its name) instead of a text.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["text", "negatives", "templates"])]
    pub learned: Option<String>,
    /// What it must beat; repeat for several (default: the camera's CLIP prompts).
    #[arg(long = "negative", value_name = "TEXT")]
    pub negatives: Vec<String>,
    /// Ensemble templates with {} for the text; repeat for several.
    #[arg(long = "template", value_name = "TEMPLATE")]
    pub templates: Vec<String>,
    /// How many frames to list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100000))]
    pub limit: u32,
    /// Print the JSON of `/api/search` instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the results' thumbnails here (`<rank>-<score>.jpg`).
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
}

pub fn search(a: SearchArgs) -> Result<()> {
    let what = "search";
    let lab = Lab::open(&a.on, what)?;
    let store = lab.store(what)?;
    let cam = &lab.camera;
    let r = match (&a.learned, &a.text) {
        (Some(name), _) => {
            let state = lab.history.state_dir();
            let (l, _) = teach::find_learned(name, &cam.prompts, Some(&state))?;
            let model = lab.identity()?;
            crate::learn::file::check_model(
                &l,
                &crate::learn::file::path_in(&state, name),
                &model,
            )?;
            let s = search::score_learned(&store, &cam.id, &l, 0)?;
            search::respond(&cam.id, &l.name, s, a.limit as usize)
        }
        (None, text) => {
            let query = Query {
                text: text.clone().unwrap_or_default(),
                negatives: a.negatives.clone(),
                templates: a.templates.clone(),
            };
            query.check()?;
            let tower = lab.text_tower()?;
            search::search(
                &store,
                &tower,
                &cam.id,
                &query,
                &cam.prompts,
                a.limit as usize,
            )?
        }
    };
    if let Some(dir) = &a.save {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("unable to create {}", dir.display()))?;
        for (rank, hit) in r.results.iter().enumerate() {
            let Some(id) = hit
                .thumbnail
                .as_deref()
                .and_then(|u| u.rsplit('/').next()?.strip_suffix(".jpg")?.parse().ok())
            else {
                continue;
            };
            if let Some(jpeg) = store.thumbnail(id)? {
                let p = dir.join(format!("{:03}-{:.3}.jpg", rank + 1, hit.score));
                std::fs::write(&p, jpeg)
                    .with_context(|| format!("unable to write {}", p.display()))?;
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{:?} on camera {}: {} frame(s) searched, against {}",
        r.prompt,
        r.camera,
        r.searched,
        r.negatives.join(", ")
    );
    for hit in &r.results {
        println!(
            "{:.3}  {}  {}",
            hit.score,
            hit.time,
            hit.thumbnail.as_deref().unwrap_or("(no thumbnail)")
        );
    }
    Ok(())
}
