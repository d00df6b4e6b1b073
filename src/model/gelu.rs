//! Gelu: CLIP's QuickGELU, `x * sigmoid(1.702 x)`, as one pass split over the thread pool.
//!
//! Optimized, tract runs it as three ops over each MLP's widest activation (CLIP ViT-B/32:
//! 50 x 3072 values per layer): `OptMulByScalar`, `Sigmoid` and `OptMulUnicast`, each a full
//! pass over memory on one thread. With two threads they took 1.4 ms of int8 CLIP's 33 ms frame
//! on a Zen 4 (`bench --profile`, issue 21). [`QuickGelu`] does the three in one pass over
//! cache-sized blocks, the blocks shared among the pool's threads (`fused::pool_for`), with
//! tract's own kernels for the scale and the sigmoid: the same numbers, bit for bit.
//!
//! `PROMPTCAM_GELU_FUSE=0` keeps tract's three ops (`graph::build`; to measure the difference).

use tract_hir::internal::*;
use tract_linalg::Func;

use super::fused::{scalar_const, split_units};

/// Values per block: 16 KiB of f32, in L1 beside its input.
const BLOCK: usize = 4096;

/// `y = x * sigmoid(alpha * x)`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuickGelu {
    pub alpha: f32,
}

impl Eq for QuickGelu {}

impl Op for QuickGelu {
    fn name(&self) -> StaticName {
        "QuickGelu".into()
    }
    op_as_typed_op!();
}

/// One stretch of values: the scale and the sigmoid in `y` with tract's kernels, then `x *`.
fn gelu(alpha: f32, x: &[f32], y: &mut [f32]) -> TractResult<()> {
    let scale = Func::MulByScalar.ew_f32_param()?;
    let sigmoid = Func::Sigmoid.ew_f32()?;
    for (xb, yb) in x.chunks(BLOCK).zip(y.chunks_mut(BLOCK)) {
        yb.copy_from_slice(xb);
        scale.run_with_params(yb, alpha)?;
        sigmoid.run(yb)?;
        for (o, v) in yb.iter_mut().zip(xb) {
            *o *= v;
        }
    }
    Ok(())
}

impl EvalOp for QuickGelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        // SAFETY: every element is written below (each block is copied from x first)
        let mut y = unsafe { Tensor::uninitialized::<f32>(x.shape())? };
        {
            let xv = x.try_as_plain_ram()?;
            let x = xv.as_slice::<f32>()?;
            let mut yv = y.try_as_plain_ram_mut()?;
            let y = yv.as_slice_mut::<f32>()?;
            split_units(x, y, BLOCK, |xc, yc| gelu(self.alpha, xc, yc))?;
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for QuickGelu {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
    as_op!();
}

/// `OptMulByScalar(x, alpha)` -> `Sigmoid` -> `OptMulUnicast(x, _)` from node `id`, as a patch.
fn quick_gelu(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let scale = model.node(id);
    if scale.op().name() != "OptMulByScalar" || scale.inputs.len() != 2 {
        return Ok(None);
    }
    let x = scale.inputs[0];
    let Some(alpha) = scalar_const(model, scale.inputs[1])? else {
        return Ok(None);
    };
    if model.outlet_fact(x)?.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let Some(sigmoid) = model.single_succ(id)? else {
        return Ok(None);
    };
    if sigmoid.op().name() != "Sigmoid" {
        return Ok(None);
    }
    let Some(mul) = model.single_succ(sigmoid.id)? else {
        return Ok(None);
    };
    let sig: OutletId = sigmoid.id.into();
    if mul.op().name() != "OptMulUnicast"
        || !(mul.inputs.as_slice() == [x, sig] || mul.inputs.as_slice() == [sig, x])
        || model.outlet_fact(mul.id.into())?.shape != model.outlet_fact(x)?.shape
    {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::new("fuse QuickGELU");
    let tap = patch.tap_model(model, x)?;
    let out = patch.wire_node(
        format!("{}.quick_gelu", mul.name),
        QuickGelu { alpha },
        &[tap],
    )?;
    patch.shunt_outside(model, mul.id.into(), out[0])?;
    Ok(Some(patch))
}

/// Fuses every QuickGELU of an optimized model; returns how many.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    super::graph::rewrite_each(model, quick_gelu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::{math, nn};

    /// `x * sigmoid(1.702 x)` over `n` values as tract builds it, optimized.
    fn model(n: usize) -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, n])).unwrap();
        let alpha = m.add_const("alpha", tensor2(&[[1.702f32]])).unwrap();
        let scaled = m.wire_node("scale", math::mul(), &[x, alpha]).unwrap()[0];
        let s = m.wire_node("sigmoid", nn::sigmoid(), &[scaled]).unwrap()[0];
        let y = m.wire_node("gate", math::mul(), &[x, s]).unwrap()[0];
        m.select_output_outlets(&[y]).unwrap();
        m.into_optimized().unwrap()
    }

    fn run(m: &TypedModel, x: &Tensor, threads: usize) -> Vec<f32> {
        let plan = SimplePlan::new(m.clone()).unwrap();
        let executor = crate::threads::executor(threads, "gelu-test");
        let out = tract_linalg::multithread::multithread_tract_scope(executor, || {
            plan.run(tvec![x.clone().into_tvalue()])
        })
        .unwrap();
        let v = out[0].try_as_plain_ram().unwrap();
        v.as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn quick_gelu_gives_tract_s_numbers_bit_for_bit() {
        // above PARALLEL_MIN, and not a whole number of blocks
        let n = 100_003;
        let x = Tensor::from_shape(
            &[1, n],
            &(0..n)
                .map(|i| ((i * 7919) % 20000) as f32 / 1000.0 - 10.0)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let plain = model(n);
        let mut fused = plain.clone();
        assert_eq!(fuse(&mut fused).unwrap(), 1);
        assert!(fused.nodes().iter().any(|n| n.op_is::<QuickGelu>()));
        assert!(!fused.nodes().iter().any(|n| n.op().name() == "Sigmoid"));
        let want = run(&plain, &x, 1);
        assert_eq!(run(&fused, &x, 1), want);
        assert_eq!(run(&fused, &x, 3), want);
    }

    #[test]
    fn a_gate_on_another_value_is_left_alone() {
        // x * sigmoid(1.702 x) fuses; z * sigmoid(1.702 x) is not QuickGELU
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, 64])).unwrap();
        let z = m.add_source("z", f32::fact([1, 64])).unwrap();
        let alpha = m.add_const("alpha", tensor2(&[[1.702f32]])).unwrap();
        let scaled = m.wire_node("scale", math::mul(), &[x, alpha]).unwrap()[0];
        let s = m.wire_node("sigmoid", nn::sigmoid(), &[scaled]).unwrap()[0];
        let y = m.wire_node("gate", math::mul(), &[z, s]).unwrap()[0];
        m.select_output_outlets(&[y]).unwrap();
        let mut m = m.into_optimized().unwrap();
        assert_eq!(fuse(&mut m).unwrap(), 0);
    }
}
