//! Camera: one `[[cameras]]` table (name, source, rate, region of interest, when OWL-ViT runs,
//! motion crops)
//! and the checks that span its prompts (distinct ids, something for each CLIP prompt to beat).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use super::raw::RawCamera;
use super::validate::Validator;
use super::{make_id, CameraConfig, ModelConfig, OwlVitWhen, PromptConfig};
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
        for (i, p) in prompts.iter().enumerate() {
            if prompts[..i].iter().any(|o| o.id == p.id) {
                return self.err(
                    c.prompts[raw[i]].span(),
                    "cameras.prompts.text",
                    format!("prompt {:?} appears twice on camera {name:?}", p.text),
                );
            }
        }
        let clip_prompts: Vec<&PromptConfig> =
            prompts.iter().filter(|p| p.is_clip_class()).collect();
        for (i, p) in prompts.iter().enumerate() {
            if p.is_clip_class()
                && p.negatives.is_empty()
                && p.negative_examples.is_empty()
                && clip_prompts.len() < 2
            {
                return self.err(
                    c.prompts[raw[i]].span(),
                    "cameras.prompts.negatives",
                    "a CLIP prompt needs something to beat: give `negatives` (e.g. [\"an empty driveway\"]) or a second CLIP prompt on this camera",
                );
            }
        }
        if owlvit_when == OwlVitWhen::ClipOn && !prompts.iter().any(|p| p.model == ModelKind::Clip)
        {
            return self.err(
                when_span,
                "cameras.owlvit_when",
                "\"clip_on\" needs a CLIP prompt on this camera",
            );
        }
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
        })
    }
}
