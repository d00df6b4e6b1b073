//! Decide: turns one prompt's noisy stream of per-frame zero-shot scores into ON/OFF states and
//! event transitions (started, better snapshot, ended).
//!
//! The score is smoothed with a running median over the last `window` frames; the state turns ON
//! after `min_frames` consecutive medians at or above `threshold`, and OFF once the median has
//! stayed below `off_threshold` for `off_delay`. Between the two thresholds the state holds
//! (hysteresis). After an event ends, a new one cannot start before `cooldown` has passed.
//!
//! Pure code: no clocks, no I/O. Time comes in as the `Instant` of each observation or tick.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How one prompt's scores become events.
#[derive(Clone, Debug, PartialEq)]
pub struct DecideConfig {
    /// ON when the median of the last `window` scores reaches this.
    pub threshold: f32,
    /// Counts as "below" only when the median is `<` this; clamped to at most `threshold`.
    pub off_threshold: f32,
    /// Median over the last `window` scores; at least 1.
    pub window: usize,
    /// ON only after the median has been `>= threshold` for this many consecutive observations; at least 1.
    pub min_frames: usize,
    /// OFF only after the median stayed `< off_threshold` for this long.
    pub off_delay: Duration,
    /// After an event ends, a new one cannot start until this has passed.
    pub cooldown: Duration,
}

impl Default for DecideConfig {
    /// A prompt's settings when its config names none (`config/promptcam.example.toml`):
    /// on at 0.5, off below 0.4 (four fifths of the threshold), median of 3, on after 2
    /// frames, off 10 s after the score dropped, no cooldown.
    fn default() -> DecideConfig {
        DecideConfig {
            threshold: 0.5,
            off_threshold: 0.4,
            window: 3,
            min_frames: 2,
            off_delay: Duration::from_secs(10),
            cooldown: Duration::ZERO,
        }
    }
}

/// What an observation or tick changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The state turned ON: an event starts.
    Started,
    /// Still ON, and the smoothed score beat the best seen in this event (a better snapshot).
    Updated,
    /// The state turned OFF: the event ends.
    Ended,
    /// Nothing worth reporting.
    None,
}

/// The outcome of one observation or tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// What changed.
    pub transition: Transition,
    /// The state after this observation.
    pub on: bool,
    /// The median the decision used (for a tick, the one of the last observation; 0.0 before any).
    pub smoothed: f32,
}

/// Per-prompt state machine from scores to events; see the module documentation.
#[derive(Clone, Debug)]
pub struct Decider {
    config: DecideConfig,
    /// The last `window` scores, oldest first.
    scores: VecDeque<f32>,
    /// Scratch buffer for the median, reused from frame to frame.
    scratch: Vec<f32>,
    on: bool,
    /// Consecutive observations whose median was `>= threshold`.
    above: usize,
    /// While ON: when the median first went below `off_threshold`, if it still is.
    below_since: Option<Instant>,
    /// Best smoothed score of the current event (or of the last one, once it ended).
    best: Option<f32>,
    last_ended: Option<Instant>,
    smoothed: f32,
}

/// Median of `values`: the middle value, or the mean of the two middle values for an even count;
/// 0.0 for an empty slice. NaN sorts above every number (IEEE total order).
pub fn median(values: &[f32]) -> f32 {
    let mut v = values.to_vec();
    median_in_place(&mut v)
}

fn median_in_place(v: &mut [f32]) -> f32 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    v.sort_unstable_by(f32::total_cmp);
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Decider {
    /// A decider in the OFF state with no history. `window` and `min_frames` of 0 count as 1;
    /// an `off_threshold` above `threshold` is lowered to it.
    pub fn new(mut config: DecideConfig) -> Decider {
        config.window = config.window.max(1);
        config.min_frames = config.min_frames.max(1);
        config.off_threshold = config.off_threshold.min(config.threshold);
        Decider {
            scores: VecDeque::with_capacity(config.window),
            scratch: Vec::with_capacity(config.window),
            config,
            on: false,
            above: 0,
            below_since: None,
            best: None,
            last_ended: None,
            smoothed: 0.0,
        }
    }

    /// One observation at time `now` (monotonic). `score` is `None` when the frame did not count
    /// (e.g. a detection outside the region of interest) and is then treated as 0.0, as is NaN.
    pub fn observe(&mut self, score: Option<f32>, now: Instant) -> Decision {
        let score = score.filter(|s| !s.is_nan()).unwrap_or(0.0);
        if self.scores.len() >= self.config.window {
            self.scores.pop_front();
        }
        self.scores.push_back(score);
        self.scratch.clear();
        self.scratch.extend(self.scores.iter().copied());
        let m = median_in_place(&mut self.scratch);
        self.smoothed = m;

        if m >= self.config.threshold {
            self.above = self.above.saturating_add(1);
        } else {
            self.above = 0;
        }

        let transition = if !self.on {
            let cooled = self
                .last_ended
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.cooldown);
            if self.above >= self.config.min_frames && cooled {
                self.on = true;
                self.best = Some(m);
                self.below_since = None;
                Transition::Started
            } else {
                Transition::None
            }
        } else if m >= self.config.off_threshold {
            self.below_since = None;
            if self.best.is_none_or(|b| m > b) {
                self.best = Some(m);
                Transition::Updated
            } else {
                Transition::None
            }
        } else {
            let since = *self.below_since.get_or_insert(now);
            self.end_if_due(since, now)
        };
        self.decision(transition)
    }

    /// Time passes without observations (e.g. a static scene, motion gate closed): an ON state
    /// whose median has been below `off_threshold` for `off_delay` ends here (`Ended`).
    pub fn tick(&mut self, now: Instant) -> Decision {
        let transition = match (self.on, self.below_since) {
            (true, Some(since)) => self.end_if_due(since, now),
            _ => Transition::None,
        };
        self.decision(transition)
    }

    /// Changes both thresholds live (MQTT number entity, SIGHUP); they apply from the next
    /// observation. `off_threshold` is clamped to at most `threshold`. Raising `threshold`
    /// restarts the consecutive count, since earlier frames were judged against a lower bar.
    pub fn set_thresholds(&mut self, threshold: f32, off_threshold: f32) {
        if threshold > self.config.threshold {
            self.above = 0;
        }
        self.config.threshold = threshold;
        self.config.off_threshold = off_threshold.min(threshold);
    }

    /// When the current event ends if no score comes back above `off_threshold` before: the
    /// moment a [`Decider::tick`] first returns `Ended`. `None` while OFF or while the score holds.
    pub fn ends_at(&self) -> Option<Instant> {
        match (self.on, self.below_since) {
            (true, Some(since)) => Some(since + self.config.off_delay),
            _ => None,
        }
    }

    /// Whether the state is ON (an event is in progress).
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Best smoothed score of the current event, or of the last one after it ended; `None`
    /// before the first event.
    pub fn best(&self) -> Option<f32> {
        self.best
    }

    /// The configuration in use (after clamping and live threshold changes).
    pub fn config(&self) -> &DecideConfig {
        &self.config
    }

    fn end_if_due(&mut self, below_since: Instant, now: Instant) -> Transition {
        if now.saturating_duration_since(below_since) >= self.config.off_delay {
            self.on = false;
            self.below_since = None;
            self.last_ended = Some(now);
            Transition::Ended
        } else {
            Transition::None
        }
    }

    fn decision(&self, transition: Transition) -> Decision {
        Decision {
            transition,
            on: self.on,
            smoothed: self.smoothed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DecideConfig {
        DecideConfig {
            threshold: 0.5,
            off_threshold: 0.3,
            window: 1,
            min_frames: 1,
            off_delay: Duration::ZERO,
            cooldown: Duration::ZERO,
        }
    }

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    /// Feeds `scores` one per 100 ms starting at `base + start_ms`; returns the transitions.
    fn feed(d: &mut Decider, base: Instant, start_ms: u64, scores: &[f32]) -> Vec<Transition> {
        scores
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                d.observe(Some(s), ms(base, start_ms + 100 * i as u64))
                    .transition
            })
            .collect()
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[0.9, 0.25, 0.75, 0.1]), 0.5);
        assert_eq!(median(&[4.0]), 4.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn flicker_does_not_toggle() {
        let base = Instant::now();
        let mut d = Decider::new(DecideConfig { window: 3, ..cfg() });
        // isolated spikes never make the median of 3 reach the threshold
        let t = feed(
            &mut d,
            base,
            0,
            &[0.0, 0.9, 0.0, 0.0, 0.9, 0.0, 0.0, 0.9, 0.0, 0.0],
        );
        assert!(t.iter().all(|&x| x == Transition::None), "{t:?}");
        assert!(!d.is_on());
        // and once ON, a single dip does not end it
        let t = feed(&mut d, base, 1000, &[0.9, 0.9, 0.0, 0.9, 0.9, 0.0, 0.9]);
        assert_eq!(t[1], Transition::Started);
        assert!(!t[2..].contains(&Transition::Ended), "{t:?}");
        assert!(d.is_on());
    }

    #[test]
    fn min_frames_consecutive() {
        let base = Instant::now();
        let mut d = Decider::new(DecideConfig {
            min_frames: 3,
            ..cfg()
        });
        // two highs then a low reset the count
        let t = feed(&mut d, base, 0, &[0.9, 0.9, 0.1, 0.9, 0.9]);
        assert!(t.iter().all(|&x| x == Transition::None), "{t:?}");
        assert!(!d.is_on());
        let dec = d.observe(Some(0.9), ms(base, 500));
        assert_eq!(dec.transition, Transition::Started);
        assert!(dec.on);
        assert_eq!(dec.smoothed, 0.9);
    }

    #[test]
    fn hysteresis_band_keeps_state() {
        let base = Instant::now();
        let mut d = Decider::new(cfg());
        // OFF: 0.4 is in the band, not enough to start
        assert_eq!(
            feed(&mut d, base, 0, &[0.4, 0.4]),
            vec![Transition::None; 2]
        );
        assert!(!d.is_on());
        assert_eq!(
            d.observe(Some(0.6), ms(base, 200)).transition,
            Transition::Started
        );
        // ON: 0.4 and exactly off_threshold are not "below", even with no off_delay
        let t = feed(&mut d, base, 300, &[0.4, 0.3, 0.45]);
        assert!(!t.contains(&Transition::Ended), "{t:?}");
        assert!(d.is_on());
        assert_eq!(
            d.observe(Some(0.29), ms(base, 600)).transition,
            Transition::Ended
        );
        assert!(!d.is_on());
    }

    #[test]
    fn off_delay_on_tick_and_cancel() {
        let base = Instant::now();
        let mut d = Decider::new(DecideConfig {
            off_delay: Duration::from_secs(2),
            ..cfg()
        });
        assert_eq!(
            d.observe(Some(0.9), ms(base, 0)).transition,
            Transition::Started
        );
        // goes below at 1 s: not over at 2.5 s
        assert_eq!(
            d.observe(Some(0.1), ms(base, 1000)).transition,
            Transition::None
        );
        assert_eq!(d.tick(ms(base, 2500)).transition, Transition::None);
        assert!(d.is_on());
        // back above at 2.9 s cancels the pending off; the timer restarts at the next low
        assert_eq!(
            d.observe(Some(0.4), ms(base, 2900)).transition,
            Transition::None
        );
        assert_eq!(d.tick(ms(base, 3500)).transition, Transition::None);
        assert_eq!(
            d.observe(Some(0.1), ms(base, 4000)).transition,
            Transition::None
        );
        assert_eq!(d.tick(ms(base, 5999)).transition, Transition::None);
        assert!(d.is_on());
        let dec = d.tick(ms(base, 6000));
        assert_eq!(dec.transition, Transition::Ended);
        assert!(!dec.on && !d.is_on());
        // nothing more to end
        assert_eq!(d.tick(ms(base, 9000)).transition, Transition::None);
    }

    #[test]
    fn off_delay_on_observe() {
        let base = Instant::now();
        let mut d = Decider::new(DecideConfig {
            off_delay: Duration::from_secs(1),
            ..cfg()
        });
        d.observe(Some(0.9), ms(base, 0));
        let t = feed(&mut d, base, 100, &[0.1; 11]);
        // below since 100 ms: ends at 1100 ms, the 11th low frame
        assert_eq!(&t[..10], &[Transition::None; 10]);
        assert_eq!(t[10], Transition::Ended);
    }

    #[test]
    fn cooldown_blocks_restart_then_allows() {
        let base = Instant::now();
        let mut d = Decider::new(DecideConfig {
            cooldown: Duration::from_secs(5),
            ..cfg()
        });
        assert_eq!(
            d.observe(Some(0.9), ms(base, 0)).transition,
            Transition::Started
        );
        assert_eq!(
            d.observe(Some(0.0), ms(base, 1000)).transition,
            Transition::Ended
        );
        // high scores during the cooldown do not start an event
        let t = feed(&mut d, base, 1100, &[0.9; 39]); // up to 4900 ms
        assert!(t.iter().all(|&x| x == Transition::None), "{t:?}");
        assert!(!d.is_on());
        assert_eq!(
            d.observe(Some(0.9), ms(base, 6000)).transition,
            Transition::Started
        );
    }

    #[test]
    fn cooldown_counting_continues() {
        let base = Instant::now();
        let mut d = Decider::new(DecideConfig {
            min_frames: 3,
            cooldown: Duration::from_secs(1),
            ..cfg()
        });
        feed(&mut d, base, 0, &[0.9, 0.9, 0.9]);
        assert!(d.is_on());
        assert_eq!(
            d.observe(Some(0.0), ms(base, 300)).transition,
            Transition::Ended
        );
        // three highs inside the cooldown, then the first frame after it starts at once
        feed(&mut d, base, 400, &[0.9, 0.9, 0.9]);
        assert!(!d.is_on());
        assert_eq!(
            d.observe(Some(0.9), ms(base, 1300)).transition,
            Transition::Started
        );
    }

    #[test]
    fn updated_only_on_better_score() {
        let base = Instant::now();
        let mut d = Decider::new(cfg());
        assert_eq!(d.best(), None);
        let t = feed(&mut d, base, 0, &[0.6, 0.7, 0.7, 0.65, 0.4, 0.8, 0.75]);
        let (s, u, n) = (Transition::Started, Transition::Updated, Transition::None);
        assert_eq!(t, vec![s, u, n, n, n, u, n]);
        assert_eq!(d.best(), Some(0.8));
        // a new event starts its own best
        d.observe(Some(0.0), ms(base, 1000));
        d.observe(Some(0.55), ms(base, 1100));
        assert_eq!(d.best(), Some(0.55));
        assert_eq!(
            d.observe(Some(0.6), ms(base, 1200)).transition,
            Transition::Updated
        );
    }

    #[test]
    fn set_thresholds_changes_behaviour() {
        let base = Instant::now();
        let mut d = Decider::new(cfg());
        assert_eq!(
            d.observe(Some(0.4), ms(base, 0)).transition,
            Transition::None
        );
        d.set_thresholds(0.35, 0.2);
        assert_eq!(d.config().threshold, 0.35);
        assert_eq!(
            d.observe(Some(0.4), ms(base, 100)).transition,
            Transition::Started
        );
        // 0.25 is now inside the band, so it no longer ends the event
        assert_eq!(
            d.observe(Some(0.25), ms(base, 200)).transition,
            Transition::None
        );
        assert!(d.is_on());
        d.set_thresholds(0.9, 0.8);
        assert_eq!(
            d.observe(Some(0.5), ms(base, 300)).transition,
            Transition::Ended
        );
        assert_eq!(
            d.observe(Some(0.85), ms(base, 400)).transition,
            Transition::None
        );
        assert!(!d.is_on());
    }

    #[test]
    fn raising_threshold_restarts_count_and_clamps_off() {
        let base = Instant::now();
        let mut d = Decider::new(DecideConfig {
            min_frames: 2,
            ..cfg()
        });
        d.observe(Some(0.6), ms(base, 0));
        d.set_thresholds(0.55, 0.7);
        assert_eq!(d.config().off_threshold, 0.55);
        assert_eq!(
            d.observe(Some(0.6), ms(base, 100)).transition,
            Transition::None
        );
        assert_eq!(
            d.observe(Some(0.6), ms(base, 200)).transition,
            Transition::Started
        );
    }

    #[test]
    fn none_counts_as_zero() {
        let base = Instant::now();
        let mut d = Decider::new(DecideConfig { window: 3, ..cfg() });
        d.observe(Some(0.9), ms(base, 0));
        let dec = d.observe(None, ms(base, 100));
        assert_eq!(dec.smoothed, 0.45);
        assert_eq!(d.observe(None, ms(base, 200)).smoothed, 0.0);
    }
}
