//! Tree execution rules, with scripted models standing in for the detector and CLIP.

use super::*;

type Size = (u32, u32);
/// A scripted box: detector prompt index, score, corners.
type Boxed = (usize, f32, [f32; 4]);
type Groups = Vec<Vec<usize>>;

/// Answers by image size: `boxes[(w, h)]` for the detector (prompt index, score, box) and
/// `logits[(w, h)]` for CLIP; records every call.
#[derive(Default)]
struct Scripted {
    boxes: Vec<(Size, Vec<Boxed>)>,
    logits: Vec<(Size, Vec<f32>)>,
    detect_calls: Vec<(Size, Groups)>,
    classify_calls: Vec<Size>,
    /// The first pixel of each image the detector saw (to check where crops come from).
    detect_pixels: Vec<[u8; 3]>,
}

impl TreeModels for Scripted {
    fn detect(
        &mut self,
        image: &RgbImage,
        threshold: f32,
        groups: &[&[usize]],
    ) -> Result<Vec<Vec<Detection>>> {
        let size = image.dimensions();
        self.detect_calls
            .push((size, groups.iter().map(|g| g.to_vec()).collect()));
        self.detect_pixels.push(image.get_pixel(0, 0).0);
        let found: Vec<Boxed> = self
            .boxes
            .iter()
            .find(|(s, _)| *s == size)
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        Ok(groups
            .iter()
            .map(|g| {
                found
                    .iter()
                    .filter(|(q, s, _)| g.contains(q) && *s > threshold)
                    .map(|(q, s, b)| Detection {
                        prompt: format!("p{q}"),
                        prompt_index: *q,
                        score: *s,
                        bbox: *b,
                    })
                    .collect()
            })
            .collect())
    }

    fn classify(&mut self, image: &RgbImage) -> Result<Vec<f32>> {
        let size = image.dimensions();
        self.classify_calls.push(size);
        Ok(self
            .logits
            .iter()
            .find(|(s, _)| *s == size)
            .map(|(_, l)| l.clone())
            .unwrap_or_default())
    }
}

/// A 100 x 80 frame whose pixel (x, y) is (x, y, 7).
fn frame() -> RgbImage {
    RgbImage::from_fn(100, 80, |x, y| image::Rgb([x as u8, y as u8, 7]))
}

#[test]
fn crops_are_floor_ceil_rectangles_clamped_to_the_frame() {
    assert_eq!(
        crop_rect([10.5, 20.2, 50.7, 70.0], 100, 80),
        Some((10, 20, 41, 50))
    );
    assert_eq!(
        crop_rect([-3.2, 5.5, 120.1, 79.2], 100, 80),
        Some((0, 5, 100, 75))
    );
    assert_eq!(crop_rect([120.0, 5.0, 130.0, 9.0], 100, 80), None);
    assert_eq!(crop_rect([5.0, 5.0, 5.0, 9.0], 100, 80), None);
}

#[test]
fn a_nested_detection_runs_on_the_parent_crop_and_maps_boxes_back() {
    let tree = Tree::parse("[a person [a face]]").unwrap();
    let mut m = Scripted {
        boxes: vec![
            ((100, 80), vec![(0, 0.6, [10.5, 20.2, 50.7, 70.0])]),
            ((41, 50), vec![(1, 0.3, [1.0, 2.0, 11.5, 12.0])]),
        ],
        ..Default::default()
    };
    let out = tree.run(&mut m, &frame(), 0.1).unwrap();
    assert!(out.classes.is_empty());
    assert_eq!(out.detections.len(), 2);
    let (p, f) = (&out.detections[0], &out.detections[1]);
    assert_eq!(
        (p.prompt.as_str(), p.parent, p.score),
        ("a person", None, 0.6)
    );
    assert_eq!(p.bbox, [10.5, 20.2, 50.7, 70.0]);
    assert_eq!((f.prompt.as_str(), f.parent), ("a face", Some(0)));
    assert_eq!(f.bbox, [11.0, 22.0, 21.5, 32.0]);
    // the frame with [a person], then the person's crop (from (10, 20)) with [a face]
    assert_eq!(
        m.detect_calls,
        [((100, 80), vec![vec![0]]), ((41, 50), vec![vec![1]])]
    );
    assert_eq!(m.detect_pixels[1], [10, 20, 7]);
    // the face's crop ran nothing: no node applies to "a face"
    assert_eq!(m.detect_calls.len(), 2);
    assert!(m.classify_calls.is_empty());
}

#[test]
fn boxes_take_each_groups_probabilities_in_tree_order() {
    let tree = Tree::parse("[a person (a hard hat, no hard hat) (left, right)]").unwrap();
    let texts = tree.texts(Op::Classify);
    assert_eq!(texts, ["a hard hat", "no hard hat", "left", "right"]);
    let mut m = Scripted {
        boxes: vec![(
            (100, 80),
            vec![
                (0, 0.9, [0.0, 0.0, 20.0, 20.0]),
                (0, 0.05, [0.0, 0.0, 30.0, 30.0]),
            ],
        )],
        logits: vec![((20, 20), vec![1.0, 3.0, 2.0, 2.0])],
        ..Default::default()
    };
    let out = tree.run(&mut m, &frame(), 0.1).unwrap();
    assert_eq!(
        out.detections.len(),
        1,
        "the 0.05 box is under the threshold"
    );
    let c = &out.detections[0].classes;
    let names: Vec<&str> = c.iter().map(|c| c.prompt.as_str()).collect();
    assert_eq!(names, ["a hard hat", "no hard hat", "left", "right"]);
    let e = (2.0f32).exp();
    assert!((c[1].score - e / (1.0 + e)).abs() < 1e-6, "{c:?}");
    assert!((c[0].score + c[1].score - 1.0).abs() < 1e-6);
    assert!((c[2].score - 0.5).abs() < 1e-6);
    assert!(c[1].won && !c[0].won);
    // one CLIP run per box, however many groups
    assert_eq!(m.classify_calls, [(20, 20)]);
}

#[test]
fn a_node_under_a_class_runs_only_where_that_class_won() {
    let tree = Tree::parse("(indoors, outdoors [a car])").unwrap();
    let boxes = vec![((100, 80), vec![(0, 0.5, [1.0, 1.0, 9.0, 9.0])])];
    let mut indoors = Scripted {
        boxes: boxes.clone(),
        logits: vec![((100, 80), vec![2.0, 1.0])],
        ..Default::default()
    };
    let out = tree.run(&mut indoors, &frame(), 0.1).unwrap();
    assert_eq!(out.classes.len(), 2);
    assert!(out.classes[0].won);
    assert!(out.detections.is_empty());
    assert!(indoors.detect_calls.is_empty());

    let mut outdoors = Scripted {
        boxes,
        logits: vec![((100, 80), vec![1.0, 2.0])],
        ..Default::default()
    };
    let out = tree.run(&mut outdoors, &frame(), 0.1).unwrap();
    assert_eq!(out.detections.len(), 1);
    assert_eq!(out.detections[0].prompt, "a car");
    assert_eq!(out.detections[0].parent, None);
}

#[test]
fn nested_classes_are_listed_in_tree_order_after_their_parent_group() {
    // (c, d) applies where b won; it is written before (e, f) so it is listed before it
    let tree = Tree::parse("[p (a, b (c, d)) (e, f)]").unwrap();
    let mut m = Scripted {
        boxes: vec![((100, 80), vec![(0, 0.9, [0.0, 0.0, 10.0, 10.0])])],
        // a, b, c, d, e, f
        logits: vec![((10, 10), vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0])],
        ..Default::default()
    };
    let out = tree.run(&mut m, &frame(), 0.1).unwrap();
    let names: Vec<&str> = out.detections[0]
        .classes
        .iter()
        .map(|c| c.prompt.as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e", "f"]);
}

#[test]
fn sibling_detection_groups_share_one_detector_run() {
    let tree = Tree::parse("[a cat][a dog, a cat]").unwrap();
    assert_eq!(tree.texts(Op::Detect), ["a cat", "a dog"]);
    let mut m = Scripted {
        boxes: vec![((100, 80), vec![(0, 0.5, [0.0, 0.0, 5.0, 5.0])])],
        ..Default::default()
    };
    let out = tree.run(&mut m, &frame(), 0.1).unwrap();
    assert_eq!(m.detect_calls, [((100, 80), vec![vec![0], vec![1, 0]])]);
    // the same box found by both groups, each under its own label
    assert_eq!(out.detections.len(), 2);
    assert_ne!(out.detections[0].label, out.detections[1].label);
}

#[test]
fn too_many_nested_runs_are_refused_with_the_threshold_to_raise() {
    let tree = Tree::parse("[a person [a face]]").unwrap();
    let many: Vec<Boxed> = (0..=MAX_CROPS)
        .map(|i| (0, 0.5, [i as f32 % 90.0, 0.0, i as f32 % 90.0 + 5.0, 5.0]))
        .collect();
    let mut m = Scripted {
        boxes: vec![((100, 80), many)],
        ..Default::default()
    };
    let e = tree.run(&mut m, &frame(), 0.2).unwrap_err().to_string();
    assert!(e.contains("raise the threshold (now 0.2)"), "{e}");
    assert_eq!(m.detect_calls.len(), 1 + MAX_CROPS);
    // without a nested group the same boxes are fine: they are not cropped
    let tree = Tree::parse("[a person]").unwrap();
    assert_eq!(
        tree.run(&mut m, &frame(), 0.2).unwrap().detections.len(),
        MAX_CROPS + 1
    );
}
