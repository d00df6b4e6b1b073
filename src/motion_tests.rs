//! Unit tests of `motion`: the gate on synthetic scenes, the changed region, the ROI.

use super::*;
use image::Rgb;

const W: u32 = 320;
const H: u32 = 240;

fn config() -> MotionConfig {
    MotionConfig {
        width: 64,
        pixel_delta: 25,
        min_changed: 0.01,
        refresh: Duration::from_secs(30),
    }
}

/// A textured background with an optional bright 40x40 square at (x, y).
fn scene(square: Option<(u32, u32)>) -> RgbImage {
    RgbImage::from_fn(W, H, |x, y| {
        if let Some((sx, sy)) = square {
            if (sx..sx + 40).contains(&x) && (sy..sy + 40).contains(&y) {
                return Rgb([250, 250, 250]);
            }
        }
        Rgb([(40 + x / 4) as u8, (60 + y / 4) as u8, 90])
    })
}

fn secs(start: Instant, s: u64) -> Instant {
    start + Duration::from_secs(s)
}

#[test]
fn static_frames_are_still_after_the_first() {
    let mut gate = MotionGate::new(config());
    let t0 = Instant::now();
    let frame = scene(None);
    let first = gate.check(&frame, t0);
    assert_eq!((first.analyse, first.reason), (true, Reason::First));
    for i in 1..5 {
        let v = gate.check(&frame, secs(t0, i));
        assert_eq!(
            (v.analyse, v.reason, v.changed_fraction),
            (false, Reason::Still, 0.0)
        );
    }
}

#[test]
fn a_moving_bright_square_is_motion() {
    let mut gate = MotionGate::new(config());
    let t0 = Instant::now();
    gate.check(&scene(Some((20, 20))), t0);
    let v = gate.check(&scene(Some((120, 100))), secs(t0, 1));
    assert_eq!((v.analyse, v.reason), (true, Reason::Motion));
    assert!(v.changed_fraction > 0.03, "{}", v.changed_fraction);
    // the region covers where the square left and where it arrived, and little else
    let [x0, y0, x1, y1] = v.region.expect("a motion region");
    assert!(
        x0 <= 20 && y0 <= 20 && x1 >= 160 && y1 >= 140,
        "{:?}",
        v.region
    );
    assert!(
        x0 >= 10 && y0 >= 10 && x1 <= 170 && y1 <= 150,
        "{:?}",
        v.region
    );
    // the reference moved with the analysis: the same frame again is still
    let v = gate.check(&scene(Some((120, 100))), secs(t0, 2));
    assert_eq!((v.reason, v.region), (Reason::Still, None));
    // a square appearing in one corner: a region around it only
    let v = gate.check(&scene(Some((120, 100))).tap_square(250, 180), secs(t0, 3));
    let [x0, y0, x1, y1] = v.region.expect("a motion region");
    assert!(
        x0 >= 240 && y0 >= 170 && x1 <= W && y1 <= H && x1 >= 290 && y1 >= 220,
        "{:?}",
        v.region
    );
}

trait TapSquare {
    fn tap_square(self, x: u32, y: u32) -> Self;
}

impl TapSquare for RgbImage {
    /// Adds a dark 40x40 square at (x, y).
    fn tap_square(mut self, x: u32, y: u32) -> RgbImage {
        for yy in y..(y + 40).min(H) {
            for xx in x..(x + 40).min(W) {
                self.put_pixel(xx, yy, Rgb([5, 5, 5]));
            }
        }
        self
    }
}

#[test]
fn sensor_noise_is_still() {
    let mut gate = MotionGate::new(config());
    let t0 = Instant::now();
    let base = scene(None);
    gate.check(&base, t0);
    for i in 0..4u32 {
        let noisy = RgbImage::from_fn(W, H, |x, y| {
            let sign = (x * 7 + y * 13 + i) % 3; // -3, 0 or +3 per pixel
            let p = base.get_pixel(x, y).0;
            Rgb(p.map(|c| match sign {
                0 => c.saturating_sub(3),
                1 => c,
                _ => c.saturating_add(3),
            }))
        });
        let v = gate.check(&noisy, secs(t0, 1 + i as u64));
        assert_eq!(
            (v.analyse, v.reason, v.changed_fraction),
            (false, Reason::Still, 0.0)
        );
    }
    // worst case: every pixel +3 at once
    let shifted = RgbImage::from_fn(W, H, |x, y| {
        Rgb(base.get_pixel(x, y).0.map(|c| c.saturating_add(3)))
    });
    assert_eq!(gate.check(&shifted, secs(t0, 9)).reason, Reason::Still);
}

#[test]
fn refresh_fires_after_the_refresh_duration() {
    let mut gate = MotionGate::new(config());
    let t0 = Instant::now();
    let frame = scene(None);
    gate.check(&frame, t0);
    assert_eq!(gate.check(&frame, secs(t0, 29)).reason, Reason::Still);
    let v = gate.check(&frame, secs(t0, 30));
    assert_eq!((v.analyse, v.reason), (true, Reason::Refresh));
    // the refresh counts as an analysis: the clock restarts from it
    assert_eq!(gate.check(&frame, secs(t0, 59)).reason, Reason::Still);
    assert_eq!(gate.check(&frame, secs(t0, 60)).reason, Reason::Refresh);
}

#[test]
fn roi_excludes_motion_outside_it() {
    let mut gate = MotionGate::new(config());
    gate.set_roi(Some([200, 140, 320, 240])); // bottom-right corner
    let t0 = Instant::now();
    gate.check(&scene(Some((10, 10))), t0);
    let v = gate.check(&scene(Some((60, 40))), secs(t0, 1));
    assert_eq!((v.reason, v.changed_fraction), (Reason::Still, 0.0));
    let v = gate.check(&scene(Some((240, 170))), secs(t0, 2));
    assert_eq!((v.analyse, v.reason), (true, Reason::Motion));
    // without the ROI the same kind of move outside it is motion
    gate.set_roi(None);
    let v = gate.check(&scene(Some((10, 10))), secs(t0, 3));
    assert_eq!(v.reason, Reason::Motion);
}

#[test]
fn roi_outside_the_frame_counts_nothing() {
    let mut gate = MotionGate::new(config());
    gate.set_roi(Some([1000, 1000, 2000, 2000]));
    let t0 = Instant::now();
    gate.check(&scene(None), t0);
    let v = gate.check(&scene(Some((100, 100))), secs(t0, 1));
    assert_eq!((v.reason, v.changed_fraction), (Reason::Still, 0.0));
}

#[test]
fn size_change_and_reset_start_over() {
    let mut gate = MotionGate::new(config());
    let t0 = Instant::now();
    gate.check(&scene(None), t0);
    let small = RgbImage::from_pixel(16, 9, Rgb([10, 20, 30]));
    assert_eq!(gate.check(&small, secs(t0, 1)).reason, Reason::First);
    assert_eq!(gate.check(&small, secs(t0, 2)).reason, Reason::Still);
    gate.reset();
    assert_eq!(gate.check(&small, secs(t0, 3)).reason, Reason::First);
    let empty = RgbImage::new(0, 0);
    assert!(!gate.check(&empty, secs(t0, 4)).analyse);
    assert_eq!(gate.check(&small, secs(t0, 5)).reason, Reason::Still);
}

#[test]
fn thumbnail_keeps_aspect_and_cells_cover_the_roi() {
    assert_eq!(thumbnail_size(320, 240, 64), (64, 48));
    assert_eq!(thumbnail_size(1920, 1080, 64), (64, 36));
    assert_eq!(thumbnail_size(1000, 2, 64), (64, 1));
    assert_eq!(thumbnail_size(10, 10, 64), (10, 10));
    assert_eq!(overlapping_cells(0, 320, 64, 320), 0..64);
    assert_eq!(overlapping_cells(200, 320, 64, 320), 40..64);
    assert_eq!(overlapping_cells(7, 8, 64, 320), 1..2);
    assert_eq!(overlapping_cells(300, 100, 64, 320), 0..0);
}

#[test]
fn box_average_of_a_flat_frame_is_its_luma() {
    let mut gate = MotionGate::new(config());
    gate.check(
        &RgbImage::from_pixel(100, 50, Rgb([200, 100, 50])),
        Instant::now(),
    );
    let expected = luma(200, 100, 50) as u8;
    assert_eq!(gate.reference.len(), 64 * 32);
    assert!(gate.reference.iter().all(|&g| g == expected));
}
