//! Annotate: draws labelled boxes on a frame, so a person can check a detection at a glance
//! (the `detect --out` picture), and [`Snapshot`]: an event's frame with its box or mask, drawn
//! and encoded once, when a sink asks for it.
//!
//! Labels use the public-domain 8x8 bitmap font of `font8x8`, scaled with the image size; each
//! prompt gets its own colour.

use std::sync::{Arc, OnceLock};

use image::{Rgb, RgbImage};

use crate::frame::Frame;

/// A box to draw: corners in image pixels, the label, and the index that picks its colour.
pub struct Label<'a> {
    pub bbox: [f32; 4],
    pub text: &'a str,
    pub colour_index: usize,
}

const PALETTE: [[u8; 3]; 8] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
];

pub fn colour(index: usize) -> Rgb<u8> {
    Rgb(PALETTE[index % PALETTE.len()])
}

/// Draws every label's box and text onto `image`.
pub fn draw(image: &mut RgbImage, labels: &[Label]) {
    let (w, h) = image.dimensions();
    let scale = ((w.min(h) / 400) + 1).clamp(1, 4);
    let thickness = scale + 1;
    for l in labels {
        let c = colour(l.colour_index);
        let x0 = l.bbox[0].max(0.0).min(w as f32 - 1.0) as i64;
        let y0 = l.bbox[1].max(0.0).min(h as f32 - 1.0) as i64;
        let x1 = l.bbox[2].max(0.0).min(w as f32 - 1.0) as i64;
        let y1 = l.bbox[3].max(0.0).min(h as f32 - 1.0) as i64;
        for t in 0..thickness as i64 {
            hline(image, x0, x1, y0 + t, c);
            hline(image, x0, x1, y1 - t, c);
            vline(image, x0 + t, y0, y1, c);
            vline(image, x1 - t, y0, y1, c);
        }
        let text_h = 8 * scale as i64 + 4;
        // above the box when there is room, else inside its top edge
        let ty = if y0 >= text_h { y0 - text_h } else { y0 };
        text(image, x0, ty, l.text, scale, c);
    }
}

fn hline(img: &mut RgbImage, x0: i64, x1: i64, y: i64, c: Rgb<u8>) {
    for x in x0..=x1 {
        put(img, x, y, c);
    }
}

fn vline(img: &mut RgbImage, x: i64, y0: i64, y1: i64, c: Rgb<u8>) {
    for y in y0..=y1 {
        put(img, x, y, c);
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Writes `s` on a filled background of colour `bg`, in black or white, whichever reads better.
/// Characters outside the font print as `?`.
pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, scale: u32, bg: Rgb<u8>) {
    let luma = 0.299 * bg[0] as f32 + 0.587 * bg[1] as f32 + 0.114 * bg[2] as f32;
    let fg = if luma > 140.0 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    };
    let sc = scale.max(1) as i64;
    let pad = 2;
    let n = s.chars().count() as i64;
    let (bw, bh) = (n * 8 * sc + 2 * pad, 8 * sc + 2 * pad);
    // keep the label inside the image horizontally
    let x = x.min(img.width() as i64 - bw).max(0);
    for yy in y..y + bh {
        hline(img, x, x + bw - 1, yy, bg);
    }
    for (i, ch) in s.chars().enumerate() {
        let glyph = glyph(ch);
        let gx = x + pad + i as i64 * 8 * sc;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    for dy in 0..sc {
                        for dx in 0..sc {
                            put(img, gx + col * sc + dx, y + pad + row as i64 * sc + dy, fg);
                        }
                    }
                }
            }
        }
    }
}

fn glyph(c: char) -> [u8; 8] {
    let code = c as usize;
    if code < 128 {
        font8x8::legacy::BASIC_LEGACY[code]
    } else {
        font8x8::legacy::BASIC_LEGACY['?' as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_box_edges_in_the_prompt_colour_and_leaves_the_inside() {
        let mut img = RgbImage::new(100, 100);
        draw(
            &mut img,
            &[Label {
                bbox: [20.0, 30.0, 80.0, 90.0],
                text: "a cat",
                colour_index: 1,
            }],
        );
        assert_eq!(*img.get_pixel(50, 90), colour(1));
        assert_eq!(*img.get_pixel(20, 60), colour(1));
        assert_eq!(*img.get_pixel(50, 60), Rgb([0, 0, 0]));
        // the label sits above the box, on the box colour, with some text pixels
        let label_px: Vec<Rgb<u8>> = (20..60)
            .flat_map(|x| (18..30).map(move |y| (x, y)))
            .map(|(x, y)| *img.get_pixel(x, y))
            .collect();
        assert!(label_px.iter().any(|p| *p == colour(1)));
        assert!(label_px
            .iter()
            .any(|p| *p == Rgb([0, 0, 0]) || *p == Rgb([255, 255, 255])));
    }

    #[test]
    fn boxes_outside_the_image_are_clipped() {
        let mut img = RgbImage::new(10, 10);
        draw(
            &mut img,
            &[Label {
                bbox: [-50.0, -50.0, 500.0, 500.0],
                text: "x",
                colour_index: 0,
            }],
        );
        assert_eq!(*img.get_pixel(9, 9), colour(0));
    }
}

/// What a snapshot draws over its frame for the prompt.
#[derive(Clone)]
pub enum Overlay {
    /// A detection's box, in frame pixels.
    Box([f32; 4]),
    /// The whole frame (a classification), framed and labelled.
    Whole,
    /// A segmentation prompt's mask (its index in `masks`) where it exceeds `threshold`.
    Mask {
        masks: Arc<crate::model::Masks>,
        prompt: usize,
        threshold: f32,
    },
}

enum Picture {
    Frame {
        frame: Arc<Frame>,
        label: String,
        colour: usize,
        overlay: Overlay,
    },
    Encoded,
}

/// An event's snapshot: the frame and what to draw on it, rendered and JPEG-encoded once, when
/// a sink first asks for it (on the event thread, never on the inference thread).
pub struct Snapshot {
    picture: Picture,
    jpeg: OnceLock<Option<Arc<Vec<u8>>>>,
}

impl Snapshot {
    pub fn new(frame: Arc<Frame>, label: String, colour: usize, overlay: Overlay) -> Snapshot {
        Snapshot {
            picture: Picture::Frame {
                frame,
                label,
                colour,
                overlay,
            },
            jpeg: OnceLock::new(),
        }
    }

    /// A snapshot that is JPEG already.
    pub fn jpeg_only(jpeg: Vec<u8>) -> Snapshot {
        Snapshot {
            picture: Picture::Encoded,
            jpeg: OnceLock::from(Some(Arc::new(jpeg))),
        }
    }

    /// The JPEG, drawn and encoded at the first call; None when encoding failed (logged).
    pub fn jpeg(&self) -> Option<Arc<Vec<u8>>> {
        self.jpeg.get_or_init(|| self.render()).clone()
    }

    fn render(&self) -> Option<Arc<Vec<u8>>> {
        let Picture::Frame {
            frame,
            label,
            colour,
            overlay,
        } = &self.picture
        else {
            return None;
        };
        let mut img = frame.image.clone();
        let (w, h) = img.dimensions();
        match overlay {
            Overlay::Mask {
                masks,
                prompt,
                threshold,
            } => {
                let layer = crate::model::clipseg::Layer {
                    prompt: *prompt,
                    threshold: *threshold,
                    label,
                    colour_index: *colour,
                };
                crate::model::clipseg::overlay(&mut img, masks, &[layer]);
            }
            Overlay::Box(bbox) => draw(
                &mut img,
                &[Label {
                    bbox: *bbox,
                    text: label,
                    colour_index: *colour,
                }],
            ),
            Overlay::Whole => {
                let bbox = [0.0, 0.0, w as f32 - 1.0, h as f32 - 1.0];
                draw(
                    &mut img,
                    &[Label {
                        bbox,
                        text: label,
                        colour_index: *colour,
                    }],
                );
            }
        }
        let mut jpeg = vec![];
        match image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).encode_image(&img) {
            Ok(()) => Some(Arc::new(jpeg)),
            Err(e) => {
                tracing::warn!("unable to encode the snapshot {label:?}: {e}");
                None
            }
        }
    }
}

impl PartialEq for Snapshot {
    /// The same snapshot, not an equal picture.
    fn eq(&self, other: &Snapshot) -> bool {
        std::ptr::eq(self, other)
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}
