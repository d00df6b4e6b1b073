//! `promptcam learn`, `promptcam evaluate` and `promptcam labels export|import`: the lab's
//! learning from a shell (for devices reached only over SSH), on the daemon's config and
//! history. They print what the API answers (`--json`: the same JSON).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::config::{CameraConfig, Config, HistoryConfig, ModelConfig};
use crate::decide::DecideConfig;
use crate::history::store::{Marked, Store};
use crate::model::identity::ModelIdentity;
use crate::model::{ClipText, ModelDir, ModelKind};
use crate::web::search::Query;
use crate::web::teach;

/// `--config F --camera C`: what every lab command works on.
#[derive(Args, Debug)]
pub struct On {
    /// The daemon's config file (its [history] and [models.clip] are used).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/promptcam/promptcam.toml"
    )]
    pub config: PathBuf,
    /// The camera (its id: the name in lower case with underscores, as in the topics).
    #[arg(long, value_name = "CAMERA")]
    pub camera: String,
}

/// The config, camera and history a command works on.
pub struct Lab {
    pub config: Config,
    pub camera: CameraConfig,
    pub history: HistoryConfig,
    pub clip: ModelConfig,
    pub dir: ModelDir,
}

impl Lab {
    /// Loads `config` and finds `camera` (its id or name); `what` names the command in errors.
    pub fn open(on: &On, what: &str) -> Result<Lab> {
        let (config, camera) = (on.config.as_path(), on.camera.as_str());
        let cfg = crate::config::load(config)?;
        let history = cfg.history.clone().with_context(|| {
            format!("unable to {what}: the history is off in {}; set [history] enabled = true (or turn [http] on)", config.display())
        })?;
        let cam = cfg
            .cameras
            .iter()
            .find(|c| c.id == camera || c.name == camera)
            .cloned()
            .with_context(|| {
                let ids: Vec<&str> = cfg.cameras.iter().map(|c| c.id.as_str()).collect();
                format!(
                    "unable to {what}: no camera {camera:?} in {}; cameras: {}",
                    config.display(),
                    ids.join(", ")
                )
            })?;
        let clip = cfg.model(ModelKind::Clip).cloned().with_context(|| {
            format!("unable to {what}: it needs a [models.clip] table in the config")
        })?;
        let dir = ModelDir::open(&clip.dir)?;
        Ok(Lab {
            config: cfg,
            camera: cam,
            history,
            clip,
            dir,
        })
    }

    /// The history, read-only; it must exist.
    pub fn store(&self, what: &str) -> Result<Store> {
        let path = self.history.db_path();
        if !path.exists() {
            bail!(
                "unable to {what}: there is no history at {} yet; it is written by `promptcam run`",
                path.display()
            );
        }
        Store::open_read_only(&path)
    }

    pub fn identity(&self) -> Result<ModelIdentity> {
        ModelIdentity::of(
            &self.dir,
            Some(&self.history.state_dir().join("model-hashes.json")),
        )
    }

    /// The class embeddings of the camera's prompt made of pictures named `name` (and the logit
    /// scale), as the daemon makes them: CLIP alone is loaded, with the camera's CLIP prompts.
    /// `None` when no such prompt runs on the camera.
    pub fn picture_class(
        &self,
        name: &str,
    ) -> Result<Option<(crate::history::lab::QueryEmbeddings, f32)>> {
        let Some(i) = self
            .camera
            .prompts
            .iter()
            .position(|p| !p.examples.is_empty() && p.name == name)
        else {
            return Ok(None);
        };
        let mut only = self.config.clone();
        let mut cam = self.camera.clone();
        cam.prompts.retain(|p| p.is_clip_class());
        let Some(k) = cam
            .prompts
            .iter()
            .position(|p| p.id == self.camera.prompts[i].id)
        else {
            return Ok(None);
        };
        only.cameras = vec![cam.clone()];
        only.history = None;
        only.models.retain(|kind, _| *kind == ModelKind::Clip);
        let towers = crate::pipeline::towers::Towers::load(
            &only,
            None,
            &crate::pipeline::start_cache::StartCache::off(),
        )?;
        Ok(towers
            .prompt_models(&cam)?
            .iter()
            .flat_map(|m| m.picture_classes())
            .find(|(j, ..)| *j == k)
            .map(|(_, q, scale)| (q, scale)))
    }

    pub fn text_tower(&self) -> Result<ClipText> {
        ClipText::load(
            &self.dir,
            self.clip.precision.offline(&self.dir, "text_model"),
        )
    }
}

#[derive(Args, Debug)]
pub struct LearnArgs {
    #[command(flatten)]
    pub on: On,
    /// The lab question whose marks teach it.
    #[arg(long, value_name = "TEXT")]
    pub question: String,
    /// The learned prompt's name (its file: learned/<name>.json in the state directory).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// What the question's text must beat, for the prior; repeat for several (default: the
    /// camera's CLIP prompts).
    #[arg(long = "negative", value_name = "TEXT")]
    pub negatives: Vec<String>,
    /// Print the JSON of `/api/lab/learn`.
    #[arg(long)]
    pub json: bool,
}

pub fn learn(a: LearnArgs) -> Result<()> {
    let what = "learn";
    let lab = Lab::open(&a.on, what)?;
    let store = lab.store(what)?;
    let model = lab.identity()?;
    let tower = lab.text_tower()?;
    let query = Query {
        text: a.question.clone(),
        negatives: a.negatives.clone(),
        templates: vec![],
    };
    query.check()?;
    let r = teach::learn(
        &store,
        Some(&tower),
        &model,
        &lab.camera.id,
        &lab.camera.prompts,
        &query,
        &a.name,
        &lab.history.state_dir(),
        std::time::SystemTime::now(),
    )?;
    if a.json {
        println!("{}", crate::web::learned_json(&r));
        return Ok(());
    }
    let p = &r.prompt;
    println!(
        "learned {:?} from {} yes and {} no marks of {:?} on camera {} ({}-fold cross-validation, prior: {})",
        p.name, p.marks.yes, p.marks.no, p.question, p.camera, p.cv.folds, p.prior
    );
    println!(
        "cross-validated at threshold {:.3}: precision {:.3}, recall {:.3}, F1 {:.3}",
        p.threshold, p.cv.precision, p.cv.recall, p.cv.f1
    );
    if r.data.left_out > 0 {
        println!(
            "{} mark(s) left out: made with another CLIP model",
            r.data.left_out
        );
    }
    println!("written to {}; run it with:\n", r.file.display());
    print!("{}", teach::learned_toml(&p.camera, &r.file));
    Ok(())
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["prompt", "learned"])))]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub on: On,
    /// A text prompt, measured on the frames marked for it.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// What the text prompt must beat; repeat for several (default: the camera's CLIP prompts).
    #[arg(long = "negative", value_name = "TEXT", requires = "prompt")]
    pub negatives: Vec<String>,
    /// A learned prompt (its name), measured on its question's marks it was not trained on.
    #[arg(long, value_name = "NAME")]
    pub learned: Option<String>,
    /// The threshold (default: the running prompt's, the learned prompt's own, or the config
    /// default).
    #[arg(long, value_name = "T")]
    pub threshold: Option<f32>,
    /// Print the JSON of `/api/lab/evaluate`.
    #[arg(long)]
    pub json: bool,
}

pub fn evaluate(a: EvaluateArgs) -> Result<()> {
    let what = "evaluate";
    let lab = Lab::open(&a.on, what)?;
    if let Some(t) = a.threshold.filter(|t| !(0.0..=1.0).contains(t)) {
        bail!("unable to evaluate: --threshold {t} is outside 0..=1");
    }
    let store = lab.store(what)?;
    let model = lab.identity()?;
    let prompts = &lab.camera.prompts;
    let e = match (&a.prompt, &a.learned) {
        (_, Some(name)) => {
            let state = lab.history.state_dir();
            let (l, running) = teach::find_learned(name, prompts, Some(&state))?;
            let t = a.threshold.or(running).unwrap_or(l.threshold);
            teach::evaluate_learned(&store, &model, &lab.camera.id, &l, t)?
        }
        (Some(text), None) => {
            let query = Query {
                text: text.clone(),
                negatives: a.negatives.clone(),
                templates: vec![],
            };
            query.check()?;
            let running = prompts
                .iter()
                .find(|p| p.text == text.trim())
                .map(|p| p.decide.threshold);
            let t = a
                .threshold
                .or(running)
                .unwrap_or(DecideConfig::default().threshold);
            match lab.picture_class(text.trim())? {
                // a prompt made of pictures: its classes as the daemon makes them
                Some((qe, scale)) => teach::evaluate_class(
                    &store,
                    &model,
                    &lab.camera.id,
                    text.trim(),
                    &qe,
                    scale,
                    t,
                )?,
                None => {
                    let tower = lab.text_tower()?;
                    teach::evaluate_text(
                        &store,
                        &tower,
                        &model,
                        &lab.camera.id,
                        prompts,
                        &query,
                        t,
                    )?
                }
            }
        }
        (None, None) => bail!("unable to evaluate: give --prompt TEXT or --learned NAME"),
    };
    if a.json {
        println!("{}", serde_json::to_string(&e)?);
        return Ok(());
    }
    println!(
        "{:?} on camera {}, {} yes and {} no marks ({}): threshold {:.3}",
        e.prompt, e.camera, e.marked.yes, e.marked.no, e.on, e.threshold
    );
    println!(
        "precision {:.3}, recall {:.3}, F1 {:.3}; {} missed, {} false alarm(s)",
        e.precision,
        e.recall,
        e.f1,
        e.missed.iter().map(|h| h.count).sum::<usize>(),
        e.false_alarms.iter().map(|h| h.count).sum::<usize>()
    );
    if let Some(b) = e.best {
        println!(
            "best F1 {:.3} at threshold {:.3} (precision {:.3}, recall {:.3})",
            b.f1, b.threshold, b.precision, b.recall
        );
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum LabelsCommand {
    /// Write a question's marks (embeddings, times and thumbnails) to one file.
    Export(ExportArgs),
    /// Read marks written by `labels export` into this history (the same CLIP model is required).
    Import(ImportArgs),
}

#[derive(Args, Debug)]
pub struct LabelsArgs {
    #[command(subcommand)]
    pub command: LabelsCommand,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub on: On,
    #[arg(long, value_name = "TEXT")]
    pub question: String,
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub on: On,
    /// A file written by `promptcam labels export`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// The labels file's format name and version.
const LABELS_FORMAT: &str = "promptcam-labels";
const LABELS_VERSION: u32 = 1;

/// A labels file: one question's marks with what learning needs.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelsFile {
    format: String,
    version: u32,
    camera: String,
    question: String,
    model: ModelIdentity,
    exported: String,
    marks: Vec<LabelRow>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelRow {
    frame: i64,
    yes: bool,
    t_ms: i64,
    /// The embedding as stored: little-endian f16, base64.
    embedding: String,
    /// The thumbnail (JPEG), base64.
    thumbnail: Option<String>,
}

pub fn labels(a: LabelsArgs) -> Result<()> {
    match a.command {
        LabelsCommand::Export(a) => export(a),
        LabelsCommand::Import(a) => import(a),
    }
}

fn export(a: ExportArgs) -> Result<()> {
    let what = "export labels";
    let lab = Lab::open(&a.on, what)?;
    let store = lab.store(what)?;
    let model = lab.identity()?;
    let question = a.question.trim();
    let b64 = base64::engine::general_purpose::STANDARD;
    let marks = store.marked(&lab.camera.id, question, true)?;
    let mut left_out = 0;
    let rows: Vec<LabelRow> = marks
        .iter()
        .filter_map(|m| {
            let ours = m.model.as_ref().is_some_and(|i| i.sha256 == model.sha256);
            match (ours, &m.v, m.t_ms) {
                (true, Some(v), Some(t_ms)) => Some(LabelRow {
                    frame: m.frame,
                    yes: m.yes,
                    t_ms,
                    embedding: b64.encode(v),
                    thumbnail: m.jpeg.as_ref().map(|j| b64.encode(j)),
                }),
                _ => {
                    left_out += 1;
                    None
                }
            }
        })
        .collect();
    if rows.is_empty() {
        bail!(
            "unable to export labels: camera {} has no marks for {question:?} made with {model}{}; \
             questions with marks: {}",
            lab.camera.id,
            if left_out > 0 { format!(" ({left_out} with another model)") } else { String::new() },
            describe_questions(&store, &lab.camera.id)?
        );
    }
    let yes = rows.iter().filter(|r| r.yes).count();
    let file = LabelsFile {
        format: LABELS_FORMAT.into(),
        version: LABELS_VERSION,
        camera: lab.camera.id.clone(),
        question: question.to_string(),
        model: model.clone(),
        exported: crate::event::rfc3339(std::time::SystemTime::now()),
        marks: rows,
    };
    crate::model::identity::write_atomically(&a.out, &serde_json::to_vec(&file)?)?;
    println!(
        "exported {} marks ({yes} yes, {} no) of {question:?} on camera {}, model {model}, to {}{}",
        file.marks.len(),
        file.marks.len() - yes,
        lab.camera.id,
        a.out.display(),
        if left_out > 0 {
            format!("; {left_out} left out (another CLIP model)")
        } else {
            String::new()
        }
    );
    Ok(())
}

fn describe_questions(store: &Store, camera: &str) -> Result<String> {
    let q = store.questions(camera)?;
    Ok(if q.is_empty() {
        "none".into()
    } else {
        q.iter()
            .map(|(q, y, n)| format!("{q:?} ({y} yes, {n} no)"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn import(a: ImportArgs) -> Result<()> {
    let what = "import labels";
    let lab = Lab::open(&a.on, what)?;
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("unable to read {}", a.file.display()))?;
    let file: LabelsFile = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "unable to import {}: it is not a file `promptcam labels export` wrote",
            a.file.display()
        )
    })?;
    if file.format != LABELS_FORMAT || file.version != LABELS_VERSION {
        bail!(
            "unable to import {}: it is {} version {}; this promptcam reads {LABELS_FORMAT} version {LABELS_VERSION}",
            a.file.display(),
            file.format,
            file.version
        );
    }
    let model = lab.identity()?;
    if file.model.sha256 != model.sha256 {
        bail!(
            "unable to import {}: its marks were embedded by the CLIP model {}, and this config runs {}; \
             embeddings of different models cannot be mixed: import it where that model runs",
            a.file.display(),
            file.model,
            model
        );
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let marks = file
        .marks
        .iter()
        .map(|r| {
            let v = b64
                .decode(&r.embedding)
                .with_context(|| format!("frame {}'s embedding is not base64", r.frame))?;
            let jpeg = r
                .thumbnail
                .as_ref()
                .map(|t| b64.decode(t))
                .transpose()
                .with_context(|| format!("frame {}'s thumbnail is not base64", r.frame))?;
            Ok(Marked {
                frame: r.frame,
                yes: r.yes,
                t_ms: Some(r.t_ms),
                model: Some(file.model.clone()),
                v: Some(v),
                pictured: jpeg.is_some(),
                jpeg,
            })
        })
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("unable to import {}", a.file.display()))?;
    let mut store = Store::open(&lab.history.dir)?;
    let (added, skipped) = store.import_marks(&lab.camera.id, &file.question, &model, &marks)?;
    println!(
        "imported {added} marks of {:?} into camera {} ({skipped} already there)",
        file.question, lab.camera.id
    );
    Ok(())
}
