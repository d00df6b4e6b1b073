//! Pixel formats cameras deliver (V4L2's YUYV, NV12 and YU12), converted to RGB24 as ffmpeg's
//! swscale does by default: BT.601 coefficients, limited ("TV") range, chroma taken from the
//! co-sited sample. Pure functions writing into a caller's buffer, so a steady stream allocates
//! nothing per frame.

use anyhow::{bail, Result};

/// The raw formats a V4L2 camera may offer besides MJPEG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawFormat {
    /// Packed 4:2:2, `Y0 U Y1 V` per two pixels.
    Yuyv,
    /// Planar Y, then interleaved UV at half resolution (4:2:0).
    Nv12,
    /// Planar Y, then U, then V at half resolution (4:2:0, a.k.a. I420).
    Yu12,
}

impl RawFormat {
    /// Bytes of one `width` x `height` frame.
    pub fn frame_len(self, width: usize, height: usize) -> usize {
        match self {
            RawFormat::Yuyv => width * height * 2,
            RawFormat::Nv12 | RawFormat::Yu12 => {
                width * height + 2 * width.div_ceil(2) * height.div_ceil(2)
            }
        }
    }
}

/// BT.601 limited range, in 16.16 fixed point (the integer path of swscale's tables).
#[inline(always)]
fn rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (y as i32 - 16) * 76309; // 1.164 * 65536
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    let r = (c + 104597 * e + 32768) >> 16; // 1.596
    let g = (c - 25675 * d - 53279 * e + 32768) >> 16; // 0.391, 0.813
    let b = (c + 132201 * d + 32768) >> 16; // 2.018
    [
        r.clamp(0, 255) as u8,
        g.clamp(0, 255) as u8,
        b.clamp(0, 255) as u8,
    ]
}

/// Converts one raw frame to packed RGB24 in `out` (resized to `width * height * 3`).
pub fn to_rgb(
    format: RawFormat,
    data: &[u8],
    width: usize,
    height: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    let need = format.frame_len(width, height);
    if data.len() < need {
        bail!("unable to convert a {format:?} frame: {} bytes where {width}x{height} needs {need}; the frame is truncated", data.len());
    }
    out.resize(width * height * 3, 0);
    match format {
        RawFormat::Yuyv => {
            let stride = width * 2;
            for y in 0..height {
                let row = &data[y * stride..y * stride + stride];
                let dst = &mut out[y * width * 3..(y + 1) * width * 3];
                for x in 0..width {
                    let pair = (x / 2) * 4;
                    let luma = row[pair + if x % 2 == 0 { 0 } else { 2 }];
                    dst[x * 3..x * 3 + 3].copy_from_slice(&rgb(luma, row[pair + 1], row[pair + 3]));
                }
            }
        }
        RawFormat::Nv12 | RawFormat::Yu12 => {
            let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
            let (ys, chroma) = data.split_at(width * height);
            for y in 0..height {
                let dst = &mut out[y * width * 3..(y + 1) * width * 3];
                for x in 0..width {
                    let ci = (y / 2) * cw + x / 2;
                    let (u, v) = match format {
                        RawFormat::Nv12 => (chroma[ci * 2], chroma[ci * 2 + 1]),
                        _ => (chroma[ci], chroma[cw * ch + ci]),
                    };
                    dst[x * 3..x * 3 + 3].copy_from_slice(&rgb(ys[y * width + x], u, v));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_colours() {
        assert_eq!(rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(rgb(235, 128, 128), [255, 255, 255]);
        // BT.601 limited-range red, green and blue (as ffmpeg's testsrc bars produce them)
        let red = rgb(81, 90, 240);
        assert!(red[0] > 250 && red[1] < 5 && red[2] < 5, "{red:?}");
        let blue = rgb(41, 240, 110);
        assert!(blue[2] > 250 && blue[0] < 5 && blue[1] < 5, "{blue:?}");
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let mut out = vec![];
        assert!(to_rgb(RawFormat::Yuyv, &[0; 10], 4, 4, &mut out).is_err());
        assert!(to_rgb(RawFormat::Nv12, &[0; 23], 4, 4, &mut out).is_err());
        assert!(to_rgb(RawFormat::Nv12, &[0; 24], 4, 4, &mut out).is_ok());
        assert_eq!(out.len(), 48);
    }
}
