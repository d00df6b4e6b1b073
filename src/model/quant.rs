//! Quant: load-time rewrites that make onnxruntime's dynamic-int8 exports fast in tract.
//!
//! Profiling a full-size CLIP image tower (204 ms int8 vs 55 ms fp32, one thread) showed two
//! costs that are not the integer matmuls: tract's scalar `DynamicQuantizeLinear`, and the column
//! sums of the constant int8 weights (the zero-point correction of each MatMulInteger) that tract
//! recomputes every run because its constant folding has a 4 MiB budget and a 768x3072 weight
//! cast to i32 is 9 MiB. So, before import, every `DynamicQuantizeLinear` is replaced by two fused
//! ops of its definition (`quantize.rs`), and after optimization the nodes whose inputs are all
//! constant are folded when that shrinks memory (the weight sums do).

use anyhow::Result;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::source::TypedSource;

/// A node of promptcam's fused ops (no attributes).
fn node(op: &str, name: String, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name,
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Replaces every `DynamicQuantizeLinear(x) -> (y, y_scale, y_zero_point)` by two fused ops
/// (`quantize.rs`) that compute its definition as onnxruntime does: `QuantParams(x) -> (y_scale,
/// y_zero_point)`, with `x_min = min(0, min(x))`, `x_max = max(0, max(x))`, `y_scale = (x_max -
/// x_min) / 255` (1 when they are equal), `y_zero_point = u8(round(clip(-x_min / y_scale, 0,
/// 255)))`; then `QuantizeU8(x, y_scale, y_zero_point) -> y`, `y = u8(clip(round(x / y_scale) +
/// y_zero_point, 0, 255))`. Returns how many were replaced.
pub fn decompose_dynamic_quantize(graph: &mut pb::GraphProto) -> usize {
    let mut out = Vec::with_capacity(graph.node.len());
    let mut count = 0;
    for n in std::mem::take(&mut graph.node) {
        if n.op_type != "DynamicQuantizeLinear" || n.input.len() != 1 || n.output.len() != 3 {
            out.push(n);
            continue;
        }
        count += 1;
        let x = n.input[0].as_str();
        let (y, scale, zp) = (
            n.output[0].as_str(),
            n.output[1].as_str(),
            n.output[2].as_str(),
        );
        let p = format!("{}.dql", if n.name.is_empty() { y } else { &n.name });
        let t = |s: &str| format!("{p}.{s}");
        // the scale and zero point: one pass over x for its min and max
        out.push(node(
            super::quantize::PARAMS_OP_TYPE,
            t("params"),
            &[x],
            &[scale, zp],
        ));
        // the per-element step: one pass instead of Div, Round, Add, Clip and Cast
        out.push(node(
            super::quantize::OP_TYPE,
            t("y"),
            &[x, scale, zp],
            &[y],
        ));
    }
    graph.node = out;
    count
}

fn mem(t: &Tensor) -> usize {
    t.len() * t.datum_type().size_of()
}

/// Folds nodes whose inputs are all constant into constants, ignoring tract's 4 MiB folding
/// budget but never growing memory: a fold is kept when, following single-successor chains (a
/// weight cast to i32 then summed), the result is no larger than the constants it replaces.
/// Returns how many folds were applied.
pub fn fold_constants(model: &mut TypedModel) -> Result<usize> {
    let mut folds = 0;
    'again: loop {
        for id in model.eval_order()? {
            let node = model.node(id);
            if node.op_is::<Const>() || node.op_is::<TypedSource>() || node.inputs.is_empty() {
                continue;
            }
            let facts = model.node_input_facts(id)?;
            if !facts.iter().all(|f| f.konst.is_some()) {
                continue;
            }
            let consts: Vec<Arc<Tensor>> = facts.iter().filter_map(|f| f.konst.clone()).collect();
            drop(facts);
            let in_mem: usize = consts.iter().map(|t| mem(t)).sum();
            let Ok(Some(mut res)) = node
                .op
                .eval_out_of_plan(consts.iter().map(|t| t.clone().into_tvalue()).collect())
            else {
                continue;
            };
            let mut last = node;
            // walk on while the result is still larger than what it replaces
            while res.iter().map(|t| mem(t)).sum::<usize>() > in_mem {
                let Some(succ) = model.single_succ(last.id)? else {
                    break;
                };
                if succ.inputs.len() != 1 {
                    break;
                }
                match succ.op.eval_out_of_plan(res.clone()) {
                    Ok(Some(r)) => {
                        res = r;
                        last = succ;
                    }
                    _ => break,
                }
            }
            if res.iter().map(|t| mem(t)).sum::<usize>() > in_mem {
                continue;
            }
            let mut patch = TypedModelPatch::default();
            let name = last.name.clone();
            let last_id = last.id;
            for (ix, t) in res.into_iter().enumerate() {
                let wire = patch.add_const(format!("{name}.folded.{ix}"), t.into_arc_tensor())?;
                patch.shunt_outside(model, OutletId::new(last_id, ix), wire)?;
            }
            patch.apply(model)?;
            folds += 1;
            continue 'again;
        }
        break;
    }
    model.compact()?;
    Ok(folds)
}
