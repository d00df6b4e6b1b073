//! The processor config: `preprocessor_config.json` / `processor_config.json` read and
//! validated into a [`ProcessorConfig`] (resize, resample filter, crop, rescale, normalize).

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{Resample, Resize};

/// The image processor settings of one model, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessorConfig {
    pub resize: Option<Resize>,
    pub resample: Resample,
    /// `(width, height)` of the center crop.
    pub crop: Option<(u32, u32)>,
    pub rescale: Option<f64>,
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

impl ProcessorConfig {
    /// Reads the settings from a processor config JSON (flat or nested under `image_processor`).
    ///
    /// An integer `size` means the shortest edge for CLIP-style processors and a square for the
    /// others (transformers' `default_to_square`); `square_by_default` says which applies when
    /// the file does not name its processor type.
    pub fn from_json(json: &Value, square_by_default: bool) -> Result<ProcessorConfig> {
        let v = json.get("image_processor").unwrap_or(json);
        let kind = v
            .get("image_processor_type")
            .or_else(|| v.get("feature_extractor_type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let square = if kind.is_empty() {
            square_by_default
        } else {
            // CLIP's processors are the ones that resize the shortest edge from an integer size
            !kind.starts_with("CLIP") && !kind.starts_with("Chinese")
        };
        let flag = |key: &str, default: bool| -> Result<bool> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => bail!("`{key}` should be true or false, found {other}"),
            }
        };
        let resize = if flag("do_resize", true)? {
            Some(parse_resize(
                v.get("size")
                    .context("`size` is missing while `do_resize` is true")?,
                square,
            )?)
        } else {
            None
        };
        let crop = if flag("do_center_crop", false)? {
            let c = v
                .get("crop_size")
                .context("`crop_size` is missing while `do_center_crop` is true")?;
            match parse_resize(c, true).context("in `crop_size`")? {
                Resize::Exact { width, height } => Some((width, height)),
                Resize::ShortestEdge(_) => {
                    bail!("`crop_size` must be a number or {{height, width}}")
                }
            }
        } else {
            None
        };
        let resample = match v.get("resample") {
            None | Some(Value::Null) => Resample::Bicubic,
            Some(r) => Resample::from_pil(
                r.as_i64()
                    .context("`resample` should be a PIL filter code")?,
            )?,
        };
        let rescale = if flag("do_rescale", true)? {
            Some(match v.get("rescale_factor") {
                None | Some(Value::Null) => 1.0 / 255.0,
                Some(f) => f.as_f64().context("`rescale_factor` should be a number")?,
            })
        } else {
            None
        };
        let normalize = if flag("do_normalize", true)? {
            let mean = triple(v.get("image_mean"), [0.48145466, 0.4578275, 0.40821073])
                .context("in `image_mean`")?;
            // OpenAI's published CLIP constants, digit for digit
            #[allow(clippy::excessive_precision)]
            let std = triple(v.get("image_std"), [0.26862954, 0.26130258, 0.27577711])
                .context("in `image_std`")?;
            if std.contains(&0.0) {
                bail!("`image_std` contains a zero");
            }
            Some((mean, std))
        } else {
            None
        };
        if !flag("do_convert_rgb", true)? {
            tracing::debug!("do_convert_rgb is false; frames are RGB already");
        }
        Ok(ProcessorConfig {
            resize,
            resample,
            crop,
            rescale,
            normalize,
        })
    }

    /// Size `(width, height)` of the resized image for an input of `width` x `height`.
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        match self.resize {
            None => (width, height),
            Some(Resize::Exact { width, height }) => (width, height),
            Some(Resize::ShortestEdge(s)) => {
                // transformers: new_long = int(size * long / short), computed in Python floats
                if width <= height {
                    (s, (s as f64 * height as f64 / width as f64) as u32)
                } else {
                    ((s as f64 * width as f64 / height as f64) as u32, s)
                }
            }
        }
    }

    /// Size `(width, height)` of the tensor for an input of `width` x `height`, if fixed.
    pub fn output_size(&self) -> Option<(u32, u32)> {
        match (self.crop, self.resize) {
            (Some(c), _) => Some(c),
            (None, Some(Resize::Exact { width, height })) => Some((width, height)),
            _ => None,
        }
    }
}

fn parse_resize(v: &Value, square: bool) -> Result<Resize> {
    let dim = |x: &Value| -> Result<u32> {
        let n = x
            .as_u64()
            .with_context(|| format!("expected a positive integer, found {x}"))?;
        if n == 0 || n > 8192 {
            bail!("size {n} is out of range 1..=8192");
        }
        Ok(n as u32)
    };
    if v.is_number() {
        let n = dim(v)?;
        return Ok(if square {
            Resize::Exact {
                width: n,
                height: n,
            }
        } else {
            Resize::ShortestEdge(n)
        });
    }
    if let (Some(h), Some(w)) = (v.get("height"), v.get("width")) {
        return Ok(Resize::Exact {
            width: dim(w)?,
            height: dim(h)?,
        });
    }
    if let Some(s) = v.get("shortest_edge") {
        if v.get("longest_edge").is_some_and(|l| !l.is_null()) {
            bail!("`size` with both shortest_edge and longest_edge is not supported; use a CLIP or OWL-ViT processor config");
        }
        return Ok(Resize::ShortestEdge(dim(s)?));
    }
    bail!("`size` should be an integer, {{\"shortest_edge\": N}} or {{\"height\": H, \"width\": W}}, found {v}")
}

fn triple(v: Option<&Value>, default: [f32; 3]) -> Result<[f32; 3]> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => {
            let x = n.as_f64().context("not a number")? as f32;
            Ok([x, x, x])
        }
        Some(Value::Array(a)) if a.len() == 3 => {
            let mut out = [0f32; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x.as_f64().with_context(|| format!("{x} is not a number"))? as f32;
            }
            Ok(out)
        }
        Some(other) => bail!("expected three numbers, found {other}"),
    }
}
