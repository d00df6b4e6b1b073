//! Evaluate: how a prompt's scores on marked frames agree with the marks — precision, recall
//! and F1 at a threshold (a frame fires when its score is at least the threshold), the
//! precision–recall curve over every threshold that changes the outcome, and the threshold
//! with the best F1.

use serde::Serialize;

/// One point of the precision–recall curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Point {
    pub threshold: f32,
    pub precision: f64,
    pub recall: f64,
}

/// Precision, recall and F1 at one threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Measure {
    pub threshold: f32,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// The curve keeps at most this many points (the plot needs no more).
pub const CURVE_POINTS: usize = 200;

/// `(score, marked yes)` pairs measured at `threshold`. With nothing firing, precision is 1 (no
/// false alarm); with no frame marked yes, recall is 1 (nothing missed).
pub fn at(scored: &[(f32, bool)], threshold: f32) -> Measure {
    let (mut tp, mut fp, mut missed) = (0usize, 0usize, 0usize);
    for &(s, yes) in scored {
        match (s >= threshold, yes) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => missed += 1,
            (false, false) => {}
        }
    }
    let ratio = |a: usize, b: usize| {
        if a + b == 0 {
            1.0
        } else {
            a as f64 / (a + b) as f64
        }
    };
    let (precision, recall) = (ratio(tp, fp), ratio(tp, missed));
    let f1 = if tp == 0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Measure {
        threshold,
        precision,
        recall,
        f1,
    }
}

/// The scores at which the outcome changes, ascending, each once.
fn cuts(scored: &[(f32, bool)]) -> Vec<f32> {
    let mut s: Vec<f32> = scored
        .iter()
        .map(|p| p.0)
        .filter(|s| s.is_finite())
        .collect();
    s.sort_by(f32::total_cmp);
    s.dedup();
    s
}

/// The precision–recall curve, by ascending threshold: one point per distinct score (thinned to
/// [`CURVE_POINTS`], keeping both ends). Recall never rises along it.
pub fn curve(scored: &[(f32, bool)]) -> Vec<Point> {
    let cuts = cuts(scored);
    let keep: Vec<f32> = if cuts.len() <= CURVE_POINTS {
        cuts
    } else {
        (0..CURVE_POINTS)
            .map(|k| cuts[k * (cuts.len() - 1) / (CURVE_POINTS - 1)])
            .collect()
    };
    keep.into_iter()
        .map(|t| {
            let m = at(scored, t);
            Point {
                threshold: t,
                precision: m.precision,
                recall: m.recall,
            }
        })
        .collect()
}

/// The threshold with the best F1 (ties: the higher threshold, fewer alarms), placed halfway
/// between the lowest score that fires and the highest that does not, so a small change of a
/// score does not flip the outcome. `None` without a frame marked yes.
pub fn best_f1(scored: &[(f32, bool)]) -> Option<Measure> {
    if !scored.iter().any(|p| p.1) {
        return None;
    }
    let cuts = cuts(scored);
    let mut best: Option<Measure> = None;
    for (k, &t) in cuts.iter().enumerate() {
        let below = if k == 0 { 0.0 } else { cuts[k - 1] };
        let m = at(scored, t);
        if best.is_none_or(|b| m.f1 >= b.f1) {
            best = Some(Measure {
                threshold: (below + t) / 2.0,
                ..m
            });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_count_as_defined() {
        let s = [
            (0.9, true),
            (0.8, false),
            (0.7, true),
            (0.2, true),
            (0.1, false),
        ];
        let m = at(&s, 0.5);
        assert_eq!((m.precision, m.recall), (2.0 / 3.0, 2.0 / 3.0));
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12);
        // nothing fires: no false alarm, everything missed
        let none = at(&s, 0.95);
        assert_eq!((none.precision, none.recall, none.f1), (1.0, 0.0, 0.0));
        let c = curve(&s);
        assert_eq!(c.len(), 5);
        assert!(c.windows(2).all(|w| w[0].threshold < w[1].threshold));
        assert!(c.windows(2).all(|w| w[0].recall >= w[1].recall));
        assert_eq!(c[0].recall, 1.0);
        let b = best_f1(&s).unwrap();
        // firing from 0.2 on: 3 of 3 found, 3 of 4 alarms right -> F1 6/7, the best here
        assert!((b.f1 - 6.0 / 7.0).abs() < 1e-12, "{b:?}");
        assert!((b.threshold - 0.15).abs() < 1e-6);
        assert!(best_f1(&[(0.3, false)]).is_none());
    }

    #[test]
    fn a_long_curve_is_thinned_to_its_cap_with_both_ends() {
        let s: Vec<(f32, bool)> = (0..1000).map(|i| (i as f32 / 1000.0, i % 3 == 0)).collect();
        let c = curve(&s);
        assert_eq!(c.len(), CURVE_POINTS);
        assert_eq!(c[0].threshold, 0.0);
        assert_eq!(c.last().unwrap().threshold, 0.999);
    }
}
