//! Quantize: onnxruntime's `DynamicQuantizeLinear` as two fused tract ops, `QuantParams` (the
//! scale and zero point from the activation's min and max, one pass) and `QuantizeU8` (`y =
//! saturate(round_half_even(x / scale) + zero_point)` to u8, one pass), both computed exactly
//! as onnxruntime defines them; the per-element loops are `qsimd`'s.
//!
//! Decomposed into standard ops (see `quant.rs`) the quantize step took five passes over every
//! activation (Div, RoundHalfToEven, Add, Max/Min, Cast): 16 ms of a 49 ms int8 CLIP frame in
//! `bench --profile`, all on one core; the scale and zero point took two reductions and eleven
//! scalar nodes per quantized product.

use tract_hir::internal::*;
use tract_onnx::model::OnnxOpRegister;

use super::qsimd;

/// The op type `quant.rs` writes into the graph for the fused step.
pub const OP_TYPE: &str = "PromptcamQuantizeU8";

/// The op type `quant.rs` writes for the scale and zero point.
pub const PARAMS_OP_TYPE: &str = "PromptcamQuantParams";

/// Registers the fused ops with an ONNX importer.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert(OP_TYPE, |_, _| Ok((expand(Fused::QuantizeU8), vec![])));
    reg.insert(PARAMS_OP_TYPE, |_, _| {
        Ok((expand(Fused::QuantParams), vec![]))
    });
}

/// The two ONNX ops `quant.rs` writes, as tract expansions of the typed ops below.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub enum Fused {
    /// Inputs: `x` (f32), `scale` (f32 scalar), `zero_point` (u8 scalar); output: u8, shaped
    /// as `x`.
    QuantizeU8,
    /// Input: `x` (f32); outputs: `scale` (f32 scalar), `zero_point` (u8 scalar).
    QuantParams,
}

impl Expansion for Fused {
    fn name(&self) -> StaticName {
        match self {
            Fused::QuantizeU8 => "QuantizeU8",
            Fused::QuantParams => "QuantParams",
        }
        .into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(match self {
            Fused::QuantizeU8 => 1,
            Fused::QuantParams => 2,
        })
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> TractResult<()> {
        match self {
            Fused::QuantizeU8 => {
                check_input_arity(inputs, 3)?;
                check_output_arity(outputs, 1)?;
                s.equals(&inputs[1].datum_type, f32::datum_type())?;
                s.equals(&inputs[2].datum_type, u8::datum_type())?;
                s.equals(&outputs[0].datum_type, u8::datum_type())?;
                s.equals(&inputs[0].shape, &outputs[0].shape)?;
            }
            Fused::QuantParams => {
                check_input_arity(inputs, 1)?;
                check_output_arity(outputs, 2)?;
                s.equals(&outputs[0].datum_type, f32::datum_type())?;
                s.equals(&outputs[0].rank, 0)?;
                s.equals(&outputs[1].datum_type, u8::datum_type())?;
                s.equals(&outputs[1].rank, 0)?;
            }
        }
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        match self {
            Fused::QuantizeU8 => model.wire_node(prefix, QuantizeU8Op, inputs),
            Fused::QuantParams => model.wire_node(prefix, QuantParamsOp, inputs),
        }
    }
}

/// `Fused::QuantizeU8`'s typed op.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct QuantizeU8Op;

impl Op for QuantizeU8Op {
    fn name(&self) -> StaticName {
        "QuantizeU8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizeU8Op {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, scale, zero_point) = args_3!(inputs);
        let scale = *scale.try_as_plain_ram()?.to_scalar::<f32>()?;
        let zero_point = *zero_point.try_as_plain_ram()?.to_scalar::<u8>()?;
        let mut y = Tensor::zero::<u8>(x.shape())?;
        {
            let x_view = x.try_as_plain_ram()?;
            let mut y_view = y.try_as_plain_ram_mut()?;
            quantize_parallel(
                x_view.as_slice::<f32>()?,
                scale,
                zero_point,
                y_view.as_slice_mut::<u8>()?,
            );
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for QuantizeU8Op {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(u8::datum_type().fact(inputs[0].shape.clone())))
    }

    as_op!();
}

// ------------------------------------------------------------------------------ QuantParams

/// `DynamicQuantizeLinear`'s scale and zero point of `x`, from its min and max in one pass
/// ([`params`]). As standard ops these were two reductions and eleven scalar nodes per
/// quantized product, each with its per-node cost, and tract's rewrite of the divisions into
/// multiplies by reciprocals put the scale an ulp away from onnxruntime's now and then.
/// Input: `x` (f32); outputs: `scale` (f32 scalar), `zero_point` (u8 scalar).
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct QuantParamsOp;

impl Op for QuantParamsOp {
    fn name(&self) -> StaticName {
        "QuantParams".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QuantParamsOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let view = x.try_as_plain_ram()?;
        let (min, max) = qsimd::min_max(view.as_slice::<f32>()?);
        let (scale, zero_point) = params(min, max);
        Ok(tvec!(
            tensor0(scale).into_tvalue(),
            tensor0(zero_point).into_tvalue()
        ))
    }
}

impl TypedOp for QuantParamsOp {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::scalar_fact(), u8::scalar_fact()))
    }

    as_op!();
}

/// onnxruntime's `GetQuantizationParameter` for u8, from the activation's `min` and `max`: the
/// range widened to hold 0, `scale = (max - min) / 255` (1 for an empty range), `zero_point =
/// round_half_even(clamp(0 - min / scale, 0, 255))`.
pub fn params(min: f32, max: f32) -> (f32, u8) {
    let (min, max) = (min.min(0.0), max.max(0.0));
    let scale = if max == min { 1.0 } else { (max - min) / 255.0 };
    let initial = 0.0 - min / scale;
    // min then max, not clamp: a NaN (an infinite input) gives 255 here as in onnxruntime's
    // std::min / std::max, where clamp would give NaN and then 0
    #[allow(clippy::manual_clamp)]
    let zero_point = initial.min(255.0).max(0.0).round_ties_even() as u8;
    (scale, zero_point)
}

// ------------------------------------------------------------------------------ QuantizeU8

/// [`quantize`] split over tract's matrix-product thread pool, when it has one (`set_threads`):
/// the element-wise work then scales with the cores like the matrix products around it.
fn quantize_parallel(x: &[f32], scale: f32, zero_point: u8, y: &mut [u8]) {
    match super::fused::pool_for(x.len(), x.len()) {
        Some((pool, chunk)) => pool.scope(|s| {
            for (xc, yc) in x.chunks(chunk).zip(y.chunks_mut(chunk)) {
                s.spawn(move |_| quantize(xc, scale, zero_point, yc));
            }
        }),
        None => quantize(x, scale, zero_point, y),
    }
}

/// `y[i] = clamp(round_half_even(x[i] / scale) + zero_point, 0, 255)`, as ONNX defines
/// QuantizeLinear. A zero scale (an all-zero input) gives the zero point, as in onnxruntime.
pub fn quantize(x: &[f32], scale: f32, zero_point: u8, y: &mut [u8]) {
    qsimd::levels(x, scale, zero_point, y, 0);
}

/// [`quantize`] minus 128, as i8 (tract's OffsetU8asI8 of the result); returns the sum of the
/// i8 codes.
pub(crate) fn quantize_i8(x: &[f32], scale: f32, zero_point: u8, y: &mut [i8]) -> i64 {
    let y: &mut [u8] = bytemuck::cast_slice_mut(y);
    let n = x.len().min(y.len()) as i64;
    // each code is its level minus 128
    qsimd::levels(x, scale, zero_point, y, 0x80) as i64 - 128 * n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ONNX definition, written the obvious way.
    fn reference(x: f32, scale: f32, zp: u8) -> u8 {
        ((x / scale).round_ties_even() + zp as f32).clamp(0.0, 255.0) as u8
    }

    #[test]
    fn matches_the_onnx_definition_including_ties_and_saturation() {
        let scale = 0.5f32;
        // ties: 0.25 / 0.5 = 0.5 -> 0, 0.75 / 0.5 = 1.5 -> 2, -0.25 -> -0.5 -> -0
        let mut x: Vec<f32> = vec![0.25, 0.75, -0.25, -0.75, 1.25, 1000.0, -1000.0, 0.0];
        let mut state = 12345u32;
        for _ in 0..10_000 {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            x.push((state as f32 / u32::MAX as f32 - 0.5) * 300.0);
        }
        for zp in [0u8, 17, 128, 255] {
            let mut y = vec![0u8; x.len()];
            quantize(&x, scale, zp, &mut y);
            for (v, got) in x.iter().zip(&y) {
                assert_eq!(*got, reference(*v, scale, zp), "x {v} zp {zp}");
            }
        }
    }

    #[test]
    fn the_i8_codes_are_the_levels_minus_128_and_their_sum_is_exact() {
        let mut state = 99u32;
        let x: Vec<f32> = (0..10_007)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state as f32 / u32::MAX as f32 - 0.5) * 90.0
            })
            .collect();
        let mut levels = vec![0u8; x.len()];
        quantize(&x, 0.37, 17, &mut levels);
        let mut codes = vec![0i8; x.len()];
        let sum = quantize_i8(&x, 0.37, 17, &mut codes);
        assert!(codes
            .iter()
            .zip(&levels)
            .all(|(c, u)| *c == u.wrapping_sub(128) as i8));
        assert_eq!(sum, codes.iter().map(|c| *c as i64).sum::<i64>());
        let sum = quantize_i8(&[0.0; 3], 0.0, 7, &mut codes[..3]);
        assert_eq!(&codes[..3], &[7u8.wrapping_sub(128) as i8; 3]);
        assert_eq!(sum, 3 * (7 - 128));
    }

    /// Checked against onnxruntime's formula worked by hand: the scale is a true division (a
    /// multiply by 1/255 gives another f32 for this range), the zero point rounds half to even,
    /// and a one-signed or empty range pins it.
    #[test]
    fn params_are_onnxruntimes() {
        let (min, max) = (-0.3f32, 1.9f32);
        let (scale, zp) = params(min, max);
        assert_eq!(scale, (max - min) / 255.0);
        assert_ne!(
            scale,
            (max - min) * (1.0 / 255.0),
            "pick a range where the two differ"
        );
        assert_eq!(zp, (0.3f32 / scale).round_ties_even() as u8);
        // -min / scale exactly 2.5 and 3.5: ties go to the even level
        assert_eq!(params(-2.5, 252.5), (1.0, 2));
        assert_eq!(params(-3.5, 251.5), (1.0, 4));
        // all positive: zero point 0; all negative: 255; all zero: scale 1, zero point 0
        assert_eq!(params(2.0, 7.1).1, 0);
        assert_eq!(params(2.0, 7.1).0, 7.1 / 255.0);
        assert_eq!(params(-5.0, -1.0), (5.0 / 255.0, 255));
        assert_eq!(params(0.0, 0.0), (1.0, 0));
        assert_eq!(params(f32::INFINITY, f32::NEG_INFINITY), (1.0, 0));
        assert_eq!(params(f32::NEG_INFINITY, 1.0), (f32::INFINITY, 255));
    }

    #[test]
    fn zero_scale_gives_the_zero_point() {
        let mut y = vec![9u8; 3];
        quantize(&[0.0, 0.0, 0.0], 0.0, 7, &mut y);
        assert_eq!(y, vec![7, 7, 7]);
        let mut y = vec![9u8; 3];
        quantize(&[1.0, -2.0, 3.0], f32::INFINITY, 7, &mut y);
        assert_eq!(y, vec![7, 7, 7]);
    }
}
