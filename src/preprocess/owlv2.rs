//! OWLv2's preprocessing, as transformers' `Owlv2ImageProcessor` (PIL backend, which follows the
//! original scenic code): rescale to 0..1, pad to a square at the bottom and right with 0 (black,
//! after rescaling), then resize the scikit-image way — a Gaussian anti-aliasing blur
//! (`scipy.ndimage.gaussian_filter`, sigma = (factor - 1) / 2 per axis, mode "mirror", truncated
//! at 4 sigma) and `scipy.ndimage.zoom(order=1, mode="mirror", grid_mode=True)`, i.e. bilinear
//! sampling at `(o + 0.5) * factor - 0.5` — clipped to the input's range, then normalize.
//!
//! Boxes come out relative to the padded square, so they scale by the padded size
//! ([`Owlv2Preprocessor::box_scale`]). Every pass is planar f32 over rows, so the loops vectorise;
//! the padding is never materialised (its rows are zero, and stay zero through the blur except
//! within the filter's reach of the image).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde_json::Value;
use tract_onnx::prelude::*;

use super::{ProcessorConfig, Resample, Resize};

/// The settings of an OWLv2 image processor.
#[derive(Clone, Debug, PartialEq)]
pub struct Owlv2Config {
    /// `(width, height)` of the model input.
    pub size: (u32, u32),
    pub pad: bool,
    /// transformers passes the processor's `resample` as the resize's `anti_aliasing` flag:
    /// every filter but nearest (0) blurs before downsampling.
    pub anti_alias: bool,
    pub rescale: Option<f64>,
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

impl Owlv2Config {
    /// Reads `preprocessor_config.json` / `processor_config.json` (flat or nested).
    pub fn from_json(json: &Value) -> Result<Owlv2Config> {
        let common = ProcessorConfig::from_json(json, true)?;
        let v = json.get("image_processor").unwrap_or(json);
        let pad = match v.get("do_pad") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => bail!("`do_pad` should be true or false, found {other}"),
        };
        let size = match common.resize {
            Some(Resize::Exact { width, height }) => (width, height),
            Some(Resize::ShortestEdge(_)) => {
                bail!("`size` should be {{\"height\": H, \"width\": W}} for OWLv2")
            }
            None => bail!("`do_resize` is false; OWLv2 needs a fixed input size"),
        };
        Ok(Owlv2Config {
            size,
            pad,
            anti_alias: common.resample != Resample::Nearest,
            rescale: common.rescale,
            normalize: common.normalize,
        })
    }
}

/// Runs OWLv2's preprocessing, reusing its buffers from frame to frame.
pub struct Owlv2Preprocessor {
    config: Owlv2Config,
    planes: [Vec<f32>; 3],
    blur_y: Vec<f32>,
    blur: Vec<f32>,
    row: Vec<f32>,
    tensor: Arc<Tensor>,
}

/// scipy's `_gaussian_kernel1d` for `sigma` (order 0), radius `int(4 * sigma + 0.5)`.
pub fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let s2 = sigma * sigma;
    let w: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 / s2 * (x * x) as f64).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|v| (v / sum) as f32).collect()
}

/// scipy's "mirror" extension (`d c b | a b c d | c b a`) of index `i` into `0..len`.
fn mirror(i: i64, len: i64) -> usize {
    if len <= 1 {
        return 0;
    }
    let period = 2 * len - 2;
    let m = i.rem_euclid(period);
    (if m < len { m } else { period - m }) as usize
}

/// The anti-aliasing sigma for a downsampling `factor` (input / output), 0 when upsampling.
fn sigma(factor: f64, anti_alias: bool) -> f64 {
    if anti_alias {
        ((factor - 1.0) / 2.0).max(0.0)
    } else {
        0.0
    }
}

/// Source taps of `scipy.ndimage.zoom(order=1, grid_mode=True, mode="mirror")` along one axis:
/// per output index, the two source indices and their weights.
fn zoom_taps(from: usize, to: usize) -> Vec<(usize, usize, f32, f32)> {
    let ratio = from as f64 / to as f64;
    (0..to)
        .map(|o| {
            let c = (o as f64 + 0.5) * ratio - 0.5;
            // the coordinate itself is mirrored into [0, from - 1] first
            let len = from as f64;
            let c = if from <= 1 {
                0.0
            } else if c < 0.0 {
                -c
            } else if c > len - 1.0 {
                2.0 * (len - 1.0) - c
            } else {
                c
            };
            let base = c.floor();
            let t = c - base;
            let i0 = mirror(base as i64, from as i64);
            let i1 = mirror(base as i64 + 1, from as i64);
            ((i0), i1, (1.0 - t) as f32, t as f32)
        })
        .collect()
}

impl Owlv2Preprocessor {
    pub fn new(config: Owlv2Config) -> Owlv2Preprocessor {
        Owlv2Preprocessor {
            config,
            planes: Default::default(),
            blur_y: vec![],
            blur: vec![],
            row: vec![],
            tensor: Arc::new(Tensor::default()),
        }
    }

    pub fn config(&self) -> &Owlv2Config {
        &self.config
    }

    /// What relative boxes are scaled by, `(x, y)`, for an image of `width` x `height`: the
    /// padded square's side (transformers' `post_process_object_detection` for OWLv2), or the
    /// image's own size when the processor does not pad.
    pub fn box_scale(&self, width: u32, height: u32) -> (f32, f32) {
        if self.config.pad {
            let s = width.max(height) as f32;
            (s, s)
        } else {
            (width as f32, height as f32)
        }
    }

    /// The pixel tensor `[1, 3, H, W]` for `image`; shares its buffer with the preprocessor as
    /// `Preprocessor::run` does.
    pub fn run(&mut self, image: &RgbImage) -> Result<TValue> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        if w == 0 || h == 0 {
            bail!("unable to preprocess an empty {w}x{h} image");
        }
        // the padded canvas: the image at the top left, zeros elsewhere
        let (pw, ph) = if self.config.pad {
            (w.max(h), w.max(h))
        } else {
            (w, h)
        };
        let (ow, oh) = (self.config.size.0 as usize, self.config.size.1 as usize);
        let scale = self.config.rescale;
        let level = |v: u8| match scale {
            Some(s) => (v as f64 * s) as f32,
            None => v as f32,
        };
        let lut: Vec<f32> = (0..=255u8).map(level).collect();
        for p in &mut self.planes {
            p.clear();
            p.reserve(w * h);
        }
        let (mut lo, mut hi) = (u8::MAX, u8::MIN);
        for px in image.as_raw().chunks_exact(3) {
            for (c, v) in px.iter().enumerate() {
                self.planes[c].push(lut[*v as usize]);
                lo = lo.min(*v);
                hi = hi.max(*v);
            }
        }
        // transformers clips the resized image to the range of its input (the padded canvas)
        let (mut min, mut max) = (lut[lo as usize], lut[hi as usize]);
        if (pw, ph) != (w, h) {
            min = min.min(0.0);
            max = max.max(0.0);
        }
        let ky = gaussian_kernel(sigma(ph as f64 / oh as f64, self.config.anti_alias));
        let kx = gaussian_kernel(sigma(pw as f64 / ow as f64, self.config.anti_alias));
        let (ry, rx) = (ky.len() / 2, kx.len() / 2);
        // rows and columns of the canvas that can be non-zero after the blur
        let bh = (h + ry).min(ph);
        let bw = (w + rx).min(pw);
        let ty = zoom_taps(ph, oh);
        let tx = zoom_taps(pw, ow);

        let shape = [1usize, 3, oh, ow];
        let reuse = Arc::get_mut(&mut self.tensor)
            .filter(|t| t.shape() == shape)
            .is_some();
        if !reuse {
            self.tensor = Arc::new(Tensor::zero::<f32>(&shape)?);
        }
        let tensor = Arc::get_mut(&mut self.tensor).context("pixel tensor still in use")?;
        let mut view = tensor.try_as_plain_ram_mut()?;
        let out = view.as_slice_mut::<f32>()?;
        let (mean, std) = self.config.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
        for c in 0..3 {
            let plane = &self.planes[c];
            // vertical pass over the canvas rows 0..bh, columns 0..w (the others are zero)
            self.blur_y.clear();
            self.blur_y.resize(bh * w, 0.0);
            for y in 0..bh {
                let dst = &mut self.blur_y[y * w..(y + 1) * w];
                if ry == 0 {
                    if y < h {
                        dst.copy_from_slice(&plane[y * w..(y + 1) * w]);
                    }
                    continue;
                }
                for (k, wk) in ky.iter().enumerate() {
                    let sy = mirror(y as i64 + k as i64 - ry as i64, ph as i64);
                    if sy >= h {
                        continue;
                    }
                    let src = &plane[sy * w..(sy + 1) * w];
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d += wk * s;
                    }
                }
            }
            // horizontal pass: rows 0..bh, columns 0..bw, through a mirror-extended row
            self.blur.clear();
            self.blur.resize(bh * bw, 0.0);
            for y in 0..bh {
                let src = &self.blur_y[y * w..(y + 1) * w];
                let dst = &mut self.blur[y * bw..(y + 1) * bw];
                if rx == 0 {
                    dst[..w.min(bw)].copy_from_slice(&src[..w.min(bw)]);
                    continue;
                }
                self.row.clear();
                self.row.extend((0..bw + 2 * rx).map(|i| {
                    let sx = mirror(i as i64 - rx as i64, pw as i64);
                    if sx < w {
                        src[sx]
                    } else {
                        0.0
                    }
                }));
                for (k, wk) in kx.iter().enumerate() {
                    for (d, s) in dst.iter_mut().zip(&self.row[k..k + bw]) {
                        *d += wk * s;
                    }
                }
            }
            // bilinear zoom, clip, normalize
            let blur = &self.blur;
            let at = |y: usize, x: usize| {
                if y < bh && x < bw {
                    blur[y * bw + x]
                } else {
                    0.0
                }
            };
            let (m, s) = (mean[c], std[c]);
            let dst = &mut out[c * oh * ow..(c + 1) * oh * ow];
            for (oy, (y0, y1, wy0, wy1)) in ty.iter().enumerate() {
                let row = &mut dst[oy * ow..(oy + 1) * ow];
                for (o, (x0, x1, wx0, wx1)) in row.iter_mut().zip(&tx) {
                    let v = wy0 * (wx0 * at(*y0, *x0) + wx1 * at(*y0, *x1))
                        + wy1 * (wx0 * at(*y1, *x0) + wx1 * at(*y1, *x1));
                    let v = v.clamp(min, max);
                    *o = if self.config.normalize.is_some() {
                        (v - m) / s
                    } else {
                        v
                    };
                }
            }
        }
        Ok(TValue::from_const(self.tensor.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_and_mirror_follow_scipy() {
        // scipy.ndimage._filters._gaussian_kernel1d(0.5, 0, 2)
        let k = gaussian_kernel(0.5);
        let want: [f64; 5] = [0.00026386, 0.10645077, 0.78657075, 0.10645077, 0.00026386];
        assert_eq!(k.len(), 5);
        for (g, w) in k.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{k:?}");
        }
        // d c b | a b c d | c b a
        let m: Vec<usize> = (-3..7).map(|i| mirror(i, 4)).collect();
        assert_eq!(m, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        assert_eq!(mirror(5, 1), 0);
    }

    #[test]
    fn zoom_by_two_averages_pixel_pairs() {
        // grid_mode: output o samples the input at 2o + 0.5, halfway between two pixels
        let t = zoom_taps(8, 4);
        assert_eq!(t[0], (0, 1, 0.5, 0.5));
        assert_eq!(t[3], (6, 7, 0.5, 0.5));
        // upsampling by 2: the first output sits at -0.25, mirrored to 0.25
        let t = zoom_taps(2, 4);
        assert_eq!(t[0], (0, 1, 0.75, 0.25));
        assert_eq!(t[3], (0, 1, 0.25, 0.75));
    }

    #[test]
    fn padding_is_black_after_rescaling_and_boxes_scale_by_the_square() {
        // a white 4x2 image to 4x4: the bottom half is padding, 0 before normalizing
        let config = Owlv2Config {
            size: (4, 4),
            pad: true,
            anti_alias: true,
            rescale: Some(1.0 / 255.0),
            normalize: Some(([0.5; 3], [0.25; 3])),
        };
        let mut p = Owlv2Preprocessor::new(config);
        let img = RgbImage::from_pixel(4, 2, image::Rgb([255, 255, 255]));
        let t = p.run(&img).unwrap();
        let v = t.try_as_plain_ram().unwrap();
        let v = v.as_slice::<f32>().unwrap();
        assert_eq!(v[0], 2.0, "white: (1 - 0.5) / 0.25");
        assert_eq!(v[3 * 4], -2.0, "padding: (0 - 0.5) / 0.25");
        assert_eq!(p.box_scale(4, 2), (4.0, 4.0));
    }
}
