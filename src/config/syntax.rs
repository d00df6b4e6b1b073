//! Syntax: TOML text read into the raw structs, with serde's errors placed for a person: the
//! dotted key they are about (looked up in the document's spans, since serde's messages do not
//! name it), the line and column, and the line quoted — unless it may hold a password.

use std::path::Path;

use anyhow::Result;
use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

use super::SEE;

/// Deserializes `text`; `prefix` is the dotted key `text` sits under ("" for a whole file).
pub(super) fn from_toml<T: DeserializeOwned>(text: &str, path: &Path, prefix: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| s.start);
        let (line, col) = at.map(|o| line_col(text, o)).unwrap_or((0, 0));
        let key = at.and_then(|o| key_at(text, o)).map(|k| {
            let k = k.join(".");
            match prefix {
                "" => k,
                p => format!("{p}.{k}"),
            }
        });
        let line_text = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
        let quoted = if line_text.to_ascii_lowercase().contains("password") {
            String::new()
        } else {
            format!(" (`{}`)", line_text.trim())
        };
        let message = match &key {
            // a value of the wrong type is quoted in the message: not a password's
            Some(k) if k.ends_with("password") => "expected a string".to_string(),
            _ => e
                .message()
                .replace("expected i64", "expected an integer")
                .replace("expected f64", "expected a number"),
        };
        let file = path.display();
        match key {
            Some(key) => anyhow::anyhow!(
                "invalid `{key}` in {file} at line {line}, column {col}{quoted}: {message}; {SEE}"
            ),
            None => anyhow::anyhow!(
                "unable to parse config {file} at line {line}, column {col}{quoted}: {message}; {SEE}"
            ),
        }
    })
}

/// Line and column (from 1) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, col)
}

/// The dotted key whose name or value holds byte `offset` (array elements add no index: the
/// prompts of every camera are `cameras.prompts`); None when the text does not parse.
fn key_at(text: &str, offset: usize) -> Option<Vec<String>> {
    let doc = DeTable::parse(text).ok()?;
    in_table(doc.get_ref(), offset)
}

fn in_table(table: &DeTable, offset: usize) -> Option<Vec<String>> {
    table.iter().find_map(|(k, v)| {
        let below = in_value(v.get_ref(), offset);
        let here = k.span().contains(&offset) || v.span().contains(&offset);
        match below {
            Some(mut path) => {
                path.insert(0, k.get_ref().to_string());
                Some(path)
            }
            None => here.then(|| vec![k.get_ref().to_string()]),
        }
    })
}

/// The key path below a value (empty when the value is a leaf or holds nothing at `offset`).
fn in_value(v: &DeValue, offset: usize) -> Option<Vec<String>> {
    match v {
        DeValue::Table(t) => in_table(t, offset),
        DeValue::Array(a) => a.iter().find_map(|e| in_value(e.get_ref(), offset)),
        _ => None,
    }
}
