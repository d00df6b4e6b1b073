//! Tree prompts in the config: `tree = "[a person (a hard hat, no hard hat)]"` on a prompt,
//! instead of `text`, becomes one prompt per leaf path ("a person > no hard hat"), each its own
//! state with the table's threshold, smoothing, events and entities. The leaf's score is its
//! best chain's detection score times classification probability (`model::tree::leaves`).
//! `model` names the tree's detector ("owlvit" or "owlv2"), or "clip" for a tree that only
//! classifies; classification groups need `[models.clip]`.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use toml::Spanned;

use super::validate::Validator;
use super::{make_id, ModelConfig, PromptConfig};
use crate::model::tree::{Op, Tree};
use crate::model::ModelKind;

/// One leaf path of a tree prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct TreeLeaf {
    pub tree: Arc<Tree>,
    /// Its index among `tree.leaves()`.
    pub leaf: usize,
    /// Boxes scoring under this are not looked into (`tree_threshold`, default 0.1).
    pub threshold: f32,
}

impl Validator<'_> {
    /// Parses `tree` and expands `base` (the prompt table validated as if the tree were its
    /// text) into one prompt per leaf path.
    pub(super) fn tree_prompts(
        &self,
        source: &Spanned<String>,
        tree_threshold: &Option<Spanned<f64>>,
        base: PromptConfig,
        name: Option<&str>,
        models: &BTreeMap<ModelKind, ModelConfig>,
    ) -> Result<Vec<PromptConfig>> {
        let text = source.get_ref();
        let tree = match Tree::parse(text) {
            Ok(t) => t,
            Err(e) => {
                // point at the column inside the string (after its opening quote)
                let offset = text
                    .char_indices()
                    .nth(e.column.saturating_sub(1))
                    .map_or(text.len(), |(i, _)| i);
                let at = source.span().start + 1 + offset;
                return self.err(at..at + 1, "cameras.prompts.tree", e);
            }
        };
        let key = "cameras.prompts.model";
        match (tree.detects(), base.model) {
            (true, ModelKind::OwlVit | ModelKind::Owlv2) | (false, ModelKind::Clip) => {}
            (true, _) => return self.err(
                source.span(),
                key,
                "this tree detects ('[...]'): set `model` to its detector, \"owlvit\" or \"owlv2\"",
            ),
            (false, _) => {
                return self.err(
                    source.span(),
                    key,
                    "this tree only classifies ('(...)'): set `model = \"clip\"`",
                )
            }
        }
        if tree.classifies() && !models.contains_key(&ModelKind::Clip) {
            return self.err(
                source.span(),
                "cameras.prompts.tree",
                "its '(...)' groups classify with CLIP: add a [models.clip] table with its `dir`",
            );
        }
        let threshold = self.float(
            tree_threshold,
            "cameras.prompts.tree_threshold",
            0.1,
            0.0,
            1.0,
        )? as f32;
        let tree = Arc::new(tree);
        Ok(tree
            .leaves()
            .into_iter()
            .enumerate()
            .map(|(k, label)| {
                let path = tree.path_name(label);
                let name = match name {
                    Some(n) => format!("{n}: {path}"),
                    None => path.clone(),
                };
                PromptConfig {
                    id: make_id(&name),
                    name,
                    text: path,
                    negatives: vec![],
                    ensemble: vec![],
                    tree: Some(TreeLeaf {
                        tree: tree.clone(),
                        leaf: k,
                        threshold,
                    }),
                    ..base.clone()
                }
            })
            .collect())
    }
}

/// The texts a config's tree prompts give `op`'s model (each once, in config order), to load
/// next to the plain prompts' texts.
pub fn tree_texts<'a>(prompts: impl IntoIterator<Item = &'a PromptConfig>, op: Op) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for p in prompts {
        if let Some(t) = &p.tree {
            for text in t.tree.texts(op) {
                if !out.contains(&text) {
                    out.push(text);
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
