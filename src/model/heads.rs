//! Heads: a transformer's attention core (`scores = q·kᵀ`, a scale or a mask, softmax,
//! `probs·v`) run head by head, the heads shared out among the matrix products' pool threads.
//!
//! tract runs a batched product as one product per head, each too small to split across
//! threads (CLIP's 50 x 50 x 64), and its softmax and the packing of q, k and v on one thread.
//! So with two threads, 4.7 ms of int8 CLIP's 35.7 ms frame on a Zen 4 ran on one core while
//! the other waited (`bench --profile`, issue 21). Heads are independent all the way from the
//! scores to `probs·v`, so the chain is cut out of the decluttered model into a model of its own
//! whose head count is a symbol, optimized by tract as usual. The node that replaces it
//! ([`HeadSplit`]) runs that model once per head, each pool thread taking a contiguous group of
//! heads, then joins the heads' outputs.
//!
//! Always head by head, on one thread or many: tract's softmax sums a row in SIMD lanes that
//! start where the row's address falls, so a head run inside a bigger tensor sums in another
//! order than a head run alone, and the last bits of a score would depend on the thread count
//! (and on whether the pool was free). Run alone, every head's rows sit at the same addresses
//! relative to its own tensor, whoever runs it: the outputs are the same on any thread count.
//!
//! Each head runs in one pass where `model::attention` can run its chain (f32, scalar steps:
//! CLIP's and OWL-ViT's image towers); any other chain runs through tract's plan of it.
//!
//! `PROMPTCAM_HEAD_SPLIT=0` keeps tract's own order (`graph::build`; to measure the difference),
//! `PROMPTCAM_ATTENTION=0` the plan for every head.

use std::ops::Range;

use tract_hir::internal::*;
use tract_linalg::multithread::{current_tract_executor, multithread_tract_scope, Executor};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::Softmax;

use super::attention::{Heads, Layout, Scratch, Softmaxer};

/// Below this many score elements (heads x queries x keys) a layer's attention runs whole, as
/// tract runs it: a chain that small takes tens of microseconds, about what handing half of it
/// to another thread costs. CLIP's 12 x 50 x 50 is above it.
pub const SPLIT_MIN: usize = 8 * 1024;

/// The attention chain as a model of its own, run head by head.
#[derive(Clone)]
pub struct HeadSplit {
    plan: Arc<TypedSimplePlan>,
    /// the sub-model's head-count symbol
    heads: Symbol,
    /// the head axis of each input (q, k, v) and of the output
    in_axes: TVec<usize>,
    out_axis: usize,
    /// score elements per head (queries x keys), to weigh the work
    per_head: usize,
    /// the fewest score elements run head by head (below: whole, on the current executor)
    min_work: usize,
    /// the chain in one pass per head (`model::attention`), when it can run it
    fast: Option<Arc<Layout>>,
}

impl std::fmt::Debug for HeadSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "HeadSplit(in axes {:?}, out axis {}, {} nodes, {})",
            self.in_axes,
            self.out_axis,
            self.plan.model().nodes().len(),
            if self.fast.is_some() {
                "one pass"
            } else {
                "tract's plan"
            }
        )
    }
}

impl Eq for HeadSplit {}

impl PartialEq for HeadSplit {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.plan, &other.plan)
    }
}

impl Op for HeadSplit {
    fn name(&self) -> StaticName {
        "HeadSplit".into()
    }
    op_as_typed_op!();
}

impl HeadSplit {
    /// The chain's own optimized model (its matrix products, for `graph::kernels`).
    pub fn model(&self) -> &TypedModel {
        self.plan.model()
    }

    /// Whether each head runs in one pass (`model::attention`), not through the plan.
    pub fn one_pass(&self) -> bool {
        self.fast.is_some()
    }

    /// Runs the chain once per head of `range`, on one state: each head's tensors are its own,
    /// laid out alike whichever thread runs it and whatever ran before.
    fn run_heads(&self, inputs: &[TValue], range: Range<usize>) -> TractResult<Vec<Tensor>> {
        if let Some(layout) = &self.fast {
            let views = inputs
                .iter()
                .map(|t| t.try_as_plain_ram())
                .collect::<TractResult<Vec<_>>>()?;
            let slices = views
                .iter()
                .map(|v| v.as_slice::<f32>())
                .collect::<TractResult<Vec<_>>>()?;
            let [q, k, v] = slices[..] else {
                bail!("HeadSplit: {} inputs, not q, k and v", slices.len());
            };
            let softmax = Softmaxer::new()?;
            let heads = Heads {
                layout,
                inputs: [q, k, v],
                softmax: &softmax,
            };
            let mut scratch = Scratch::default();
            return range
                .map(|h| {
                    // SAFETY: Heads::run writes every value of its output
                    let mut out = unsafe { Tensor::uninitialized::<f32>(layout.out_shape())? };
                    {
                        let mut view = out.try_as_plain_ram_mut()?;
                        let slots = view.as_slice_mut()?;
                        heads.run(h, &mut scratch, slots)?;
                    }
                    Ok(out)
                })
                .collect();
        }
        let mut state = self.plan.spawn()?;
        range
            .map(|h| {
                let sliced = inputs
                    .iter()
                    .zip(&self.in_axes)
                    .map(|(t, axis)| Ok(t.slice(*axis, h, h + 1)?.into_tvalue()))
                    .collect::<TractResult<TVec<_>>>()?;
                Ok(state.run(sliced)?.remove(0).into_tensor())
            })
            .collect()
    }
}

impl EvalOp for HeadSplit {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let heads = inputs[0].shape()[self.in_axes[0]];
        if heads.saturating_mul(self.per_head) < self.min_work {
            return self.plan.run(inputs);
        }
        // Only a run that holds the pool (`threads::in_pool`) hands heads to its threads: a pool
        // thread of another run, waiting inside a matrix product, could otherwise pick some up
        // and find tract's per-thread product scratch borrowed.
        let pool = match current_tract_executor() {
            Executor::MultiThread(pool) if pool.current_thread_index().is_some() => Some(pool),
            _ => None,
        };
        let groups = pool
            .as_ref()
            .map_or(1, |p| p.current_num_threads().min(heads));
        let per = heads.div_ceil(groups);
        let ranges: Vec<_> = (0..heads)
            .step_by(per)
            .map(|s| s..(s + per).min(heads))
            .collect();
        let outs: Vec<Vec<Tensor>> = match pool {
            Some(pool) if ranges.len() > 1 => {
                #[cfg(test)]
                SPLIT_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // each thread's products run on that thread alone
                let group = |range| {
                    multithread_tract_scope(Executor::SingleThread, || {
                        self.run_heads(&inputs, range)
                    })
                };
                let mut slots: Vec<Option<TractResult<Vec<Tensor>>>> =
                    ranges.iter().map(|_| None).collect();
                pool.scope(|scope| {
                    let mut work = slots.iter_mut().zip(ranges);
                    let first = work.next();
                    for (slot, range) in work {
                        scope.spawn(move |_| *slot = Some(group(range)));
                    }
                    if let Some((slot, range)) = first {
                        *slot = Some(group(range));
                    }
                });
                slots
                    .into_iter()
                    .map(|o| o.context("HeadSplit: a group of heads did not run")?)
                    .collect::<TractResult<_>>()?
            }
            _ => vec![self.run_heads(&inputs, 0..heads)?],
        };
        let outs: Vec<Tensor> = outs.into_iter().flatten().collect();
        Ok(tvec!(
            Tensor::stack_tensors(self.out_axis, &outs)?.into_tvalue()
        ))
    }
}

impl TypedOp for HeadSplit {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let heads = inputs[0].shape[self.in_axes[0]].clone();
        let fact = self.plan.model().output_fact(0)?;
        let shape = fact
            .shape
            .iter()
            .map(|d| d.substitute(&self.heads, &heads))
            .collect::<TractResult<TVec<_>>>()?;
        Ok(tvec!(fact.datum_type.fact(shape)))
    }
    as_op!();
}

// ------------------------------------------------------------------------------ the rewrite

/// One attention chain of a decluttered model: `scores = EinSum(q, k)`, element-wise steps
/// with constant operands (a scale, a mask), `Softmax`, `EinSum(probs, v)`.
struct Chain {
    /// the chain's nodes in order, the first and last the two EinSums
    nodes: Vec<usize>,
    /// q, k, v and the head axis of each
    inputs: [(OutletId, usize); 3],
    /// the slot of the scores in the last EinSum, and its output's head axis
    probs_slot: usize,
    out_axis: usize,
    per_head: usize,
}

/// The axis of `ein` at `position` of input `slot`, when it is a batch axis: in both inputs
/// and the output once each. Its positions in the other input and the output.
fn batch_axis(ein: &EinSum, slot: usize, position: usize) -> Option<(usize, usize)> {
    let axis = ein
        .axes
        .iter_all_axes()
        .find(|a| a.inputs[slot].as_slice() == [position])?;
    match (axis.inputs[1 - slot].as_slice(), axis.outputs[0].as_slice()) {
        ([other], [out]) => Some((*other, *out)),
        _ => None,
    }
}

/// The attention chain ending at `softmax`'s successor, if `softmax` is in one.
fn find_chain(model: &TypedModel, softmax: usize) -> TractResult<Option<Chain>> {
    let s = model.node(softmax);
    let Some(sm) = s.op_as::<Softmax>() else {
        return Ok(None);
    };
    // back from the softmax to the scores' EinSum through element-wise steps
    let mut steps = vec![];
    let mut cur = s.inputs[0];
    let e1 = loop {
        let node = model.node(cur.node);
        if model.single_succ(node.id)?.is_none() || steps.len() > 4 {
            return Ok(None);
        }
        if node.op_is::<EinSum>() {
            break node;
        }
        if !(node.op_is::<TypedBinOp>() || node.op_is::<ElementWiseOp>()) {
            return Ok(None);
        }
        let mut live = node
            .inputs
            .iter()
            .filter(|i| model.outlet_fact(**i).map_or(true, |f| f.konst.is_none()));
        let (Some(input), None) = (live.next(), live.next()) else {
            return Ok(None);
        };
        steps.push(node.id);
        cur = *input;
    };
    let ein1 = e1.op_as::<EinSum>().context("checked above")?;
    if e1.inputs.len() != 2 || ein1.q_params.is_some() {
        return Ok(None);
    }
    // the head axis: a batch axis of the scores' product, the longest
    let scores = model.outlet_fact(e1.id.into())?;
    let rank = scores.rank();
    let q = model.outlet_fact(e1.inputs[0])?;
    let mut best: Option<(usize, usize, usize, usize)> = None; // (heads, q, k, out) axes
    for (qa, dim) in q.shape.iter().enumerate() {
        let (Some((ka, oa)), Ok(heads)) = (batch_axis(ein1, 0, qa), dim.to_usize()) else {
            continue;
        };
        if heads > 1 && best.is_none_or(|b| heads > b.0) {
            best = Some((heads, qa, ka, oa));
        }
    }
    let Some((heads, q_axis, k_axis, h)) = best else {
        return Ok(None);
    };
    // every step keeps the scores' shape, and its constants are one value along the heads
    for id in &steps {
        let node = model.node(*id);
        if model.outlet_fact(node.id.into())?.shape != scores.shape {
            return Ok(None);
        }
        for i in &node.inputs {
            let f = model.outlet_fact(*i)?;
            if f.konst.is_some() {
                let lead = rank.saturating_sub(f.rank());
                if h >= lead && f.shape[h - lead] != 1.into() {
                    return Ok(None);
                }
            }
        }
    }
    if sm.axes.contains(&h) {
        return Ok(None);
    }
    let Some(e2) = model.single_succ(softmax)? else {
        return Ok(None);
    };
    let Some(ein2) = e2.op_as::<EinSum>() else {
        return Ok(None);
    };
    if e2.inputs.len() != 2 || ein2.q_params.is_some() || e2.inputs[0] == e2.inputs[1] {
        return Ok(None);
    }
    let slot = if e2.inputs[0].node == softmax { 0 } else { 1 };
    let Some((v_axis, out_axis)) = batch_axis(ein2, slot, h) else {
        return Ok(None);
    };
    let per_head = scores
        .shape
        .volume()
        .to_usize()
        .map_or(usize::MAX, |v| v / heads);
    let mut nodes = vec![e1.id];
    nodes.extend(steps.iter().rev());
    nodes.extend([softmax, e2.id]);
    Ok(Some(Chain {
        nodes,
        inputs: [
            (e1.inputs[0], q_axis),
            (e1.inputs[1], k_axis),
            (e2.inputs[1 - slot], v_axis),
        ],
        probs_slot: slot,
        out_axis,
        per_head,
    }))
}

/// The chain as a model of its own, its head count the symbol returned, optimized.
fn extract(model: &TypedModel, chain: &Chain) -> TractResult<(TypedModel, Symbol)> {
    let mut sub = TypedModel {
        symbols: model.symbols.clone(),
        ..Default::default()
    };
    let heads = sub.symbols.new_with_prefix("heads");
    let mut sources = tvec![];
    for (ix, (outlet, axis)) in chain.inputs.iter().enumerate() {
        let fact = model.outlet_fact(*outlet)?;
        let mut shape: TVec<TDim> = fact.shape.iter().cloned().collect();
        shape[*axis] = heads.to_dim();
        sources.push(sub.add_source(format!("input.{ix}"), fact.datum_type.fact(shape))?);
    }
    let mut cur = sources[0];
    for (n, id) in chain.nodes.iter().enumerate() {
        let node = model.node(*id);
        let wires: TVec<OutletId> = if n == 0 {
            tvec![sources[0], sources[1]]
        } else if n == chain.nodes.len() - 1 {
            let mut w = tvec![sources[2], sources[2]];
            w[chain.probs_slot] = cur;
            w
        } else {
            let mut w = tvec![];
            for (ix, i) in node.inputs.iter().enumerate() {
                match &model.outlet_fact(*i)?.konst {
                    Some(k) => w.push(sub.add_const(format!("{}.{ix}", node.name), k.clone())?),
                    None => w.push(cur),
                }
            }
            w
        };
        cur = sub.wire_node(&node.name, node.op.clone(), &wires)?[0];
    }
    sub.select_output_outlets(&[cur])?;
    Ok((sub.into_optimized()?, heads))
}

/// Runs that were split across threads, for the tests.
#[cfg(test)]
static SPLIT_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Replaces every attention chain of a decluttered model by a [`HeadSplit`] that splits runs
/// of at least `min_work` score elements ([`SPLIT_MIN`]); returns how many. With `one_pass`,
/// each head of a chain that [`Layout::of`] accepts runs in one pass (`model::attention`).
pub fn split(model: &mut TypedModel, min_work: usize, one_pass: bool) -> TractResult<usize> {
    super::graph::rewrite_each(model, |model, id| {
        let Some(chain) = find_chain(model, id)? else {
            return Ok(None);
        };
        let (sub, heads) = extract(model, &chain)?;
        let fast = match one_pass {
            true => Layout::of(model, &chain.nodes, chain.probs_slot, chain.inputs[0].1)?,
            false => None,
        };
        let op = HeadSplit {
            plan: SimplePlan::new(sub)?,
            heads,
            in_axes: chain.inputs.iter().map(|i| i.1).collect(),
            out_axis: chain.out_axis,
            per_head: chain.per_head,
            min_work,
            fast: fast.map(Arc::new),
        };
        let last = model.node(*chain.nodes.last().context("an empty chain")?);
        let mut patch = TypedModelPatch::new("attention heads split");
        let outlets: Vec<OutletId> = chain.inputs.iter().map(|i| i.0).collect();
        let taps = patch.taps(model, &outlets)?;
        let out = patch.wire_node(format!("{}.heads", last.name), op, &taps)?;
        patch.shunt_outside(model, last.id.into(), out[0])?;
        Ok(Some(patch))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// The tiny CLIP image tower (2 layers of 2 heads over 50 tokens), decluttered.
    fn tiny_clip() -> TypedModel {
        tract_onnx::onnx()
            .model_for_path("models/tiny/clip/onnx/vision_model.onnx")
            .unwrap()
            .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())
            .unwrap()
            .into_typed()
            .unwrap()
            .into_decluttered()
            .unwrap()
    }

    fn run(model: &TypedModel, input: &Tensor, threads: usize) -> Vec<Vec<f32>> {
        let plan = SimplePlan::new(model.clone().into_optimized().unwrap()).unwrap();
        let executor = crate::threads::executor(threads, "heads-test");
        let out = tract_linalg::multithread::multithread_tract_scope(executor, || {
            crate::threads::in_pool(|| plan.run(tvec![input.clone().into_tvalue()]))
        })
        .unwrap();
        out.iter()
            .map(|t| {
                t.try_as_plain_ram()
                    .unwrap()
                    .as_slice::<f32>()
                    .unwrap()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn split_heads_give_the_same_outputs_on_any_thread_count() {
        let plain = tiny_clip();
        let mut split = plain.clone();
        // every layer's chain is found (2 layers)
        assert_eq!(super::split(&mut split, 0, false).unwrap(), 2);
        assert_eq!(
            split
                .nodes()
                .iter()
                .filter(|n| n.op_is::<HeadSplit>())
                .count(),
            2
        );
        assert!(!split.nodes().iter().any(|n| n.op_is::<Softmax>()));
        let input = Tensor::from_shape(
            &[1, 3, 224, 224],
            &(0..3 * 224 * 224)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let want = run(&plain, &input, 1);
        let one = run(&split, &input, 1);
        let before = SPLIT_RUNS.load(Ordering::Relaxed);
        let three = run(&split, &input, 3);
        // each layer's heads went to two threads
        let after = SPLIT_RUNS.load(Ordering::Relaxed);
        assert!(after >= before + 2, "split runs {before} -> {after}");
        // head by head on one thread or spread over three: the same numbers
        assert_eq!(one, three);
        // against tract's own: each head's products are tract's, summed in the same order, but
        // its softmax sums a row in SIMD lanes that start where the row's address falls, so a
        // head in a tensor of its own sums its 50 exponentials in another order. Reordering a
        // sum of 50 positive terms moves it by at most 49 x 2^-24 (2.9e-6) relative; 1e-5
        // leaves room for the second layer to carry the first's (seen: 5e-7 at most)
        for (w, g) in want.iter().zip(&one) {
            assert_eq!(w.len(), g.len());
            for (a, b) in w.iter().zip(g) {
                assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} against {b}");
            }
        }
    }

    #[test]
    fn one_pass_heads_match_tracts_plan_on_any_thread_count() {
        let plain = tiny_clip();
        let mut plan = plain.clone();
        let mut fast = plain.clone();
        assert_eq!(super::split(&mut plan, 0, false).unwrap(), 2);
        assert_eq!(super::split(&mut fast, 0, true).unwrap(), 2);
        let ops = |m: &TypedModel| -> Vec<bool> {
            m.nodes()
                .iter()
                .filter_map(|n| n.op_as::<HeadSplit>())
                .map(|op| op.fast.is_some())
                .collect()
        };
        // both layers' chains run in one pass, or none when asked not to
        assert_eq!(ops(&fast), [true, true]);
        assert_eq!(ops(&plan), [false, false]);
        let input = Tensor::from_shape(
            &[1, 3, 224, 224],
            &(0..3 * 224 * 224usize)
                .map(|i| ((i * 104729) % 997) as f32 / 400.0 - 1.2)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let want = run(&plan, &input, 1);
        let one = run(&fast, &input, 1);
        let three = run(&fast, &input, 3);
        assert_eq!(one, three);
        // the same products (one fused multiply-add per term, in the same order, as tract's
        // kernels sum) and the same softmax kernels, whose rows may sit at other offsets from
        // a 64-byte boundary: as in the test above, at most the order of each row's 50
        // exponentials differs, 2.9e-6 relative at most, carried through a second layer
        let mut worst = 0f32;
        for (w, g) in want.iter().zip(&one) {
            assert_eq!(w.len(), g.len());
            for (a, b) in w.iter().zip(g) {
                worst = worst.max((a - b).abs() / a.abs().max(1.0));
                assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} against {b}");
            }
        }
        // bit for bit on the Zen 4 this was written on (AVX-512 kernels on both sides)
        assert!(worst <= 1e-5, "{worst:e}");
    }

    /// scores = q.k over 4 heads, + a constant `mask` of this shape, softmax, probs.v
    fn masked_attention(mask: &[usize]) -> TypedModel {
        let mut model = TypedModel::default();
        let fact = f32::fact([4, 5, 3]);
        let q = model.add_source("q", fact.clone()).unwrap();
        let k = model.add_source("k", fact.clone()).unwrap();
        let v = model.add_source("v", fact).unwrap();
        let qk = EinSum::new("hmk,hnk->hmn".parse().unwrap(), f32::datum_type());
        let scores = model.wire_node("qk", qk, &[q, k]).unwrap()[0];
        let mask = model
            .add_const("mask", Tensor::zero::<f32>(mask).unwrap())
            .unwrap();
        let add = tract_onnx::tract_core::ops::math::add();
        let masked = model.wire_node("mask.add", add, &[scores, mask]).unwrap()[0];
        let softmax = Softmax {
            axes: tvec![2],
            ..Default::default()
        };
        let probs = model.wire_node("softmax", softmax, &[masked]).unwrap()[0];
        let pv = EinSum::new("hmn,hnk->hmk".parse().unwrap(), f32::datum_type());
        let out = model.wire_node("pv", pv, &[probs, v]).unwrap()[0];
        model.select_output_outlets(&[out]).unwrap();
        model
    }

    #[test]
    fn a_mask_that_differs_per_head_keeps_the_chain_whole() {
        assert_eq!(
            super::split(&mut masked_attention(&[4, 1, 5]), 0, true).unwrap(),
            0
        );
        // one mask for every head splits, through tract's plan: a mask is not a scalar step
        let mut model = masked_attention(&[1, 5, 5]);
        assert_eq!(super::split(&mut model, 0, true).unwrap(), 1);
        let split = model.nodes().iter().find_map(|n| n.op_as::<HeadSplit>());
        assert!(split.is_some_and(|op| op.fast.is_none()));
    }
}
