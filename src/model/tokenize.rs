//! Tokenize: prompts to the `input_ids` / `attention_mask` tensors a text tower takes.
//!
//! Uses the model directory's `tokenizer.json` through the `tokenizers` crate (pure-Rust regex
//! backend). A tokenizer.json built from the vocabulary carries no max length, so truncation and
//! padding are set here as the reference processors do: CLIP pads to 77 with `<|endoftext|>`
//! (49407), OWL-ViT to 16 with `!` (0); both keep the end-of-text token when truncating.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};
use tract_onnx::prelude::*;

/// Token ids and mask for a batch of prompts, each padded to `max_length`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokens {
    pub input_ids: Vec<Vec<i64>>,
    pub attention_mask: Vec<Vec<i64>>,
}

impl Tokens {
    pub fn ids_tensor(&self) -> Result<Tensor> {
        to_tensor(&self.input_ids)
    }
    pub fn mask_tensor(&self) -> Result<Tensor> {
        to_tensor(&self.attention_mask)
    }
}

fn to_tensor(rows: &[Vec<i64>]) -> Result<Tensor> {
    let n = rows.len();
    let l = rows.first().map(Vec::len).unwrap_or(0);
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Ok(tract_ndarray::Array2::from_shape_vec((n, l), flat)?.into_tensor())
}

pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    pub max_length: usize,
    pub pad_id: u32,
}

impl PromptTokenizer {
    /// Loads `tokenizer.json`; `pad_token` names the padding token (from tokenizer_config.json or
    /// the model family's default) and `max_length` the text tower's context length.
    pub fn load(path: &Path, pad_token: &str, max_length: usize) -> Result<PromptTokenizer> {
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| {
            anyhow!("unable to read tokenizer {}: {e}; the model directory needs the tokenizer.json of its export", path.display())
        })?;
        let pad_id = tokenizer.token_to_id(pad_token).with_context(|| {
            format!("unable to find the padding token {pad_token:?} in {}; is it the tokenizer of this model?", path.display())
        })?;
        if max_length < 2 {
            bail!("text context length {max_length} is too short for start and end tokens");
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| anyhow!("unable to set truncation on {}: {e}", path.display()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad_token.to_string(),
        }));
        Ok(PromptTokenizer {
            tokenizer,
            max_length,
            pad_id,
        })
    }

    pub fn encode(&self, prompts: &[String]) -> Result<Tokens> {
        let enc = self
            .tokenizer
            .encode_batch(prompts.to_vec(), true)
            .map_err(|e| anyhow!("unable to tokenize prompts: {e}"))?;
        let mut out = Tokens {
            input_ids: vec![],
            attention_mask: vec![],
        };
        for e in enc {
            out.input_ids
                .push(e.get_ids().iter().map(|&i| i as i64).collect());
            out.attention_mask
                .push(e.get_attention_mask().iter().map(|&i| i as i64).collect());
        }
        Ok(out)
    }
}
