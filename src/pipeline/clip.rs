//! CLIP prompts: each CLIP prompt's class (its text, or the mean of its ensemble templates)
//! scored against the classes it must beat (its `negatives`, else the camera's other CLIP
//! prompts) on the region of interest, through the shared image tower; a learned prompt scores
//! the same embedding with its own weights (one dot product). The frame's embedding is kept for
//! the history, with the identity of the model that made it, also on cameras whose prompts are
//! all of other kinds.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{crop, Observation, PromptModel};
use crate::config::PromptConfig;
use crate::frame::Frame;
use crate::history::lab::QueryEmbeddings;
use crate::learn::file::LearnedPrompt;
use crate::model::clip::{class_embedding, dot, ensemble_texts, prompt_score};
use crate::model::examples::example_key;
use crate::model::identity::ModelIdentity;
use crate::model::ClipImage;
use crate::model::ModelKind;
use crate::preprocess::Preprocessor;

pub struct ClipPrompts {
    image: Arc<ClipImage>,
    identity: Arc<ModelIdentity>,
    /// Learned prompts: index on the camera, weights.
    learned: Vec<(usize, Arc<LearnedPrompt>)>,
    preprocess: Preprocessor,
    /// Class embeddings: each prompt's own, and each negative's.
    classes: Vec<Vec<f32>>,
    /// Per CLIP prompt: its index on the camera, its class, the classes it must beat.
    compare: Vec<(usize, usize, Vec<usize>)>,
    /// The camera's prompts made of pictures (indices).
    pictures: Vec<usize>,
    prompts: Vec<usize>,
    embedding: Option<Vec<f32>>,
}

impl ClipPrompts {
    /// The CLIP prompts among a camera's `prompts` (none: embeddings only); `texts` holds the
    /// normalized embedding of every text they use (made by the text tower while the models load).
    pub fn new(
        image: Arc<ClipImage>,
        identity: Arc<ModelIdentity>,
        prompts: &[PromptConfig],
        texts: &BTreeMap<String, Vec<f32>>,
    ) -> Result<ClipPrompts> {
        let clip: Vec<(usize, &PromptConfig)> = prompts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_clip_class())
            .collect();
        let learned: Vec<(usize, Arc<LearnedPrompt>)> = prompts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p.learned.as_ref()?.prompt.clone())))
            .collect();
        // classes by their texts; a class shared by two prompts (or a prompt and a negative) once
        let mut class_texts: Vec<Vec<String>> = vec![];
        let mut class_of = |t: Vec<String>| match class_texts.iter().position(|c| c[0] == t[0]) {
            Some(i) => i,
            None => {
                class_texts.push(t);
                class_texts.len() - 1
            }
        };
        // a prompt made of pictures is the class of their embeddings (`examples.rs`)
        let own: Vec<usize> = clip
            .iter()
            .map(|(_, p)| match p.examples.is_empty() {
                true => class_of(ensemble_texts(&p.text, &p.ensemble)),
                false => class_of(vec![example_key(&p.examples)]),
            })
            .collect();
        let mut compare = vec![];
        for (k, (i, p)) in clip.iter().enumerate() {
            let beat: Vec<usize> = if p.negatives.is_empty() && p.negative_examples.is_empty() {
                (0..clip.len())
                    .filter(|j| *j != k)
                    .map(|j| own[j])
                    .collect()
            } else {
                let texts = p.negatives.iter().map(|n| vec![n.clone()]);
                let pictures = p
                    .negative_examples
                    .iter()
                    .map(|e| vec![example_key(std::slice::from_ref(e))]);
                texts.chain(pictures).map(&mut class_of).collect()
            };
            compare.push((*i, own[k], beat));
        }
        let mut classes = vec![];
        for class in &class_texts {
            let rows = class
                .iter()
                .map(|t| {
                    texts
                        .get(t)
                        .map(Vec::as_slice)
                        .with_context(|| format!("no text embedding for {t:?}"))
                })
                .collect::<Result<Vec<_>>>()?;
            classes.push(class_embedding(rows));
        }
        Ok(ClipPrompts {
            preprocess: image.preprocessor(),
            image,
            identity,
            classes,
            prompts: compare
                .iter()
                .map(|c| c.0)
                .chain(learned.iter().map(|l| l.0))
                .collect(),
            compare,
            learned,
            pictures: clip
                .iter()
                .filter(|(_, p)| !p.examples.is_empty())
                .map(|(i, _)| *i)
                .collect(),
            embedding: None,
        })
    }
}

impl PromptModel for ClipPrompts {
    fn kind(&self) -> ModelKind {
        ModelKind::Clip
    }

    fn prompts(&self) -> &[usize] {
        &self.prompts
    }

    fn observe(&mut self, frame: &Frame, roi: Option<[u32; 4]>) -> Result<Vec<Observation>> {
        // CLIP classifies the region of interest, not the whole frame
        let pixels = match roi {
            Some(r) => self.preprocess.run(&crop(&frame.image, r))?,
            None => self.preprocess.run(&frame.image)?,
        };
        let emb = self.image.embed_pixels(pixels)?;
        let sims: Vec<f32> = self.classes.iter().map(|c| dot(c, &emb)).collect();
        let scale = self.image.logit_scale;
        let out = self
            .compare
            .iter()
            .map(|(prompt, own, beat)| Observation {
                prompt: *prompt,
                score: prompt_score(sims[*own], beat.iter().map(|b| sims[*b]), scale),
                bbox: None,
            })
            .chain(self.learned.iter().map(|(prompt, l)| Observation {
                prompt: *prompt,
                score: l.score(&emb),
                bbox: None,
            }))
            .collect();
        self.embedding = Some(emb);
        Ok(out)
    }

    fn picture_classes(&self) -> Vec<(usize, QueryEmbeddings, f32)> {
        self.compare
            .iter()
            .filter(|(prompt, ..)| self.pictures.contains(prompt))
            .map(|(prompt, own, beat)| {
                let q = QueryEmbeddings {
                    own: self.classes[*own].clone(),
                    negatives: beat.iter().map(|b| self.classes[*b].clone()).collect(),
                };
                (*prompt, q, self.image.logit_scale)
            })
            .collect()
    }

    fn embedding(&self) -> Option<(&Arc<ModelIdentity>, &[f32])> {
        Some((&self.identity, self.embedding.as_deref()?))
    }
}
