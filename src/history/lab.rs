//! Lab: what the prompt lab computes from the history, as pure functions of stored values.
//!
//! - [`score_all`]: a typed prompt's score on every stored frame, from the stored CLIP image
//!   embeddings and the prompt's class embeddings, with exactly the daemon's scoring
//!   ([`crate::model::clip::prompt_score`]): no model runs per frame.
//! - [`replay`]: the decider ([`crate::decide::Decider`]) run over a stored score series, with
//!   time taken from the frames' timestamps: "would have fired N times".
//! - [`suggest_threshold`]: the threshold that best separates frames marked yes from frames
//!   marked no.
//! - [`histogram`], [`ranked`]: for the score plots and the top and bottom matches.

use std::time::{Duration, Instant};

use crate::decide::{DecideConfig, Decider, Transition};
use crate::model::clip::prompt_score;

use super::store::Embeddings;

/// A prompt's class embedding and the class embeddings it must beat.
#[derive(Clone, Debug)]
pub struct QueryEmbeddings {
    pub own: Vec<f32>,
    pub negatives: Vec<Vec<f32>>,
}

impl QueryEmbeddings {
    /// The prompt's score of one image embedding, as the daemon scores a frame.
    pub fn scorer(&self, logit_scale: f32) -> impl FnMut(&[f32]) -> f32 + '_ {
        let mut negs = vec![0.0; self.negatives.len()];
        move |row| {
            for (n, neg) in negs.iter_mut().zip(&self.negatives) {
                *n = dot_lanes(neg, row);
            }
            prompt_score(dot_lanes(&self.own, row), negs.iter().copied(), logit_scale)
        }
    }
}

/// The prompt's score on every frame of a set held in memory, in the order of `emb`.
pub fn score_all(emb: &Embeddings, q: &QueryEmbeddings, logit_scale: f32) -> Vec<f32> {
    let mut score = q.scorer(logit_scale);
    let mut row = vec![0.0; emb.dim];
    (0..emb.len())
        .map(|i| {
            emb.row_into(i, &mut row);
            score(&row)
        })
        .collect()
}

/// A dot product in eight independent sums, which the compiler turns into vector instructions
/// (a single running sum must stay in order and cannot); the result differs from a sequential
/// sum by rounding only.
pub fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// One event the decider would have produced.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Fire {
    /// Unix ms of the frame that started it.
    pub start_ms: i64,
    /// Unix ms at which it would have ended; `None` when still on at the end of the series.
    pub end_ms: Option<i64>,
    /// Its best smoothed score, and the frame (index into the series) that reached it.
    pub best: f32,
    pub best_index: usize,
    pub start_index: usize,
}

/// Runs a decider over `(times_ms[i], scores[i])` in time order. Between frames, time passes as
/// it does for the daemon's ticks: an ON state whose score stayed low ends exactly `off_delay`
/// after it went low, not at the next frame.
pub fn replay(times_ms: &[i64], scores: &[f32], config: &DecideConfig) -> Vec<Fire> {
    let Some(&t0) = times_ms.first() else {
        return vec![];
    };
    let base = Instant::now();
    let at = |ms: i64| base + Duration::from_millis((ms - t0).max(0) as u64);
    let back = |i: Instant| t0 + i.saturating_duration_since(base).as_millis() as i64;
    let mut d = Decider::new(config.clone());
    let mut fires: Vec<Fire> = vec![];
    for (i, (&t, &s)) in times_ms.iter().zip(scores).enumerate() {
        let now = at(t);
        if let Some(due) = d.ends_at().filter(|due| *due <= now) {
            if d.tick(due).transition == Transition::Ended {
                if let Some(f) = fires.last_mut() {
                    f.end_ms = Some(back(due));
                }
            }
        }
        let r = d.observe(Some(s), now);
        match r.transition {
            Transition::Started => fires.push(Fire {
                start_ms: t,
                end_ms: None,
                best: r.smoothed,
                best_index: i,
                start_index: i,
            }),
            Transition::Updated => {
                if let Some(f) = fires.last_mut() {
                    (f.best, f.best_index) = (r.smoothed, i);
                }
            }
            Transition::Ended => {
                if let Some(f) = fires.last_mut() {
                    f.end_ms = Some(t);
                }
            }
            Transition::None => {}
        }
    }
    fires
}

/// A threshold chosen from marked examples.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Suggestion {
    /// Rounded to 3 decimals.
    pub threshold: f64,
    /// Marked frames on the right side of it, as a fraction of each class, averaged (balanced
    /// accuracy: 1.0 separates them perfectly).
    pub balanced_accuracy: f32,
    pub yes: usize,
    pub no: usize,
}

/// The threshold that best separates `(score, marked yes)` examples: the highest balanced
/// accuracy, then the widest gap to the nearest example; it sits halfway between the two
/// examples it falls between. `None` without at least one yes and one no.
pub fn suggest_threshold(marked: &[(f32, bool)]) -> Option<Suggestion> {
    let yes = marked.iter().filter(|m| m.1).count();
    let no = marked.len() - yes;
    if yes == 0 || no == 0 {
        return None;
    }
    let mut scores: Vec<f32> = marked.iter().map(|m| m.0).collect();
    scores.sort_by(f32::total_cmp);
    scores.dedup();
    // candidates: halfway between neighbours, and just outside the range
    let mut candidates = vec![(scores[0] - 0.01).max(0.0)];
    candidates.extend(scores.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    candidates.push((scores[scores.len() - 1] + 0.01).min(1.0));
    let judge = |t: f32| {
        let tp = marked.iter().filter(|(s, y)| *y && *s >= t).count();
        let tn = marked.iter().filter(|(s, y)| !*y && *s < t).count();
        let acc = 0.5 * (tp as f32 / yes as f32 + tn as f32 / no as f32);
        let gap = marked
            .iter()
            .map(|(s, _)| (s - t).abs())
            .fold(f32::INFINITY, f32::min);
        (acc, gap)
    };
    let mut best = (candidates[0], judge(candidates[0]));
    for &t in &candidates[1..] {
        let j = judge(t);
        if j.0 > best.1 .0 || (j.0 == best.1 .0 && j.1 > best.1 .1) {
            best = (t, j);
        }
    }
    Some(Suggestion {
        threshold: (best.0 as f64 * 1000.0).round() / 1000.0,
        balanced_accuracy: best.1 .0,
        yes,
        no,
    })
}

/// Counts of scores in `bins` equal bins over 0..=1 (1.0 falls in the last).
pub fn histogram(scores: &[f32], bins: usize) -> Vec<u32> {
    let mut h = vec![0u32; bins.max(1)];
    for s in scores {
        let i = ((s.clamp(0.0, 1.0) * h.len() as f32) as usize).min(h.len() - 1);
        h[i] += 1;
    }
    h
}

/// Indices of `scores` from the highest score down (ties: the newer frame first).
pub fn ranked(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(b.cmp(&a)));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DecideConfig {
        DecideConfig {
            threshold: 0.5,
            off_threshold: 0.4,
            window: 1,
            min_frames: 1,
            off_delay: Duration::from_secs(2),
            cooldown: Duration::ZERO,
        }
    }

    #[test]
    fn replay_fires_and_ends_off_delay_after_the_drop() {
        // one frame a second: on at 2 s, low from 5 s, so it ends at 7 s (between frames)
        let times: Vec<i64> = (0..12).map(|s| 1_000_000 + s * 1000).collect();
        let scores = [0.1, 0.2, 0.6, 0.7, 0.9, 0.1, 0.1, 0.1, 0.1, 0.8, 0.8, 0.8];
        let fires = replay(&times, &scores, &cfg());
        assert_eq!(fires.len(), 2, "{fires:?}");
        assert_eq!(fires[0].start_ms, 1_002_000);
        assert_eq!(fires[0].end_ms, Some(1_007_000));
        assert_eq!((fires[0].best, fires[0].best_index), (0.9, 4));
        assert_eq!(fires[1].start_ms, 1_009_000);
        assert_eq!(fires[1].end_ms, None, "still on when the history ends");
    }

    #[test]
    fn replay_honours_cooldown_from_the_exact_end() {
        // ends at 4.0 s (low from 2 s, off_delay 2 s); cooldown 3 s: 6.5 s is too early, 7.5 s is not
        let c = DecideConfig {
            cooldown: Duration::from_secs(3),
            ..cfg()
        };
        let times = [0, 1000, 2000, 3000, 6500, 7500];
        let scores = [0.9, 0.9, 0.1, 0.1, 0.9, 0.9];
        let fires = replay(&times, &scores, &c);
        assert_eq!(
            fires.iter().map(|f| f.start_ms).collect::<Vec<_>>(),
            vec![0, 7500],
            "{fires:?}"
        );
        assert_eq!(fires[0].end_ms, Some(4000));
    }

    #[test]
    fn suggestion_separates_marks_and_needs_both_kinds() {
        let marked = [
            (0.9, true),
            (0.7, true),
            (0.35, false),
            (0.2, false),
            (0.5, true),
        ];
        let s = suggest_threshold(&marked).unwrap();
        assert_eq!(s.balanced_accuracy, 1.0);
        assert!((s.threshold - 0.425).abs() < 1e-6, "{s:?}");
        assert_eq!((s.yes, s.no), (3, 2));
        // overlapping marks: the best split still gets most right
        let overlap = [(0.9, true), (0.6, false), (0.55, true), (0.2, false)];
        let s = suggest_threshold(&overlap).unwrap();
        assert_eq!(s.balanced_accuracy, 0.75);
        assert!(suggest_threshold(&[(0.9, true)]).is_none());
    }

    #[test]
    fn lane_dot_products_equal_sequential_ones() {
        let a: Vec<f32> = (0..515).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..515).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = crate::model::clip::dot(&a, &b);
        assert!(
            (dot_lanes(&a, &b) - want).abs() < 1e-4,
            "{} vs {want}",
            dot_lanes(&a, &b)
        );
    }

    #[test]
    fn histogram_and_ranking() {
        assert_eq!(
            histogram(&[0.0, 0.05, 0.5, 0.99, 1.0], 10),
            vec![2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
        );
        assert_eq!(ranked(&[0.2, 0.9, 0.5, 0.9]), vec![3, 1, 2, 0]);
    }

    #[test]
    fn scores_match_the_daemons_formula() {
        let emb = Embeddings::from_f32(
            vec![1, 2],
            vec![0, 1],
            vec![None, None],
            2,
            &[1.0, 0.0, 0.6, 0.8],
        );
        let q = QueryEmbeddings {
            own: vec![1.0, 0.0],
            negatives: vec![vec![0.0, 1.0]],
        };
        let s = score_all(&emb, &q, 100.0);
        assert!((s[0] - prompt_score(1.0, [0.0], 100.0)).abs() < 1e-7);
        assert!((s[1] - prompt_score(0.6, [0.8], 100.0)).abs() < 1e-7);
        assert!(s[0] > 0.999 && s[1] < 1e-6);
    }
}
