//! Preprocess: turns an RGB frame into a model's pixel tensor, exactly as the Hugging Face image
//! processors (PIL backend) do it.
//!
//! Every parameter comes from the model directory's processor config — `preprocessor_config.json`
//! (flat, sizes as integers, as the published ONNX exports carry it) or `processor_config.json`
//! (nested under `image_processor`, sizes as `{shortest_edge}` / `{height, width}`, as newer
//! transformers versions write it). Nothing is hard-coded to 224 or 768.
//!
//! The steps mirror transformers' `_preprocess`: convert to RGB, resize (PIL filters, with
//! antialiasing, through `fast_image_resize`), center crop (zero padding when the image is smaller),
//! rescale (`x * rescale_factor` in f64, then f32) and normalize (`(x - mean) / std` in f32). The
//! tensor is NCHW `[1, 3, H, W]` and its buffer is reused from frame to frame.

mod config;
pub mod owlv2;

pub use config::ProcessorConfig;

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{bail, Context, Result};
use fast_image_resize as fr;
use fast_image_resize::pixels::U16x3;
use image::RgbImage;
use tract_onnx::prelude::*;

/// How the image is resized before cropping.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Resize {
    /// The short side becomes this many pixels, the long side `int(size * long / short)`.
    ShortestEdge(u32),
    /// Straight to this size, ignoring the aspect ratio (OWL-ViT v1, ViT).
    Exact { width: u32, height: u32 },
}

/// PIL's resampling filters, by their PIL codes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Resample {
    Nearest,
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Resample {
    fn from_pil(code: i64) -> Result<Resample> {
        Ok(match code {
            0 => Resample::Nearest,
            1 => Resample::Lanczos,
            2 => Resample::Bilinear,
            3 => Resample::Bicubic,
            4 => Resample::Box,
            5 => Resample::Hamming,
            _ => bail!("resample {code} is not a PIL filter code (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)"),
        })
    }

    /// How far (in output pixels) the filter reaches on each side.
    fn algorithm_support(self) -> f64 {
        match self {
            Resample::Nearest | Resample::Box => 0.5,
            Resample::Bilinear | Resample::Hamming => 1.0,
            Resample::Bicubic => 2.0,
            Resample::Lanczos => 3.0,
        }
    }

    fn algorithm(self) -> fr::ResizeAlg {
        use fr::FilterType as F;
        match self {
            Resample::Nearest => fr::ResizeAlg::Nearest,
            Resample::Lanczos => fr::ResizeAlg::Convolution(F::Lanczos3),
            Resample::Bilinear => fr::ResizeAlg::Convolution(F::Bilinear),
            // PIL's bicubic is the a = -0.5 kernel, i.e. Catmull-Rom
            Resample::Bicubic => fr::ResizeAlg::Convolution(F::CatmullRom),
            Resample::Box => fr::ResizeAlg::Convolution(F::Box),
            Resample::Hamming => fr::ResizeAlg::Convolution(F::Hamming),
        }
    }
}

/// A model's preprocessor shared by the threads that run the model (`inference_workers`): a
/// caller holds it only while it fills the model's input, not while the model runs, so two
/// cameras on one loaded detector run it at the same time. A buffer still held by the other
/// run is not reused (the preprocessor allocates a new one).
pub struct Locked<P>(Mutex<P>);

impl<P> Locked<P> {
    pub fn new(p: P) -> Locked<P> {
        Locked(Mutex::new(p))
    }

    /// Runs `f` on the preprocessor (waiting while another thread uses it).
    pub fn with<R>(&self, f: impl FnOnce(&mut P) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn get_mut(&mut self) -> &mut P {
        self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs one model's preprocessing, reusing its buffers from frame to frame.
pub struct Preprocessor {
    config: ProcessorConfig,
    resizer: fr::Resizer,
    src16: Vec<U16x3>,
    mid16: Vec<U16x3>,
    out16: Vec<U16x3>,
    resized: Vec<u8>,
    tensor: Arc<Tensor>,
}

impl Preprocessor {
    pub fn new(config: ProcessorConfig) -> Preprocessor {
        Preprocessor {
            config,
            resizer: fr::Resizer::new(),
            src16: Vec::new(),
            mid16: Vec::new(),
            out16: Vec::new(),
            resized: Vec::new(),
            tensor: Arc::new(Tensor::default()),
        }
    }

    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    /// Resizes the part `region` (`[x0, y0, x1, y1]`, in resized coordinates) of the resized
    /// image into `self.resized`, as Pillow computes those pixels when it resizes the whole
    /// frame: two separable passes, each rounded and clipped to 0..=255, vertical first only when
    /// the height shrinks by more than twice as many pixels as the width (Pillow 13's rule).
    /// fast_image_resize runs the passes on u16 samples, whose coefficients are precise enough to
    /// round like Pillow's 22-bit fixed point (its u8 path has ~14-bit coefficients and would go
    /// vertical first, a level off on a few % of pixels).
    ///
    /// Only the source pixels under the region's filter support are converted and filtered: a
    /// center crop of a 1080p frame touches little more than half of it.
    fn resize(&mut self, image: &RgbImage, (rw, rh): (u32, u32), region: [u32; 4]) -> Result<()> {
        let (w, h) = image.dimensions();
        let [cx0, cy0, cx1, cy1] = region;
        let (cw, ch) = (cx1 - cx0, cy1 - cy0);
        let vertical_first = h > rh && (h - rh) as i64 > 2 * (w as i64 - rw as i64);
        let support = self.config.resample.algorithm_support();
        // the source window under the region, with the filter's reach as margin (an axis that
        // is not resized is only cut, without margin)
        let window = |size: u32, resized: u32, c0: u32, c1: u32| -> (u32, u32, f64) {
            let scale = size as f64 / resized as f64;
            if size == resized {
                return (c0, c1, scale);
            }
            let reach = support * scale.max(1.0) + 2.0;
            let lo = (c0 as f64 * scale - reach).floor().max(0.0) as u32;
            let hi = ((c1 as f64 * scale + reach).ceil() as u32).min(size);
            (lo, hi, scale)
        };
        let (sx0, sx1, scale_x) = window(w, rw, cx0, cx1);
        let (sy0, sy1, scale_y) = window(h, rh, cy0, cy1);
        let (sw, sh) = (sx1 - sx0, sy1 - sy0);
        // where the region lies in the window, in source pixels (kept inside the window: at the
        // image's edge `c1 * scale` can round a hair past it)
        let inside = |c0: u32, c: u32, scale: f64, s0: u32, size: u32| {
            let left = (c0 as f64 * scale - s0 as f64).max(0.0);
            (left, (c as f64 * scale).min(size as f64 - left))
        };
        let box_x = inside(cx0, cw, scale_x, sx0, sw);
        let box_y = inside(cy0, ch, scale_y, sy0, sh);

        fill(&mut self.src16, sw, sh);
        let raw = image.as_raw();
        let samples: &mut [u16] = bytemuck::cast_slice_mut(&mut self.src16);
        for (y, row) in samples.chunks_exact_mut(sw as usize * 3).enumerate() {
            let start = ((sy0 as usize + y) * w as usize + sx0 as usize) * 3;
            for (d, s) in row.iter_mut().zip(&raw[start..start + sw as usize * 3]) {
                *d = *s as u16;
            }
        }
        let alg = self.config.resample.algorithm();
        let src = fr::images::TypedImageRef::new(sw, sh, &self.src16)
            .context("unable to view the frame for resizing")?;
        fill(&mut self.out16, cw, ch);
        let resize_x = rw != w;
        let resize_y = rh != h;
        if !(resize_x && resize_y) {
            // one pass is enough
            let opts = fr::ResizeOptions::new()
                .resize_alg(alg)
                .crop(box_x.0, box_y.0, box_x.1, box_y.1);
            let mut dst = fr::images::TypedImage::from_pixels_slice(cw, ch, &mut self.out16)
                .context("unable to allocate the resize buffer")?;
            self.resizer
                .resize_typed(&src, &mut dst, &opts)
                .context("unable to resize the frame")?;
        } else {
            // first pass: one axis to its region, the other kept at the window's size
            let (mw, mh, first, second) = if vertical_first {
                (
                    sw,
                    ch,
                    (0.0, box_y.0, sw as f64, box_y.1),
                    (box_x.0, 0.0, box_x.1, ch as f64),
                )
            } else {
                (
                    cw,
                    sh,
                    (box_x.0, 0.0, box_x.1, sh as f64),
                    (0.0, box_y.0, cw as f64, box_y.1),
                )
            };
            fill(&mut self.mid16, mw, mh);
            let mut mid = fr::images::TypedImage::from_pixels_slice(mw, mh, &mut self.mid16)
                .context("unable to allocate the resize buffer")?;
            let opts = fr::ResizeOptions::new()
                .resize_alg(alg)
                .crop(first.0, first.1, first.2, first.3);
            self.resizer
                .resize_typed(&src, &mut mid, &opts)
                .context("unable to resize the frame")?;
            clip8(mid.pixels_mut());
            let mut dst = fr::images::TypedImage::from_pixels_slice(cw, ch, &mut self.out16)
                .context("unable to allocate the resize buffer")?;
            let opts = fr::ResizeOptions::new()
                .resize_alg(alg)
                .crop(second.0, second.1, second.2, second.3);
            self.resizer
                .resize_typed(&mid, &mut dst, &opts)
                .context("unable to resize the frame")?;
        }
        clip8(&mut self.out16);
        self.resized.clear();
        self.resized.extend(
            bytemuck::cast_slice::<U16x3, u16>(&self.out16)
                .iter()
                .map(|c| *c as u8),
        );
        Ok(())
    }

    /// The pixel tensor `[1, 3, H, W]` for `image`. The returned value shares its buffer with the
    /// preprocessor: drop it (tract does, once the model has run) before the next call to reuse it.
    pub fn run(&mut self, image: &RgbImage) -> Result<TValue> {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            bail!("unable to preprocess an empty {w}x{h} image");
        }
        let (rw, rh) = self.config.resized_size(w, h);
        let (ow, oh) = self.config.crop.unwrap_or((rw, rh));
        // transformers' center crop: source row = dest row + floor((resized - crop) / 2); rows
        // outside the image are zero (it pads before rescaling)
        let top = (rh as i64 - oh as i64).div_euclid(2);
        let left = (rw as i64 - ow as i64).div_euclid(2);
        // the part of the resized image the crop keeps: only that much is resized
        let clamp = |v: i64, max: u32| v.clamp(0, max as i64) as u32;
        let region = [
            clamp(left, rw),
            clamp(top, rh),
            clamp(left + ow as i64, rw),
            clamp(top + oh as i64, rh),
        ];
        let (resized, stride, [cx0, cy0, ..]): (&[u8], u32, [u32; 4]) = if (rw, rh) == (w, h) {
            (image.as_raw(), w, [0, 0, w, h])
        } else if region[2] > region[0] && region[3] > region[1] {
            self.resize(image, (rw, rh), region)?;
            (&self.resized, region[2] - region[0], region)
        } else {
            (&[], 0, region)
        };

        let shape = [1usize, 3, oh as usize, ow as usize];
        let reuse = Arc::get_mut(&mut self.tensor)
            .filter(|t| t.shape() == shape)
            .is_some();
        if !reuse {
            self.tensor = Arc::new(Tensor::zero::<f32>(&shape)?);
        }
        let tensor = Arc::get_mut(&mut self.tensor).context("pixel tensor still in use")?;
        let mut view = tensor.try_as_plain_ram_mut()?;
        let out = view.as_slice_mut::<f32>()?;
        let plane = ow as usize * oh as usize;
        let scale = self.config.rescale;
        let (mean, std) = self.config.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
        // the value of every u8 level per channel, computed once per frame (256 x 3 entries)
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (level, v) in table.iter_mut().enumerate() {
                let x = match scale {
                    Some(s) => (level as f64 * s) as f32,
                    None => level as f32,
                };
                *v = if self.config.normalize.is_some() {
                    (x - mean[c]) / std[c]
                } else {
                    x
                };
            }
        }
        for y in 0..oh as usize {
            let sy = y as i64 + top;
            let row_in = sy >= 0 && sy < rh as i64;
            for x in 0..ow as usize {
                let sx = x as i64 + left;
                let px = if row_in && sx >= 0 && sx < rw as i64 {
                    let i = ((sy as usize - cy0 as usize) * stride as usize + sx as usize
                        - cx0 as usize)
                        * 3;
                    [resized[i], resized[i + 1], resized[i + 2]]
                } else {
                    [0, 0, 0]
                };
                let o = y * ow as usize + x;
                out[o] = lut[0][px[0] as usize];
                out[plane + o] = lut[1][px[1] as usize];
                out[2 * plane + o] = lut[2][px[2] as usize];
            }
        }
        Ok(TValue::from_const(self.tensor.clone()))
    }
}

/// Sizes a reusable pixel buffer for a `w` x `h` image (no allocation once it is large enough).
fn fill(buf: &mut Vec<U16x3>, w: u32, h: u32) {
    buf.resize(w as usize * h as usize, U16x3::default());
}

/// Pillow rounds every pass to u8: clip the overshoot of negative filter lobes.
fn clip8(px: &mut [U16x3]) {
    for c in bytemuck::cast_slice_mut::<U16x3, u16>(px) {
        *c = (*c).min(255);
    }
}

#[cfg(test)]
mod tests;
