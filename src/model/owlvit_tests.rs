//! Unit tests of `owlvit`.

use super::*;

fn det(q: usize, score: f32, bbox: [f32; 4]) -> Detection {
    Detection {
        prompt: format!("p{q}"),
        prompt_index: q,
        score,
        bbox,
    }
}

#[test]
fn post_process_scales_corners_and_sorts() {
    let p = PatchScores {
        best_query: vec![1, 0, 0],
        scores: vec![0.5, 0.9, 0.05],
        boxes: vec![
            [0.5, 0.5, 0.2, 0.4],
            [0.25, 0.25, 0.5, 0.5],
            [0.5, 0.5, 1.0, 1.0],
        ],
    };
    let prompts = vec!["a".to_string(), "b".to_string()];
    let d = post_process(&p, &prompts, 0.1, 200, 100);
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].prompt, "a");
    assert_eq!(d[0].bbox, [0.0, 0.0, 100.0, 50.0]);
    assert_eq!(d[1].prompt, "b");
    for (got, want) in d[1].bbox.iter().zip([80.0, 30.0, 120.0, 70.0]) {
        assert!((got - want).abs() < 1e-3, "{:?}", d[1].bbox);
    }
}

#[test]
fn nms_keeps_other_prompts_and_distant_boxes() {
    let d = vec![
        det(0, 0.9, [0.0, 0.0, 10.0, 10.0]),
        det(0, 0.8, [1.0, 1.0, 11.0, 11.0]),
        det(1, 0.7, [1.0, 1.0, 11.0, 11.0]),
        det(0, 0.6, [50.0, 50.0, 60.0, 60.0]),
    ];
    let k = nms(d, 0.5);
    let scores: Vec<f32> = k.iter().map(|d| d.score).collect();
    assert_eq!(scores, vec![0.9, 0.7, 0.6]);
}

#[test]
fn iou_of_identical_and_disjoint() {
    assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[0.0, 0.0, 2.0, 2.0]), 1.0);
    assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
}
