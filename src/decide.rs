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
#[path = "decide_tests.rs"]
mod tests;
