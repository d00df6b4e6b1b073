//! Prompt: one `[[cameras.prompts]]` table — its text and model, the decision rule (thresholds
//! with hysteresis, window, delays) and the settings that apply to one model kind only.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use super::raw::RawPrompt;
use super::runtime::{MAX_NEGATIVES, MAX_TEXT};
use super::validate::Validator;
use super::{make_id, Learned, ModelConfig, PromptConfig};
use crate::decide::DecideConfig;
use crate::learn::file::LearnedPrompt;
use crate::model::ModelKind;

impl Validator<'_> {
    pub(super) fn prompt(
        &self,
        p: &RawPrompt,
        models: &BTreeMap<ModelKind, ModelConfig>,
    ) -> Result<Vec<PromptConfig>> {
        let learned = match &p.learned {
            Some(l) => Some(self.learned_file(p, l)?),
            None => None,
        };
        let text = match (&p.text, &p.tree) {
            (None, None) if learned.is_some() => match (&p.name, &learned) {
                (Some(n), _) if !n.trim().is_empty() => n.trim().to_string(),
                (_, Some(l)) => l.prompt.name.clone(),
                _ => String::new(),
            },
            (Some(t), None) | (None, Some(t)) => t.get_ref().trim().to_string(),
            (None, None) if !p.examples.is_empty() => match &p.name {
                Some(n) => n.trim().to_string(),
                None => {
                    return self.err(
                        p.span(),
                        "cameras.prompts.name",
                        "a prompt made of `examples` needs a `name` (e.g. name = \"Our car\")",
                    )
                }
            },
            (Some(_), Some(t)) => {
                return self.err(
                    t.span(),
                    "cameras.prompts.tree",
                    "a prompt has either `text` or `tree`, not both",
                )
            }
            (None, None) => {
                return self.err(
                    p.model_span(),
                    "cameras.prompts.text",
                    "a prompt needs `text` (or a `tree`, e.g. \"[a person (a hard hat, no hard hat)]\")",
                )
            }
        };
        if text.is_empty() {
            return self.err(p.span(), "cameras.prompts.text", "a prompt needs text");
        }
        let long = std::iter::once(&text)
            .chain(&p.negatives)
            .chain(p.name.iter())
            .find(|t| t.chars().count() > MAX_TEXT);
        if let Some(t) = long {
            return self.err(
                p.span(),
                "cameras.prompts.text",
                format!(
                    "a text of {} characters; at most {MAX_TEXT} (CLIP reads 77 tokens, about 300 characters)",
                    t.chars().count()
                ),
            );
        }
        if p.negatives.len() > MAX_NEGATIVES {
            return self.err(
                p.span(),
                "cameras.prompts.negatives",
                format!("{} negatives; at most {MAX_NEGATIVES}", p.negatives.len()),
            );
        }
        if p.tree.is_some()
            && !(p.negatives.is_empty() && p.ensemble.is_empty() && p.negative_examples.is_empty())
        {
            return self.err(
                p.span(),
                "cameras.prompts.negatives",
                "negatives and ensemble apply to CLIP text prompts; a tree's classification groups are their own alternatives",
            );
        }
        if let (Some(e), Some(_)) = (p.examples.first(), p.text.as_ref().or(p.tree.as_ref())) {
            return self.err(
                e.span(),
                "cameras.prompts.examples",
                "a prompt is made of `text`, a `tree` or `examples`, one of them",
            );
        }
        if let (None, Some(t)) = (&p.tree, &p.tree_threshold) {
            return self.err(
                t.span(),
                "cameras.prompts.tree_threshold",
                "tree_threshold applies to tree prompts only",
            );
        }
        let model_name = match (&p.model, &learned) {
            (Some(m), _) => m.get_ref().as_str(),
            (None, Some(_)) => ModelKind::Clip.name(),
            (None, None) => {
                return self.err(
                    p.span(),
                    "cameras.prompts.model",
                    format!("a prompt needs `model`: {}", ModelKind::names("or")),
                )
            }
        };
        let model = match ModelKind::from_name(model_name) {
            Some(kind) if learned.is_some() && kind != ModelKind::Clip => {
                return self.err(
                    p.model_span(),
                    "cameras.prompts.model",
                    "a learned prompt scores CLIP image embeddings: its model is \"clip\"",
                )
            }
            Some(kind) if models.contains_key(&kind) => kind,
            Some(kind) => {
                return self.err(
                    p.model_span(),
                    "cameras.prompts.model",
                    format!(
                        "{:?} needs a [models.{kind}] table with its `dir`",
                        kind.name()
                    ),
                )
            }
            None => {
                return self.err(
                    p.model_span(),
                    "cameras.prompts.model",
                    format!(
                        "{model_name:?} is not a model; use {}",
                        ModelKind::names("or")
                    ),
                )
            }
        };
        if !model.scores_against_negatives() && !p.negatives.is_empty() {
            return self.err(
                p.model_span(),
                "cameras.prompts.negatives",
                "negatives apply to CLIP prompts only",
            );
        }
        for e in &p.ensemble {
            if !e.get_ref().contains("{}") {
                return self.err(
                    e.span(),
                    "cameras.prompts.ensemble",
                    format!("template {:?} has no {{}} for the prompt text", e.get_ref()),
                );
            }
        }
        let d = DecideConfig::default();
        // a learned prompt's own threshold is the one with the best cross-validated F1
        let default_threshold = learned.as_ref().map_or(d.threshold, |l| l.prompt.threshold);
        let threshold = self.float(
            &p.threshold,
            "cameras.prompts.threshold",
            default_threshold as f64,
            0.0,
            1.0,
        )? as f32;
        let off_threshold = self.float(
            &p.off_threshold,
            "cameras.prompts.off_threshold",
            // four fifths of the threshold, as in DecideConfig::default
            threshold as f64 * 0.8,
            0.0,
            1.0,
        )? as f32;
        if off_threshold > threshold {
            let span = p
                .off_threshold
                .as_ref()
                .map(|s| s.span())
                .unwrap_or(p.span());
            return self.err(span, "cameras.prompts.off_threshold", format!("{off_threshold} is above threshold {threshold}; hysteresis needs off_threshold <= threshold"));
        }
        let decide = DecideConfig {
            threshold,
            off_threshold,
            window: self.int(&p.window, "cameras.prompts.window", d.window as i64, 1, 100)?
                as usize,
            min_frames: self.int(
                &p.min_frames,
                "cameras.prompts.min_frames",
                d.min_frames as i64,
                1,
                1000,
            )? as usize,
            off_delay: Duration::from_secs_f64(self.float(
                &p.off_delay,
                "cameras.prompts.off_delay",
                d.off_delay.as_secs_f64(),
                0.0,
                86400.0,
            )?),
            cooldown: Duration::from_secs_f64(self.float(
                &p.cooldown,
                "cameras.prompts.cooldown",
                d.cooldown.as_secs_f64(),
                0.0,
                86400.0,
            )?),
        };
        let prompt = PromptConfig {
            name: p.name.clone().unwrap_or_else(|| text.clone()),
            id: make_id(&text),
            text,
            model,
            negatives: p.negatives.clone(),
            ensemble: p.ensemble.iter().map(|e| e.get_ref().clone()).collect(),
            device_class: p.device_class.clone(),
            decide,
            mask_threshold: match (&p.mask_threshold, model) {
                (Some(s), m) if !m.has_masks() => {
                    return self.err(
                        s.span(),
                        "cameras.prompts.mask_threshold",
                        "mask_threshold applies to CLIPSeg prompts only",
                    )
                }
                (v, _) => self.float(v, "cameras.prompts.mask_threshold", 0.5, 0.0, 1.0)? as f32,
            },
            tree: None,
            examples: p.examples.iter().map(|e| e.get_ref().clone()).collect(),
            negative_examples: p
                .negative_examples
                .iter()
                .map(|e| e.get_ref().clone())
                .collect(),
            learned,
            runtime: None,
        };
        if let Some(e) = p.examples.iter().chain(&p.negative_examples).next() {
            if model != ModelKind::Clip {
                return self.err(
                    e.span(),
                    "cameras.prompts.examples",
                    format!(
                        "example pictures apply to CLIP prompts only; {}",
                        crate::model::examples::detector_refusal(model)
                    ),
                );
            }
        }
        match &p.tree {
            Some(t) => self.tree_prompts(t, &p.tree_threshold, prompt, p.name.as_deref(), models),
            None => Ok(vec![prompt]),
        }
    }

    /// A prompt's `learned` file, read and checked; alone (not with text, a tree, examples,
    /// negatives or an ensemble: the file is the whole prompt).
    fn learned_file(&self, p: &RawPrompt, l: &toml::Spanned<String>) -> Result<Learned> {
        let key = "cameras.prompts.learned";
        if p.text.is_some() || p.tree.is_some() || !p.examples.is_empty() {
            return self.err(
                l.span(),
                key,
                "a prompt is made of `text`, a `tree`, `examples` or a `learned` file, one of them",
            );
        }
        if !p.negatives.is_empty() || !p.ensemble.is_empty() || !p.negative_examples.is_empty() {
            return self.err(
                l.span(),
                key,
                "a learned prompt learned what to beat from its marks: drop `negatives`, `ensemble` and `negative_examples`",
            );
        }
        let path = self.relative(l.get_ref());
        match LearnedPrompt::load(&path) {
            Ok(prompt) => Ok(Learned {
                path,
                prompt: std::sync::Arc::new(prompt),
            }),
            Err(e) => self.err(l.span(), key, format!("{e:#}")),
        }
    }
}
