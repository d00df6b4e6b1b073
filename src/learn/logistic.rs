//! Logistic: class-balanced, L2-regularised logistic regression on CLIP image embeddings,
//! pulled towards a prior direction (the zero-shot text direction) rather than towards zero, and
//! solved with L-BFGS: a few dozen passes over the marks, milliseconds for a thousand of them.
//!
//! The model is `score(x) = sigmoid(w . x + b)`. The objective, over marks `x_i` with labels
//! `s_i = +1` (yes) or `-1` (no) and class weights `c_i` (each class weighs half):
//!
//! ```text
//! sum_i c_i * log(1 + exp(-s_i * (w . (x_i - mu) + c)))  +  lambda / 2 * |w - w0|^2
//! ```
//!
//! with `mu` the marks' mean (centering makes the problem well conditioned: CLIP embeddings of
//! one camera share a large common part) and the intercept `c` free. `lambda` is `alpha` times
//! the marks' mean squared distance from `mu`, so `alpha` means the same whatever the
//! embeddings' spread: moving a margin by `M` along the data costs about `alpha * M^2 / 2`.

use crate::history::lab::dot_lanes;

/// A linear scorer: `sigmoid(w . x + b)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    pub w: Vec<f32>,
    pub b: f32,
}

impl Linear {
    pub fn margin(&self, x: &[f32]) -> f32 {
        dot_lanes(&self.w, x) + self.b
    }
    pub fn score(&self, x: &[f32]) -> f32 {
        sigmoid(self.margin(x))
    }
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// `log(1 + exp(-z))`, without overflow.
fn softplus_neg(z: f64) -> f64 {
    if z > 0.0 {
        (-z).exp().ln_1p()
    } else {
        -z + z.exp().ln_1p()
    }
}

/// Marks to learn from: `n` rows of `d` values (`x`), their labels, and the prior direction.
pub struct Problem<'a> {
    pub x: &'a [f32],
    pub d: usize,
    pub yes: &'a [bool],
    /// What `w` is pulled towards (`d` values; zeros: plain ridge).
    pub prior: &'a [f32],
    pub alpha: f64,
}

/// Fits the model on the rows `rows` of the problem (all of them for the final fit, the other
/// folds' in cross-validation), starting from `start` if given.
pub fn fit(p: &Problem, rows: &[usize], start: Option<&Linear>) -> Linear {
    let d = p.d;
    let n = rows.len();
    let yes = rows.iter().filter(|&&i| p.yes[i]).count();
    if n == 0 || yes == 0 || yes == n {
        // one class only: the prior, its intercept unknown
        return Linear {
            w: p.prior.to_vec(),
            b: 0.0,
        };
    }
    let row = |i: usize| &p.x[i * d..(i + 1) * d];
    let mut mu = vec![0.0f64; d];
    for &i in rows {
        for (m, v) in mu.iter_mut().zip(row(i)) {
            *m += f64::from(*v);
        }
    }
    mu.iter_mut().for_each(|m| *m /= n as f64);
    let spread = rows
        .iter()
        .map(|&i| {
            row(i)
                .iter()
                .zip(&mu)
                .map(|(v, m)| (f64::from(*v) - m).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n as f64;
    let lambda = p.alpha * if spread > 0.0 { spread } else { 1.0 };
    // each class weighs half of the total
    let weight = |y: bool| {
        let k = if y { yes } else { n - yes };
        n as f64 / (2.0 * k as f64)
    };
    let mu32: Vec<f32> = mu.iter().map(|m| *m as f32).collect();
    // theta = (w, c), with margin = w . x_i - w . mu + c
    let mut theta: Vec<f64> = match start {
        Some(s) => {
            let c = f64::from(s.b) + f64::from(dot_lanes(&s.w, &mu32));
            s.w.iter().map(|v| f64::from(*v)).chain([c]).collect()
        }
        None => p.prior.iter().map(|v| f64::from(*v)).chain([0.0]).collect(),
    };
    let mut w32 = vec![0.0f32; d];
    let mut gw = vec![0.0f32; d];
    // the objective and its gradient at theta
    let mut eval = |theta: &[f64], grad: &mut [f64]| -> f64 {
        for (a, t) in w32.iter_mut().zip(theta) {
            *a = *t as f32;
        }
        let shift = f64::from(dot_lanes(&w32, &mu32)) - theta[d];
        gw.iter_mut().for_each(|g| *g = 0.0);
        let (mut loss, mut gsum) = (0.0f64, 0.0f64);
        for &i in rows {
            let x = row(i);
            let m = f64::from(dot_lanes(&w32, x)) - shift;
            let s = if p.yes[i] { 1.0 } else { -1.0 };
            let c = weight(p.yes[i]);
            loss += c * softplus_neg(s * m);
            // d/dm of c * log(1 + exp(-s m)) = -s c sigmoid(-s m)
            let g = -s * c / (1.0 + (s * m).exp());
            gsum += g;
            let g32 = g as f32;
            for (a, v) in gw.iter_mut().zip(x) {
                *a += g32 * v;
            }
        }
        let mut reg = 0.0;
        for j in 0..d {
            let delta = theta[j] - f64::from(p.prior[j]);
            reg += delta * delta;
            grad[j] = f64::from(gw[j]) - gsum * mu[j] + lambda * delta;
        }
        grad[d] = gsum;
        loss + lambda / 2.0 * reg
    };
    lbfgs(&mut theta, &mut eval, 200);
    let w: Vec<f32> = theta[..d].iter().map(|v| *v as f32).collect();
    let b = (theta[d] - f64::from(dot_lanes(&w, &mu32))) as f32;
    Linear { w, b }
}

/// Minimises `f` from `x` with L-BFGS (10 pairs of memory) and a backtracking line search,
/// until an iteration lowers it by less than a millionth; returns the evaluations made.
fn lbfgs(x: &mut [f64], f: &mut impl FnMut(&[f64], &mut [f64]) -> f64, max_iter: usize) -> usize {
    const MEMORY: usize = 10;
    let n = x.len();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let mut g = vec![0.0; n];
    let mut fx = f(x, &mut g);
    let mut evals = 1;
    let mut pairs: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> = Default::default();
    let (mut next, mut gnext, mut dir) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for iter in 0..max_iter {
        // the two-loop recursion: dir = -H g
        dir.copy_from_slice(&g);
        let mut alphas = Vec::with_capacity(pairs.len());
        for (s, y, rho) in pairs.iter().rev() {
            let a = rho * dot(s, &dir);
            dir.iter_mut().zip(y).for_each(|(d, y)| *d -= a * y);
            alphas.push(a);
        }
        if let Some((s, y, _)) = pairs.back() {
            let gamma = dot(s, y) / dot(y, y);
            dir.iter_mut().for_each(|d| *d *= gamma);
        }
        for ((s, y, rho), a) in pairs.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &dir);
            dir.iter_mut().zip(s).for_each(|(d, s)| *d += (a - b) * s);
        }
        dir.iter_mut().for_each(|d| *d = -*d);
        let mut slope = dot(&g, &dir);
        if slope >= 0.0 {
            // not a descent direction: start over along the gradient
            pairs.clear();
            dir.iter_mut().zip(&g).for_each(|(d, g)| *d = -g);
            slope = dot(&g, &dir);
        }
        let gnorm = dot(&g, &g).sqrt();
        if gnorm < 1e-6 * fx.abs().max(1.0) {
            break;
        }
        let mut step = if iter == 0 && pairs.is_empty() {
            1.0 / gnorm
        } else {
            1.0
        };
        let mut fnext = f64::INFINITY;
        for _ in 0..40 {
            next.iter_mut()
                .zip(x.iter().zip(&dir))
                .for_each(|(nx, (x, d))| *nx = x + step * d);
            fnext = f(&next, &mut gnext);
            evals += 1;
            if fnext <= fx + 1e-4 * step * slope {
                break;
            }
            step *= 0.5;
        }
        if !fnext.is_finite() || fnext > fx {
            break;
        }
        let s: Vec<f64> = next.iter().zip(x.iter()).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gnext.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let done = fx - fnext <= 1e-6 * fx.abs().max(1.0);
        x.copy_from_slice(&next);
        g.copy_from_slice(&gnext);
        fx = fnext;
        if sy > 1e-12 {
            if pairs.len() == MEMORY {
                pairs.pop_front();
            }
            pairs.push_back((s, y, 1.0 / sy));
        }
        if done {
            break;
        }
    }
    evals
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows from a seeded generator: yes rows lean along the first axis.
    fn data(n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<bool>) {
        let mut s = seed;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut x = vec![];
        let mut y = vec![];
        for i in 0..n {
            let yes = i % 2 == 0;
            for j in 0..d {
                x.push(rnd() + if j == 0 && yes { 0.6 } else { 0.0 });
            }
            y.push(yes);
        }
        (x, y)
    }

    #[test]
    fn the_fit_is_the_objectives_minimum() {
        let (d, n) = (8, 60);
        let (x, yes) = data(n, d, 7);
        let prior = vec![0.0; d];
        let p = Problem {
            x: &x,
            d,
            yes: &yes,
            prior: &prior,
            alpha: 0.1,
        };
        let rows: Vec<usize> = (0..n).collect();
        let m = fit(&p, &rows, None);
        // the first axis carries the classes
        assert!(m.w[0] > 2.0 * m.w[1..].iter().map(|v| v.abs()).fold(0.0, f32::max));
        // the gradient vanishes at the fit: a step along any axis raises the objective
        let spread = {
            let mu: Vec<f64> = (0..d)
                .map(|j| (0..n).map(|i| f64::from(x[i * d + j])).sum::<f64>() / n as f64)
                .collect();
            (0..n)
                .map(|i| {
                    (0..d)
                        .map(|j| (f64::from(x[i * d + j]) - mu[j]).powi(2))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / n as f64
        };
        let objective = |w: &[f32], b: f32| -> f64 {
            let k = n as f64 / 2.0 / (n / 2) as f64;
            let loss: f64 = (0..n)
                .map(|i| {
                    let m = f64::from(dot_lanes(w, &x[i * d..(i + 1) * d]) + b);
                    let s = if yes[i] { 1.0 } else { -1.0 };
                    k * softplus_neg(s * m)
                })
                .sum();
            loss + 0.1 * spread / 2.0 * w.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()
        };
        let best = objective(&m.w, m.b);
        for j in 0..d {
            for h in [-1e-2f32, 1e-2] {
                let mut w = m.w.clone();
                w[j] += h;
                assert!(objective(&w, m.b) >= best - 1e-9, "axis {j} step {h}");
            }
        }
        for h in [-1e-2f32, 1e-2] {
            assert!(objective(&m.w, m.b + h) >= best - 1e-9);
        }
    }

    #[test]
    fn a_strong_prior_keeps_the_prior_and_one_class_returns_it() {
        let (d, n) = (4, 20);
        let (x, yes) = data(n, d, 3);
        let prior = vec![0.0, 0.0, 0.0, 5.0];
        let rows: Vec<usize> = (0..n).collect();
        let strong = fit(
            &Problem {
                x: &x,
                d,
                yes: &yes,
                prior: &prior,
                alpha: 1e6,
            },
            &rows,
            None,
        );
        for (a, b) in strong.w.iter().zip(&prior) {
            assert!((a - b).abs() < 1e-2, "{:?}", strong.w);
        }
        let only_yes: Vec<usize> = (0..n).filter(|i| yes[*i]).collect();
        let p = Problem {
            x: &x,
            d,
            yes: &yes,
            prior: &prior,
            alpha: 0.1,
        };
        assert_eq!(fit(&p, &only_yes, None).w, prior);
    }
}
