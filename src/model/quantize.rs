//! Quantize: the per-element half of onnxruntime's `DynamicQuantizeLinear` as one fused,
//! vectorisable tract op, `y = saturate(round_half_even(x / scale) + zero_point)` to u8.
//!
//! Decomposed into standard ops (see `quant.rs`) that step took five passes over every
//! activation (Div, RoundHalfToEven, Add, Max/Min, Cast): 16 ms of a 49 ms int8 CLIP frame in
//! `bench --profile`, all on one core. Here it is one pass whose loop the compiler vectorises
//! with the baseline instruction set (no target-cpu assumptions: the Pi build runs it too). The
//! scale and zero point stay computed by standard ops, exactly as onnxruntime defines them.

use tract_hir::internal::*;
use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;

/// The op type `quant.rs` writes into the graph for the fused step.
pub const OP_TYPE: &str = "PromptcamQuantizeU8";

/// Registers the fused op with an ONNX importer.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert(OP_TYPE, parse);
}

fn parse(
    _ctx: &ParsingContext,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(QuantizeU8), vec![]))
}

/// Inputs: `x` (f32), `scale` (f32 scalar), `zero_point` (u8 scalar); output: u8, shaped as `x`.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct QuantizeU8;

impl Expansion for QuantizeU8 {
    fn name(&self) -> StaticName {
        "QuantizeU8".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> TractResult<()> {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[1].datum_type, f32::datum_type())?;
        s.equals(&inputs[2].datum_type, u8::datum_type())?;
        s.equals(&outputs[0].datum_type, u8::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, QuantizeU8Op, inputs)
    }
}

/// The typed op the expansion wires.
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

/// `1.5 * 2^23`: adding and subtracting it rounds an f32 of magnitude below 2^22 to the nearest
/// integer, ties to even (the default rounding mode), in plain SSE2/NEON arithmetic — where
/// `round_ties_even` would be a library call per element without SSE4.1.
const ROUND: f32 = 12_582_912.0;

/// `y[i] = clamp(round_half_even(x[i] / scale) + zero_point, 0, 255)`, as ONNX defines
/// QuantizeLinear. A zero scale (an all-zero input) gives the zero point, as in onnxruntime.
pub fn quantize(x: &[f32], scale: f32, zero_point: u8, y: &mut [u8]) {
    if scale == 0.0 || !scale.is_finite() {
        y.fill(zero_point);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above
        return unsafe { levels_avx2(x, scale, zero_point as f32, y, 0) };
    }
    levels(x, scale, zero_point as f32, y, 0);
}

/// [`quantize`] minus 128, as i8 (tract's OffsetU8asI8 of the result).
pub(crate) fn quantize_i8(x: &[f32], scale: f32, zero_point: u8, y: &mut [i8]) {
    let y: &mut [u8] = bytemuck::cast_slice_mut(y);
    if scale == 0.0 || !scale.is_finite() {
        y.fill(zero_point ^ 0x80);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above
        return unsafe { levels_avx2(x, scale, zero_point as f32, y, 0x80) };
    }
    levels(x, scale, zero_point as f32, y, 0x80);
}

/// The per-element loop: each level as a byte, xor `flip`. Division, rounding and clamps are
/// the same IEEE operations at any vector width, so the AVX2 copy gives the same bytes.
#[inline(always)]
fn levels(x: &[f32], scale: f32, zp: f32, y: &mut [u8], flip: u8) {
    for (o, v) in y.iter_mut().zip(x) {
        *o = byte(level(*v, scale, zp)) ^ flip;
    }
}

/// [`levels`] compiled for AVX2 (8 lanes instead of SSE2's 4), chosen at run time: builds stay
/// for the baseline CPU of their family.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn levels_avx2(x: &[f32], scale: f32, zp: f32, y: &mut [u8], flip: u8) {
    levels(x, scale, zp, y, flip)
}

/// The quantized level of `v`, `clamp(round_half_even(v / scale) + zp, 0, 255)`, as an
/// integer-valued f32. Compares and selects, no float-to-int `as` (saturating, so scalar): the
/// caller's loop vectorises.
#[inline(always)]
fn level(v: f32, scale: f32, zp: f32) -> f32 {
    let q = v / scale;
    // keep the magic-number rounding in range; beyond +-512 the result saturates anyway
    let q = q.clamp(-512.0, 512.0);
    let r = ((q + ROUND) - ROUND) + zp;
    r.clamp(0.0, 255.0)
}

/// An integer-valued `r` in 0..=255 as a byte, read from the low mantissa bits of `r + 2^23`.
#[inline(always)]
fn byte(r: f32) -> u8 {
    ((r + MANTISSA).to_bits() & 0xff) as u8
}

/// `2^23`: for an integer-valued `r` in 0..=255, `r + 2^23` holds `r` in its low mantissa bits.
const MANTISSA: f32 = 8_388_608.0;

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
    fn the_avx2_copy_and_the_i8_codes_agree_with_the_baseline_loop() {
        let mut state = 99u32;
        let x: Vec<f32> = (0..10_007)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state as f32 / u32::MAX as f32 - 0.5) * 90.0
            })
            .collect();
        let mut baseline = vec![0u8; x.len()];
        levels(&x, 0.37, 17.0, &mut baseline, 0);
        // on x86_64 with AVX2 (checked at run time) this takes the AVX2 copy
        let mut fast = vec![0u8; x.len()];
        quantize(&x, 0.37, 17, &mut fast);
        assert_eq!(baseline, fast);
        let mut codes = vec![0i8; x.len()];
        quantize_i8(&x, 0.37, 17, &mut codes);
        assert!(codes
            .iter()
            .zip(&fast)
            .all(|(c, u)| *c == u.wrapping_sub(128) as i8));
        quantize_i8(&[0.0; 3], 0.0, 7, &mut codes[..3]);
        assert_eq!(&codes[..3], &[7u8.wrapping_sub(128) as i8; 3]);
    }

    #[test]
    fn zero_scale_gives_the_zero_point() {
        let mut y = vec![9u8; 3];
        quantize(&[0.0, 0.0, 0.0], 0.0, 7, &mut y);
        assert_eq!(y, vec![7, 7, 7]);
    }
}
