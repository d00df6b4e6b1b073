//! V4L2 cameras: USB webcams, the Raspberry Pi camera through its V4L2 interface, Jetson CSI
//! through V4L2. Negotiates a format the camera offers (MJPEG preferred, then YUYV, NV12, YU12),
//! the resolution nearest the requested one and the frame rate, then streams through mmap
//! buffers and converts each frame to RGB. `promptcam devices` lists what each camera offers.
//!
//! Spec: `/dev/video0`, optionally `/dev/video0@1280x720` (default 1280x720 or the nearest).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use v4l::buffer::Type;
use v4l::io::traits::CaptureStream;
use v4l::prelude::*;
use v4l::video::Capture;
use v4l::FourCC;

use super::pixel::{self, RawFormat};
use super::FrameSource;
use crate::frame::Picture;

/// Formats in order of preference, with their V4L2 fourcc.
const PREFERRED: [(&[u8; 4], Option<RawFormat>); 4] = [
    (b"MJPG", None),
    (b"YUYV", Some(RawFormat::Yuyv)),
    (b"NV12", Some(RawFormat::Nv12)),
    (b"YU12", Some(RawFormat::Yu12)),
];

/// A pixel format a device offers (fourcc) with its frame sizes.
type Offered = ([u8; 4], Vec<(u32, u32)>);

/// Picks the preferred fourcc among those offered, and the offered size nearest `want`.
pub fn negotiate(offered: &[Offered], want: (u32, u32)) -> Option<([u8; 4], (u32, u32))> {
    for (fourcc, _) in PREFERRED {
        if let Some((_, sizes)) = offered.iter().find(|(f, _)| f == fourcc) {
            let dist = |s: &(u32, u32)| {
                (s.0 as i64 - want.0 as i64).abs() + (s.1 as i64 - want.1 as i64).abs()
            };
            let size = sizes
                .iter()
                .min_by_key(|s| dist(s))
                .copied()
                .unwrap_or(want);
            return Some((*fourcc, size));
        }
    }
    None
}

pub fn parse_spec(spec: &str) -> Result<(String, (u32, u32))> {
    match spec.split_once('@') {
        None => Ok((spec.to_string(), (1280, 720))),
        Some((path, size)) => {
            let (w, h) = size
                .split_once('x')
                .context("expected /dev/videoN@WIDTHxHEIGHT")?;
            Ok((
                path.to_string(),
                (
                    w.parse().context("bad width")?,
                    h.parse().context("bad height")?,
                ),
            ))
        }
    }
}

pub struct V4l2Source {
    path: String,
    // the stream maps the device's buffers; it is dropped before the device
    stream: MmapStream<'static>,
    _device: Device,
    format: Option<RawFormat>,
    size: (u32, u32),
    /// The driver's `bytesperline`: lines may be padded past `width` pixels.
    stride: usize,
    rgb: Vec<u8>,
}

fn offered(dev: &Device) -> Result<Vec<Offered>> {
    let mut out = vec![];
    for f in dev
        .enum_formats()
        .context("unable to list the camera's formats")?
    {
        let sizes = dev
            .enum_framesizes(f.fourcc)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|s| {
                s.size
                    .to_discrete()
                    .into_iter()
                    .map(|d| (d.width, d.height))
            })
            .collect();
        out.push((f.fourcc.repr, sizes));
    }
    Ok(out)
}

impl V4l2Source {
    pub fn open(spec: &str, fps: f64) -> Result<V4l2Source> {
        let (path, want) = parse_spec(spec)?;
        let dev = Device::with_path(&path).with_context(|| {
            format!("unable to open camera {path}: is it plugged in, and is the user in the `video` group? `promptcam devices` lists cameras")
        })?;
        let offered = offered(&dev)?;
        let Some((fourcc, (w, h))) = negotiate(&offered, want) else {
            let names: Vec<String> = offered
                .iter()
                .map(|(f, _)| String::from_utf8_lossy(f).into_owned())
                .collect();
            bail!("unable to use camera {path}: it offers {} but promptcam reads MJPG, YUYV, NV12 or YU12", names.join(", "));
        };
        let mut fmt = dev.format().context("unable to read the camera format")?;
        fmt.width = w;
        fmt.height = h;
        fmt.fourcc = FourCC::new(&fourcc);
        let fmt = dev
            .set_format(&fmt)
            .with_context(|| format!("unable to set {w}x{h} on camera {path}"))?;
        let mut params = dev
            .params()
            .context("unable to read the camera frame rate")?;
        params.interval = v4l::Fraction::new(1000, (fps.clamp(0.1, 120.0) * 1000.0) as u32);
        let _ = dev.set_params(&params);
        let format = PREFERRED
            .iter()
            .find(|(f, _)| **f == fmt.fourcc.repr)
            .and_then(|(_, r)| *r);
        let mut stream = MmapStream::with_buffers(&dev, Type::VideoCapture, 4)
            .with_context(|| format!("unable to start streaming from {path}"))?;
        stream.set_timeout(Duration::from_secs(5));
        Ok(V4l2Source {
            path,
            stream,
            _device: dev,
            format,
            size: (fmt.width, fmt.height),
            stride: fmt.stride as usize,
            rgb: vec![],
        })
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        let (buf, meta) = self
            .stream
            .next()
            .with_context(|| format!("unable to read a frame from {} within 5 s", self.path))?;
        let data = &buf[..(meta.bytesused as usize).min(buf.len())];
        let (w, h) = self.size;
        match self.format {
            None => crate::decode::decode_image(data).map(Some),
            Some(f) => {
                pixel::to_rgb(f, data, w as usize, h as usize, self.stride, &mut self.rgb)?;
                let img = RgbImage::from_raw(w, h, std::mem::take(&mut self.rgb))
                    .context("frame size mismatch")?;
                Ok(Some(img))
            }
        }
    }

    /// MJPEG frames as the camera sent them (checked to be whole, not decoded); raw formats
    /// converted to RGB as by `next_frame` (the driver's buffer is reused, so they are copied
    /// out either way).
    fn next_picture(&mut self) -> Result<Option<Picture>> {
        if self.format.is_some() {
            return Ok(self.next_frame()?.map(Picture::Pixels));
        }
        let (buf, meta) = self
            .stream
            .next()
            .with_context(|| format!("unable to read a frame from {} within 5 s", self.path))?;
        let data = &buf[..(meta.bytesused as usize).min(buf.len())];
        crate::decode::check_image(data)?;
        Ok(Some(Picture::Compressed(data.to_vec())))
    }

    fn describe(&self) -> String {
        format!(
            "V4L2 camera {} at {}x{} ({})",
            self.path,
            self.size.0,
            self.size.1,
            self.format.map_or("MJPEG".into(), |f| format!("{f:?}"))
        )
    }
}

/// What `promptcam devices` prints: every V4L2 node with its formats and sizes.
pub fn list_devices() -> Vec<String> {
    let mut out = vec![];
    for node in v4l::context::enum_devices() {
        let path = node.path().display().to_string();
        let name = node.name().unwrap_or_else(|| "?".into());
        match Device::with_path(node.path()) {
            Err(e) => out.push(format!("{path}: {name} (unable to open: {e})")),
            Ok(dev) => {
                out.push(format!("{path}: {name}"));
                for (fourcc, sizes) in offered(&dev).unwrap_or_default() {
                    let sizes: Vec<String> =
                        sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect();
                    out.push(format!(
                        "  {} {}",
                        String::from_utf8_lossy(&fourcc),
                        sizes.join(" ")
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_mjpeg_then_yuyv_and_the_nearest_size() {
        let offered = vec![
            (*b"YUYV", vec![(640, 480), (1280, 720)]),
            (*b"MJPG", vec![(640, 480), (1920, 1080)]),
        ];
        // MJPEG wins over YUYV; of its sizes 640x480 is nearer 1280x720 than 1920x1080
        assert_eq!(
            negotiate(&offered, (1280, 720)),
            Some((*b"MJPG", (640, 480)))
        );
        assert_eq!(
            negotiate(&offered, (1600, 900)),
            Some((*b"MJPG", (1920, 1080)))
        );
        let offered = vec![
            (*b"NV12", vec![(1920, 1080)]),
            (*b"YUYV", vec![(640, 480), (1280, 720)]),
        ];
        assert_eq!(
            negotiate(&offered, (1280, 720)),
            Some((*b"YUYV", (1280, 720)))
        );
        assert_eq!(negotiate(&[(*b"H264", vec![])], (640, 480)), None);
    }

    #[test]
    fn specs_carry_an_optional_size() {
        assert_eq!(
            parse_spec("/dev/video0").unwrap(),
            ("/dev/video0".into(), (1280, 720))
        );
        assert_eq!(
            parse_spec("/dev/video2@640x480").unwrap(),
            ("/dev/video2".into(), (640, 480))
        );
        assert!(parse_spec("/dev/video2@big").is_err());
    }
}
