//! Leaf scores: what a tree says about each of its leaf paths on one frame, as one number to
//! threshold (the daemon's state per leaf, `promptcam tree`'s `leaves`).
//!
//! A path such as "a person > no hard hat" is scored on every chain of regions that follows it:
//! the product of each detection's score and each classification's probability along the
//! chain (a class the path goes *through* must have won its group there, since what is nested
//! under it runs only where it won; the leaf's own class counts with its probability, won or
//! not). The leaf's score is the best chain's, with the box of the chain's last detection
//! (none for a path made of classifications only: the whole frame); 0 when no chain exists.

use serde::Serialize;

use super::{Op, Tree, TreeOutput};

/// One leaf path's score on a frame.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeafScore {
    /// "a person > no hard hat"
    pub path: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: Option<[f32; 4]>,
    /// The leaf's tree label.
    #[serde(skip)]
    pub label: usize,
}

/// One way a leaf path is followed on a frame: its score and the box of its last detection.
pub type Chain = (f32, Option<[f32; 4]>);

impl TreeOutput {
    /// Per leaf of `tree` (the tree this output came from), in tree order, every chain of
    /// regions that follows its path.
    pub fn leaf_chains(&self, tree: &Tree) -> Vec<Vec<Chain>> {
        tree.leaves()
            .into_iter()
            .map(|leaf| {
                let path = tree.path(leaf);
                // (region: None = the frame, score so far, box of the last detection)
                let mut chains: Vec<(Option<usize>, f32, Option<[f32; 4]>)> =
                    vec![(None, 1.0, None)];
                for (depth, &l) in path.iter().enumerate() {
                    let last = depth + 1 == path.len();
                    chains = match tree.op_of(l) {
                        Some(Op::Detect) => chains
                            .iter()
                            .flat_map(|&(region, s, _)| {
                                self.detections
                                    .iter()
                                    .enumerate()
                                    .filter(move |(_, d)| d.parent == region && d.label == l)
                                    .map(move |(i, d)| (Some(i), s * d.score, Some(d.bbox)))
                            })
                            .collect(),
                        _ => chains
                            .into_iter()
                            .filter_map(|(region, s, b)| {
                                let classes = match region {
                                    None => &self.classes,
                                    Some(i) => &self.detections[i].classes,
                                };
                                let c = classes.iter().find(|c| c.label == l)?;
                                (last || c.won).then_some((region, s * c.score, b))
                            })
                            .collect(),
                    };
                }
                chains.into_iter().map(|(_, s, b)| (s, b)).collect()
            })
            .collect()
    }

    /// One score per leaf of `tree`, in tree order: its best chain's (0 without one).
    pub fn leaf_scores(&self, tree: &Tree) -> Vec<LeafScore> {
        tree.leaves()
            .into_iter()
            .zip(self.leaf_chains(tree))
            .map(|(leaf, chains)| {
                let best = chains.into_iter().max_by(|a, b| a.0.total_cmp(&b.0));
                LeafScore {
                    path: tree.path_name(leaf),
                    score: best.map_or(0.0, |c| c.0),
                    bbox: best.and_then(|c| c.1),
                    label: leaf,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ClassScore, TreeDetection};
    use super::*;

    fn class(tree: &Tree, text: &str, score: f32, won: bool) -> ClassScore {
        ClassScore {
            prompt: text.to_string(),
            score,
            label: tree.labels.iter().position(|l| l.text == text).unwrap(),
            won,
        }
    }

    fn det(tree: &Tree, text: &str, score: f32, parent: Option<usize>) -> TreeDetection {
        TreeDetection {
            prompt: text.to_string(),
            score,
            bbox: [score, 0.0, 1.0, 1.0],
            parent,
            classes: vec![],
            label: tree.labels.iter().position(|l| l.text == text).unwrap(),
        }
    }

    #[test]
    fn a_classified_leaf_scores_detection_times_probability_best_box_wins() {
        let t = Tree::parse("[a person (a hard hat, no hard hat)]").unwrap();
        let mut a = det(&t, "a person", 0.9, None);
        a.classes = vec![
            class(&t, "a hard hat", 0.8, true),
            class(&t, "no hard hat", 0.2, false),
        ];
        let mut b = det(&t, "a person", 0.5, None);
        b.classes = vec![
            class(&t, "a hard hat", 0.1, false),
            class(&t, "no hard hat", 0.9, true),
        ];
        let out = TreeOutput {
            classes: vec![],
            detections: vec![a, b],
        };
        let s = out.leaf_scores(&t);
        assert_eq!(s[0].path, "a person > a hard hat");
        assert!((s[0].score - 0.72).abs() < 1e-6);
        assert_eq!(s[0].bbox, Some([0.9, 0.0, 1.0, 1.0]));
        assert_eq!(s[1].path, "a person > no hard hat");
        assert!(
            (s[1].score - 0.45).abs() < 1e-6,
            "0.5 x 0.9 beats 0.9 x 0.2"
        );
        assert_eq!(s[1].bbox, Some([0.5, 0.0, 1.0, 1.0]));
    }

    #[test]
    fn nested_detections_follow_their_parents_and_gates_need_a_win() {
        let t = Tree::parse("(indoors, outdoors [a car [a plate]])").unwrap();
        let car = det(&t, "a car", 0.5, None);
        let plate = det(&t, "a plate", 0.4, Some(0));
        let other_car = det(&t, "a car", 0.9, None);
        let out = TreeOutput {
            classes: vec![
                class(&t, "indoors", 0.3, false),
                class(&t, "outdoors", 0.7, true),
            ],
            detections: vec![car, plate, other_car],
        };
        let s = out.leaf_scores(&t);
        assert_eq!(s[0].path, "indoors");
        assert!((s[0].score - 0.3).abs() < 1e-6, "a leaf class counts unwon");
        assert_eq!(s[0].bbox, None);
        // only the first car holds a plate: 0.7 x 0.5 x 0.4
        assert_eq!(s[1].path, "outdoors > a car > a plate");
        assert!((s[1].score - 0.14).abs() < 1e-6, "{}", s[1].score);
        assert_eq!(s[1].bbox, Some([0.4, 0.0, 1.0, 1.0]));

        // where "outdoors" lost, the path has no chain
        let mut lost = out.clone();
        lost.classes[0].won = true;
        lost.classes[1].won = false;
        assert_eq!(lost.leaf_scores(&t)[1].score, 0.0);
        assert_eq!(TreeOutput::default().leaf_scores(&t)[1].bbox, None);
    }
}
