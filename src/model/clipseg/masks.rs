//! Masks: what is read off CLIPSeg's logits — a prompt's coverage of a region (bilinear
//! upsampling as PyTorch does it) — and the overlay that tints the masks on a snapshot.

use image::{Rgb, RgbImage};

use super::Masks;

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The logit above which a pixel's probability exceeds `threshold` (`p > t` <=> `x > ln(t / (1 - t))`).
fn logit(threshold: f32) -> f32 {
    if threshold <= 0.0 {
        f32::NEG_INFINITY
    } else if threshold >= 1.0 {
        f32::INFINITY
    } else {
        (threshold / (1.0 - threshold)).ln()
    }
}

/// PyTorch's bilinear source index (align_corners=False) for output positions `from..to` of an
/// axis resized from `input` to `output`: the two source indices and the weight of the second.
pub(super) fn axis(
    input: usize,
    output: usize,
    from: usize,
    to: usize,
) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / output as f32;
    (from..to)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

impl Masks {
    /// Prompt `q`'s logits at the model resolution, row-major.
    pub fn logits(&self, q: usize) -> &[f32] {
        let n = self.width * self.height;
        &self.logits[q * n..(q + 1) * n]
    }

    /// Prompt `q`'s sigmoid probabilities at the model resolution, row-major.
    pub fn probabilities(&self, q: usize) -> Vec<f32> {
        self.logits(q).iter().map(|x| sigmoid(*x)).collect()
    }

    /// Calls `f(x, y, logit)` for every pixel of `[x0, x1) x [y0, y1)` of the mask resized to
    /// `width` x `height`. Each source row is interpolated horizontally once, then output rows
    /// blend two of them: the same operations, in the same order, as torch's kernel.
    fn resized(
        &self,
        q: usize,
        width: u32,
        height: u32,
        rect: [u32; 4],
        mut f: impl FnMut(u32, u32, f32),
    ) {
        let src = self.logits(q);
        let xs = axis(
            self.width,
            width as usize,
            rect[0] as usize,
            rect[2] as usize,
        );
        let ys = axis(
            self.height,
            height as usize,
            rect[1] as usize,
            rect[3] as usize,
        );
        let (Some(first), Some(last)) = (ys.first(), ys.last()) else {
            return;
        };
        let (r_lo, r_hi) = (first.0, last.1);
        let n = xs.len();
        let mut rows = vec![0f32; (r_hi - r_lo + 1) * n];
        for (r, out) in (r_lo..=r_hi).zip(rows.chunks_exact_mut(n.max(1))) {
            let row = &src[r * self.width..(r + 1) * self.width];
            for (o, &(c0, c1, lx)) in out.iter_mut().zip(&xs) {
                *o = (1.0 - lx) * row[c0] + lx * row[c1];
            }
        }
        for (y, &(r0, r1, ly)) in (rect[1]..).zip(&ys) {
            let top = &rows[(r0 - r_lo) * n..(r0 - r_lo + 1) * n];
            let bottom = &rows[(r1 - r_lo) * n..(r1 - r_lo + 1) * n];
            for (x, (t, b)) in (rect[0]..).zip(top.iter().zip(bottom)) {
                f(x, y, (1.0 - ly) * t + ly * b);
            }
        }
    }

    /// Coverage above `threshold` and the maximum probability of prompt `q` on a `width` x
    /// `height` image, within `roi` `[x0, y0, x1, y1]` (clamped to the image) when given.
    pub fn coverage(
        &self,
        q: usize,
        width: u32,
        height: u32,
        roi: Option<[u32; 4]>,
        threshold: f32,
    ) -> (f32, f32) {
        let rect = clamp_roi(roi, width, height);
        let total = (rect[2] - rect[0]) as u64 * (rect[3] - rect[1]) as u64;
        if total == 0 {
            return (0.0, 0.0);
        }
        let cut = logit(threshold);
        let (mut above, mut best) = (0u64, f32::NEG_INFINITY);
        self.resized(q, width, height, rect, |_, _, v| {
            above += (v > cut) as u64;
            best = best.max(v);
        });
        (above as f32 / total as f32, sigmoid(best))
    }
}

fn clamp_roi(roi: Option<[u32; 4]>, width: u32, height: u32) -> [u32; 4] {
    let r = roi.unwrap_or([0, 0, width, height]);
    let (x1, y1) = (r[2].min(width), r[3].min(height));
    [r[0].min(x1), r[1].min(y1), x1, y1]
}

/// One prompt's mask to draw: its index in the masks, the probability above which a pixel is
/// tinted, its label and the index that picks its colour (`annotate::colour`).
pub struct Layer<'a> {
    pub prompt: usize,
    pub threshold: f32,
    pub label: &'a str,
    pub colour_index: usize,
}

/// Tints the pixels of each layer's mask above its threshold in its colour (half and half with
/// the image) and writes the labels in a stack at the top left.
pub fn overlay(image: &mut RgbImage, masks: &Masks, layers: &[Layer]) {
    let (w, h) = image.dimensions();
    for l in layers.iter().filter(|l| l.prompt < masks.prompts) {
        let Rgb(c) = crate::annotate::colour(l.colour_index);
        let cut = logit(l.threshold);
        masks.resized(l.prompt, w, h, [0, 0, w, h], |x, y, v| {
            if v > cut {
                let p = image.get_pixel_mut(x, y);
                for (o, c) in p.0.iter_mut().zip(c) {
                    *o = ((*o as u16 + c as u16) / 2) as u8;
                }
            }
        });
    }
    let scale = ((w.min(h) / 400) + 1).clamp(1, 4);
    let line = 8 * scale as i64 + 6;
    for (i, l) in layers.iter().enumerate() {
        crate::annotate::text(
            image,
            2,
            2 + i as i64 * line,
            l.label,
            scale,
            crate::annotate::colour(l.colour_index),
        );
    }
}
