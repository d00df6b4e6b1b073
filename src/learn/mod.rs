//! Learn: prompts that learn from the user's yes/no marks. The daemon stores a CLIP image
//! embedding for every analysed frame, so the marks are a labelled data set; a linear classifier
//! over those embeddings (`logistic`) learns in milliseconds and scores a new frame with one dot
//! product. Pure functions of values:
//!
//! - [`train`]: the classifier of a question's marks, its regularisation chosen and its
//!   precision, recall and F1 measured by stratified k-fold cross-validation, its threshold the
//!   one with the best cross-validated F1;
//! - `evaluate`: precision, recall, F1 and the precision–recall curve of any prompt's scores on
//!   marked frames;
//! - `file`: the learned prompt as a file (`learned/<name>.json` under the state directory);
//! - `select`: frames worth marking next, and near-duplicates grouped in galleries.

pub mod bench;
pub mod evaluate;
pub mod file;
pub mod logistic;
pub mod select;

use evaluate::Measure;
use logistic::{fit, Linear, Problem};

/// Marks of each kind a question needs before it can be learned (and cross-validated).
pub const MIN_EACH: usize = 3;
/// Folds of the cross-validation, at most (fewer when a kind has fewer marks).
pub const MAX_FOLDS: usize = 5;
/// The regularisation strengths tried (see `logistic`), strongest first: from "the text decides
/// unless many marks disagree" to "the marks decide".
pub const ALPHAS: [f64; 3] = [1.0, 0.1, 0.01];

/// Too few marks to learn from, with what is missing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", too_few_message(*.yes, *.no))]
pub struct TooFew {
    pub yes: usize,
    pub no: usize,
}

fn too_few_message(yes: usize, no: usize) -> String {
    let more = |have: usize, what: &str| {
        (have < MIN_EACH).then(|| format!("{} more {what}", MIN_EACH - have))
    };
    let need: Vec<String> = [more(yes, "yes"), more(no, "no")]
        .into_iter()
        .flatten()
        .collect();
    format!(
        "learning needs at least {MIN_EACH} frames marked yes and {MIN_EACH} marked no; \
         this question has {yes} yes and {no} no: mark {}",
        need.join(" and ")
    )
}

/// A trained classifier and how well it did on the marks it was not trained on.
#[derive(Clone, Debug)]
pub struct Training {
    pub model: Linear,
    /// The threshold with the best cross-validated F1.
    pub threshold: f32,
    /// Cross-validated precision, recall and F1 at that threshold.
    pub cv: Measure,
    pub folds: usize,
    pub alpha: f64,
    /// Each mark's score from the fold that did not see it (in the order of the marks).
    pub out_of_fold: Vec<f32>,
}

/// The fold of each mark: marks of each kind dealt in turn (stratified, deterministic).
pub fn folds(yes: &[bool], k: usize) -> Vec<usize> {
    let (mut ny, mut nn) = (0, 0);
    yes.iter()
        .map(|&y| {
            let c = if y { &mut ny } else { &mut nn };
            *c += 1;
            (*c - 1) % k
        })
        .collect()
}

/// Learns from `yes.len()` marks whose embeddings are the rows of `x` (`d` values each, L2
/// normalized), pulled towards `prior` (the zero-shot text direction, or zeros).
pub fn train(x: &[f32], d: usize, yes: &[bool], prior: &[f32]) -> Result<Training, TooFew> {
    let n = yes.len();
    let ny = yes.iter().filter(|y| **y).count();
    if ny < MIN_EACH || n - ny < MIN_EACH {
        return Err(TooFew {
            yes: ny,
            no: n - ny,
        });
    }
    let k = MAX_FOLDS.min(ny).min(n - ny);
    let fold = folds(yes, k);
    let all: Vec<usize> = (0..n).collect();
    let row = |i: usize| &x[i * d..(i + 1) * d];
    // strongest prior first: each strength's fold fits start from the previous strength's
    // (nearby solutions, so few iterations each); the final fit only for the chosen strength
    let mut best: Option<(f64, f64, Vec<f32>, Vec<Linear>)> = None;
    let mut warm: Vec<Option<Linear>> = vec![None; k];
    for alpha in ALPHAS {
        let p = Problem {
            x,
            d,
            yes,
            prior,
            alpha,
        };
        // the folds fit on threads of their own (independent problems: the same result in any
        // order); a thousand marks take tens of milliseconds per strength on one core
        let models: Vec<Linear> = std::thread::scope(|scope| {
            let (p, fold) = (&p, &fold);
            let fits: Vec<_> = warm
                .iter()
                .enumerate()
                .map(|(f, start)| {
                    scope.spawn(move || {
                        let train: Vec<usize> = (0..n).filter(|i| fold[*i] != f).collect();
                        fit(p, &train, start.as_ref())
                    })
                })
                .collect();
            fits.into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut oof = vec![0.0f32; n];
        for (i, f) in fold.iter().enumerate() {
            oof[i] = models[*f].score(row(i));
        }
        // class-balanced log loss of the held-out scores: smoother than F1 on a few marks
        let loss: f64 = (0..n)
            .map(|i| {
                let p = f64::from(oof[i]).clamp(1e-6, 1.0 - 1e-6);
                let w = if yes[i] {
                    1.0 / ny as f64
                } else {
                    1.0 / (n - ny) as f64
                };
                -w * if yes[i] { p.ln() } else { (1.0 - p).ln() }
            })
            .sum();
        warm = models.iter().cloned().map(Some).collect();
        // ties go to the stronger prior (earlier in ALPHAS)
        if best.as_ref().is_none_or(|(l, ..)| loss < *l - 1e-9) {
            best = Some((loss, alpha, oof, models));
        }
    }
    let Some((_, alpha, out_of_fold, models)) = best else {
        return Err(TooFew {
            yes: ny,
            no: n - ny,
        });
    };
    let p = Problem {
        x,
        d,
        yes,
        prior,
        alpha,
    };
    let model = fit(&p, &all, models.first());
    let scored: Vec<(f32, bool)> = out_of_fold
        .iter()
        .copied()
        .zip(yes.iter().copied())
        .collect();
    let cv = evaluate::best_f1(&scored).unwrap_or_else(|| evaluate::at(&scored, 0.5));
    Ok(Training {
        model,
        threshold: cv.threshold,
        cv,
        folds: k,
        alpha,
        out_of_fold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_marks_say_how_many_more_of_which() {
        let e = train(&[0.0; 8], 2, &[true, true, false, true], &[0.0, 0.0]).unwrap_err();
        assert_eq!(e, TooFew { yes: 3, no: 1 });
        assert!(e.to_string().ends_with("mark 2 more no"), "{e}");
    }

    #[test]
    fn folds_are_stratified() {
        let yes = [true, false, true, true, false, false, true];
        assert_eq!(folds(&yes, 2), vec![0, 0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn separable_marks_are_learned_and_cross_validated() {
        // yes rows point one way, no rows another, both with noise
        let d = 16;
        let mut x = vec![];
        let mut yes = vec![];
        let mut s = 11u64;
        for i in 0..30 {
            let y = i % 3 == 0;
            let mut v: Vec<f32> = (0..d)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                })
                .collect();
            v[if y { 0 } else { 1 }] += 1.0;
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            x.extend(v.iter().map(|a| a / norm));
            yes.push(y);
        }
        let t = train(&x, d, &yes, &vec![0.0; d]).unwrap();
        assert_eq!(t.folds, 5);
        assert_eq!(t.cv.f1, 1.0, "{:?}", t.cv);
        // the reported figures are those of the out-of-fold scores at the threshold
        let scored: Vec<(f32, bool)> = t.out_of_fold.iter().copied().zip(yes.clone()).collect();
        assert_eq!(evaluate::at(&scored, t.threshold), t.cv);
        for (i, y) in yes.iter().enumerate() {
            assert_eq!(t.model.score(&x[i * d..(i + 1) * d]) >= t.threshold, *y);
        }
    }
}
