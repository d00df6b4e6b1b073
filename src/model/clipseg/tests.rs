//! Unit tests of `clipseg`.

use image::Rgb;

use super::masks::axis;
use super::*;

fn masks(width: usize, height: usize, logits: Vec<f32>) -> Masks {
    Masks {
        prompts: logits.len() / (width * height),
        width,
        height,
        logits,
    }
}

#[test]
fn bilinear_axis_matches_torch_align_corners_false() {
    // torch: upsampling 2 -> 4 samples at src = (d + 0.5) / 2 - 0.5, clamped at 0
    let a = axis(2, 4, 0, 4);
    assert_eq!(a[0], (0, 1, 0.0));
    assert_eq!(a[1], (0, 1, 0.25));
    assert_eq!(a[2], (0, 1, 0.75));
    assert_eq!(a[3], (1, 1, 0.25)); // past the last sample: both indices clamp to it
                                    // downsampling 4 -> 2 samples at 0.5 and 2.5 (no antialias)
    let d = axis(4, 2, 0, 2);
    assert_eq!(d, vec![(0, 1, 0.5), (2, 3, 0.5)]);
}

#[test]
fn coverage_counts_pixels_above_the_threshold_within_the_roi() {
    // left column very likely, right column very unlikely, upsampled 2x2 -> 4x4
    let m = masks(2, 2, vec![5.0, -5.0, 5.0, -5.0]);
    let (cov, max) = m.coverage(0, 4, 4, None, 0.5);
    assert_eq!(cov, 0.5);
    assert!((max - sigmoid(5.0)).abs() < 1e-6);
    let (cov, _) = m.coverage(0, 4, 4, Some([0, 0, 1, 4]), 0.5);
    assert_eq!(cov, 1.0);
    let (cov, max) = m.coverage(0, 4, 4, Some([3, 0, 4, 4]), 0.5);
    assert_eq!(cov, 0.0);
    assert!(max < 0.01);
    // an ROI outside the image covers nothing
    assert_eq!(m.coverage(0, 4, 4, Some([10, 10, 20, 20]), 0.5), (0.0, 0.0));
    assert_eq!(m.coverage(0, 4, 4, None, 1.0).0, 0.0);
    assert_eq!(m.coverage(0, 4, 4, None, 0.0).0, 1.0);
}

#[test]
fn overlay_tints_only_masked_pixels() {
    let m = masks(2, 1, vec![4.0, -4.0]);
    let mut img = RgbImage::from_pixel(40, 20, Rgb([0, 0, 0]));
    overlay(
        &mut img,
        &m,
        &[Layer {
            prompt: 0,
            threshold: 0.5,
            label: "",
            colour_index: 2,
        }],
    );
    let Rgb(c) = crate::annotate::colour(2);
    assert_eq!(img.get_pixel(0, 10).0, c.map(|v| v / 2));
    assert_eq!(img.get_pixel(39, 10).0, [0, 0, 0]);
}
