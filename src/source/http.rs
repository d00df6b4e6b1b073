//! HTTP cameras: [`MjpegSource`] reads an MJPEG stream (`multipart/x-mixed-replace`, as
//! ESP32-CAM and most IP cameras serve it) and [`SnapshotSource`] polls a JPEG URL at the
//! camera's fps. Both take basic-auth credentials from the URL's `user:password@`, which never
//! reach logs or errors (see [`super::redact`]), and send them along redirects to the same
//! origin, never to another one.
//!
//! Field rules: every network wait has a timeout ([`CONNECT_TIMEOUT`], [`READ_TIMEOUT`]), so a
//! camera that hangs makes `next_frame` fail instead of blocking forever; a connection error or
//! the end of the stream is an error, and the next call reconnects (the capture loop backs off
//! in between); a corrupt part is skipped and counted without dropping the connection; and no
//! part may exceed [`MAX_PART_BYTES`].

use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use image::RgbImage;

use super::multipart::{boundary_from_content_type, MultipartParser, Part};
use super::{redact, FrameSource};
use crate::decode::{check_image, decode_image};
use crate::frame::Picture;

/// How long to wait for a name lookup or a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any single read or write may wait (response headers included).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest frame (or snapshot) accepted, in bytes.
pub const MAX_PART_BYTES: usize = 16 << 20;
/// Undecodable parts in a row after which the stream is dropped and reconnected.
const MAX_BAD_IN_A_ROW: u32 = 10;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 << 10;

/// Spec prefix that selects snapshot polling instead of an MJPEG stream.
pub const SNAPSHOT_PREFIX: &str = "snapshot+";

/// A camera URL split into what goes on the wire and what may be shown.
struct Target {
    /// The URL without credentials.
    url: String,
    /// `Basic ...` when the spec carried `user:password@`.
    authorization: Option<String>,
    /// The spec for logs and errors, credentials removed.
    shown: String,
}

impl Target {
    /// Parses `http://[user[:password]@]host[:port][/path]`. The credentials end at the last
    /// `@` (like [`redact`]), so passwords may contain `@`, `:` and `/`; percent-escapes in them
    /// are decoded.
    fn parse(spec: &str, url: &str) -> Result<Target> {
        let shown = redact(spec);
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            bail!("unable to open camera {shown}: HTTPS needs TLS, which this build does not include; use the camera's http:// URL on a trusted network, or a local TLS-terminating proxy");
        }
        if !lower.starts_with("http://") {
            bail!("unable to open camera {shown}: not an http:// URL; write it like http://user:password@192.168.1.20:81/stream");
        }
        let rest = &url["http://".len()..];
        let (userinfo, location) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        if location.is_empty() || location.starts_with(['/', '?', '#', ':']) {
            bail!("unable to open camera {shown}: the URL has no host; write it like http://user:password@192.168.1.20:81/stream");
        }
        let url = format!("http://{location}");
        if let Err(e) = ureq::http::Uri::try_from(url.as_str()) {
            bail!("unable to open camera {shown}: not a valid URL ({e}); write it like http://user:password@192.168.1.20:81/stream");
        }
        let authorization = userinfo.map(|info| {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            let mut pair = super::percent_decode(user);
            pair.push(b':');
            pair.extend(super::percent_decode(password));
            format!("Basic {}", BASE64.encode(&pair))
        });
        Ok(Target {
            url,
            authorization,
            shown,
        })
    }

    /// Sends a GET and returns the response if its status is 2xx. Redirects are followed here
    /// (at most [`MAX_REDIRECTS`]) so that the credentials go along to the same origin (scheme,
    /// host and port), as a camera's login redirect needs, and never to another one.
    fn get(&self, agent: &ureq::Agent, what: &str) -> Result<ureq::http::Response<ureq::Body>> {
        let mut url = self.url.clone();
        let mut authorization = self.authorization.as_deref();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = agent.get(&url);
            if let Some(authorization) = authorization {
                request = request.header("Authorization", authorization);
            }
            let response = request.call().map_err(|e| {
                anyhow!(
                    "unable to fetch {what} from {}: {e}; check that the camera is on and reachable",
                    self.shown
                )
            })?;
            let status = response.status();
            if status.is_redirection() && status.as_u16() != 304 {
                let next = redirect(&url, &response)
                    .map_err(|e| anyhow!("unable to fetch {what} from {}: {e}", self.shown))?;
                if !same_origin(&url, &next) {
                    authorization = None;
                }
                url = next.to_string();
                continue;
            }
            if !status.is_success() {
                let hint = match status.as_u16() {
                    401 | 403 => "check the user and password in the source URL",
                    404 => "check the path in the source URL",
                    _ => "check the camera",
                };
                bail!(
                    "unable to fetch {what} from {}: the camera answered HTTP {} {}; {hint}",
                    self.shown,
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                );
            }
            return Ok(response);
        }
        bail!(
            "unable to fetch {what} from {}: more than {MAX_REDIRECTS} redirects; use the URL the camera finally serves",
            self.shown
        )
    }
}

/// Redirects followed per request.
const MAX_REDIRECTS: usize = 3;

/// Where a redirect response points, resolved against the URL that answered it.
fn redirect(from: &str, response: &ureq::http::Response<ureq::Body>) -> Result<url::Url> {
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("the camera answered a redirect without a Location"))?;
    let next = url::Url::parse(from)
        .and_then(|base| base.join(location))
        .map_err(|e| anyhow!("the camera redirected to an invalid URL ({e})"))?;
    if next.scheme() != "http" {
        bail!(
            "the camera redirected to a {}:// URL; promptcam reads http:// cameras only",
            next.scheme()
        );
    }
    Ok(next)
}

/// Whether two URLs share scheme, host and port (credentials may follow a redirect only then).
fn same_origin(a: &str, b: &url::Url) -> bool {
    url::Url::parse(a).is_ok_and(|a| a.origin() == b.origin())
}

/// An HTTP client whose every wait is bounded, that talks to cameras directly (no proxy from
/// the environment) and reports HTTP error statuses as responses.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_send_request(Some(READ_TIMEOUT))
        .timeout_recv_response(Some(READ_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .timeout_per_write(Some(READ_TIMEOUT))
        .http_status_as_error(false)
        // followed by `Target::get`, which keeps the credentials on the same origin
        .max_redirects(0)
        .proxy(None)
        .user_agent(concat!("promptcam/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// An open MJPEG connection.
struct Stream {
    reader: ureq::BodyReader<'static>,
    parser: MultipartParser,
    ready: VecDeque<Part>,
    chunk: Vec<u8>,
}

/// An MJPEG camera: `http://[user:password@]host[:port]/path`. Connects on the first
/// `next_frame`, and again on the call after any error.
pub struct MjpegSource {
    target: Target,
    agent: ureq::Agent,
    stream: Option<Stream>,
    undecodable: u64,
    connects: u64,
    bad_in_a_row: u32,
}

impl MjpegSource {
    /// Checks the URL; does not connect (a camera that is off at startup is retried later).
    pub fn open(spec: &str) -> Result<MjpegSource> {
        Ok(MjpegSource {
            target: Target::parse(spec, spec)?,
            agent: agent(),
            stream: None,
            undecodable: 0,
            connects: 0,
            bad_in_a_row: 0,
        })
    }

    /// Parts skipped because they were not a decodable image.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Connections established so far (the first one included).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    fn connect(&mut self) -> Result<Stream> {
        let response = self.target.get(&self.agent, "the MJPEG stream")?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let lower = content_type.to_ascii_lowercase();
        if lower.starts_with("image/") {
            bail!(
                "unable to stream {}: the camera answered with a single {content_type} picture, not an MJPEG stream; use {SNAPSHOT_PREFIX}{} to poll it",
                self.target.shown,
                self.target.shown
            );
        }
        if lower.starts_with("text/html") {
            bail!(
                "unable to stream {}: the camera answered with a web page ({content_type}), not an MJPEG stream; check the path of the stream URL",
                self.target.shown
            );
        }
        self.connects += 1;
        let boundary = boundary_from_content_type(&content_type);
        tracing::debug!("connected to {} ({content_type})", self.target.shown);
        Ok(Stream {
            reader: response.into_body().into_reader(),
            parser: MultipartParser::new(boundary.as_deref(), MAX_PART_BYTES),
            ready: VecDeque::new(),
            chunk: vec![0; READ_CHUNK],
        })
    }
}

impl MjpegSource {
    /// The next part `accept` takes (decoded, or checked to be a picture); parts it refuses
    /// are counted and skipped, and after `MAX_BAD_IN_A_ROW` of them in a row the stream is
    /// dropped with an error.
    fn next_part<T>(&mut self, accept: impl Fn(Vec<u8>) -> Result<T>) -> Result<Option<T>> {
        loop {
            if self.stream.is_none() {
                self.stream = Some(self.connect()?);
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            if let Some(part) = stream.ready.pop_front() {
                match accept(part.body) {
                    Ok(picture) => {
                        self.bad_in_a_row = 0;
                        return Ok(Some(picture));
                    }
                    Err(e) => {
                        self.undecodable += 1;
                        self.bad_in_a_row += 1;
                        tracing::debug!("{}: skipped a part: {e:#}", self.target.shown);
                        if self.bad_in_a_row >= MAX_BAD_IN_A_ROW {
                            self.stream = None;
                            self.bad_in_a_row = 0;
                            bail!(
                                "unable to decode the MJPEG stream from {}: {MAX_BAD_IN_A_ROW} parts in a row were not pictures ({e:#}); check that the URL is the camera's MJPEG stream",
                                self.target.shown
                            );
                        }
                        continue;
                    }
                }
            }
            let read = stream.reader.read(&mut stream.chunk);
            let parsed = match read {
                Ok(0) => Err(anyhow!("unable to read the MJPEG stream from {}: the camera closed the connection; reconnecting", self.target.shown)),
                Ok(n) => stream.parser.feed(&stream.chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Err(anyhow!("unable to read the MJPEG stream from {}: {e}; reconnecting", self.target.shown)),
            };
            match parsed {
                Ok(parts) => stream.ready.extend(parts),
                Err(e) => {
                    self.stream = None;
                    return Err(e);
                }
            }
            if stream.parser.finished() && stream.ready.is_empty() {
                self.stream = None;
                bail!("unable to read the MJPEG stream from {}: the camera ended the stream; reconnecting", self.target.shown);
            }
        }
    }
}

impl FrameSource for MjpegSource {
    fn undecodable(&self) -> u64 {
        MjpegSource::undecodable(self)
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        self.next_part(|bytes| decode_image(&bytes))
    }

    /// The part's bytes, checked to be a whole JPEG or PNG but not decoded.
    fn next_picture(&mut self) -> Result<Option<Picture>> {
        self.next_part(|bytes| check_image(&bytes).map(|()| Picture::Compressed(bytes)))
    }

    fn describe(&self) -> String {
        format!("MJPEG {}", self.target.shown)
    }
}

/// A camera polled for single pictures: `snapshot+http://[user:password@]host/path.jpg`,
/// fetched at most `fps` times per second (keeping the connection alive between fetches).
pub struct SnapshotSource {
    target: Target,
    agent: ureq::Agent,
    gap: Duration,
    due: Option<Instant>,
    undecodable: u64,
}

impl SnapshotSource {
    /// Checks the URL (which must start with `snapshot+http://`); does not connect.
    pub fn open(spec: &str, fps: f64) -> Result<SnapshotSource> {
        let url = match spec.get(..SNAPSHOT_PREFIX.len()) {
            Some(prefix) if prefix.eq_ignore_ascii_case(SNAPSHOT_PREFIX) => {
                &spec[SNAPSHOT_PREFIX.len()..]
            }
            _ => bail!(
                "unable to open camera {}: a snapshot URL starts with {SNAPSHOT_PREFIX}http://",
                redact(spec)
            ),
        };
        Ok(SnapshotSource {
            target: Target::parse(spec, url)?,
            agent: agent(),
            gap: Duration::from_secs_f64(1.0 / fps.max(0.001)),
            due: None,
            undecodable: 0,
        })
    }

    /// Snapshots that were not a decodable image.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }
}

impl SnapshotSource {
    /// Fetches one picture and hands it to `accept` (decoding, or checking it is a picture).
    /// One it refuses is counted and returned as an error (each fetch stands alone, so the next
    /// call simply fetches again).
    fn fetch<T>(&mut self, accept: impl Fn(Vec<u8>) -> Result<T>) -> Result<Option<T>> {
        if let Some(due) = self.due {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        self.due = Some(Instant::now() + self.gap);
        let response = self.target.get(&self.agent, "a snapshot")?;
        let bytes = response.into_body().with_config().limit(MAX_PART_BYTES as u64).read_to_vec().map_err(|e| {
            anyhow!("unable to read a snapshot from {}: {e}; check the camera (pictures over {MAX_PART_BYTES} bytes are refused)", self.target.shown)
        })?;
        accept(bytes).map(Some).map_err(|e| {
            self.undecodable += 1;
            anyhow!("unable to use the snapshot from {}: {e:#}; check that the URL serves a JPEG picture", self.target.shown)
        })
    }
}

impl FrameSource for SnapshotSource {
    fn undecodable(&self) -> u64 {
        SnapshotSource::undecodable(self)
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        self.fetch(|bytes| decode_image(&bytes))
    }

    /// The snapshot's bytes, checked to be a whole JPEG or PNG but not decoded.
    fn next_picture(&mut self) -> Result<Option<Picture>> {
        self.fetch(|bytes| check_image(&bytes).map(|()| Picture::Compressed(bytes)))
    }

    fn describe(&self) -> String {
        format!("snapshots {}", self.target.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_the_description() {
        let t = Target::parse(
            "http://ad%40min:p@ss/w:rd@cam.local:81/stream",
            "http://ad%40min:p@ss/w:rd@cam.local:81/stream",
        )
        .unwrap();
        assert_eq!(t.url, "http://cam.local:81/stream");
        assert_eq!(
            t.authorization.as_deref(),
            // base64 of "ad@min:p@ss/w:rd"
            Some("Basic YWRAbWluOnBAc3MvdzpyZA==")
        );
        assert!(
            !t.shown.contains("p@ss") && !t.shown.contains("rd@"),
            "{}",
            t.shown
        );
        let t = Target::parse("http://cam/mjpeg", "http://cam/mjpeg").unwrap();
        assert_eq!(
            (t.url.as_str(), t.authorization),
            ("http://cam/mjpeg", None)
        );
        for bad in [
            "https://u:secret@cam/x",
            "http://u:secret@/x",
            "ftp://cam/x",
            "http://u:secret@ca m/x",
        ] {
            let e = format!("{:#}", Target::parse(bad, bad).err().unwrap());
            assert!(
                e.starts_with("unable to open camera") && !e.contains("secret"),
                "{bad}: {e}"
            );
        }
        let e = format!(
            "{:#}",
            SnapshotSource::open("http://u:secret@cam/x.jpg", 1.0)
                .err()
                .unwrap()
        );
        assert!(
            e.contains("snapshot+http://") && !e.contains("secret"),
            "{e}"
        );
    }
}
