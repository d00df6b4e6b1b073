//! Multipart: a pure, incremental parser for `multipart/x-mixed-replace` streams (MJPEG over
//! HTTP). Feed it byte chunks as they arrive; it returns each part (headers and body) once the
//! part is complete. It does no I/O, so every quirk of real cameras is unit-tested here.
//!
//! Leniencies for cameras that stray from RFC 2046: a boundary declared with or without its
//! leading `--` (quoted or not), CRLF or bare LF line endings, parts with or without
//! `Content-Length`, garbage before the first part and between parts (skipped and counted), a
//! delimiter not preceded by a line break, a first part sent without a delimiter, and a part
//! with no headers.
//! When the boundary is not declared, the first line starting with `--` declares it.

use anyhow::{bail, Result};

mod scan;
use scan::{classify, content_length, find_delimiter, normalize, trim_end, Found};

/// Parts larger than this are refused unless the caller picks another cap.
pub const DEFAULT_MAX_PART: usize = 16 << 20;
/// The most bytes of headers one part may have.
const MAX_HEADER_BYTES: usize = 16 << 10;
/// The most dashes accepted before the boundary token on a delimiter line.
const MAX_DASHES: usize = 64;
/// The longest line kept while looking for a delimiter among garbage.
const MAX_SEEK_LINE: usize = 4096;

/// One complete part of the stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Part {
    /// Header names and values as sent (names keep their case; values are trimmed).
    pub headers: Vec<(String, String)>,
    /// The body, without the line break that precedes the next delimiter.
    pub body: Vec<u8>,
}

impl Part {
    /// The first header named `name` (compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum State {
    /// Nothing consumed yet: a first part may come without a delimiter.
    Start,
    /// Skipping bytes up to the next delimiter line.
    Seek,
    /// Reading a part's header lines (`used` bytes so far).
    Headers {
        headers: Vec<(String, String)>,
        used: usize,
    },
    /// Reading a body: `length` bytes, or up to the next delimiter (searched from `scanned`).
    Body {
        headers: Vec<(String, String)>,
        length: Option<usize>,
        scanned: usize,
    },
    /// The closing delimiter was seen; later bytes are ignored.
    Done,
}

/// What one step of parsing achieved.
enum Step {
    /// More bytes are needed.
    Stalled,
    /// State changed; try again.
    Advanced,
    /// A part is complete.
    Emitted(Part),
}

/// What a line is with respect to the boundary.
#[derive(PartialEq, Eq)]
enum Line {
    Open,
    Close,
    Other,
}

/// The incremental parser. After `feed` returns an error the stream is unusable: drop the
/// parser (and the connection) and start again.
pub struct MultipartParser {
    boundary: Option<Vec<u8>>,
    max_part: usize,
    buf: Vec<u8>,
    state: State,
    discarded: u64,
}

/// The `boundary` parameter of a `Content-Type` header value, without quotes.
pub fn boundary_from_content_type(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"').trim();
        (!value.is_empty()).then(|| value.to_string())
    })
}

impl MultipartParser {
    /// A parser for parts separated by `boundary` (as declared, with or without its leading
    /// `--`), or by the first `--` line seen when `None`. Parts over `max_part` bytes are errors.
    pub fn new(boundary: Option<&str>, max_part: usize) -> MultipartParser {
        let boundary = boundary.and_then(|b| normalize(b.trim().trim_matches('"').as_bytes()));
        MultipartParser {
            boundary,
            max_part,
            buf: Vec::new(),
            state: State::Start,
            discarded: 0,
        }
    }

    /// Adds `chunk` to the stream and returns the parts it completed, in order (parts with an
    /// empty body are left out). Errors on a part larger than the cap or an overlong header block.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Part>> {
        if matches!(self.state, State::Done) {
            self.discarded += chunk.len() as u64;
            return Ok(Vec::new());
        }
        self.buf.extend_from_slice(chunk);
        let mut parts = Vec::new();
        loop {
            match self.step()? {
                Step::Stalled => return Ok(parts),
                Step::Advanced => {}
                // a part with an empty body carries no picture: nothing to hand on
                Step::Emitted(part) if part.body.is_empty() => {}
                Step::Emitted(part) => parts.push(part),
            }
        }
    }

    /// Whether the closing delimiter (`--boundary--`) was seen.
    pub fn finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Bytes skipped as garbage (outside any part) so far.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// The boundary in use (without leading dashes), once known.
    pub fn boundary(&self) -> Option<&[u8]> {
        self.boundary.as_deref()
    }

    fn step(&mut self) -> Result<Step> {
        match std::mem::replace(&mut self.state, State::Seek) {
            State::Done => {
                self.state = State::Done;
                Ok(Step::Stalled)
            }
            State::Start => self.start(),
            State::Seek => self.seek(),
            State::Headers { headers, used } => self.headers(headers, used),
            State::Body {
                headers,
                length,
                scanned,
            } => self.body(headers, length, scanned),
        }
    }

    /// A stream whose boundary is known may start straight with a part's headers.
    fn start(&mut self) -> Result<Step> {
        let prefix = b"content-";
        if self.boundary.is_some() && self.buf.len() < prefix.len() {
            self.state = State::Start;
            return Ok(Step::Stalled);
        }
        let headers_first =
            self.boundary.is_some() && self.buf[..prefix.len()].eq_ignore_ascii_case(prefix);
        self.state = if headers_first {
            State::Headers {
                headers: Vec::new(),
                used: 0,
            }
        } else {
            State::Seek
        };
        Ok(Step::Advanced)
    }

    /// Skips bytes up to the next delimiter line (learning the boundary if it is not known).
    fn seek(&mut self) -> Result<Step> {
        let Some(b) = self.boundary.clone() else {
            return Ok(self.learn_boundary());
        };
        match find_delimiter(&self.buf, &b, 0) {
            Found::Delimiter {
                body_end,
                line_end,
                close,
            } => {
                // what came before the delimiter is garbage, less the line breaks around parts
                let garbage = self.buf[..body_end]
                    .iter()
                    .skip_while(|&&c| c == b'\r' || c == b'\n')
                    .count();
                self.discarded += garbage as u64;
                self.buf.drain(..line_end);
                if close {
                    self.finish();
                } else {
                    self.state = State::Headers {
                        headers: Vec::new(),
                        used: 0,
                    };
                }
                Ok(Step::Advanced)
            }
            Found::Nothing { .. } => {
                let keep = b.len() + MAX_DASHES + 8;
                if self.buf.len() > MAX_SEEK_LINE.max(keep) {
                    self.discard(self.buf.len() - keep);
                }
                self.state = State::Seek;
                Ok(Step::Stalled)
            }
        }
    }

    /// Skips lines up to the first that starts with `--`, which then declares the boundary.
    fn learn_boundary(&mut self) -> Step {
        let Some(nl) = self.buf.iter().position(|&c| c == b'\n') else {
            if self.buf.len() > MAX_SEEK_LINE {
                self.discard(self.buf.len());
            }
            self.state = State::Seek;
            return Step::Stalled;
        };
        let line = trim_end(&self.buf[..nl]);
        if line.len() > 2 && line.starts_with(b"--") {
            self.boundary = normalize(
                line.strip_suffix(b"--")
                    .filter(|l| l.len() > 2)
                    .unwrap_or(line),
            );
            self.buf.drain(..=nl);
            self.state = State::Headers {
                headers: Vec::new(),
                used: 0,
            };
        } else {
            let blank = line.is_empty();
            self.buf.drain(..=nl);
            if !blank {
                self.discarded += nl as u64 + 1;
            }
            self.state = State::Seek;
        }
        Step::Advanced
    }

    /// Reads header lines up to the blank line that starts the body.
    fn headers(&mut self, mut headers: Vec<(String, String)>, used: usize) -> Result<Step> {
        if headers.is_empty() && used == 0 && self.buf.starts_with(&[0xFF, 0xD8]) {
            // a JPEG straight after the delimiter: a part without headers
            self.state = State::Body {
                headers,
                length: None,
                scanned: 0,
            };
            return Ok(Step::Advanced);
        }
        let Some(nl) = self.buf.iter().position(|&c| c == b'\n') else {
            if used + self.buf.len() > MAX_HEADER_BYTES {
                bail!("unable to parse the MJPEG stream: a part's headers exceed {MAX_HEADER_BYTES} bytes; check that the URL is an MJPEG stream");
            }
            self.state = State::Headers { headers, used };
            return Ok(Step::Stalled);
        };
        let used = used + nl + 1;
        if used > MAX_HEADER_BYTES {
            bail!("unable to parse the MJPEG stream: a part's headers exceed {MAX_HEADER_BYTES} bytes; check that the URL is an MJPEG stream");
        }
        let line: Vec<u8> = self.buf.drain(..=nl).collect();
        let text = trim_end(&line[..nl]);
        if text.is_empty() {
            // the blank line: the body follows
            let length = match content_length(&headers) {
                Some(n) if n > self.max_part => bail!(
                    "unable to read the MJPEG stream: a part of {n} bytes exceeds the {} byte limit; lower the camera's resolution or quality",
                    self.max_part
                ),
                other => other,
            };
            self.state = State::Body {
                headers,
                length,
                scanned: 0,
            };
            return Ok(Step::Advanced);
        }
        let kind = self
            .boundary
            .as_ref()
            .map_or(Line::Other, |b| classify(text, b));
        match kind {
            // a delimiter among headers: the part was empty, start again
            Line::Open => {
                self.state = State::Headers {
                    headers: Vec::new(),
                    used: 0,
                }
            }
            Line::Close => self.finish(),
            Line::Other => {
                if let Some(colon) = text.iter().position(|&c| c == b':') {
                    let name = String::from_utf8_lossy(&text[..colon]).trim().to_string();
                    let value = String::from_utf8_lossy(&text[colon + 1..])
                        .trim()
                        .to_string();
                    headers.push((name, value));
                }
                self.state = State::Headers { headers, used };
            }
        }
        Ok(Step::Advanced)
    }

    /// Reads a body of known length, or up to the next delimiter line.
    fn body(
        &mut self,
        headers: Vec<(String, String)>,
        length: Option<usize>,
        scanned: usize,
    ) -> Result<Step> {
        if let Some(n) = length {
            if self.buf.len() < n {
                self.state = State::Body {
                    headers,
                    length,
                    scanned,
                };
                return Ok(Step::Stalled);
            }
            let body: Vec<u8> = self.buf.drain(..n).collect();
            self.state = State::Seek;
            return Ok(Step::Emitted(Part { headers, body }));
        }
        let Some(b) = self.boundary.clone() else {
            bail!("unable to parse the MJPEG stream: a part has no Content-Length and no boundary is known; check the camera's Content-Type");
        };
        match find_delimiter(&self.buf, &b, scanned) {
            Found::Delimiter {
                body_end,
                line_end,
                close,
            } => {
                let mut body: Vec<u8> = self.buf.drain(..line_end).collect();
                body.truncate(body_end);
                if close {
                    self.finish();
                } else {
                    self.state = State::Headers {
                        headers: Vec::new(),
                        used: 0,
                    };
                }
                Ok(Step::Emitted(Part { headers, body }))
            }
            Found::Nothing { resume } => {
                if self.buf.len() > self.max_part + b.len() + MAX_DASHES + 8 {
                    bail!(
                        "unable to read the MJPEG stream: a part exceeds the {} byte limit without a boundary; lower the camera's resolution or check the stream",
                        self.max_part
                    );
                }
                self.state = State::Body {
                    headers,
                    length,
                    scanned: resume,
                };
                Ok(Step::Stalled)
            }
        }
    }

    fn discard(&mut self, n: usize) {
        self.buf.drain(..n);
        self.discarded += n as u64;
    }

    fn finish(&mut self) {
        self.discarded += self.buf.len() as u64;
        self.buf = Vec::new();
        self.state = State::Done;
    }
}

#[cfg(test)]
mod tests;
