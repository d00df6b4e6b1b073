//! The inference loop with fake prompt models (no ONNX): the detector cascade, the region of
//! interest, pause, the motion gate's refresh, events and their order, a swap of prompts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::config::{CameraConfig, OwlVitWhen, PromptConfig};
use crate::decide::DecideConfig;
use crate::event::{Event, EventKind};
use crate::motion::{MotionConfig, MotionGate};

/// A model that plays back scripted observations, one list per frame, and counts its runs.
struct Fake {
    kind: ModelKind,
    prompts: Vec<usize>,
    script: Arc<Mutex<VecDeque<Vec<Observation>>>>,
    runs: Arc<AtomicUsize>,
    focused: Arc<Mutex<Vec<Option<[u32; 4]>>>>,
}

/// The handle a test keeps on its fake: what to answer next, and how often it ran.
#[derive(Clone)]
struct Script {
    script: Arc<Mutex<VecDeque<Vec<Observation>>>>,
    runs: Arc<AtomicUsize>,
    /// The motion focus each run was given.
    focused: Arc<Mutex<Vec<Option<[u32; 4]>>>>,
}

impl Script {
    fn then(&self, obs: Vec<(usize, f32, Option<[f32; 4]>)>) -> &Script {
        let obs = obs
            .into_iter()
            .map(|(prompt, score, bbox)| Observation {
                prompt,
                score,
                bbox,
            })
            .collect();
        self.script.lock().unwrap().push_back(obs);
        self
    }
    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

fn fake(kind: ModelKind, prompts: &[usize]) -> (Box<dyn PromptModel>, Script) {
    let s = Script {
        script: Arc::default(),
        runs: Arc::default(),
        focused: Arc::default(),
    };
    let m = Fake {
        kind,
        prompts: prompts.to_vec(),
        script: s.script.clone(),
        runs: s.runs.clone(),
        focused: s.focused.clone(),
    };
    (Box::new(m), s)
}

impl PromptModel for Fake {
    fn kind(&self) -> ModelKind {
        self.kind
    }
    fn prompts(&self) -> &[usize] {
        &self.prompts
    }
    fn focus(&mut self, region: Option<[u32; 4]>, _: (u32, u32)) -> bool {
        self.focused.lock().unwrap().push(region);
        region.is_some()
    }
    fn observe(&mut self, _: &Frame, _: Option<[u32; 4]>) -> Result<Vec<Observation>> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(self.script.lock().unwrap().pop_front().unwrap_or_default())
    }
}

pub(super) fn prompt(text: &str, model: ModelKind) -> PromptConfig {
    PromptConfig {
        text: text.into(),
        name: text.into(),
        id: crate::config::slug(text),
        model,
        negatives: vec![],
        ensemble: vec![],
        device_class: None,
        decide: DecideConfig {
            threshold: 0.5,
            off_threshold: 0.4,
            window: 1,
            min_frames: 1,
            off_delay: Duration::ZERO,
            cooldown: Duration::ZERO,
        },
        mask_threshold: 0.5,
        tree: None,
        examples: vec![],
        negative_examples: vec![],
        learned: None,
        runtime: None,
    }
}

fn camera_config(
    prompts: Vec<PromptConfig>,
    owlvit_when: OwlVitWhen,
    roi: Option<[u32; 4]>,
) -> CameraConfig {
    CameraConfig {
        name: "Porch".into(),
        id: "porch".into(),
        source: "unused".into(),
        fps: 2.0,
        looped: false,
        roi,
        owlvit_when,
        motion_crops: None,
        prompts,
        watch: crate::config::WatchConfig::default_for(&Default::default()),
    }
}

/// A frame, its pixels all `level` (motion between frames of different levels), `at` ms in.
fn frame(level: u8, base: Instant, at: u64) -> Frame {
    Frame {
        image: image::RgbImage::from_pixel(64, 48, image::Rgb([level; 3])),
        seq: at,
        captured_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + at),
        monotonic: base + Duration::from_millis(at),
    }
}

fn inference(cam: Camera) -> (Inference, Receiver<Event>) {
    let (tx, rx) = sync_channel(256);
    (Inference::new(vec![cam], tx, None), rx)
}

/// Puts a frame in the camera's slot and runs one round.
fn feed(inf: &mut Inference, f: Frame) {
    inf.camera(0).slot.put(f);
    assert!(inf.step().unwrap());
}

fn kinds(rx: &Receiver<Event>) -> Vec<(String, EventKind)> {
    rx.try_iter().map(|e| (e.prompt, e.kind)).collect()
}

#[test]
fn the_detector_runs_only_while_a_clip_prompt_is_on() {
    let prompts = vec![
        prompt("a delivery van", ModelKind::Clip),
        prompt("a package", ModelKind::OwlVit),
    ];
    let (clip, c) = fake(ModelKind::Clip, &[0]);
    let (owl, o) = fake(ModelKind::OwlVit, &[1]);
    let cam = Camera::new(
        &camera_config(prompts, OwlVitWhen::ClipOn, None),
        None,
        vec![clip, owl],
    );
    let (mut inf, rx) = inference(cam);
    let base = Instant::now();
    c.then(vec![(0, 0.1, None)])
        .then(vec![(0, 0.9, None)])
        .then(vec![(0, 0.9, None)])
        .then(vec![(0, 0.1, None)]);
    o.then(vec![(1, 0.8, Some([1.0, 1.0, 9.0, 9.0]))])
        .then(vec![(1, 0.2, Some([1.0, 1.0, 9.0, 9.0]))]);
    for (i, at) in [0, 500, 1000, 1500].iter().enumerate() {
        feed(&mut inf, frame(i as u8 * 50, base, *at));
    }
    assert_eq!(c.runs(), 4, "CLIP runs on every frame");
    // the van is on from the second frame (decided before the detector's turn) to the fourth
    assert_eq!(o.runs(), 2, "the detector runs only while the van is on");
    assert_eq!(
        kinds(&rx),
        vec![
            ("a_delivery_van".into(), EventKind::Start),
            ("a_package".into(), EventKind::Start),
            ("a_package".into(), EventKind::End),
            ("a_delivery_van".into(), EventKind::End),
        ]
    );
}

#[test]
fn a_prompts_best_box_counts_only_inside_the_region_of_interest() {
    let prompts = vec![prompt("a cat", ModelKind::OwlVit)];
    let (owl, o) = fake(ModelKind::OwlVit, &[0]);
    let roi = Some([0, 0, 32, 48]); // the left half
    let cam = Camera::new(
        &camera_config(prompts, OwlVitWhen::Always, roi),
        None,
        vec![owl],
    );
    let (mut inf, rx) = inference(cam);
    let base = Instant::now();
    // the best box is on the right (outside): the one inside, lower, is the prompt's score
    o.then(vec![
        (0, 0.9, Some([40.0, 0.0, 60.0, 20.0])),
        (0, 0.3, Some([2.0, 2.0, 10.0, 10.0])),
    ])
    .then(vec![(0, 0.95, Some([40.0, 0.0, 60.0, 20.0]))])
    .then(vec![(0, 0.7, Some([20.0, 10.0, 30.0, 20.0]))]);
    for (i, at) in [0, 500, 1000].iter().enumerate() {
        feed(&mut inf, frame(i as u8, base, *at));
    }
    let scores: Vec<f32> = inf
        .camera(0)
        .status
        .prompts()
        .iter()
        .map(|p| p.score)
        .collect();
    assert_eq!(scores, vec![0.7], "the last frame's box is inside");
    let events: Vec<Event> = rx.try_iter().collect();
    // 0.3, then nothing inside (0), then 0.7: one event, started by the box inside
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].kind, events[0].bbox, events[0].score),
        (EventKind::Start, Some([20.0, 10.0, 30.0, 20.0]), 0.7)
    );
    assert!(
        events[0].snapshot.is_some(),
        "a start carries its snapshot, drawn later on request"
    );
}

#[test]
fn a_paused_camera_takes_its_frames_but_analyses_none() {
    let prompts = vec![prompt("a delivery van", ModelKind::Clip)];
    let (clip, c) = fake(ModelKind::Clip, &[0]);
    let cam = Camera::new(
        &camera_config(prompts, OwlVitWhen::Always, None),
        None,
        vec![clip],
    );
    let (mut inf, rx) = inference(cam);
    let base = Instant::now();
    c.then(vec![(0, 0.9, None)]).then(vec![(0, 0.9, None)]);
    inf.camera(0).status.set_paused(true);
    for at in [0, 500, 1000] {
        feed(&mut inf, frame(0, base, at));
    }
    assert_eq!(
        (
            c.runs(),
            inf.camera(0).status.paused_frames.load(Ordering::SeqCst)
        ),
        (0, 3)
    );
    assert!(kinds(&rx).is_empty());
    inf.camera(0).status.set_paused(false);
    feed(&mut inf, frame(0, base, 1500));
    assert_eq!(c.runs(), 1, "it resumes");
    assert_eq!(
        kinds(&rx),
        vec![("a_delivery_van".into(), EventKind::Start)]
    );
}

#[test]
fn a_refresh_of_a_still_scene_runs_the_classifier_but_not_a_motion_gated_detector() {
    let prompts = vec![
        prompt("a gate left open", ModelKind::Clip),
        prompt("a person", ModelKind::OwlVit),
    ];
    let (clip, c) = fake(ModelKind::Clip, &[0]);
    let (owl, o) = fake(ModelKind::OwlVit, &[1]);
    let motion = MotionGate::new(MotionConfig {
        refresh: Duration::from_secs(2),
        ..MotionConfig::default()
    });
    let cam = Camera::new(
        &camera_config(prompts, OwlVitWhen::Motion, None),
        Some(motion),
        vec![clip, owl],
    );
    let (mut inf, _rx) = inference(cam);
    let base = Instant::now();
    // first frame: analysed (no reference yet) and counts as motion
    feed(&mut inf, frame(10, base, 0));
    assert_eq!((c.runs(), o.runs()), (1, 1));
    // the same picture: held back, until the refresh is due; the refresh runs CLIP only
    feed(&mut inf, frame(10, base, 500));
    assert_eq!((c.runs(), o.runs()), (1, 1));
    feed(&mut inf, frame(10, base, 2600));
    assert_eq!((c.runs(), o.runs()), (2, 1), "a refresh is not motion");
    // a changed picture is motion: both run
    feed(&mut inf, frame(200, base, 3000));
    assert_eq!((c.runs(), o.runs()), (3, 2));
    assert_eq!(
        inf.camera(0).stats.skipped_no_motion.load(Ordering::SeqCst),
        1
    );
}

#[test]
fn new_prompts_swap_in_with_the_old_events_ended_and_finish_ends_the_rest() {
    let (clip, c) = fake(ModelKind::Clip, &[0]);
    let cam = Camera::new(
        &camera_config(
            vec![prompt("a rocket", ModelKind::Clip)],
            OwlVitWhen::Always,
            None,
        ),
        None,
        vec![clip],
    );
    let (mut inf, rx) = inference(cam);
    let base = Instant::now();
    c.then(vec![(0, 0.9, None)]);
    feed(&mut inf, frame(0, base, 0));
    assert_eq!(kinds(&rx), vec![("a_rocket".into(), EventKind::Start)]);
    // new prompts take over: the open event ends, the status shows the new prompts
    let (clip2, c2) = fake(ModelKind::Clip, &[0, 1]);
    let next = camera_config(
        vec![
            prompt("a van", ModelKind::Clip),
            prompt("a car", ModelKind::Clip),
        ],
        OwlVitWhen::Always,
        None,
    );
    let ended = inf
        .camera(0)
        .swap_in(&next, vec![clip2], SystemTime::now(), &|_| None);
    assert_eq!(
        ended
            .iter()
            .map(|e| (e.prompt.as_str(), e.kind))
            .collect::<Vec<_>>(),
        vec![("a_rocket", EventKind::End)]
    );
    let ids: Vec<String> = inf
        .camera(0)
        .status
        .prompts()
        .iter()
        .map(|p| p.id.clone())
        .collect();
    assert_eq!(ids, vec!["a_van", "a_car"]);
    c2.then(vec![(0, 0.2, None), (1, 0.8, None)]);
    feed(&mut inf, frame(0, base, 500));
    assert_eq!(kinds(&rx), vec![("a_car".into(), EventKind::Start)]);
    // the daemon stops: what is open ends
    inf.finish().unwrap();
    assert_eq!(kinds(&rx), vec![("a_car".into(), EventKind::End)]);
}

#[test]
fn motion_crops_focus_the_detector_between_whole_frame_passes() {
    let prompts = vec![prompt("a cat", ModelKind::OwlVit)];
    let (owl, o) = fake(ModelKind::OwlVit, &[0]);
    let mut config = camera_config(prompts, OwlVitWhen::Always, None);
    config.motion_crops = Some(Duration::from_secs(10));
    let motion = MotionGate::new(MotionConfig {
        refresh: Duration::from_secs(2),
        ..MotionConfig::default()
    });
    let cam = Camera::new(&config, Some(motion), vec![owl]);
    let (mut inf, _rx) = inference(cam);
    let base = Instant::now();
    // a dark square on a grey frame, moving right: the motion region is around it
    let square = |x: u32, at: u64| {
        let mut f = frame(128, base, at);
        for yy in 10..26 {
            for xx in x..x + 16 {
                f.image.put_pixel(xx, yy, image::Rgb([0; 3]));
            }
        }
        f
    };
    feed(&mut inf, square(2, 0)); // the first frame: whole
    feed(&mut inf, square(10, 500)); // motion: cropped
    feed(&mut inf, square(10, 3000)); // no motion, a refresh: whole
    feed(&mut inf, square(20, 3500)); // motion: cropped
    feed(&mut inf, square(30, 13500)); // motion, but the whole frame is 10 s old: whole
    feed(&mut inf, square(40, 14000)); // motion: cropped
    let focused = o.focused.lock().unwrap().clone();
    let whole: Vec<bool> = focused.iter().map(Option::is_none).collect();
    assert_eq!(
        whole,
        [true, false, true, false, true, false],
        "{focused:?}"
    );
    // the region covers where the square was and where it went (cells of the 64-px-wide
    // motion thumbnail: whole frame pixels here), and not the rest of the frame
    let [x0, y0, x1, y1] = focused[1].unwrap();
    assert!(
        x0 <= 2 && x1 >= 26 && y0 <= 10 && y1 >= 26,
        "{:?}",
        focused[1]
    );
    assert!(x1 <= 34 && y1 <= 34, "{:?}", focused[1]);

    // without motion_crops, never a focus
    let (owl, o) = fake(ModelKind::OwlVit, &[0]);
    let config = camera_config(
        vec![prompt("a cat", ModelKind::OwlVit)],
        OwlVitWhen::Always,
        None,
    );
    let cam = Camera::new(
        &config,
        Some(MotionGate::new(MotionConfig::default())),
        vec![owl],
    );
    let (mut inf, _rx) = inference(cam);
    feed(&mut inf, square(2, 0));
    feed(&mut inf, square(10, 500));
    assert_eq!(*o.focused.lock().unwrap(), [None, None]);
}

#[test]
fn compressed_frames_are_decoded_when_taken_and_bad_ones_counted() {
    use crate::frame::{Captured, Picture};
    let (clip, c) = fake(ModelKind::Clip, &[0]);
    let cam = Camera::new(
        &camera_config(
            vec![prompt("a van", ModelKind::Clip)],
            OwlVitWhen::Always,
            None,
        ),
        None,
        vec![clip],
    );
    let (inf, _rx) = inference(cam);
    let mut jpeg = vec![];
    image::RgbImage::from_pixel(40, 30, image::Rgb([90, 120, 200]))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let captured = |bytes: Vec<u8>, seq| Captured {
        picture: Picture::Compressed(bytes),
        seq,
        captured_at: SystemTime::UNIX_EPOCH,
        monotonic: Instant::now(),
    };
    inf.camera(0).slot.put(captured(jpeg.clone(), 1));
    assert!(inf.step().unwrap());
    assert_eq!(c.runs(), 1, "the decoded frame was analysed");
    let latest = inf.camera(0).status.latest().unwrap();
    assert_eq!(latest.frame.image.dimensions(), (40, 30));
    // bytes that do not decode: counted, not analysed, and the loop goes on
    let cut = jpeg[..jpeg.len() / 2].to_vec();
    inf.camera(0).slot.put(captured(cut, 2));
    assert!(inf.step().unwrap());
    let stats = inf.camera(0).stats.snapshot();
    assert_eq!((stats.undecodable, stats.analysed, c.runs()), (1, 1, 1));
}
