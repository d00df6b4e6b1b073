//! Towers: the loaded models, one per model kind, shared by every camera that uses it, and the
//! registry that builds each camera's prompt models on them.
//!
//! CLIP's image tower serves every camera (each keeps its own prompts' text embeddings). A
//! detector's or segmenter's graph holds the prompts of every camera that uses it (its text side
//! is folded in once), and each camera reads its own prompts from it. Memory therefore grows
//! with the prompts, not with the cameras. A reload keeps the towers whose model and prompts did
//! not change.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::clip::ClipPrompts;
use super::detect::DetectPrompts;
use super::segment::SegPrompts;
use super::start_cache::{self, StartCache};
use super::tree::{TreeBackends, TreePrompts};
use super::{precision, PromptModel};
use crate::config::{tree_texts, TreeLeaf};
use crate::config::{CameraConfig, Config, ModelConfig};
use crate::model::clip::ensemble_texts;
use crate::model::examples::{example_key, tower_embedding};
use crate::model::identity::ModelIdentity;
use crate::model::tree::Op;
use crate::model::{ClipImage, ClipSeg, ClipText, Detector, ModelDir};
use crate::model::{ModelKind, Precision, PrecisionChoice};

/// A model loaded with a prompt set (in its order), what it was loaded from and the precision
/// it runs in (`quantized = "auto"` resolved).
struct Shared<M> {
    model: Arc<M>,
    texts: Vec<String>,
    from: ModelConfig,
    precision: Precision,
    /// Its ms a frame at a thread count, when the precision choice timed it.
    timed: Option<(usize, f64)>,
}

impl<M> Clone for Shared<M> {
    fn clone(&self) -> Self {
        Shared {
            model: self.model.clone(),
            texts: self.texts.clone(),
            from: self.from.clone(),
            precision: self.precision,
            timed: self.timed,
        }
    }
}

/// CLIP's image tower, what it was loaded from, its precision and its checkpoint's identity
/// (which the history stores with each embedding, and learned prompts must match).
#[derive(Clone)]
struct ClipTower {
    image: Arc<ClipImage>,
    from: ModelConfig,
    precision: Precision,
    identity: Arc<ModelIdentity>,
    timed: Option<(usize, f64)>,
}

/// Every loaded model of a config.
#[derive(Clone, Default)]
pub struct Towers {
    clip: Option<ClipTower>,
    detectors: BTreeMap<ModelKind, Shared<Detector>>,
    seg: Option<Shared<ClipSeg>>,
    /// CLIP text embeddings of every CLIP prompt text and negative of the config.
    texts: BTreeMap<String, Vec<f32>>,
}

/// The model table a kind's prompts run on.
pub fn model_config(config: &Config, kind: ModelKind) -> Option<&ModelConfig> {
    config.model(kind)
}

/// The prompt texts of `kind` over all cameras, each once, in config order.
fn texts_of(config: &Config, kind: ModelKind) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let of_kind = || {
        config
            .cameras
            .iter()
            .flat_map(|c| &c.prompts)
            .filter(move |p| p.model == kind)
    };
    for p in of_kind().filter(|p| p.tree.is_none()) {
        if !out.contains(&p.text) {
            out.push(p.text.clone());
        }
    }
    // a tree's detection prompts ride on the detector its `model` names
    if kind.is_detector() {
        for t in tree_texts(of_kind(), Op::Detect) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

fn model_of(config: &Config, kind: ModelKind) -> Result<&ModelConfig> {
    model_config(config, kind)
        .with_context(|| format!("{} prompts need [models.{}]", kind.title(), kind.name()))
}

/// `previous`'s model when it was loaded from the same table with the same prompts, else
/// `load`'s, in the precision the table's `quantized` resolves to (`precision::load`; `run`
/// analyses one frame with it).
fn reuse_or<M>(
    previous: Option<&Shared<M>>,
    cache: &StartCache,
    kind: ModelKind,
    from: &ModelConfig,
    texts: Vec<String>,
    load: impl Fn(&ModelDir, Precision, &[String]) -> Result<M>,
    run: impl FnMut(&mut M) -> Result<()>,
) -> Result<Shared<M>> {
    if let Some(p) = previous.filter(|p| p.from == *from && p.texts == texts) {
        return Ok(p.clone());
    }
    let dir = ModelDir::open(&from.dir)?;
    let memo = precision::Memo::new(cache, kind, from);
    let (model, precision) = precision::load(
        kind,
        from.precision,
        &dir,
        &memo,
        |p| load(&dir, p, &texts),
        run,
    )?;
    Ok(Shared {
        model: Arc::new(model),
        texts,
        from: from.clone(),
        precision,
        timed: memo.timed(),
    })
}

impl Towers {
    /// Loads what `config`'s cameras need, reusing `previous`'s towers where nothing changed.
    /// The biggest models load first, so the smaller ones' load peaks sit on resident memory
    /// (both full-size int8 models, measured: 530 -> 470 MB peak), and with a fixed precision
    /// the CLIP text tower is dropped before the image tower loads; under `quantized = "auto"`
    /// the image tower is timed first, and the text tower follows its precision. `cache` holds
    /// what an earlier start measured (`start_cache`): the precisions chosen and the CLIP text
    /// embeddings, so that only the chosen precision loads, and the text tower only for texts
    /// it has not embedded before.
    pub fn load(config: &Config, previous: Option<&Towers>, cache: &StartCache) -> Result<Towers> {
        let parallel = loads_in_parallel(config, previous, cache);
        std::thread::scope(|s| -> Result<Towers> {
            // the CLIP towers load beside the detectors when nothing is timed (a warm start)
            let clip = match parallel {
                true => Some(
                    std::thread::Builder::new()
                        .name("load-clip".into())
                        .spawn_scoped(s, || Towers::load_clip(config, previous, cache))
                        .context("unable to start a thread to load CLIP")?,
                ),
                false => None,
            };
            let mut towers = Towers::default();
            let detectors = towers.load_detectors(config, previous, cache);
            // joined before any error returns: a panic there becomes an error, not the scope's
            let clip = clip.map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("the thread loading CLIP panicked"))
            });
            detectors?;
            let (clip, texts) = match clip {
                Some(joined) => joined??,
                None => Towers::load_clip(config, previous, cache)?,
            };
            towers.clip = clip;
            towers.texts = texts;
            towers.load_seg(config, previous, cache)?;
            Ok(towers)
        })
    }

    fn load_detectors(
        &mut self,
        config: &Config,
        previous: Option<&Towers>,
        cache: &StartCache,
    ) -> Result<()> {
        let frame = precision::blank_frame();
        for kind in [ModelKind::OwlVit, ModelKind::Owlv2] {
            let texts = texts_of(config, kind);
            if texts.is_empty() {
                continue;
            }
            let from = model_of(config, kind)?;
            let old = previous.and_then(|p| p.detectors.get(&kind));
            let shared = reuse_or(
                old,
                cache,
                kind,
                from,
                texts,
                |dir, p, texts| {
                    Detector::load(dir, p, texts, from.input_size)
                        .with_context(|| format!("unable to load {}", kind.title()))
                },
                |d| run_detector(d, &frame),
            )?;
            self.detectors.insert(kind, shared);
        }
        Ok(())
    }

    /// CLIP's image tower and the text embeddings of the config's CLIP prompts.
    #[allow(clippy::type_complexity)]
    fn load_clip(
        config: &Config,
        previous: Option<&Towers>,
        cache: &StartCache,
    ) -> Result<(Option<ClipTower>, BTreeMap<String, Vec<f32>>)> {
        let mut towers = Towers::default();
        let frame = precision::blank_frame();
        // with a history, every camera's frames get a CLIP embedding for the prompt lab
        let clip_texts = clip_texts(config);
        let examples = example_classes(config);
        let learned = learned_prompts(config);
        let wants_clip = !clip_texts.is_empty()
            || !examples.is_empty()
            || !learned.is_empty()
            || config.history.is_some();
        if let (true, Some(from)) = (wants_clip, config.model(ModelKind::Clip)) {
            let known = previous.filter(|p| p.clip.as_ref().is_some_and(|c| c.from == *from));
            let missing: Vec<String> = clip_texts
                .iter()
                .filter(|t| !known.is_some_and(|p| p.texts.contains_key(*t)))
                .cloned()
                .collect();
            if let Some(p) = known {
                towers.texts = p.texts.clone();
            }
            let dir = ModelDir::open(&from.dir)?;
            let identity = match known.and_then(|p| p.clip.as_ref()) {
                Some(c) => c.identity.clone(),
                None => Arc::new(ModelIdentity::of(&dir, identity_cache(config).as_deref())?),
            };
            // a learned prompt reads this model's embeddings only: refused before anything loads
            for l in &learned {
                crate::learn::file::check_model(&l.prompt, &l.path, &identity)?;
            }
            let (machine, files) = (start_cache::machine(), start_cache::files_stamp(&from.dir));
            let text_key = |p: Precision, text: &str| {
                start_cache::key(&[&machine, "clip text", &files, p.name(), text])
            };
            let embed_missing = |towers: &mut Towers, p: Precision| -> Result<()> {
                let mut unknown = vec![];
                for t in &missing {
                    match cache.text(&text_key(p, t)) {
                        Some(v) => {
                            towers.texts.insert(t.clone(), v);
                        }
                        None => unknown.push(t.clone()),
                    }
                }
                if missing.len() > unknown.len() {
                    tracing::info!(
                        "CLIP: {} of {} text embedding(s) from the start cache",
                        missing.len() - unknown.len(),
                        missing.len()
                    );
                }
                if unknown.is_empty() {
                    return Ok(());
                }
                let tower = ClipText::load(&dir, p).context("unable to load CLIP's text tower")?;
                for (t, v) in unknown.iter().zip(tower.embed(&unknown)?) {
                    cache.put_text(&text_key(p, t), &v);
                    towers.texts.insert(t.clone(), v);
                }
                Ok(())
            };
            let fixed = match from.precision {
                PrecisionChoice::Auto => None,
                c => Some(c.offline(&dir, "vision_model")),
            };
            if let Some(p) = fixed {
                embed_missing(&mut towers, p)?;
            }
            let (image, from, precision, timed) = match known.and_then(|p| p.clip.clone()) {
                Some(c) => (c.image, c.from, c.precision, c.timed),
                None => {
                    let memo = precision::Memo::new(cache, ModelKind::Clip, from);
                    let (image, p) = precision::load(
                        ModelKind::Clip,
                        from.precision,
                        &dir,
                        &memo,
                        |p| ClipImage::load(&dir, p).context("unable to load CLIP"),
                        |c| run_clip(c, &frame),
                    )?;
                    (image, from.clone(), p, memo.timed())
                }
            };
            if fixed.is_none() {
                embed_missing(&mut towers, precision)?;
            }
            for (key, specs) in examples {
                if let std::collections::btree_map::Entry::Vacant(slot) = towers.texts.entry(key) {
                    slot.insert(
                        tower_embedding(&image, &specs).with_context(|| {
                            format!("unable to make the example prompt {specs:?}")
                        })?,
                    );
                }
            }
            towers.clip = Some(ClipTower {
                image,
                from,
                precision,
                identity,
                timed,
            });
        } else if !clip_texts.is_empty() {
            model_of(config, ModelKind::Clip)?;
        }
        Ok((towers.clip, towers.texts))
    }

    fn load_seg(
        &mut self,
        config: &Config,
        previous: Option<&Towers>,
        cache: &StartCache,
    ) -> Result<()> {
        let frame = precision::blank_frame();
        let texts = texts_of(config, ModelKind::ClipSeg);
        if !texts.is_empty() {
            let from = model_of(config, ModelKind::ClipSeg)?;
            let old = previous.and_then(|p| p.seg.as_ref());
            self.seg = Some(reuse_or(
                old,
                cache,
                ModelKind::ClipSeg,
                from,
                texts,
                |dir, p, texts| ClipSeg::load(dir, p, texts).context("unable to load CLIPSeg"),
                |m| run_seg(m, &frame),
            )?);
        }
        Ok(())
    }

    /// A camera's prompt models on these towers, in the order they run: CLIP first (the
    /// detector cascade reads its prompts' states), then the detectors, then segmentation.
    pub fn prompt_models(&self, cam: &CameraConfig) -> Result<Vec<Box<dyn PromptModel>>> {
        let mut models: Vec<Box<dyn PromptModel>> = vec![];
        if let Some(c) = &self.clip {
            models.push(Box::new(ClipPrompts::new(
                c.image.clone(),
                c.identity.clone(),
                &cam.prompts,
                &self.texts,
            )?));
        }
        let of_kind = |kind: ModelKind, texts: &[String]| -> (Vec<usize>, Vec<usize>) {
            cam.prompts
                .iter()
                .enumerate()
                .filter(|(_, p)| p.model == kind && p.tree.is_none())
                .filter_map(|(i, p)| Some((i, texts.iter().position(|t| *t == p.text)?)))
                .unzip()
        };
        for (kind, d) in &self.detectors {
            let (prompts, queries) = of_kind(*kind, &d.texts);
            if !prompts.is_empty() {
                models.push(Box::new(DetectPrompts::new(
                    *kind,
                    d.model.clone(),
                    prompts,
                    queries,
                )));
            }
        }
        if let Some(s) = &self.seg {
            let (prompts, queries) = of_kind(ModelKind::ClipSeg, &s.texts);
            if !prompts.is_empty() {
                let thresholds = prompts
                    .iter()
                    .map(|i| cam.prompts[*i].mask_threshold)
                    .collect();
                models.push(Box::new(SegPrompts::new(
                    s.model.clone(),
                    prompts,
                    queries,
                    thresholds,
                )));
            }
        }
        for (leaf, rest) in cam.prompts.iter().enumerate() {
            // one model per tree, made at its first leaf
            let Some(t) = rest.tree.as_ref().filter(|t| t.leaf == 0) else {
                continue;
            };
            let leaves: Vec<usize> = (leaf..cam.prompts.len())
                .filter(|i| {
                    cam.prompts[*i]
                        .tree
                        .as_ref()
                        .is_some_and(|o| Arc::ptr_eq(&o.tree, &t.tree))
                })
                .collect();
            models.push(Box::new(self.tree_prompts(rest.model, t, leaves)?));
        }
        Ok(models)
    }

    /// A tree prompt's model on these towers: its detection prompts among its detector's, its
    /// classification texts' embeddings.
    fn tree_prompts(
        &self,
        kind: ModelKind,
        t: &TreeLeaf,
        leaves: Vec<usize>,
    ) -> Result<TreePrompts> {
        let tree = &t.tree;
        let detector = match tree.detects() {
            false => None,
            true => {
                let d = self.detectors.get(&kind).with_context(|| {
                    format!("the tree {:?} needs {}", tree.source, kind.title())
                })?;
                let queries = tree
                    .texts(Op::Detect)
                    .iter()
                    .map(|t| d.texts.iter().position(|d| d == t))
                    .collect::<Option<Vec<usize>>>()
                    .with_context(|| {
                        format!("{} was loaded without the tree's prompts", kind.title())
                    })?;
                Some((d.model.clone(), queries))
            }
        };
        let clip = match tree.classifies() {
            false => None,
            true => {
                let image = &self
                    .clip
                    .as_ref()
                    .context("the tree's classifications need CLIP")?
                    .image;
                let texts = tree
                    .texts(Op::Classify)
                    .iter()
                    .map(|t| {
                        self.texts
                            .get(t)
                            .cloned()
                            .with_context(|| format!("no text embedding for {t:?}"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some((image.clone(), texts))
            }
        };
        TreePrompts::new(
            kind,
            tree.clone(),
            t.threshold,
            leaves,
            TreeBackends { detector, clip },
        )
    }

    /// Runs every loaded model once on `image` (to measure the thread count on them).
    pub fn run_once(&self, image: &image::RgbImage) -> Result<()> {
        if let Some(c) = &self.clip {
            run_clip(&c.image, image)?;
        }
        for d in self.detectors.values() {
            run_detector(&d.model, image)?;
        }
        if let Some(s) = &self.seg {
            run_seg(&s.model, image)?;
        }
        Ok(())
    }

    /// The loaded models' ms a frame together, when the precision choice timed every one of
    /// them at the same thread count: (threads, ms), one candidate the thread measurement need
    /// not run again.
    pub fn timed(&self) -> Option<(usize, f64)> {
        let mut all = vec![];
        if let Some(c) = &self.clip {
            all.push(c.timed);
        }
        all.extend(self.detectors.values().map(|d| d.timed));
        all.extend(self.seg.iter().map(|s| s.timed));
        let all: Vec<(usize, f64)> = all.into_iter().collect::<Option<_>>()?;
        let threads = all.first()?.0;
        all.iter()
            .all(|(n, _)| *n == threads)
            .then(|| (threads, all.iter().map(|(_, ms)| ms).sum()))
    }

    /// What a thread count measured on these towers depends on: each loaded model's files,
    /// input size and precision, on this machine (`start_cache`).
    pub fn calibration_key(&self) -> String {
        let mut parts = vec![
            start_cache::machine(),
            format!("{:?}", crate::model::device::current()),
        ];
        let mut add = |kind: ModelKind, from: &ModelConfig, p: Precision| {
            parts.push(format!(
                "{} {} {:?} {}",
                kind.name(),
                start_cache::files_stamp(&from.dir),
                from.input_size,
                p.name()
            ))
        };
        if let Some(c) = &self.clip {
            add(ModelKind::Clip, &c.from, c.precision);
        }
        for (kind, d) in &self.detectors {
            add(*kind, &d.from, d.precision);
        }
        if let Some(s) = &self.seg {
            add(ModelKind::ClipSeg, &s.from, s.precision);
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        start_cache::key(&parts)
    }

    /// The identity of the CLIP checkpoint that embeds frames, if CLIP is loaded.
    pub fn clip_identity(&self) -> Option<Arc<ModelIdentity>> {
        self.clip.as_ref().map(|c| c.identity.clone())
    }

    /// The precision `kind`'s loaded model runs in (`quantized = "auto"` resolved), if loaded.
    pub fn precision(&self, kind: ModelKind) -> Option<Precision> {
        match kind {
            ModelKind::Clip => self.clip.as_ref().map(|c| c.precision),
            ModelKind::ClipSeg => self.seg.as_ref().map(|s| s.precision),
            _ => self.detectors.get(&kind).map(|d| d.precision),
        }
    }

    /// The files each loaded model runs from, by kind (for `check`).
    pub fn describe(&self) -> Vec<(ModelKind, String)> {
        let mut out = vec![];
        if let Some(c) = &self.clip {
            out.push((
                ModelKind::Clip,
                format!(
                    "{}; model {}",
                    c.image
                        .files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    c.identity
                ),
            ));
        }
        for (kind, d) in &self.detectors {
            out.push((*kind, format!("{} prompt(s)", d.texts.len())));
        }
        if let Some(s) = &self.seg {
            out.push((ModelKind::ClipSeg, format!("{} prompt(s)", s.texts.len())));
        }
        out
    }
}

/// One analysed frame of each kind of model: what `run_once` and the precision timing run.
fn run_clip(c: &ClipImage, image: &image::RgbImage) -> Result<()> {
    c.embed_pixels(c.preprocessor().run(image)?).map(drop)
}

fn run_detector(d: &Detector, image: &image::RgbImage) -> Result<()> {
    d.detect(image, 1.0).map(drop)
}

fn run_seg(m: &ClipSeg, image: &image::RgbImage) -> Result<()> {
    m.masks_of(image).map(drop)
}

/// Whether CLIP can load beside the detectors: when neither times its precisions (they are
/// fixed, or remembered in `cache`: timing two models at once would skew both), there is
/// memory to spare for two loads' peaks, and the models run on the CPU.
fn loads_in_parallel(config: &Config, previous: Option<&Towers>, cache: &StartCache) -> bool {
    let untimed = |kind: ModelKind, from: &ModelConfig| {
        from.precision == PrecisionChoice::Fp32
            || cache
                .timing(&precision::Memo::new(cache, kind, from).key)
                .is_some()
    };
    let mut loads = 0;
    for kind in [ModelKind::OwlVit, ModelKind::Owlv2] {
        let Some(from) = config.model(kind) else {
            continue;
        };
        let reused = previous
            .and_then(|p| p.detectors.get(&kind))
            .is_some_and(|d| d.from == *from);
        if texts_of(config, kind).is_empty() || reused {
            continue;
        }
        if !untimed(kind, from) {
            return false;
        }
        loads += 1;
    }
    let Some(clip) = config.model(ModelKind::Clip) else {
        return false;
    };
    if previous
        .and_then(|p| p.clip.as_ref())
        .is_some_and(|c| c.from == *clip)
        || !untimed(ModelKind::Clip, clip)
    {
        return false;
    }
    loads > 0
        && crate::model::device::current() == crate::model::device::Device::Cpu
        && precision::available_memory().is_none_or(|b| b >= PARALLEL_MEMORY)
}

/// Loading CLIP beside a detector needs this much available memory (full-size int8 loads peak
/// at a few hundred MB each; a 2 GB board loads one at a time).
const PARALLEL_MEMORY: u64 = 2 << 30;

/// Every learned prompt of the config.
fn learned_prompts(config: &Config) -> Vec<&crate::config::Learned> {
    config
        .cameras
        .iter()
        .flat_map(|c| &c.prompts)
        .filter_map(|p| p.learned.as_ref())
        .collect()
}

/// Where model hashes are remembered between runs: beside the history, in the state directory.
fn identity_cache(config: &Config) -> Option<std::path::PathBuf> {
    config
        .history
        .as_ref()
        .map(|h| h.state_dir().join("model-hashes.json"))
}

/// Every class of example pictures in the config (a prompt's `examples` together, each of its
/// `negative_examples` alone), by key.
fn example_classes(config: &Config) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = vec![];
    for p in config.cameras.iter().flat_map(|c| &c.prompts) {
        let own = (!p.examples.is_empty()).then(|| p.examples.clone());
        for specs in own
            .into_iter()
            .chain(p.negative_examples.iter().map(|e| vec![e.clone()]))
        {
            let key = example_key(&specs);
            if !out.iter().any(|(k, _)| *k == key) {
                out.push((key, specs));
            }
        }
    }
    out
}

/// Every text a CLIP prompt of the config embeds: its own (or its ensemble's) and its negatives.
fn clip_texts(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for p in config
        .cameras
        .iter()
        .flat_map(|c| &c.prompts)
        .filter(|p| p.is_clip_class())
    {
        // an example prompt's own class comes from pictures (`example_classes`)
        let own = match p.examples.is_empty() {
            true => ensemble_texts(&p.text, &p.ensemble),
            false => vec![],
        };
        for t in own.into_iter().chain(p.negatives.iter().cloned()) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    // a tree's classification alternatives are CLIP texts too
    let prompts = config.cameras.iter().flat_map(|c| &c.prompts);
    for t in tree_texts(prompts, Op::Classify) {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}
