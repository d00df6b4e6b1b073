//! Kind: the one list of the model kinds promptcam runs, with what differs between them — the
//! name the config and an export's `config.json` (`model_type`) use, the title for messages, and
//! the per-kind facts (detectors, which settings apply, the reference processors' defaults).
//! A new kind is a variant here, its module in `model/`, one registration in the pipeline, and
//! its config docs.

/// A model kind, as `model = "..."` names it in a prompt and `[models.<name>]` configures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelKind {
    /// Whole-frame states ("a garage door that is open").
    Clip,
    /// Boxed objects ("a person").
    OwlVit,
    /// Boxed objects with OWLv2 (more accurate, slower).
    Owlv2,
    /// Coverage of a masked stuff ("water on the floor"): score = covered fraction of the frame.
    ClipSeg,
}

impl ModelKind {
    /// Every kind, in the order messages list them.
    pub const ALL: [ModelKind; 4] = [
        ModelKind::Clip,
        ModelKind::OwlVit,
        ModelKind::Owlv2,
        ModelKind::ClipSeg,
    ];

    /// The name the config (`model = "..."`, `[models.<name>]`) and `config.json`'s
    /// `model_type` use.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Clip => "clip",
            ModelKind::OwlVit => "owlvit",
            ModelKind::Owlv2 => "owlv2",
            ModelKind::ClipSeg => "clipseg",
        }
    }

    /// The kind whose [`ModelKind::name`] this is.
    pub fn from_name(name: &str) -> Option<ModelKind> {
        ModelKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The architecture's name for people: "CLIP", "OWL-ViT", "OWLv2", "CLIPSeg".
    pub fn title(self) -> &'static str {
        match self {
            ModelKind::Clip => "CLIP",
            ModelKind::OwlVit => "OWL-ViT",
            ModelKind::Owlv2 => "OWLv2",
            ModelKind::ClipSeg => "CLIPSeg",
        }
    }

    /// The names quoted and listed for messages: `"clip", "owlvit", "owlv2" or "clipseg"`
    /// (`last` joins the last two: "or", "and").
    pub fn names(last: &str) -> String {
        let quoted: Vec<String> = ModelKind::ALL
            .iter()
            .map(|k| format!("{:?}", k.name()))
            .collect();
        match quoted.split_last() {
            Some((tail, [])) => tail.clone(),
            Some((tail, head)) => format!("{} {last} {tail}", head.join(", ")),
            None => String::new(),
        }
    }

    /// Whether prompts box objects (a score per box, the best one reported).
    pub fn is_detector(self) -> bool {
        matches!(self, ModelKind::OwlVit | ModelKind::Owlv2)
    }

    /// Whether `[models.<name>] input_size` applies (the vision grid can be resized).
    pub fn has_input_size(self) -> bool {
        self.is_detector()
    }

    /// Whether a prompt is scored against other texts (its `negatives`, or the camera's other
    /// prompts of this kind), so `negatives` and `ensemble` apply.
    pub fn scores_against_negatives(self) -> bool {
        self == ModelKind::Clip
    }

    /// Whether prompts give masks (scored as the covered fraction), so `mask_threshold` applies.
    pub fn has_masks(self) -> bool {
        self == ModelKind::ClipSeg
    }

    /// The text tower's context length when `config.json` does not say (transformers' defaults).
    pub fn default_text_length(self) -> usize {
        if self.is_detector() {
            16
        } else {
            77
        }
    }

    /// The padding token when `tokenizer_config.json` does not say.
    pub fn default_pad_token(self) -> &'static str {
        if self.is_detector() {
            "!"
        } else {
            "<|endoftext|>"
        }
    }

    /// The vision tower's input size and patch size when `config.json` does not say
    /// (transformers' defaults: OWL-ViT 768 and 32, OWLv2 768 and 16, CLIP 224 and 32).
    pub fn default_vision(self) -> (usize, usize) {
        match self {
            ModelKind::OwlVit => (768, 32),
            ModelKind::Owlv2 => (768, 16),
            ModelKind::Clip | ModelKind::ClipSeg => (224, 32),
        }
    }

    /// Whether an integer `size` in the processor config means a square (not the shortest
    /// edge) when the file does not name its processor type: all but CLIP's.
    pub fn square_by_default(self) -> bool {
        self != ModelKind::Clip
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_list_every_kind() {
        for k in ModelKind::ALL {
            assert_eq!(ModelKind::from_name(k.name()), Some(k));
        }
        assert_eq!(ModelKind::from_name("yolo"), None);
        assert_eq!(
            ModelKind::names("or"),
            "\"clip\", \"owlvit\", \"owlv2\" or \"clipseg\""
        );
        assert_eq!(ModelKind::OwlVit.title(), "OWL-ViT");
        let detectors: Vec<_> = ModelKind::ALL
            .into_iter()
            .filter(|k| k.is_detector())
            .collect();
        assert_eq!(detectors, [ModelKind::OwlVit, ModelKind::Owlv2]);
    }
}
