//! Scanning: the byte-level helpers the parser uses to find delimiter lines in a body,
//! classify header and delimiter lines, and read `Content-Length`.

use super::{Line, MAX_DASHES};

/// The result of looking for a delimiter line inside a body.
pub(super) enum Found {
    /// The body is `buf[..body_end]`; the delimiter line ends at `line_end` (exclusive).
    Delimiter {
        body_end: usize,
        line_end: usize,
        close: bool,
    },
    /// No complete delimiter; search again from `resume` when more bytes arrive.
    Nothing { resume: usize },
}

/// Finds the first delimiter for boundary `b` at or after `from`: dashes then `b` at the start of
/// a line (or at least two dashes anywhere), then an optional `--`, blanks and a line break.
pub(super) fn find_delimiter(buf: &[u8], b: &[u8], from: usize) -> Found {
    let mut at = from;
    while let Some(offset) = find(&buf[at.min(buf.len())..], b) {
        let i = at + offset;
        let dashes = buf[..i].iter().rev().take_while(|&&c| c == b'-').count();
        let j = i - dashes;
        let placed = dashes <= MAX_DASHES && (dashes >= 2 || j == 0 || buf[j - 1] == b'\n');
        if placed {
            let mut k = i + b.len();
            let close = buf[k..].starts_with(b"--");
            if close {
                k += 2;
            }
            while k < buf.len() && matches!(buf[k], b' ' | b'\t' | b'\r') {
                k += 1;
            }
            if k >= buf.len() {
                // the delimiter line is not complete yet: look at it again later
                return Found::Nothing { resume: j };
            }
            if buf[k] == b'\n' {
                let mut body_end = j;
                if body_end > 0 && buf[body_end - 1] == b'\n' {
                    body_end -= 1;
                    if body_end > 0 && buf[body_end - 1] == b'\r' {
                        body_end -= 1;
                    }
                }
                return Found::Delimiter {
                    body_end,
                    line_end: k + 1,
                    close,
                };
            }
        }
        at = i + 1;
    }
    Found::Nothing {
        resume: buf
            .len()
            .saturating_sub(b.len().saturating_sub(1))
            .max(from.min(buf.len())),
    }
}

/// Whether a line (without its line feed) opens a part, closes the stream, or is something else.
pub(super) fn classify(line: &[u8], b: &[u8]) -> Line {
    let line = trim_end(line);
    let is_delimiter = |core: &[u8]| {
        core.strip_suffix(b)
            .is_some_and(|dashes| dashes.len() <= MAX_DASHES && dashes.iter().all(|&c| c == b'-'))
    };
    if line.strip_suffix(b"--").is_some_and(is_delimiter) {
        Line::Close
    } else if is_delimiter(line) {
        Line::Open
    } else {
        Line::Other
    }
}

/// The boundary token without leading dashes (kept whole if it is only dashes).
pub(super) fn normalize(b: &[u8]) -> Option<Vec<u8>> {
    let b = trim_end(b);
    let stripped: &[u8] = match b.iter().position(|&c| c != b'-') {
        Some(first) => &b[first..],
        None => b,
    };
    (!stripped.is_empty()).then(|| stripped.to_vec())
}

/// The line without trailing CR, spaces and tabs.
pub(super) fn trim_end(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|&c| !matches!(c, b'\r' | b' ' | b'\t'))
        .map_or(0, |p| p + 1);
    &line[..end]
}

pub(super) fn content_length(headers: &[(String, String)]) -> Option<usize> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
