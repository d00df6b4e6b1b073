//! Unit tests of `preprocess`: processor configs and pixels against the references.

use super::*;
use serde_json::json;

#[test]
fn flat_clip_config_means_shortest_edge_then_crop() {
    let c = ProcessorConfig::from_json(
            &json!({"crop_size": 224, "do_center_crop": true, "feature_extractor_type": "CLIPFeatureExtractor",
                    "resample": 3, "size": 224}),
            false,
        )
        .unwrap();
    assert_eq!(c.resize, Some(Resize::ShortestEdge(224)));
    assert_eq!(c.crop, Some((224, 224)));
    assert_eq!(c.resized_size(451, 300), (336, 224));
    assert_eq!(c.resized_size(300, 512), (224, 382));
    assert_eq!(c.rescale, Some(1.0 / 255.0));
}

#[test]
fn flat_owlvit_config_means_square() {
    let c = ProcessorConfig::from_json(
            &json!({"feature_extractor_type": "OwlViTFeatureExtractor", "size": 768, "do_center_crop": false}),
            false,
        )
        .unwrap();
    assert_eq!(
        c.resize,
        Some(Resize::Exact {
            width: 768,
            height: 768
        })
    );
    assert_eq!(c.crop, None);
    assert_eq!(c.output_size(), Some((768, 768)));
}

#[test]
fn nested_config_with_dict_sizes() {
    let c = ProcessorConfig::from_json(
            &json!({"image_processor": {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336},
                    "do_center_crop": true, "image_processor_type": "CLIPImageProcessor", "resample": 2,
                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}}),
            true,
        )
        .unwrap();
    assert_eq!(c.resize, Some(Resize::ShortestEdge(336)));
    assert_eq!(c.resample, Resample::Bilinear);
    assert_eq!(c.normalize, Some(([0.5; 3], [0.5; 3])));
}

#[test]
fn bad_values_name_the_key() {
    let e = ProcessorConfig::from_json(&json!({"size": "big"}), false).unwrap_err();
    assert!(format!("{e:#}").contains("`size`"), "{e:#}");
    let e = ProcessorConfig::from_json(&json!({"size": 224, "resample": 9}), false).unwrap_err();
    assert!(format!("{e:#}").contains("resample 9"), "{e:#}");
    let e = ProcessorConfig::from_json(&json!({"size": 224, "image_std": [1, 0, 1]}), false)
        .unwrap_err();
    assert!(format!("{e:#}").contains("zero"), "{e:#}");
}

#[test]
fn crop_larger_than_image_pads_with_zero_before_normalizing() {
    let c = ProcessorConfig {
        resize: None,
        resample: Resample::Bicubic,
        crop: Some((4, 4)),
        rescale: Some(1.0 / 255.0),
        normalize: None,
    };
    let mut p = Preprocessor::new(c);
    let img = RgbImage::from_pixel(2, 1, image::Rgb([255, 255, 255]));
    let t = p.run(&img).unwrap();
    let v = t
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec();
    // rows: image at row ceil((4-1)/2) = 2, columns ceil((4-2)/2) = 1..3
    let plane: Vec<f32> = v[..16].to_vec();
    let ones: Vec<usize> = plane
        .iter()
        .enumerate()
        .filter(|(_, x)| **x == 1.0)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ones, vec![2 * 4 + 1, 2 * 4 + 2]);
}

/// A textured frame: resampling differences show up on it.
fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
    RgbImage::from_fn(w, h, |x, y| {
        state = state.wrapping_mul(1664525).wrapping_add(1013904223);
        let n = (state >> 24) as u8;
        image::Rgb([
            n,
            ((x * 7 + y * 3) % 256) as u8,
            n.wrapping_add((x / 9) as u8),
        ])
    })
}

#[test]
fn resizing_only_the_cropped_region_gives_the_same_pixels() {
    let cases = [
        (1920, 1080, Resample::Bicubic, 224, 224),
        (1080, 1920, Resample::Bicubic, 224, 224),
        (400, 2000, Resample::Bicubic, 224, 224), // vertical pass first
        (640, 480, Resample::Bilinear, 320, 300),
        (1280, 720, Resample::Lanczos, 336, 336),
        (50, 40, Resample::Bicubic, 224, 224),   // upscaling
        (230, 224, Resample::Bicubic, 224, 224), // only the width changes
    ];
    // square resizes without crop (OWL-ViT 768, CLIPSeg 352): the region is the whole image
    for (i, (w, h, size)) in [(600u32, 400u32, 352u32), (1920, 1080, 768), (333, 517, 352)]
        .into_iter()
        .enumerate()
    {
        let config = ProcessorConfig {
            resize: Some(Resize::Exact {
                width: size,
                height: size,
            }),
            resample: Resample::Bilinear,
            crop: None,
            rescale: None,
            normalize: None,
        };
        let img = noise(w, h, 100 + i as u32);
        let mut p = Preprocessor::new(config);
        p.run(&img)
            .unwrap_or_else(|e| panic!("{w}x{h} -> {size}: {e:#}"));
    }
    for (i, (w, h, resample, size, crop)) in cases.into_iter().enumerate() {
        let config = ProcessorConfig {
            resize: Some(Resize::ShortestEdge(size)),
            resample,
            crop: Some((crop, crop)),
            rescale: None,
            normalize: None,
        };
        let img = noise(w, h, i as u32);
        let (rw, rh) = config.resized_size(w, h);
        let mut p = Preprocessor::new(config);
        p.resize(&img, (rw, rh), [0, 0, rw, rh]).unwrap();
        let whole = p.resized.clone();
        let t = p.run(&img).unwrap();
        let got = t
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let (top, left) = (
            (rh as i64 - crop as i64).div_euclid(2),
            (rw as i64 - crop as i64).div_euclid(2),
        );
        let plane = (crop * crop) as usize;
        let mut differ = 0;
        for y in 0..crop as i64 {
            for x in 0..crop as i64 {
                let (sy, sx) = (y + top, x + left);
                for c in 0..3 {
                    let want = if sy >= 0 && sy < rh as i64 && sx >= 0 && sx < rw as i64 {
                        whole[((sy as usize * rw as usize) + sx as usize) * 3 + c] as f32
                    } else {
                        0.0
                    };
                    if got[c * plane + (y * crop as i64 + x) as usize] != want {
                        differ += 1;
                    }
                }
            }
        }
        assert_eq!(
            differ, 0,
            "case {i}: {w}x{h} -> {rw}x{rh} crop {crop}: {differ} samples differ"
        );
    }
}
