//! Motion: the cheap gate that decides whether a frame is worth sending to the models.
//!
//! Each frame is reduced to a small grayscale thumbnail (box average, integer luma) and compared
//! with a reference thumbnail: the frame is analysed when enough thumbnail pixels changed, when
//! nothing was analysed for a while (so published states stay fresh), or when there is no
//! reference yet. The reference becomes the current thumbnail whenever a frame is analysed, so
//! slow drifts such as daylight trigger at most one analysis each time they add up.
//!
//! Pure: time is passed in, and the thumbnails live in the gate so that a steady stream of
//! same-sized frames allocates nothing.

use std::time::{Duration, Instant};

use image::RgbImage;

/// How the gate judges motion.
#[derive(Clone, Debug, PartialEq)]
pub struct MotionConfig {
    /// Thumbnail width in pixels (e.g. 64); the height keeps the frame's aspect, at least 1.
    /// Frames narrower than this are compared at their own size.
    pub width: u32,
    /// A thumbnail pixel changed when |gray - reference| is greater than this (e.g. 25).
    pub pixel_delta: u8,
    /// Motion when the changed fraction of (counted) thumbnail pixels is at least this (e.g. 0.01).
    pub min_changed: f32,
    /// Analyse anyway when nothing was analysed for this long.
    pub refresh: Duration,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            width: 64,
            pixel_delta: 25,
            min_changed: 0.01,
            refresh: Duration::from_secs(60),
        }
    }
}

/// Why the gate decided as it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Enough pixels changed since the last analysed frame.
    Motion,
    /// No motion, but nothing was analysed for `MotionConfig::refresh`.
    Refresh,
    /// No reference yet (first frame, after `reset`, or the frame size changed).
    First,
    /// No motion and the last analysis is recent: skip the models.
    Still,
}

/// The gate's decision for one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MotionVerdict {
    /// Whether the frame should go to the models.
    pub analyse: bool,
    /// Fraction of counted thumbnail pixels that changed (0 when there was no reference).
    pub changed_fraction: f32,
    /// Why.
    pub reason: Reason,
    /// With `Motion`: the bounding box of the changed thumbnail cells, in frame pixels
    /// `[x0, y0, x1, y1]` (x1, y1 exclusive).
    pub region: Option<[u32; 4]>,
}

/// Motion detector for one camera; see the module docs.
#[derive(Debug)]
pub struct MotionGate {
    config: MotionConfig,
    roi: Option<[u32; 4]>,
    /// Thumbnail of the last analysed frame (valid when `last_analysed` is set).
    reference: Vec<u8>,
    /// Thumbnail of the frame being checked.
    current: Vec<u8>,
    /// Per-column sums for one thumbnail row while downscaling.
    row_sums: Vec<u32>,
    /// Size of the frames the reference was made from.
    source_size: (u32, u32),
    /// Thumbnail size.
    thumb_size: (u32, u32),
    last_analysed: Option<Instant>,
}

impl MotionGate {
    /// A gate with no reference: its first frame is analysed.
    pub fn new(config: MotionConfig) -> MotionGate {
        MotionGate {
            config,
            roi: None,
            reference: Vec::new(),
            current: Vec::new(),
            row_sums: Vec::new(),
            source_size: (0, 0),
            thumb_size: (0, 0),
            last_analysed: None,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &MotionConfig {
        &self.config
    }

    /// Optional region of interest in original-frame pixels `[x0, y0, x1, y1]` (x1, y1
    /// exclusive): only thumbnail pixels whose source area overlaps it count. A region that does
    /// not overlap the frame counts nothing, so only `First` and `Refresh` analyse.
    pub fn set_roi(&mut self, roi: Option<[u32; 4]>) {
        self.roi = roi;
    }

    /// Forgets the reference, so the next frame is analysed as `First` (e.g. after a reconnect).
    pub fn reset(&mut self) {
        self.last_analysed = None;
    }

    /// Decides for one frame at monotonic time `now`. The reference becomes this frame whenever
    /// it is analysed. An empty (0-pixel) frame is never analysed and leaves the gate unchanged.
    pub fn check(&mut self, frame: &RgbImage, now: Instant) -> MotionVerdict {
        let (width, height) = frame.dimensions();
        if width == 0 || height == 0 {
            return MotionVerdict {
                analyse: false,
                changed_fraction: 0.0,
                reason: Reason::Still,
                region: None,
            };
        }
        let thumb_size = thumbnail_size(width, height, self.config.width);
        if (width, height) != self.source_size || thumb_size != self.thumb_size {
            self.source_size = (width, height);
            self.thumb_size = thumb_size;
            self.last_analysed = None;
        }
        self.downscale(frame);

        let Some(last) = self.last_analysed else {
            self.accept(now);
            return MotionVerdict {
                analyse: true,
                changed_fraction: 0.0,
                reason: Reason::First,
                region: None,
            };
        };
        let (changed_fraction, region) = self.changes();
        let reason = if changed_fraction > 0.0 && changed_fraction >= self.config.min_changed {
            Reason::Motion
        } else if now.saturating_duration_since(last) >= self.config.refresh {
            Reason::Refresh
        } else {
            Reason::Still
        };
        let analyse = reason != Reason::Still;
        if analyse {
            self.accept(now);
        }
        MotionVerdict {
            analyse,
            changed_fraction,
            reason,
            region: region.filter(|_| reason == Reason::Motion),
        }
    }

    /// Makes the current thumbnail the reference.
    fn accept(&mut self, now: Instant) {
        std::mem::swap(&mut self.reference, &mut self.current);
        self.last_analysed = Some(now);
    }

    /// Box-averages the frame's luma into `current` (size `thumb_size`).
    fn downscale(&mut self, frame: &RgbImage) {
        let (src_w, src_h) = (frame.width() as usize, frame.height() as usize);
        let (tw, th) = (self.thumb_size.0 as usize, self.thumb_size.1 as usize);
        self.current.clear();
        self.current.reserve(tw * th);
        self.row_sums.clear();
        self.row_sums.resize(tw, 0);
        let raw = frame.as_raw();
        for ty in 0..th {
            let (y0, y1) = cell_range(ty, th, src_h);
            self.row_sums.iter_mut().for_each(|s| *s = 0);
            for row in raw.chunks_exact(src_w * 3).skip(y0).take(y1 - y0) {
                for (tx, sum) in self.row_sums.iter_mut().enumerate() {
                    let (x0, x1) = cell_range(tx, tw, src_w);
                    *sum += row[x0 * 3..x1 * 3]
                        .chunks_exact(3)
                        .map(|p| luma(p[0], p[1], p[2]))
                        .sum::<u32>();
                }
            }
            for (tx, sum) in self.row_sums.iter().enumerate() {
                let (x0, x1) = cell_range(tx, tw, src_w);
                let count = ((x1 - x0) * (y1 - y0)) as u32;
                self.current.push(((sum + count / 2) / count.max(1)) as u8);
            }
        }
    }

    /// Fraction of counted thumbnail pixels differing from the reference by more than
    /// `pixel_delta`, and the frame pixels their cells cover (their bounding box).
    fn changes(&self) -> (f32, Option<[u32; 4]>) {
        let (src_w, src_h) = (self.source_size.0 as usize, self.source_size.1 as usize);
        let (tw, th) = (self.thumb_size.0 as usize, self.thumb_size.1 as usize);
        let (cols, rows) = match self.roi {
            None => (0..tw, 0..th),
            Some([x0, y0, x1, y1]) => (
                overlapping_cells(x0 as usize, x1 as usize, tw, src_w),
                overlapping_cells(y0 as usize, y1 as usize, th, src_h),
            ),
        };
        let counted = cols.len() * rows.len();
        if counted == 0 {
            return (0.0, None);
        }
        let delta = self.config.pixel_delta;
        let mut changed = 0usize;
        // changed cells' bounding box: [min x, min y, max x, max y] in cells
        let mut cells: Option<[usize; 4]> = None;
        for ty in rows {
            let start = ty * tw;
            for tx in cols.clone() {
                if self.current[start + tx].abs_diff(self.reference[start + tx]) > delta {
                    changed += 1;
                    let b = cells.get_or_insert([tx, ty, tx, ty]);
                    *b = [b[0].min(tx), b[1].min(ty), b[2].max(tx), b[3].max(ty)];
                }
            }
        }
        let region = cells.map(|[x0, y0, x1, y1]| {
            let (px0, _) = cell_range(x0, tw, src_w);
            let (_, px1) = cell_range(x1, tw, src_w);
            let (py0, _) = cell_range(y0, th, src_h);
            let (_, py1) = cell_range(y1, th, src_h);
            [px0 as u32, py0 as u32, px1 as u32, py1 as u32]
        });
        (changed as f32 / counted as f32, region)
    }
}

/// Integer approximation of BT.601 luma (0.299, 0.587, 0.114 as 77/150/29 of 256).
fn luma(r: u8, g: u8, b: u8) -> u32 {
    (77 * r as u32 + 150 * g as u32 + 29 * b as u32 + 128) >> 8
}

/// Thumbnail size for a `width` x `height` frame: at most `target` wide (never wider than the
/// frame), height by aspect, each at least 1 and at most the frame's.
fn thumbnail_size(width: u32, height: u32, target: u32) -> (u32, u32) {
    let tw = target.clamp(1, width);
    let th = ((height as u64 * tw as u64 + width as u64 / 2) / width as u64) as u32;
    (tw, th.clamp(1, height))
}

/// Source pixels `[start, end)` covered by thumbnail cell `i` of `cells` over `len` pixels
/// (non-empty since `cells <= len`).
fn cell_range(i: usize, cells: usize, len: usize) -> (usize, usize) {
    (i * len / cells, (i + 1) * len / cells)
}

/// Thumbnail cells whose source range overlaps source pixels `[start, end)`.
fn overlapping_cells(start: usize, end: usize, cells: usize, len: usize) -> std::ops::Range<usize> {
    let (start, end) = (start.min(len), end.min(len));
    if start >= end {
        return 0..0;
    }
    // cell i covers [i*len/cells, (i+1)*len/cells): first cell ending after `start`, first
    // cell starting at or after `end`.
    let first = (0..cells)
        .find(|&i| cell_range(i, cells, len).1 > start)
        .unwrap_or(cells);
    let last = (first..cells)
        .find(|&i| cell_range(i, cells, len).0 >= end)
        .unwrap_or(cells);
    first..last
}

#[cfg(test)]
mod tests {
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
}
