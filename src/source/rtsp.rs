//! RTSP IP cameras: [`RtspSource`] plays `rtsp://[user:password@]host[:port]/path` with `retina`
//! (RTP interleaved on the RTSP TCP connection, basic or digest auth) and decodes its H.264 video
//! with `openh264` into RGB. It owns the camera URL's credentials (they never reach logs or
//! errors, see [`super::redact`]), the session's lifetime and the decoder.
//!
//! Field rules, as for the HTTP sources: every network wait is bounded ([`CONNECT_TIMEOUT`] for
//! DESCRIBE, SETUP and PLAY each, [`FRAME_TIMEOUT`] per frame); any session error drops the
//! session and the next `next_frame` call reconnects (the capture loop backs off in between); an
//! access unit the decoder rejects is skipped and counted, and after [`MAX_BAD_IN_A_ROW`] in a row
//! the session is dropped and reconnected. A stream that is not H.264 (H.265, MJPEG, ...) is
//! refused with the codec's name and a pointer to the camera's H.264 substream.
//!
//! retina is async: the source keeps a current-thread tokio runtime and blocks on it per call, so
//! the capture loop's thread drives the network only while it waits for a frame.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use image::RgbImage;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat};

use super::{redact, FrameSource};

/// How long each of DESCRIBE (TCP connect included), SETUP and PLAY may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `next_frame` call waits for a picture once the session plays (frames passed
/// over while waiting for a key frame included).
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Access units in a row the decoder rejects after which the session is dropped and reconnected
/// (after a rejected one only key frames are tried, so this counts key frames).
const MAX_BAD_IN_A_ROW: u32 = 10;

/// An RTSP camera streaming H.264. Connects on the first `next_frame`, and again on the call
/// after any error.
///
/// Every frame is decoded, also those the capture loop then drops to honour its rate limit:
/// H.264 predicts frames from earlier ones, so skipping the decode of one would corrupt the
/// pictures after it until the next key frame. (MJPEG frames, by contrast, stand alone.)
pub struct RtspSource {
    /// The URL without credentials, as sent to the camera.
    url: url::Url,
    credentials: Option<Credentials>,
    /// The spec for logs and errors, credentials removed.
    shown: String,
    runtime: tokio::runtime::Runtime,
    playing: Option<Playing>,
    undecodable: u64,
    connects: u64,
}

/// A playing session and its decoder.
struct Playing {
    demuxed: Demuxed,
    /// The video stream's index among the session's streams.
    stream: usize,
    h264: H264,
}

/// An H.264 decoder fed one Annex B access unit at a time (SPS/PPS inline before key frames).
struct H264 {
    decoder: Decoder,
    /// No key frame seen yet since the start or since a decode error: frames before one cannot
    /// be decoded correctly, so they are passed over (and not counted as undecodable).
    need_key: bool,
    /// Access units rejected in a row.
    bad_in_a_row: u32,
    /// The RGB output buffer, reused while the picture size stays the same.
    rgb: Vec<u8>,
}

/// What one access unit gave.
enum Decoded {
    Picture(RgbImage),
    /// No picture (yet): passed over while waiting for a key frame, or the decoder wants more.
    Nothing,
    /// The decoder rejected the access unit: it is skipped and should be counted.
    Rejected(anyhow::Error),
}

impl H264 {
    fn new() -> Result<H264> {
        let decoder =
            Decoder::new().map_err(|e| anyhow!("unable to start the H.264 decoder: {e}"))?;
        Ok(H264 {
            decoder,
            need_key: true,
            bad_in_a_row: 0,
            rgb: Vec::new(),
        })
    }

    fn push(&mut self, access_unit: &[u8], key_frame: bool) -> Decoded {
        if self.need_key && !key_frame {
            return Decoded::Nothing;
        }
        match self.decode(access_unit) {
            Ok(picture) => {
                self.need_key = false;
                self.bad_in_a_row = 0;
                picture.map_or(Decoded::Nothing, Decoded::Picture)
            }
            Err(e) => {
                self.bad_in_a_row += 1;
                self.need_key = true;
                Decoded::Rejected(e)
            }
        }
    }

    /// Decodes one access unit into the RGB buffer (resized to the picture) and returns the
    /// picture, `None` when the decoder has none yet.
    fn decode(&mut self, access_unit: &[u8]) -> Result<Option<RgbImage>> {
        let Some(yuv) = self
            .decoder
            .decode(access_unit)
            .map_err(|e| anyhow!("H.264 decoder: {e}"))?
        else {
            return Ok(None);
        };
        let (width, height) = yuv.dimensions();
        self.rgb.resize(width * height * 3, 0);
        yuv.write_rgb8(&mut self.rgb);
        let image =
            RgbImage::from_raw(width as u32, height as u32, self.rgb.clone()).ok_or_else(|| {
                anyhow!("H.264 decoder: a {width}x{height} picture did not fit its buffer")
            })?;
        Ok(Some(image))
    }
}

impl RtspSource {
    /// Checks the URL; does not connect (a camera that is off at startup is retried later).
    pub fn open(spec: &str) -> Result<RtspSource> {
        let shown = redact(spec);
        let scheme = "rtsp://";
        let rest = match spec.get(..scheme.len()) {
            Some(s) if s.eq_ignore_ascii_case(scheme) => &spec[scheme.len()..],
            _ => bail!("unable to open camera {shown}: not an rtsp:// URL; write it like rtsp://user:password@192.168.1.30:554/stream2"),
        };
        // credentials end at the last `@`, like `redact`, so passwords may contain `@`, `:`, `/`
        let (userinfo, location) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        if location.is_empty() || location.starts_with(['/', '?', '#', ':']) {
            bail!("unable to open camera {shown}: the URL has no host; write it like rtsp://user:password@192.168.1.30:554/stream2");
        }
        let url = url::Url::parse(&format!("rtsp://{location}")).map_err(|e| anyhow!("unable to open camera {shown}: not a valid URL ({e}); write it like rtsp://user:password@192.168.1.30:554/stream2"))?;
        let credentials = userinfo.map(|info| {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            Credentials {
                username: String::from_utf8_lossy(&super::percent_decode(user)).into_owned(),
                password: String::from_utf8_lossy(&super::percent_decode(password)).into_owned(),
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .with_context(|| format!("unable to start the network runtime for camera {shown}"))?;
        Ok(RtspSource {
            url,
            credentials,
            shown,
            runtime,
            playing: None,
            undecodable: 0,
            connects: 0,
        })
    }

    /// Access units skipped because the decoder rejected them.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Sessions established so far (the first one included).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// DESCRIBE, SETUP of the first video stream (H.264 only), PLAY; each step bounded.
    fn connect(&mut self) -> Result<Playing> {
        let shown = self.shown.clone();
        let options = SessionOptions::default()
            .creds(self.credentials.clone())
            .user_agent(concat!("promptcam/", env!("CARGO_PKG_VERSION")).to_string());
        let url = self.url.clone();
        let has_credentials = self.credentials.is_some();
        let demuxed = self.runtime.block_on(async {
            let mut session = bounded("DESCRIBE", &shown, has_credentials, Session::describe(url, options)).await?;
            let videos: Vec<(usize, String)> = session
                .streams()
                .iter()
                .enumerate()
                .filter(|(_, s)| s.media() == "video")
                .map(|(i, s)| (i, s.encoding_name().to_ascii_lowercase()))
                .collect();
            let stream = match videos.iter().find(|(_, codec)| codec == "h264") {
                Some((i, _)) => *i,
                None => {
                    let Some((_, codec)) = videos.first() else {
                        bail!("unable to play camera {shown}: the stream has no video; check the path in the source URL");
                    };
                    bail!(
                        "unable to play camera {shown}: its video is {}, and only H.264 is supported; configure an H.264 stream on the camera (most offer one as the substream, e.g. stream2 or subtype=1) and use its URL",
                        codec_name(codec)
                    );
                }
            };
            // Annex B with SPS/PPS before every key frame: what openh264 takes, and a decoder
            // that starts (or restarts after an error) at a key frame has what it needs
            let setup = SetupOptions::default().transport(Transport::default()).frame_format(FrameFormat::SIMPLE);
            bounded("SETUP", &shown, has_credentials, session.setup(stream, setup)).await?;
            let playing = bounded("PLAY", &shown, has_credentials, session.play(PlayOptions::default())).await?;
            let demuxed = playing.demuxed().map_err(|e| anyhow!("unable to play camera {shown}: {}; check the camera", flat(&e)))?;
            Ok((demuxed, stream))
        });
        let (demuxed, stream) = demuxed?;
        let h264 = H264::new().with_context(|| format!("unable to play camera {shown}"))?;
        self.connects += 1;
        tracing::debug!("playing {shown} (stream {stream})");
        Ok(Playing {
            demuxed,
            stream,
            h264,
        })
    }

    /// Drops the session inside the runtime (retina sends its TEARDOWN from a spawned task).
    fn disconnect(&mut self) {
        let _inside = self.runtime.enter();
        self.playing = None;
    }
}

impl FrameSource for RtspSource {
    fn undecodable(&self) -> u64 {
        RtspSource::undecodable(self)
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        let mut deadline = Instant::now() + FRAME_TIMEOUT;
        loop {
            if self.playing.is_none() {
                self.playing = Some(self.connect()?);
                deadline = Instant::now() + FRAME_TIMEOUT;
            }
            let Some(playing) = self.playing.as_mut() else {
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let item = self
                .runtime
                .block_on(async { tokio::time::timeout(left, playing.demuxed.next()).await });
            let frame = match item {
                Ok(Some(Ok(CodecItem::VideoFrame(frame))))
                    if frame.stream_id() == playing.stream =>
                {
                    frame
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => {
                    self.disconnect();
                    bail!(
                        "unable to read the RTSP stream from {}: {}; reconnecting",
                        self.shown,
                        flat(&e)
                    );
                }
                Ok(None) => {
                    self.disconnect();
                    bail!("unable to read the RTSP stream from {}: the camera ended the session; reconnecting", self.shown);
                }
                Err(_) => {
                    let rejected = match playing.h264.bad_in_a_row {
                        0 => String::new(),
                        n => format!(", {n} access unit(s) rejected by the decoder"),
                    };
                    self.disconnect();
                    bail!("unable to read the RTSP stream from {}: no picture within {} s (timeout{rejected}); reconnecting", self.shown, FRAME_TIMEOUT.as_secs());
                }
            };
            match playing
                .h264
                .push(frame.data(), frame.is_random_access_point())
            {
                Decoded::Picture(image) => return Ok(Some(image)),
                Decoded::Nothing => {}
                Decoded::Rejected(e) => {
                    self.undecodable += 1;
                    tracing::debug!("{}: skipped an access unit: {e:#}", self.shown);
                    if playing.h264.bad_in_a_row >= MAX_BAD_IN_A_ROW {
                        self.disconnect();
                        bail!(
                            "unable to decode the RTSP stream from {}: {MAX_BAD_IN_A_ROW} access units in a row failed ({e:#}); check the camera's H.264 settings (baseline/main profile)",
                            self.shown
                        );
                    }
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("RTSP {}", self.shown)
    }
}

impl Drop for RtspSource {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// Runs one RTSP request with [`CONNECT_TIMEOUT`], turning retina's errors into ours: a 401 says
/// the credentials were rejected (or are missing), never what they were.
async fn bounded<T>(
    step: &str,
    shown: &str,
    has_credentials: bool,
    request: impl std::future::Future<Output = Result<T, retina::Error>>,
) -> Result<T> {
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, request)
        .await
        .map_err(|_| anyhow!("unable to open camera {shown}: no answer to {step} within {} s (timeout); check that the camera is on and reachable", CONNECT_TIMEOUT.as_secs()))?;
    answer.map_err(|e| match e.status_code() {
        Some(401) if has_credentials => {
            anyhow!("unable to open camera {shown}: the camera rejected the credentials (RTSP 401 Unauthorized on {step}); check the user and password in the source URL")
        }
        Some(401) => anyhow!("unable to open camera {shown}: the camera asks for a user and password (RTSP 401 Unauthorized on {step}); write them into the URL as rtsp://user:password@host/path"),
        Some(404) => anyhow!("unable to open camera {shown}: the camera has no stream at this path (RTSP 404 on {step}); check the path in the source URL"),
        _ => anyhow!("unable to open camera {shown}: {step} failed: {}; check that the camera is on and reachable", flat(&e)),
    })
}

/// A codec's usual name for an RTP encoding name.
fn codec_name(encoding: &str) -> String {
    match encoding {
        "h265" => "H.265 (HEVC)".to_string(),
        "jpeg" => "MJPEG".to_string(),
        "mp4v-es" => "MPEG-4 Part 2".to_string(),
        other => other.to_ascii_uppercase(),
    }
}

/// retina's messages span lines (with connection details): one line for logs.
fn flat(e: &retina::Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[path = "rtsp_tests.rs"]
mod tests;
