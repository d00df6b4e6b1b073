//! Tree grammar: NanoOWL's tree prompts. `[a, b]` detects each of its prompts, `(a, b)`
//! classifies among its alternatives, and a node written inside a prompt applies to what that
//! prompt found: `[a person (a hard hat, no hard hat)]` classifies each person box,
//! `(indoors, outdoors [a car [a license plate]])` looks for cars only where "outdoors" won and
//! for plates inside each car. Several nodes may sit side by side (`[a face](a dog, a cat)`).
//!
//! Stricter than NanoOWL where its parser accepts what was surely a typo: text outside any
//! bracket, a `,` at the top level, an empty prompt, text after a nested node, a classification
//! with one alternative and the same prompt twice in a group are errors. Every error names the
//! column (counted in characters from 1) and what was expected there.

pub mod leaves;
pub mod models;
pub mod parse;
pub mod run;

pub use leaves::{Chain, LeafScore};
pub use parse::{ParseError, MAX_DEPTH};
pub use run::{crop_rect, ClassScore, TreeDetection, TreeModels, TreeOutput, MAX_CROPS};

/// What a node does with its input region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `[a, b]`: the detector on the region, each box labelled by its best prompt of the group.
    Detect,
    /// `(a, b)`: CLIP on the region, softmax over the alternatives; the region takes the winner.
    Classify,
}

/// One bracket pair: its prompts (`outputs`, label indices) and the label it applies to.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    /// The label whose regions this node runs on (0: the frame).
    pub input: usize,
    pub outputs: Vec<usize>,
    /// Where its opening bracket is (from 1).
    pub column: usize,
}

/// One prompt of the tree. Label 0 is the frame itself (no text, no node).
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub text: String,
    /// The node it is an output of (None for the frame).
    pub node: Option<usize>,
    pub column: usize,
}

/// A parsed tree prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Tree {
    /// The text it was parsed from.
    pub source: String,
    pub labels: Vec<Label>,
    /// In the order their brackets open ("tree order").
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The op of the node a label is an output of (None for the frame).
    pub fn op_of(&self, label: usize) -> Option<Op> {
        self.labels[label].node.map(|n| self.nodes[n].op)
    }

    /// The nodes that run on regions carrying `label`, in tree order.
    pub fn nodes_on(&self, label: usize) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(move |(_, n)| n.input == label)
    }

    /// The label a label's node applies to (None for the frame).
    pub fn parent(&self, label: usize) -> Option<usize> {
        self.labels[label].node.map(|n| self.nodes[n].input)
    }

    /// The labels from the top of the tree down to `label` (the frame left out).
    pub fn path(&self, label: usize) -> Vec<usize> {
        let mut out = vec![];
        let mut l = label;
        while l != 0 {
            out.push(l);
            l = self.parent(l).unwrap_or(0);
        }
        out.reverse();
        out
    }

    /// The labels no node applies to, in tree order: each is one state in the daemon.
    pub fn leaves(&self) -> Vec<usize> {
        (1..self.labels.len())
            .filter(|l| !self.nodes.iter().any(|n| n.input == *l))
            .collect()
    }

    /// A label's path as people read it: "a person > no hard hat".
    pub fn path_name(&self, label: usize) -> String {
        self.path(label)
            .iter()
            .map(|l| self.labels[*l].text.as_str())
            .collect::<Vec<_>>()
            .join(" > ")
    }

    /// The distinct texts of the labels of `op`, in tree order (what the detector or CLIP's
    /// text tower must embed).
    pub fn texts(&self, op: Op) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for l in (1..self.labels.len()).filter(|l| self.op_of(*l) == Some(op)) {
            if !out.contains(&self.labels[l].text) {
                out.push(self.labels[l].text.clone());
            }
        }
        out
    }

    /// Whether any node detects (the tree then needs a detector).
    pub fn detects(&self) -> bool {
        self.nodes.iter().any(|n| n.op == Op::Detect)
    }

    /// Whether any node classifies (the tree then needs CLIP).
    pub fn classifies(&self) -> bool {
        self.nodes.iter().any(|n| n.op == Op::Classify)
    }
}
