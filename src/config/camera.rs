//! Camera: one `[[cameras]]` table (name, source, rate, region of interest, when OWL-ViT runs,
//! motion crops)
//! and the checks that span its prompts (distinct ids, something for each CLIP prompt to beat).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use super::raw::{RawCamera, RawWatch};
use super::validate::Validator;
use super::{make_id, CameraConfig, ModelConfig, OwlVitWhen, PromptConfig, WatchConfig};
use crate::model::ModelKind;

/// The largest pixel coordinate a region of interest may name (no camera frame is wider).
const MAX_ROI: u32 = 65535;

impl Validator<'_> {
    /// A camera; `earlier` are the cameras before it in the file, `models` the model tables.
    pub(super) fn camera(
        &self,
        c: &RawCamera,
        earlier: &[CameraConfig],
        models: &BTreeMap<ModelKind, ModelConfig>,
        motion_on: bool,
    ) -> Result<CameraConfig> {
        let name = c.name.get_ref().trim().to_string();
        let id = make_id(&name);
        if !name.chars().any(char::is_alphanumeric) {
            return self.err(
                c.name.span(),
                "cameras.name",
                "a camera needs a name with letters or digits",
            );
        }
        if earlier.iter().any(|o| o.id == id) {
            return self.err(
                c.name.span(),
                "cameras.name",
                format!("camera {name:?} is defined twice"),
            );
        }
        let fps = self.float(&c.fps, "cameras.fps", 2.0, 0.01, 120.0)?;
        let roi = match &c.roi {
            None => None,
            Some(r) => {
                let v = r.get_ref();
                let pixel = |x: &i64| u32::try_from(*x).ok().filter(|x| *x <= MAX_ROI);
                match v.iter().map(pixel).collect::<Option<Vec<u32>>>().as_deref() {
                    Some(&[x0, y0, x1, y1]) if x0 < x1 && y0 < y1 => Some([x0, y0, x1, y1]),
                    _ => {
                        return self.err(
                            r.span(),
                            "cameras.roi",
                            format!("expected [x0, y0, x1, y1] in pixels (0..={MAX_ROI}) with x0 < x1 and y0 < y1"),
                        )
                    }
                }
            }
        };
        // where an owlvit_when error points: the key, or the camera's name without one
        let when_span = c
            .owlvit_when
            .as_ref()
            .map(|s| s.span())
            .unwrap_or(c.name.span());
        let owlvit_when = match c.owlvit_when.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("always") => OwlVitWhen::Always,
            Some("motion") => OwlVitWhen::Motion,
            Some("clip_on") => OwlVitWhen::ClipOn,
            Some(other) => {
                return self.err(
                    when_span,
                    "cameras.owlvit_when",
                    format!("{other:?} is not allowed; use \"always\", \"motion\" or \"clip_on\""),
                );
            }
        };
        let motion_crops = match &c.motion_crops {
            Some(on) if *on.get_ref() && !motion_on => {
                return self.err(
                    on.span(),
                    "cameras.motion_crops",
                    "motion crops need the motion gate; remove `enabled = false` from [motion] or set motion_crops = false",
                )
            }
            Some(on) if *on.get_ref() => Some(Duration::from_secs_f64(self.float(
                &c.full_frame_every,
                "cameras.full_frame_every",
                30.0,
                0.0,
                86400.0,
            )?)),
            _ => None,
        };
        if c.prompts.is_empty() {
            return self.err(
                c.name.span(),
                "cameras.prompts",
                format!("camera {name:?} has no [[cameras.prompts]]"),
            );
        }
        // a tree prompt is one prompt per leaf path; `raw` maps them back to their tables
        let (mut prompts, mut raw): (Vec<PromptConfig>, Vec<usize>) = (vec![], vec![]);
        for (r, p) in c.prompts.iter().enumerate() {
            for q in self.prompt(p, models)? {
                prompts.push(q);
                raw.push(r);
            }
        }
        if let Err((i, key, msg)) = check_prompts(&name, &prompts, owlvit_when) {
            let span = match i {
                Some(i) => c.prompts[raw[i]].span(),
                None => when_span,
            };
            return self.err(span, key, msg);
        }
        let watch = self.watch(c.watch.as_ref(), models)?;
        Ok(CameraConfig {
            name,
            id,
            source: c.source.clone(),
            fps,
            looped: c.looped,
            roi,
            owlvit_when,
            motion_crops,
            prompts,
            watch,
        })
    }

    /// `[cameras.watch]`: what a phrase typed into Home Assistant's "Watch for" becomes.
    fn watch(
        &self,
        w: Option<&RawWatch>,
        models: &BTreeMap<ModelKind, ModelConfig>,
    ) -> Result<WatchConfig> {
        let default = WatchConfig::default_for(models);
        let Some(w) = w else {
            return Ok(default);
        };
        let model = match &w.model {
            None => default.model,
            Some(m) => match ModelKind::from_name(m.get_ref()) {
                Some(k) if models.contains_key(&k) => k,
                Some(k) => {
                    return self.err(
                        m.span(),
                        "cameras.watch.model",
                        format!("{:?} needs a [models.{k}] table with its `dir`", k.name()),
                    )
                }
                None => {
                    return self.err(
                        m.span(),
                        "cameras.watch.model",
                        format!(
                            "{:?} is not a model; use {}",
                            m.get_ref(),
                            ModelKind::names("or")
                        ),
                    )
                }
            },
        };
        let threshold = match &w.threshold {
            None => None,
            Some(_) => {
                Some(self.float(&w.threshold, "cameras.watch.threshold", 0.5, 0.0, 1.0)? as f32)
            }
        };
        Ok(WatchConfig {
            model,
            negatives: w.negatives.clone(),
            threshold,
            max_prompts: self.int(
                &w.max_prompts,
                "cameras.watch.max_prompts",
                default.max_prompts as i64,
                0,
                MAX_RUNTIME_PROMPTS as i64,
            )? as usize,
        })
    }
}

/// Run-time prompts a camera may hold at most (`[cameras.watch] max_prompts` is below).
pub const MAX_RUNTIME_PROMPTS: usize = 64;

/// The checks that span a camera's prompts (those of its file and those added at run time): ids
/// are distinct, each CLIP text prompt has something to beat, `clip_on` has a CLIP prompt. On
/// failure: the prompt at fault (None: the camera), the key and what is wrong.
pub(super) fn check_prompts(
    name: &str,
    prompts: &[PromptConfig],
    owlvit_when: OwlVitWhen,
) -> std::result::Result<(), (Option<usize>, &'static str, String)> {
    for (i, p) in prompts.iter().enumerate() {
        if prompts[..i].iter().any(|o| o.id == p.id) {
            return Err((
                Some(i),
                "cameras.prompts.text",
                format!("prompt {:?} appears twice on camera {name:?}", p.text),
            ));
        }
    }
    let clip_prompts = prompts.iter().filter(|p| p.is_clip_class()).count();
    for (i, p) in prompts.iter().enumerate() {
        if p.is_clip_class()
            && p.negatives.is_empty()
            && p.negative_examples.is_empty()
            && clip_prompts < 2
        {
            return Err((
                Some(i),
                "cameras.prompts.negatives",
                "a CLIP prompt needs something to beat: give `negatives` (e.g. [\"an empty driveway\"]) or a second CLIP prompt on this camera".into(),
            ));
        }
    }
    if owlvit_when == OwlVitWhen::ClipOn && !prompts.iter().any(|p| p.model == ModelKind::Clip) {
        return Err((
            None,
            "cameras.owlvit_when",
            "\"clip_on\" needs a CLIP prompt on this camera".into(),
        ));
    }
    Ok(())
}
