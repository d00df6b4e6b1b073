//! Norm: a layer norm's centring and scaling, `(x - mean(x)) / sqrt(mean((x - mean)²) + eps)`
//! over the last axis, in one op whose rows are shared among the pool's threads.
//!
//! Optimized, tract runs ONNX's layer norm as four ops: `Reduce<Sum>`, `OptMulByScalar` by
//! `1/n` (the mean), `OptSubByScalar` (the centring) and `RmsNorm`, then the scale and the
//! shift (or those folded into the next product's weights). On x86 tract-linalg has no SIMD
//! sum: its `Reduce<Sum>` runs a portable 4-lane loop, and the 26 layer norms of int8 CLIP
//! took 0.93 ms of sums, 0.39 of centring and 0.16 of `RmsNorm` a frame at 1 thread on a Zen 4
//! (`bench --profile`, issue 21). [`LayerNormCore`] sums each row with 16 accumulators (SIMD
//! on every target: AVX2 chosen at run time on x86, NEON on aarch64), centres it in place and
//! hands it to tract's `RmsNorm` kernel.
//!
//! The sum's order is its own, so the mean can differ from tract's by a few ulps of the row's
//! magnitude; a row is always summed in the same order, whichever thread runs it.
//!
//! `PROMPTCAM_NORM_FUSE=0` keeps tract's four ops (`graph::build`; to measure the difference).

use tract_hir::internal::*;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, RmsNorm};

use super::fused::{scalar_const, split_units};

/// `y = rms_norm(x - sum(x) * inv_n, eps)` over the last axis.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormCore {
    /// the graph's own `1/n` constant (the mean is `sum * inv_n`, as tract computes it)
    pub inv_n: f32,
    pub eps: f32,
}

impl Eq for LayerNormCore {}

impl Op for LayerNormCore {
    fn name(&self) -> StaticName {
        "LayerNormCore".into()
    }
    op_as_typed_op!();
}

/// The sum of `x`, in 16 lanes then the lanes in a fixed order.
#[inline(always)]
fn sum16(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += v;
    }
    let mut half = 8;
    while half > 0 {
        for i in 0..half {
            acc[i] += acc[i + half];
        }
        half /= 2;
    }
    acc[0]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(x: &[f32]) -> f32 {
    sum16(x)
}

/// The sum of a row, the same on every CPU of an architecture (AVX2 or not: the same adds in
/// the same order, only wider).
fn row_sum(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above
        return unsafe { sum_avx2(x) };
    }
    sum16(x)
}

/// Rows of `n` values from `x` centred and normalized into `y`.
fn rows(op: &LayerNormCore, n: usize, x: &[f32], y: &mut [f32]) -> TractResult<()> {
    let rms_norm = tract_linalg::routines::rms_norm_f32()?;
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        let mean = row_sum(xr) * op.inv_n;
        for (o, v) in yr.iter_mut().zip(xr) {
            *o = v - mean;
        }
        rms_norm(yr, op.eps);
    }
    Ok(())
}

impl EvalOp for LayerNormCore {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let n = *x.shape().last().context("LayerNormCore: a scalar input")?;
        // SAFETY: every element is written below (each row is written whole)
        let mut y = unsafe { Tensor::uninitialized::<f32>(x.shape())? };
        let xv = x.try_as_plain_ram()?;
        let x = xv.as_slice::<f32>()?;
        // an empty last axis has no rows to write
        if n > 0 {
            let mut yv = y.try_as_plain_ram_mut()?;
            let y = yv.as_slice_mut::<f32>()?;
            split_units(x, y, n, |xc, yc| rows(self, n, xc, yc))?;
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for LayerNormCore {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
    as_op!();
}

/// `Reduce<Sum>(x, last axis)` -> `OptMulByScalar(_, 1/n)` -> `OptSubByScalar(x, _)` ->
/// `RmsNorm(last axis)` from node `id`, as a patch.
fn layer_norm(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let sum = model.node(id);
    let Some(reduce) = sum.op_as::<Reduce>() else {
        return Ok(None);
    };
    let x = sum.inputs[0];
    let fact = model.outlet_fact(x)?;
    let rank = fact.rank();
    if reduce.reducer != Reducer::Sum
        || rank == 0
        || reduce.axes.as_slice() != [rank - 1]
        || fact.datum_type != f32::datum_type()
    {
        return Ok(None);
    }
    let Some(scale) = model.single_succ(id)? else {
        return Ok(None);
    };
    if scale.op().name() != "OptMulByScalar"
        || scale.inputs.len() != 2
        || scale.inputs[0] != sum.id.into()
    {
        return Ok(None);
    }
    let Some(inv_n) = scalar_const(model, scale.inputs[1])? else {
        return Ok(None);
    };
    let Some(centre) = model.single_succ(scale.id)? else {
        return Ok(None);
    };
    if centre.op().name() != "OptSubByScalar"
        || centre.inputs.as_slice() != [x, scale.id.into()]
        || model.outlet_fact(centre.id.into())?.shape != fact.shape
    {
        return Ok(None);
    }
    let Some(norm) = model.single_succ(centre.id)? else {
        return Ok(None);
    };
    let Some(rms) = norm.op_as::<RmsNorm>() else {
        return Ok(None);
    };
    if rms.axis != rank - 1 || model.outlet_fact(norm.id.into())?.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let eps = rms.eps.cast_to_scalar::<f32>()?;
    let mut patch = TypedModelPatch::new("fuse layer norm");
    let tap = patch.tap_model(model, x)?;
    let out = patch.wire_node(
        format!("{}.layer_norm", norm.name),
        LayerNormCore { inv_n, eps },
        &[tap],
    )?;
    patch.shunt_outside(model, norm.id.into(), out[0])?;
    Ok(Some(patch))
}

/// Fuses every layer norm of an optimized model; returns how many.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    super::graph::rewrite_each(model, layer_norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::math;

    /// A layer norm over rows of `n` as tract imports ONNX's decomposed one (each ReduceMean a
    /// sum times 1/n; the square, the eps and the reciprocal root), decluttered and optimized.
    fn model(rows: usize, n: usize) -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, rows, n])).unwrap();
        let sum = Reduce {
            axes: tvec![2],
            reducer: Reducer::Sum,
        };
        let s = m.wire_node("sum", sum, &[x]).unwrap()[0];
        let inv = m
            .add_const("inv_n", tensor3(&[[[1.0f32 / n as f32]]]))
            .unwrap();
        let mean = m.wire_node("mean", math::mul(), &[s, inv]).unwrap()[0];
        let d = m.wire_node("centre", math::sub(), &[x, mean]).unwrap()[0];
        let sq = m.wire_node("square", math::mul(), &[d, d]).unwrap()[0];
        let ss = Reduce {
            axes: tvec![2],
            reducer: Reducer::Sum,
        };
        let ss = m.wire_node("sum_sq", ss, &[sq]).unwrap()[0];
        let var = m.wire_node("var", math::mul(), &[ss, inv]).unwrap()[0];
        let eps = m.add_const("eps", tensor3(&[[[1e-5f32]]])).unwrap();
        let v = m.wire_node("var_eps", math::add(), &[var, eps]).unwrap()[0];
        let r = m.wire_node("rsqrt", math::rsqrt(), &[v]).unwrap()[0];
        let y = m.wire_node("norm", math::mul(), &[d, r]).unwrap()[0];
        m.select_output_outlets(&[y]).unwrap();
        m.into_decluttered().unwrap().into_optimized().unwrap()
    }

    fn run(m: &TypedModel, x: &Tensor, threads: usize) -> Vec<f32> {
        let plan = SimplePlan::new(m.clone()).unwrap();
        let executor = crate::threads::executor(threads, "norm-test");
        let out = tract_linalg::multithread::multithread_tract_scope(executor, || {
            plan.run(tvec![x.clone().into_tvalue()])
        })
        .unwrap();
        let v = out[0].try_as_plain_ram().unwrap();
        v.as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn layer_norm_is_fused_and_agrees_with_tract_s_four_ops() {
        // CLIP's rows (50 x 768: above PARALLEL_MIN), with an offset that makes the mean count
        let (rows, n) = (50, 768);
        let xs: Vec<f32> = (0..rows * n)
            .map(|i| ((i * 7919) % 2000) as f32 / 100.0 - 10.0 + (i / n) as f32)
            .collect();
        let x = Tensor::from_shape(&[1, rows, n], &xs).unwrap();
        let plain = model(rows, n);
        assert!(plain.nodes().iter().any(|n| n.op_is::<RmsNorm>()));
        let mut fused = plain.clone();
        assert_eq!(fuse(&mut fused).unwrap(), 1);
        assert!(fused.nodes().iter().any(|n| n.op_is::<LayerNormCore>()));
        assert!(!fused.nodes().iter().any(|n| n.op_is::<RmsNorm>()));
        assert!(!fused.nodes().iter().any(|n| n.op_is::<Reduce>()));
        let want = run(&plain, &x, 1);
        let one = run(&fused, &x, 1);
        // the rows split over three threads: the same numbers
        assert_eq!(run(&fused, &x, 3), one);
        // Both sum a row of n values in their own order: each sum is within (n - 1) u sum|x|
        // of the exact one (u = 2^-24), so the two means are within 2 (n - 1) u mean|x|, and a
        // centred value moves by that over the row's deviation s (the deviation itself moves
        // only to second order: the derivative of mean((x - m)^2) in m is zero at the mean).
        // Plus a few ulps of rounding in the centring and the kernel's own product.
        let u = f32::EPSILON / 2.0;
        for (r, (w, g)) in want.chunks(n).zip(one.chunks(n)).enumerate() {
            let row = &xs[r * n..][..n];
            let mean_abs = row.iter().map(|v| v.abs()).sum::<f32>() / n as f32;
            let mean = row.iter().sum::<f32>() / n as f32;
            let s = (row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n as f32).sqrt();
            let bound = 2.0 * (n - 1) as f32 * u * mean_abs / s;
            for (a, b) in w.iter().zip(g) {
                assert!(
                    (a - b).abs() <= bound + 8.0 * u * a.abs().max(1.0),
                    "row {r}: {a} against {b} (bound {bound})"
                );
            }
        }
    }

    #[test]
    fn row_sum_is_the_sum() {
        for n in [0, 1, 15, 16, 17, 768, 1000] {
            let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            assert_eq!(row_sum(&x), x.iter().sum::<f32>(), "n = {n}");
        }
    }

    #[test]
    fn a_sum_over_another_axis_is_left_alone() {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([4, 8])).unwrap();
        let s = Reduce {
            axes: tvec![0],
            reducer: Reducer::Sum,
        };
        let s = m.wire_node("sum", s, &[x]).unwrap()[0];
        let inv = m.add_const("inv_n", tensor2(&[[0.25f32]])).unwrap();
        let mean = m.wire_node("mean", math::mul(), &[s, inv]).unwrap()[0];
        let d = m.wire_node("centre", math::sub(), &[x, mean]).unwrap()[0];
        m.select_output_outlets(&[d]).unwrap();
        let mut m = m.into_optimized().unwrap();
        assert_eq!(fuse(&mut m).unwrap(), 0);
    }
}
