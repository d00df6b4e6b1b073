//! The tree prompt parser: one pass over the characters, a stack of open groups, errors that
//! name the column (counted in characters from 1) and what was expected there.

use std::fmt;

use super::{Label, Node, Op, Tree};

/// Why a tree prompt does not parse, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// From 1, in characters.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

/// How deep brackets may nest: each level can run a model per box of the level above.
pub const MAX_DEPTH: usize = 6;

const SYNTAX: &str = "a tree is made of [detect, ...] and (classify, ...) groups, e.g. [a person (a hard hat, no hard hat)]";

fn fail<T>(column: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        column,
        message: message.into(),
    })
}

fn closer(op: Op) -> char {
    match op {
        Op::Detect => ']',
        Op::Classify => ')',
    }
}

fn opener(op: Op) -> char {
    match op {
        Op::Detect => '[',
        Op::Classify => '(',
    }
}

struct Parser {
    labels: Vec<Label>,
    nodes: Vec<Node>,
    /// The open nodes, innermost last.
    open: Vec<usize>,
    /// Whether the current label already has a nested node (no more text then).
    nested: bool,
}

impl Parser {
    /// The label text is being written to: the last output of the innermost open node.
    fn current(&self) -> Option<usize> {
        self.open
            .last()
            .and_then(|n| self.nodes[*n].outputs.last().copied())
    }

    fn new_label(&mut self, node: usize, column: usize) {
        self.labels.push(Label {
            text: String::new(),
            node: Some(node),
            column,
        });
        let l = self.labels.len() - 1;
        self.nodes[node].outputs.push(l);
        self.nested = false;
    }

    /// Ends the current label at `column` (a `,` or a closing bracket): it must have text.
    fn finish_label(&mut self, column: usize, at: char) -> Result<(), ParseError> {
        let Some(l) = self.current() else {
            return Ok(());
        };
        let text = self.labels[l].text.trim().to_string();
        if text.is_empty() {
            return fail(column, format!("expected a prompt before '{at}'"));
        }
        self.labels[l].text = text;
        Ok(())
    }

    fn open_node(&mut self, op: Op, column: usize) -> Result<(), ParseError> {
        let input = match self.current() {
            None => 0,
            Some(l) => {
                if self.labels[l].text.trim().is_empty() {
                    return fail(
                        column,
                        format!(
                            "expected a prompt before '{}': a nested group applies to the prompt it is written after",
                            opener(op)
                        ),
                    );
                }
                l
            }
        };
        if self.open.len() >= MAX_DEPTH {
            return fail(
                column,
                format!("groups nest at most {MAX_DEPTH} deep; expected ']' or ')' before this"),
            );
        }
        if let Some(l) = self.current() {
            let t = self.labels[l].text.trim().to_string();
            self.labels[l].text = t;
        }
        self.nodes.push(Node {
            op,
            input,
            outputs: vec![],
            column,
        });
        let n = self.nodes.len() - 1;
        self.open.push(n);
        self.new_label(n, column + 1);
        Ok(())
    }

    fn close_node(&mut self, at: char, column: usize) -> Result<(), ParseError> {
        let Some(&n) = self.open.last() else {
            return fail(
                column,
                format!(
                    "unexpected '{at}': no '{}' is open",
                    if at == ']' { '[' } else { '(' }
                ),
            );
        };
        let node = &self.nodes[n];
        if closer(node.op) != at {
            return fail(
                column,
                format!(
                    "expected '{}' to close the '{}' at column {}, found '{at}'",
                    closer(node.op),
                    opener(node.op),
                    node.column
                ),
            );
        }
        self.finish_label(column, at)?;
        let node = &self.nodes[n];
        if node.op == Op::Classify && node.outputs.len() < 2 {
            return fail(
                node.column,
                "a classification needs at least two alternatives to choose from, e.g. (a hard hat, no hard hat)",
            );
        }
        for (i, &l) in node.outputs.iter().enumerate() {
            let text = &self.labels[l].text;
            if node.outputs[..i]
                .iter()
                .any(|&o| self.labels[o].text == *text)
            {
                return fail(
                    self.labels[l].column,
                    format!("{text:?} appears twice in this group"),
                );
            }
        }
        self.open.pop();
        // the enclosing label now has a nested node: its text is complete
        self.nested = true;
        Ok(())
    }

    fn text(&mut self, ch: char, column: usize) -> Result<(), ParseError> {
        let Some(l) = self.current() else {
            if ch.is_whitespace() {
                return Ok(());
            }
            return fail(
                column,
                format!("unexpected {ch:?} outside brackets: expected '[' (detect) or '(' (classify); {SYNTAX}"),
            );
        };
        if ch.is_control() {
            return fail(column, "unexpected control character in a prompt");
        }
        if self.nested && !ch.is_whitespace() {
            return fail(
                column,
                format!("unexpected {ch:?} after a nested group: expected ',' or '{}'; write a prompt's text before its nested groups",
                    self.open.last().map(|n| closer(self.nodes[*n].op)).unwrap_or(']')),
            );
        }
        let label = &mut self.labels[l];
        if label.text.trim().is_empty() && !ch.is_whitespace() {
            label.column = column;
        }
        label.text.push(ch);
        Ok(())
    }
}

impl Tree {
    /// Parses a tree prompt.
    pub fn parse(source: &str) -> Result<Tree, ParseError> {
        let mut p = Parser {
            labels: vec![Label {
                text: String::new(),
                node: None,
                column: 0,
            }],
            nodes: vec![],
            open: vec![],
            nested: false,
        };
        let mut end = 1;
        for (i, ch) in source.chars().enumerate() {
            let column = i + 1;
            end = column + 1;
            match ch {
                '[' => p.open_node(Op::Detect, column)?,
                '(' => p.open_node(Op::Classify, column)?,
                ']' | ')' => p.close_node(ch, column)?,
                ',' => {
                    let Some(&n) = p.open.last() else {
                        return fail(
                            column,
                            format!("unexpected ',' outside brackets: ',' separates the prompts of a group; {SYNTAX}"),
                        );
                    };
                    p.finish_label(column, ',')?;
                    p.new_label(n, column + 1);
                }
                _ => p.text(ch, column)?,
            }
        }
        if let Some(&n) = p.open.last() {
            let node = &p.nodes[n];
            return fail(
                end,
                format!(
                    "expected '{}' at the end to close the '{}' at column {}",
                    closer(node.op),
                    opener(node.op),
                    node.column
                ),
            );
        }
        if p.nodes.is_empty() {
            return fail(
                1,
                format!("expected '[' (detect) or '(' (classify): the tree is empty; {SYNTAX}"),
            );
        }
        Ok(Tree {
            source: source.to_string(),
            labels: p.labels,
            nodes: p.nodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(t: &Tree) -> Vec<&str> {
        t.labels.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn nanoowl_examples_parse_to_its_labels_and_nodes() {
        let t = Tree::parse("[a face]").unwrap();
        assert_eq!(texts(&t), ["", "a face"]);
        assert_eq!(t.nodes.len(), 1);
        assert_eq!((t.nodes[0].op, t.nodes[0].input), (Op::Detect, 0));

        let t = Tree::parse("[a face](a dog, a cat)").unwrap();
        assert_eq!(texts(&t), ["", "a face", "a dog", "a cat"]);
        assert_eq!(t.nodes[1].op, Op::Classify);
        assert_eq!((t.nodes[1].input, &t.nodes[1].outputs), (0, &vec![2, 3]));

        let t = Tree::parse("[a[b,c(d,e)]]").unwrap();
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(texts(&t), ["", "a", "b", "c", "d", "e"]);
        // [b, c] runs on a's boxes, (d, e) on c's
        assert_eq!(t.nodes[1].input, 1);
        assert_eq!(t.nodes[2].input, 3);
        assert_eq!(t.leaves(), [2, 4, 5]);
        assert_eq!(t.path_name(4), "a > c > d");
    }

    #[test]
    fn the_issues_trees_give_their_leaf_paths() {
        let t = Tree::parse("[a person (a hard hat, no hard hat)]").unwrap();
        let names: Vec<String> = t.leaves().iter().map(|l| t.path_name(*l)).collect();
        assert_eq!(names, ["a person > a hard hat", "a person > no hard hat"]);
        assert_eq!(t.texts(Op::Detect), ["a person"]);
        assert_eq!(t.texts(Op::Classify), ["a hard hat", "no hard hat"]);

        let t = Tree::parse("(indoors, outdoors [a car [a license plate]])").unwrap();
        let names: Vec<String> = t.leaves().iter().map(|l| t.path_name(*l)).collect();
        assert_eq!(names, ["indoors", "outdoors > a car > a license plate"]);
        assert_eq!(t.op_of(3), Some(Op::Detect));
        assert_eq!(t.parent(3), Some(2));
        assert!(t.detects() && t.classifies());
    }

    #[test]
    fn whitespace_is_trimmed_and_columns_point_at_text() {
        let t = Tree::parse("  [  a person  ,b ]").unwrap();
        assert_eq!(texts(&t), ["", "a person", "b"]);
        assert_eq!(t.labels[1].column, 6);
        assert_eq!(t.labels[2].column, 17);
        assert_eq!(t.nodes[0].column, 3);
    }

    fn err(s: &str) -> ParseError {
        Tree::parse(s).expect_err(s)
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        let cases: &[(&str, usize, &str)] = &[
            ("]a face]", 1, "no '[' is open"),
            (
                "[a face",
                8,
                "expected ']' at the end to close the '[' at column 1",
            ),
            (
                "[a face)",
                8,
                "expected ']' to close the '[' at column 1, found ')'",
            ),
            ("[a face]]", 9, "no '[' is open"),
            ("(a, b]", 6, "expected ')'"),
            ("", 1, "the tree is empty"),
            ("   ", 1, "the tree is empty"),
            ("a person", 1, "expected '[' (detect) or '(' (classify)"),
            ("[a], b", 4, "unexpected ','"),
            ("[a,,b]", 4, "expected a prompt before ','"),
            ("[a, ]", 5, "expected a prompt before ']'"),
            ("[]", 2, "expected a prompt before ']'"),
            ("[[a]]", 2, "expected a prompt before '['"),
            ("(a hard hat)", 1, "at least two alternatives"),
            ("[a cat, a dog, a cat]", 16, "\"a cat\" appears twice"),
            ("[a person [a face] wearing]", 20, "after a nested group"),
            ("[a\u{7}]", 3, "control character"),
            ("[a [b [c [d [e [f [g]]]]]]]", 19, "at most 6 deep"),
        ];
        for (src, column, needle) in cases {
            let e = err(src);
            assert_eq!(e.column, *column, "{src:?}: {e}");
            assert!(e.message.contains(needle), "{src:?}: {e}");
            assert!(e.to_string().starts_with(&format!("column {column}: ")));
        }
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = err("[café, 猫 ]]");
        assert_eq!(e.column, 11, "{e}");
        let t = Tree::parse("[猫, 犬]").unwrap();
        assert_eq!(texts(&t), ["", "猫", "犬"]);
    }

    #[test]
    fn the_same_prompt_may_appear_in_different_groups() {
        let t = Tree::parse("[a car [a person], a bike [a person]]").unwrap();
        assert_eq!(t.texts(Op::Detect), ["a car", "a person", "a bike"]);
        let names: Vec<String> = t.leaves().iter().map(|l| t.path_name(*l)).collect();
        assert_eq!(names, ["a car > a person", "a bike > a person"]);
    }
}
