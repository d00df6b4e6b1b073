//! Model directory: finds and validates the files of one exported model, in the layout of the
//! published ONNX exports (`config.json`, `tokenizer.json`, `preprocessor_config.json` or
//! `processor_config.json`, and `onnx/*.onnx`, each optionally `*_quantized.onnx`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::kind::ModelKind;
use super::tokenize::PromptTokenizer;
use crate::preprocess::ProcessorConfig;

/// The vision tower's shape: what an input size must respect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisionGeometry {
    /// The square input the export was made for (OWL-ViT B/32: 768, OWLv2 B/16: 960).
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_size: usize,
}

/// fp32 files or onnxruntime's dynamic int8 `*_quantized.onnx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    #[default]
    #[serde(rename = "fp32")]
    Fp32,
    #[serde(rename = "int8")]
    Quantized,
}

impl Precision {
    /// As logs and `check` name it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Quantized => "int8",
        }
    }
}

/// A `[models.*]` table's `quantized`: `false`, `true`, or `"auto"` (the default), which times
/// both on the loaded models and keeps the faster (`pipeline::precision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PrecisionChoice {
    Fp32,
    Int8,
    #[default]
    Auto,
}

impl PrecisionChoice {
    /// What a tool that runs no timing uses (`promptcam search`, the lab's text tower when the
    /// daemon's choice is not at hand): the fixed choice, or under `"auto"` fp32 when `stem`'s
    /// fp32 file is present, else int8.
    pub fn offline(self, dir: &ModelDir, stem: &str) -> Precision {
        match self {
            PrecisionChoice::Fp32 => Precision::Fp32,
            PrecisionChoice::Int8 => Precision::Quantized,
            PrecisionChoice::Auto if dir.has_onnx(stem, Precision::Fp32) => Precision::Fp32,
            PrecisionChoice::Auto if dir.has_onnx("model", Precision::Fp32) => Precision::Fp32,
            PrecisionChoice::Auto => Precision::Quantized,
        }
    }

    /// The fixed choice `precision` stands for (a resolved `"auto"`).
    pub fn fixed(precision: Precision) -> PrecisionChoice {
        match precision {
            Precision::Fp32 => PrecisionChoice::Fp32,
            Precision::Quantized => PrecisionChoice::Int8,
        }
    }
}

pub const FETCH_HINT: &str = "fetch the published export with models/fetch.sh (installed by the package as /usr/share/promptcam/fetch-models.sh; see models/README.md)";

pub struct ModelDir {
    pub root: PathBuf,
    /// Which architecture the directory holds, from `config.json`'s `model_type`.
    pub family: ModelKind,
    config: Value,
}

impl ModelDir {
    pub fn open(root: &Path) -> Result<ModelDir> {
        if !root.is_dir() {
            bail!("unable to open model directory {}: it does not exist or is not a directory; {FETCH_HINT}", root.display());
        }
        let config = read_json(&root.join("config.json"))?;
        let model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some(family) = ModelKind::from_name(model_type) else {
            bail!(
                "unable to use model directory {}: config.json says model_type {model_type:?}; promptcam runs {} exports",
                root.display(),
                ModelKind::names("and")
            )
        };
        Ok(ModelDir {
            root: root.to_path_buf(),
            family,
            config,
        })
    }

    /// The image processor settings, from `preprocessor_config.json` or `processor_config.json`.
    pub fn processor(&self) -> Result<ProcessorConfig> {
        let (json, path) = self.processor_file()?;
        ProcessorConfig::from_json(&json, self.family.square_by_default()).with_context(|| {
            format!(
                "unable to use the image processor settings in {}",
                path.display()
            )
        })
    }

    /// The processor config file as JSON (flat or nested), for processors with settings of
    /// their own (OWLv2's `do_pad`).
    pub fn processor_json(&self) -> Result<Value> {
        Ok(self.processor_file()?.0)
    }

    fn processor_file(&self) -> Result<(Value, PathBuf)> {
        let flat = self.root.join("preprocessor_config.json");
        let nested = self.root.join("processor_config.json");
        let path = if flat.is_file() {
            flat
        } else if nested.is_file() {
            nested
        } else {
            bail!(
                "unable to find the image processor settings in {}: neither preprocessor_config.json nor processor_config.json exists; {FETCH_HINT}",
                self.root.display()
            );
        };
        Ok((read_json(&path)?, path))
    }

    /// The text context length: `text_config.max_position_embeddings` (CLIP 77, OWL-ViT 16).
    pub fn text_max_length(&self) -> usize {
        self.config
            .pointer("/text_config/max_position_embeddings")
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .unwrap_or(self.family.default_text_length())
    }

    /// The vision tower's native input size, patch size and width, from `config.json`'s
    /// `vision_config` (transformers' defaults where a key is missing: 768, 32 and 768 for
    /// OWL-ViT, 768, 16 and 768 for OWLv2, 224, 32 and 768 otherwise).
    pub fn vision_geometry(&self) -> Result<VisionGeometry> {
        let (size, patch) = self.family.default_vision();
        let key = |k: &str, default: usize| -> Result<usize> {
            match self.config.pointer(&format!("/vision_config/{k}")) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => match v.as_u64() {
                    Some(n) if n > 0 => Ok(n as usize),
                    _ => bail!(
                        "unable to use {}: config.json's vision_config.{k} is {v}, not a positive integer",
                        self.root.display()
                    ),
                },
            }
        };
        Ok(VisionGeometry {
            image_size: key("image_size", size)?,
            patch_size: key("patch_size", patch)?,
            hidden_size: key("hidden_size", 768)?,
        })
    }

    /// The tokenizer, padding and truncating as the reference processor does.
    pub fn tokenizer(&self) -> Result<PromptTokenizer> {
        let path = self.root.join("tokenizer.json");
        if !path.is_file() {
            bail!(
                "unable to find {}: the model directory needs its tokenizer.json; {FETCH_HINT}",
                path.display()
            );
        }
        let from_config = read_json(&self.root.join("tokenizer_config.json"))
            .ok()
            .and_then(|c| c.get("pad_token").cloned())
            .and_then(|p| match p {
                Value::String(s) => Some(s),
                Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
                _ => None,
            });
        let pad = from_config.unwrap_or_else(|| self.family.default_pad_token().into());
        PromptTokenizer::load(&path, &pad, self.text_max_length())
    }

    /// `onnx/<stem>.onnx` or `onnx/<stem>_quantized.onnx`.
    pub fn onnx_path(&self, stem: &str, precision: Precision) -> PathBuf {
        let name = match precision {
            Precision::Fp32 => format!("{stem}.onnx"),
            Precision::Quantized => format!("{stem}_quantized.onnx"),
        };
        self.root.join("onnx").join(name)
    }

    pub fn has_onnx(&self, stem: &str, precision: Precision) -> bool {
        self.onnx_path(stem, precision).is_file()
    }

    /// The `.onnx` files present, for error messages.
    pub fn onnx_listing(&self) -> String {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("onnx"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".onnx"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        if names.is_empty() {
            "no .onnx files".into()
        } else {
            names.join(", ")
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("unable to read {}; a model directory holds config.json, tokenizer.json, a processor config and onnx/*.onnx: {FETCH_HINT}", path.display())
    })?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "unable to parse {} as JSON; is the download complete?",
            path.display()
        )
    })
}
