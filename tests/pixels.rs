//! Pixel conversions against ffmpeg: raw YUYV / NV12 / YU12 frames that ffmpeg makes from its test
//! pattern, converted by promptcam and by ffmpeg's swscale to RGB24, must agree within a small
//! mean error, also with their lines padded as a driver's `bytesperline` may; MJPEG frames
//! decoded by promptcam match ffmpeg's decode of the same JPEG.

use std::path::Path;
use std::process::Command;

use promptcam::source::pixel::{to_rgb, RawFormat};

use crate::fixture::TempDir;

const W: usize = 320;
const H: usize = 240;

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is needed (Debian package ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ffmpeg's test pattern as `pix_fmt` raw bytes, and ffmpeg's own RGB24 conversion of those bytes.
fn pattern(dir: &Path, pix_fmt: &str) -> (Vec<u8>, Vec<u8>) {
    let raw = dir.join(format!("frame.{pix_fmt}"));
    let rgb = dir.join(format!("frame.{pix_fmt}.rgb"));
    let size = format!("{W}x{H}");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=1"),
        "-frames:v",
        "1",
        "-pix_fmt",
        pix_fmt,
        "-f",
        "rawvideo",
        raw.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "rawvideo",
        "-pix_fmt",
        pix_fmt,
        "-s",
        &size,
        "-i",
        raw.to_str().unwrap(),
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        rgb.to_str().unwrap(),
    ]);
    (std::fs::read(raw).unwrap(), std::fs::read(rgb).unwrap())
}

/// `raw` with every line of every plane padded to a multiple of 64 bytes (YU12's chroma lines
/// half as long as its luma ones, as V4L2 lays them out); returns it and its `bytesperline`.
fn pad_lines(fmt: RawFormat, raw: &[u8]) -> (Vec<u8>, usize) {
    let (cw, ch) = (W.div_ceil(2), H.div_ceil(2));
    let line = if fmt == RawFormat::Yuyv { 2 * W } else { W };
    let stride = (line / 64 + 1) * 64;
    let planes = match fmt {
        RawFormat::Yuyv => vec![(line, H, stride)],
        RawFormat::Nv12 => vec![(W, H, stride), (2 * cw, ch, stride)],
        RawFormat::Yu12 => vec![(W, H, stride), (cw, ch, stride / 2), (cw, ch, stride / 2)],
    };
    let (mut out, mut at) = (vec![], 0);
    for (len, lines, padded) in planes {
        for _ in 0..lines {
            out.extend_from_slice(&raw[at..at + len]);
            out.resize(out.len() + padded - len, 0x80);
            at += len;
        }
    }
    (out, stride)
}

fn mean_abs(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let sum: u64 = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u64).sum();
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    (sum as f64 / a.len() as f64, max)
}

#[test]
fn raw_yuv_formats_convert_like_ffmpeg() {
    let tmp = TempDir::new("pixels");
    for (fmt, pix_fmt) in [
        (RawFormat::Yuyv, "yuyv422"),
        (RawFormat::Nv12, "nv12"),
        (RawFormat::Yu12, "yuv420p"),
    ] {
        let (raw, want) = pattern(tmp.path(), pix_fmt);
        assert_eq!(raw.len(), fmt.frame_len(W, H), "{pix_fmt} frame size");
        let mut ours = vec![];
        to_rgb(fmt, &raw, W, H, 0, &mut ours).unwrap();
        // the same frame as a driver padding its lines to 64 bytes delivers it
        let mut from_padded = vec![];
        let (padded, stride) = pad_lines(fmt, &raw);
        to_rgb(fmt, &padded, W, H, stride, &mut from_padded).unwrap();
        assert!(
            from_padded == ours,
            "{pix_fmt}: padded lines convert differently"
        );
        let (mean, max) = mean_abs(&ours, &want);
        eprintln!("{pix_fmt}: mean abs error {mean:.3}, max {max}");
        // ffmpeg interpolates chroma between samples where we take the co-sited one: edges of
        // colour bars differ by more, the bulk by rounding
        assert!(
            mean < 2.0,
            "{pix_fmt}: mean abs error {mean:.3} (max {max})"
        );
    }
}

#[test]
fn mjpeg_frames_decode_like_ffmpeg() {
    let tmp = TempDir::new("mjpeg");
    let jpg = tmp.path().join("frame.jpg");
    let rgb = tmp.path().join("frame.rgb");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={W}x{H}:rate=1"),
        "-frames:v",
        "1",
        "-q:v",
        "3",
        jpg.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-i",
        jpg.to_str().unwrap(),
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        rgb.to_str().unwrap(),
    ]);
    let ours = promptcam::decode::decode_image(&std::fs::read(&jpg).unwrap()).unwrap();
    assert_eq!(ours.dimensions(), (W as u32, H as u32));
    let (mean, max) = mean_abs(ours.as_raw(), &std::fs::read(&rgb).unwrap());
    eprintln!("mjpeg: mean abs error {mean:.3}, max {max}");
    // a 4:2:0 JPEG: zune-jpeg and ffmpeg upsample chroma differently, which shows on the test
    // pattern's hard colour edges (max) but little on average
    assert!(mean < 3.5, "mjpeg: mean abs error {mean:.3} (max {max})");
}
