//! Pixel formats cameras deliver (V4L2's YUYV, NV12 and YU12), converted to RGB24 as ffmpeg's
//! swscale does by default: BT.601 coefficients, limited ("TV") range, chroma taken from the
//! co-sited sample. Pure functions writing into a caller's buffer, so a steady stream allocates
//! nothing per frame.
//!
//! Rows may be padded: drivers align lines (to 32 or 64 bytes, say) and report the line length
//! as the format's `bytesperline`, which applies to the first plane; as V4L2 lays out its
//! single-buffer planar formats, NV12's interleaved chroma lines are as long and YU12's chroma
//! lines half as long, each plane following the previous one's last line.

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

/// Where a frame's planes lie in its buffer, in bytes.
struct Planes {
    /// Line length of the luma plane (of the packed pixels for YUYV).
    y_stride: usize,
    /// Start and line length of the chroma plane (NV12: UV pairs; YU12: U, then V at `v_offset`).
    c_offset: usize,
    c_stride: usize,
    v_offset: usize,
    /// Bytes up to the last one a conversion reads.
    need: usize,
}

impl RawFormat {
    /// The planes of a `width` x `height` frame whose first plane has lines of `bytesperline`
    /// bytes (0: not padded).
    fn planes(self, width: usize, height: usize, bytesperline: usize) -> Result<Planes> {
        if width == 0 || height == 0 {
            bail!("unable to convert a {self:?} frame of {width}x{height} pixels: it is empty");
        }
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        let row = match self {
            RawFormat::Yuyv => width * 2,
            RawFormat::Nv12 | RawFormat::Yu12 => width,
        };
        let y_stride = if bytesperline == 0 { row } else { bytesperline };
        if y_stride < row {
            bail!("unable to convert a {self:?} frame: {y_stride} bytes per line, where {width} pixels need {row}; the camera's driver reports an inconsistent format");
        }
        let luma = y_stride * (height - 1) + row;
        Ok(match self {
            RawFormat::Yuyv => Planes {
                y_stride,
                c_offset: 0,
                c_stride: 0,
                v_offset: 0,
                need: luma,
            },
            RawFormat::Nv12 => {
                let c_stride = y_stride.max(2 * cw);
                let c_offset = y_stride * height;
                Planes {
                    y_stride,
                    c_offset,
                    c_stride,
                    v_offset: 0,
                    need: c_offset + c_stride * (ch - 1) + 2 * cw,
                }
            }
            RawFormat::Yu12 => {
                let c_stride = if bytesperline == 0 {
                    cw
                } else {
                    (y_stride / 2).max(cw)
                };
                let c_offset = y_stride * height;
                let v_offset = c_offset + c_stride * ch;
                Planes {
                    y_stride,
                    c_offset,
                    c_stride,
                    v_offset,
                    need: v_offset + c_stride * (ch - 1) + cw,
                }
            }
        })
    }
}

/// Converts one raw frame to packed RGB24 in `out` (resized to `width * height * 3`).
/// `bytesperline` is the length of the first plane's lines as the driver reports it (V4L2's
/// `bytesperline`; 0 when the rows are not padded).
pub fn to_rgb(
    format: RawFormat,
    data: &[u8],
    width: usize,
    height: usize,
    bytesperline: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    let p = format.planes(width, height, bytesperline)?;
    if data.len() < p.need {
        bail!("unable to convert a {format:?} frame: {} bytes where {width}x{height} with {} bytes per line needs {}; the frame is truncated", data.len(), p.y_stride, p.need);
    }
    out.resize(width * height * 3, 0);
    match format {
        RawFormat::Yuyv => {
            for y in 0..height {
                let row = &data[y * p.y_stride..y * p.y_stride + width * 2];
                let dst = &mut out[y * width * 3..(y + 1) * width * 3];
                for x in 0..width {
                    let pair = (x / 2) * 4;
                    let luma = row[pair + if x % 2 == 0 { 0 } else { 2 }];
                    dst[x * 3..x * 3 + 3].copy_from_slice(&rgb(luma, row[pair + 1], row[pair + 3]));
                }
            }
        }
        RawFormat::Nv12 | RawFormat::Yu12 => {
            for y in 0..height {
                let luma = &data[y * p.y_stride..y * p.y_stride + width];
                let chroma = p.c_offset + (y / 2) * p.c_stride;
                let dst = &mut out[y * width * 3..(y + 1) * width * 3];
                for x in 0..width {
                    let (u, v) = match format {
                        RawFormat::Nv12 => (data[chroma + x / 2 * 2], data[chroma + x / 2 * 2 + 1]),
                        _ => (
                            data[chroma + x / 2],
                            data[p.v_offset + (y / 2) * p.c_stride + x / 2],
                        ),
                    };
                    dst[x * 3..x * 3 + 3].copy_from_slice(&rgb(luma[x], u, v));
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
        assert!(to_rgb(RawFormat::Yuyv, &[0; 10], 4, 4, 0, &mut out).is_err());
        assert!(to_rgb(RawFormat::Nv12, &[0; 23], 4, 4, 0, &mut out).is_err());
        assert!(to_rgb(RawFormat::Nv12, &[0; 24], 4, 4, 0, &mut out).is_ok());
        assert_eq!(out.len(), 48);
        // padded lines need the padding too (but not after the last line of the last plane)
        assert!(to_rgb(RawFormat::Nv12, &[0; 24], 4, 4, 8, &mut out).is_err());
        assert!(to_rgb(RawFormat::Nv12, &[0; 8 * 4 + 8 + 4], 4, 4, 8, &mut out).is_ok());
        assert!(
            to_rgb(RawFormat::Yuyv, &[0; 64], 4, 4, 6, &mut out).is_err(),
            "too short a line"
        );
        assert!(to_rgb(RawFormat::Yuyv, &[0; 64], 0, 4, 0, &mut out).is_err());
    }

    /// A packed frame re-laid with `pad` bytes of junk after every line of every plane, as a
    /// driver aligning lines would deliver it; returns it and its `bytesperline`.
    fn padded(
        format: RawFormat,
        packed: &[u8],
        w: usize,
        h: usize,
        pad: usize,
    ) -> (Vec<u8>, usize) {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        // (line length, lines, padded line length) per plane
        let stride = match format {
            RawFormat::Yuyv => 2 * w + pad,
            _ => w + pad,
        };
        let planes: Vec<(usize, usize, usize)> = match format {
            RawFormat::Yuyv => vec![(2 * w, h, stride)],
            RawFormat::Nv12 => vec![(w, h, stride), (2 * cw, ch, stride)],
            RawFormat::Yu12 => vec![(w, h, stride), (cw, ch, stride / 2), (cw, ch, stride / 2)],
        };
        let (mut out, mut at) = (vec![], 0);
        for (len, lines, padded) in planes {
            for _ in 0..lines {
                out.extend_from_slice(&packed[at..at + len]);
                out.resize(out.len() + padded - len, 0xab);
                at += len;
            }
        }
        assert_eq!(at, packed.len());
        (out, stride)
    }

    #[test]
    fn padded_rows_convert_like_packed_ones() {
        for (format, w, h) in [
            (RawFormat::Yuyv, 8, 6),
            (RawFormat::Nv12, 8, 6),
            (RawFormat::Nv12, 7, 5),
            (RawFormat::Yu12, 8, 6),
            (RawFormat::Yu12, 10, 5),
        ] {
            // every byte different, so a misplaced line or plane shows
            let packed: Vec<u8> = (0..format.frame_len(w, h))
                .map(|i| (i * 37 % 251) as u8)
                .collect();
            let (mut want, mut got) = (vec![], vec![]);
            to_rgb(format, &packed, w, h, 0, &mut want).unwrap();
            for pad in [2, 24, 64] {
                let (frame, stride) = padded(format, &packed, w, h, pad);
                to_rgb(format, &frame, w, h, stride, &mut got).unwrap();
                assert_eq!(
                    got, want,
                    "{format:?} {w}x{h}, {pad} bytes of padding per line"
                );
                // read as if packed, the same bytes give another picture: the test can fail
                to_rgb(format, &frame, w, h, 0, &mut got).unwrap();
                assert_ne!(got, want, "{format:?} {w}x{h}");
            }
        }
    }
}
