//! Fused: the per-element passes tract runs on one core around every dynamic-int8 matrix
//! product, fused and spread over the matrix products' thread pool (`threads::set_threads`).
//!
//! After optimization a quantized MatMul is, per frame: the activation's scale and zero point
//! and the quantize step (`QuantParams` and `QuantizeU8`, ours), an offset of the u8 codes to i8,
//! a cast of those to i32 and their row sums (a zero-point correction), the i8 matrix product
//! (multithreaded by tract), then a cast of its i32 result to f32 and a multiply by the scale.
//! `bench --profile` at 2 threads put ~11 ms of a 31 ms CLIP frame in those single-core passes,
//! so more threads bought little and on some machines cost time (issue 14). Two rewrites of the
//! optimized model replace them, with the same numbers:
//!
//! - `QuantizeI8Sums`: quantize, offset to i8 and the row sums (of the i8 codes, exactly what
//!   the cast + sum computed) in one op;
//! - `DequantScale`: the i32 -> f32 cast and the scale multiply in one pass.
//!
//! Each splits its rows over the pool when there is enough work (`PARALLEL_MIN`).

use tract_hir::internal::*;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

use super::quantize::{quantize_i8, QuantizeU8Op};

/// Below this many elements a split across threads costs more than it saves. It depends on
/// where the model runs. Started from outside the pool, a split woke the pool's threads and
/// waited for them: on a 2-core Zen 4 VM, splitting CLIP's 38 400- and 153 600-element
/// activations made a frame's element-wise ops take 7.5-9.1 ms instead of 3.1-3.7, and the
/// threshold was 256 Ki. Models now run on a pool thread (`threads::in_pool`), which takes a
/// share of the split itself, and 32 Ki is the faster of the two there: int8 CLIP at 2 threads
/// 35.5 ms against 37.4 (medians of 4 interleaved runs), OWL-ViT at 384 px 88.4 against 94.0.
/// Also tract's own element-wise ops' threshold (`crate::threads::set_threads`).
pub const PARALLEL_MIN: usize = 32 * 1024;

/// tract's matrix-product pool and how many of `units` units each task takes, when the work
/// (`elements` elements) is worth splitting; None to run inline. Also `quantize`'s split.
pub(super) fn pool_for(units: usize, elements: usize) -> Option<(Arc<rayon::ThreadPool>, usize)> {
    use tract_linalg::multithread::{current_tract_executor, Executor};
    match current_tract_executor() {
        Executor::MultiThread(pool) if elements >= PARALLEL_MIN && units > 1 => {
            let threads = pool.current_num_threads().min(units);
            (threads > 1).then(|| (pool, units.div_ceil(threads)))
        }
        _ => None,
    }
}

/// Runs `f` over `x` and `y` (as long as `x`) cut into stretches of whole units of `unit`
/// values, the stretches shared among the pool's threads when the work is worth splitting
/// ([`pool_for`]), else in one call on the current thread.
pub(super) fn split_units(
    x: &[f32],
    y: &mut [f32],
    unit: usize,
    f: impl Fn(&[f32], &mut [f32]) -> TractResult<()> + Sync,
) -> TractResult<()> {
    let unit = unit.max(1);
    match pool_for(x.len().div_ceil(unit), x.len()) {
        Some((pool, per)) => {
            let step = per * unit;
            let mut results: Vec<TractResult<()>> =
                (0..x.len().div_ceil(step)).map(|_| Ok(())).collect();
            let f = &f;
            pool.scope(|scope| {
                let chunks = x.chunks(step).zip(y.chunks_mut(step));
                for ((xc, yc), r) in chunks.zip(results.iter_mut()) {
                    scope.spawn(move |_| *r = f(xc, yc));
                }
            });
            results.into_iter().collect()
        }
        None => f(x, y),
    }
}

/// The one f32 value of a constant outlet.
pub(super) fn scalar_const(model: &TypedModel, outlet: OutletId) -> TractResult<Option<f32>> {
    let fact = model.outlet_fact(outlet)?;
    Ok(match &fact.konst {
        Some(k) if k.len() == 1 && k.datum_type() == f32::datum_type() => {
            Some(k.try_as_plain_ram()?.as_slice::<f32>()?[0])
        }
        _ => None,
    })
}

// ------------------------------------------------------------------------------ DequantScale

/// `y = (x as f32) * scale`, `scale` broadcast over trailing axes (one value per block of
/// `x.len() / scale.len()` elements): tract's Cast to f32 followed by its OptMulByScalar.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct DequantScale;

impl Op for DequantScale {
    fn name(&self) -> StaticName {
        "DequantScale".into()
    }
    op_as_typed_op!();
}

fn dequant(x: &[i32], s: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above
        return unsafe { dequant_avx2(x, s, y) };
    }
    dequant_loop(x, s, y)
}

/// [`dequant_loop`] compiled for AVX2 (8 lanes instead of SSE2's 4), chosen at run time: the
/// same conversions and products, so the same values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dequant_avx2(x: &[i32], s: &[f32], y: &mut [f32]) {
    dequant_loop(x, s, y)
}

#[inline(always)]
fn dequant_loop(x: &[i32], s: &[f32], y: &mut [f32]) {
    let block = x.len() / s.len().max(1);
    for ((xb, yb), s) in x
        .chunks(block.max(1))
        .zip(y.chunks_mut(block.max(1)))
        .zip(s)
    {
        for (o, v) in yb.iter_mut().zip(xb) {
            *o = *v as f32 * s;
        }
    }
}

impl EvalOp for DequantScale {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, scale) = args_2!(inputs);
        // SAFETY: every element is written below (each block gets its scale)
        let mut y = unsafe { Tensor::uninitialized::<f32>(x.shape())? };
        {
            let xv = x.try_as_plain_ram()?;
            let x = xv.as_slice::<i32>()?;
            let sv = scale.try_as_plain_ram()?;
            let s = sv.as_slice::<f32>()?;
            let mut yv = y.try_as_plain_ram_mut()?;
            let y = yv.as_slice_mut::<f32>()?;
            if s.is_empty() || x.len() % s.len() != 0 {
                bail!("DequantScale: {} scales for {} values", s.len(), x.len());
            }
            let block = x.len() / s.len();
            // units: the scale blocks, or with one scale, runs of 4096 values
            let (unit, s_per_unit) = if s.len() == 1 {
                (4096.min(x.len().max(1)), 0)
            } else {
                (block, 1)
            };
            let units = x.len().div_ceil(unit);
            match pool_for(units, x.len()) {
                Some((pool, per)) => pool.scope(|scope| {
                    let chunks = x.chunks(per * unit).zip(y.chunks_mut(per * unit));
                    for (i, (xc, yc)) in chunks.enumerate() {
                        let sc: &[f32] = if s_per_unit == 0 {
                            s
                        } else {
                            &s[i * per..(i * per + per).min(s.len())]
                        };
                        scope.spawn(move |_| dequant(xc, sc, yc));
                    }
                }),
                None => dequant(x, s, y),
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for DequantScale {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
    as_op!();
}

// ------------------------------------------------------------------------------ QuantizeI8Sums

/// The quantize step (as `QuantizeU8Op`) offset to i8 (`u8 - 128`, tract's OffsetU8asI8), and
/// the sums of the i8 codes along the last axis (tract's Cast to i32 + Reduce<Sum>).
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct QuantizeI8Sums;

impl Op for QuantizeI8Sums {
    fn name(&self) -> StaticName {
        "QuantizeI8Sums".into()
    }
    op_as_typed_op!();
}

/// Quantizes rows of `k` values to i8 codes (the u8 level - 128) and sums each row's codes, in
/// one pass (`qsimd::levels`). A row's sum is at most 131072 x 128 in size: an i32.
fn quantize_rows(x: &[f32], k: usize, scale: f32, zero_point: u8, q: &mut [i8], sums: &mut [i32]) {
    for ((xr, qr), sum) in x.chunks(k).zip(q.chunks_mut(k)).zip(sums) {
        *sum = quantize_i8(xr, scale, zero_point, qr) as i32;
    }
}

impl EvalOp for QuantizeI8Sums {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, scale, zero_point) = args_3!(inputs);
        let scale = *scale.try_as_plain_ram()?.to_scalar::<f32>()?;
        let zero_point = *zero_point.try_as_plain_ram()?.to_scalar::<u8>()?;
        let k = x
            .shape()
            .last()
            .copied()
            .filter(|k| *k > 0 && *k <= 1 << 17)
            .context("QuantizeI8Sums needs a last axis of 1 to 131072 values")?;
        let mut sums_shape: TVec<usize> = x.shape().into();
        if let Some(last) = sums_shape.last_mut() {
            *last = 1;
        }
        // SAFETY: every element of both is written below (rows of k codes, one sum per row)
        let mut q = unsafe { Tensor::uninitialized::<i8>(x.shape())? };
        let mut sums = unsafe { Tensor::uninitialized::<i32>(&sums_shape)? };
        {
            let xv = x.try_as_plain_ram()?;
            let x = xv.as_slice::<f32>()?;
            let mut qv = q.try_as_plain_ram_mut()?;
            let q = qv.as_slice_mut::<i8>()?;
            let mut sv = sums.try_as_plain_ram_mut()?;
            let sums = sv.as_slice_mut::<i32>()?;
            let rows = sums.len();
            match pool_for(rows, x.len()) {
                Some((pool, per)) => pool.scope(|scope| {
                    let chunks = x
                        .chunks(per * k)
                        .zip(q.chunks_mut(per * k))
                        .zip(sums.chunks_mut(per));
                    for ((xc, qc), sc) in chunks {
                        scope.spawn(move |_| quantize_rows(xc, k, scale, zero_point, qc, sc));
                    }
                }),
                None => quantize_rows(x, k, scale, zero_point, q, sums),
            }
        }
        Ok(tvec!(q.into_tvalue(), sums.into_tvalue()))
    }
}

impl TypedOp for QuantizeI8Sums {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut sums: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        if let Some(last) = sums.last_mut() {
            *last = 1.into();
        }
        Ok(tvec!(
            i8::fact(inputs[0].shape.clone()),
            i32::fact(ShapeFact::from_dims(sums))
        ))
    }
    as_op!();
}

// ------------------------------------------------------------------------------ the rewrites

fn reduce_of(node: &TypedNode) -> Option<&Reduce> {
    node.op_as::<Reduce>()
}

fn cast_to(node: &TypedNode) -> Option<DatumType> {
    node.op_as::<Cast>().map(|c| c.to)
}

/// Applies the three rewrites wherever their pattern is found; returns how many were applied.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    let mut count = 0;
    'again: loop {
        for id in model.eval_order()? {
            if let Some(patch) = dequant_scale(model, id)?.or(quantize_i8_sums(model, id)?) {
                patch.apply(model)?;
                count += 1;
                continue 'again;
            }
        }
        break;
    }
    model.compact()?;
    Ok(count)
}

/// `Cast(i32 -> f32)` whose only successor is `OptMulByScalar(_, scale)`.
fn dequant_scale(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let cast = model.node(id);
    if cast_to(cast) != Some(f32::datum_type())
        || model.outlet_fact(cast.inputs[0])?.datum_type != i32::datum_type()
    {
        return Ok(None);
    }
    let Some(mul) = model.single_succ(id)? else {
        return Ok(None);
    };
    if mul.op().name() != "OptMulByScalar" || mul.inputs.len() != 2 || mul.inputs[0].node != id {
        return Ok(None);
    }
    let scale = model.outlet_fact(mul.inputs[1])?;
    if scale.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::new("fuse cast + scale");
    let x = patch.tap_model(model, cast.inputs[0])?;
    let s = patch.tap_model(model, mul.inputs[1])?;
    let out = patch.wire_node(format!("{}.dequant", mul.name), DequantScale, &[x, s])?;
    patch.shunt_outside(model, mul.id.into(), out[0])?;
    Ok(Some(patch))
}

/// `QuantizeU8` -> `OffsetU8asI8` -> (packs, and one `Cast(i32)` -> `Reduce<Sum>` over the
/// last axis).
fn quantize_i8_sums(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let qnode = model.node(id);
    if !qnode.op_is::<QuantizeU8Op>() {
        return Ok(None);
    }
    let Some(offset) = model.single_succ(id)? else {
        return Ok(None);
    };
    if offset.op().name() != "OffsetU8asI8" {
        return Ok(None);
    }
    let x = model.outlet_fact(qnode.inputs[0])?;
    let rank = x.rank();
    let k = x.shape.last().and_then(|d| d.to_usize().ok());
    if !k.is_some_and(|k| k > 0 && k <= 1 << 17) {
        return Ok(None);
    }
    let mut sum = None;
    for inlet in model.outlet_successors(offset.id.into()) {
        let c = model.node(inlet.node);
        if cast_to(c) != Some(i32::datum_type()) {
            continue;
        }
        let Some(r) = model.single_succ(c.id)? else {
            continue;
        };
        if let Some(red) = reduce_of(r) {
            if red.reducer == Reducer::Sum && red.axes.as_slice() == [rank - 1] {
                sum = Some(r.id);
            }
        }
    }
    let Some(sum) = sum else {
        return Ok(None);
    };
    let mut patch = TypedModelPatch::new("fuse quantize + offset + row sums");
    let inputs = patch.taps(model, &qnode.inputs)?;
    let out = patch.wire_node(format!("{}.i8_sums", qnode.name), QuantizeI8Sums, &inputs)?;
    patch.shunt_outside(model, offset.id.into(), out[0])?;
    patch.shunt_outside(model, sum.into(), out[1])?;
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::multithread::{multithread_tract_scope, Executor};

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 8) as f32 / (1 << 24) as f32 * 8.0 - 3.0
            })
            .collect()
    }

    /// Runs `f` on one thread and on a 3-thread pool (the work is above `PARALLEL_MIN`, so the
    /// second splits).
    fn both<T: PartialEq + std::fmt::Debug>(f: impl Fn() -> T) -> T {
        let one = f();
        let three = multithread_tract_scope(Executor::multithread(3), &f);
        assert_eq!(one, three, "threads change the result");
        one
    }

    fn values<T: Datum + Copy>(t: &TValue) -> Vec<T> {
        t.try_as_plain_ram()
            .unwrap()
            .as_slice::<T>()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn quantize_i8_sums_equals_quantize_offset_and_row_sums() {
        let (rows, k) = (300, 1001);
        let x = noise(rows * k, 7);
        let (scale, zp) = (0.031f32, 97u8);
        let (q, sums) = both(|| {
            let out = QuantizeI8Sums
                .eval(
                    &EvalContext::out_of_plan(),
                    tvec![
                        tensor1(&x).into_shape(&[1, rows, k]).unwrap().into_tvalue(),
                        tensor0(scale).into_tvalue(),
                        tensor0(zp).into_tvalue(),
                    ],
                )
                .unwrap();
            assert_eq!(out[1].shape(), &[1, rows, 1]);
            (values::<i8>(&out[0]), values::<i32>(&out[1]))
        });
        let mut u8s = vec![0u8; x.len()];
        crate::model::quantize::quantize(&x, scale, zp, &mut u8s);
        let want: Vec<i8> = u8s.iter().map(|u| u.wrapping_sub(128) as i8).collect();
        assert_eq!(q, want);
        for (r, s) in sums.iter().enumerate() {
            let row: i32 = want[r * k..(r + 1) * k].iter().map(|v| *v as i32).sum();
            assert_eq!(*s, row, "row {r}");
        }
    }

    #[test]
    fn dequant_scale_equals_cast_then_multiply() {
        let (rows, n) = (400, 777);
        let x: Vec<i32> = (0..rows * n)
            .map(|i| ((i as i64 * 2654435761) % 20001) as i32 - 10000)
            .collect();
        let xt = || tensor1(&x).into_shape(&[rows, n]).unwrap().into_tvalue();
        let eval = |s: Tensor| {
            both(|| {
                values::<f32>(
                    &DequantScale
                        .eval(
                            &EvalContext::out_of_plan(),
                            tvec![xt(), s.clone().into_tvalue()],
                        )
                        .unwrap()[0],
                )
            })
        };
        // one scale, and one per row
        let got = eval(tensor2(&[[0.00037f32]]));
        for (g, v) in got.iter().zip(&x) {
            assert_eq!(*g, *v as f32 * 0.00037);
        }
        let per_row: Vec<f32> = (0..rows).map(|r| 0.001 * (r + 1) as f32).collect();
        let got = eval(tensor1(&per_row).into_shape(&[rows, 1]).unwrap());
        for (i, (g, v)) in got.iter().zip(&x).enumerate() {
            assert_eq!(*g, *v as f32 * per_row[i / n]);
        }
    }
}
