//! Attention: one head of a transformer's attention core (`scores = q·kᵀ`, scalar steps, a
//! softmax over the keys, `probs·v`) in one pass over the head's own rows, for [`HeadSplit`].
//!
//! Run through tract, each head is a plan of its own: q, k and v sliced out of the layer's
//! tensors (copies), the two products packed and run at a shape too small for tract's kernels
//! to fill (CLIP: 50 x 50 x 64), the scores and probabilities as tensors of their own, and a
//! plan state per group of heads. At 1 thread that was 13% of an int8 CLIP frame and 20% of
//! int8 OWL-ViT at 384 px on a Zen 4 (`bench --profile`, issue 21). Here the products read q,
//! k and v where they lie, in register tiles of 4 rows (query rows, or probability rows) by 16
//! columns (keys, or v's values), with k transposed once per head; the softmax is tract's own
//! row kernels (max, exponentials and sum, scaling).
//!
//! Each score and each output value is a sum over k in order, one fused multiply-add per term
//! where the CPU has them (the x86 path is chosen at run time: AVX2 with FMA), which is how
//! tract's matrix kernels sum too. A head computes the same numbers whichever thread runs it:
//! its scratch rows sit at the same offsets from a 64-byte boundary every time.
//!
//! [`Layout::of`] accepts the chains it can run (f32, the axes it recognises, scalar steps);
//! any other chain keeps tract's plan. `PROMPTCAM_ATTENTION=0` keeps the plan for every chain
//! (`graph::build`; to measure the difference).
//!
//! [`HeadSplit`]: super::heads::HeadSplit

use tract_hir::internal::*;
use tract_linalg::element_wise::ElementWise;
use tract_linalg::reduce::{MapReduce, Reduce};
use tract_linalg::routines::Func;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

/// The name `promptcam bench` lists for the products run here, beside tract's kernels.
pub const KERNEL: &str = "promptcam_attention_f32";

/// Query rows per register tile.
const ROWS: usize = 4;
/// Columns per register tile (keys in `q·kᵀ`, v's values in `probs·v`); a tail of 8.
const COLS: usize = 16;
const TAIL: usize = 8;

/// A scalar step between the scores' product and the softmax.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    Mul(f32),
    Add(f32),
}

/// Where one head's q, k, v and output lie, in elements, and what runs between the products.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// query rows, keys, the q·k depth, v's values per row
    nq: usize,
    nk: usize,
    d: usize,
    dv: usize,
    /// strides of the head axis in q, k and v
    head: [usize; 3],
    /// strides between q's rows, k's rows (keys) and v's rows (keys); each row is contiguous
    row: [usize; 3],
    steps: Vec<Step>,
    /// one head's output shape: the chain's with its head axis 1
    out_shape: TVec<usize>,
}

/// The axes of `ein` present in (input 0, input 1, the output) as `want` says, as their
/// positions there.
fn roles(ein: &EinSum, want: [bool; 3]) -> Vec<[Option<usize>; 3]> {
    let at = |v: &[usize]| match v {
        [p] => Some(*p),
        _ => None,
    };
    ein.axes
        .iter_all_axes()
        .map(|axis| {
            [
                at(&axis.inputs[0]),
                at(&axis.inputs[1]),
                at(&axis.outputs[0]),
            ]
        })
        .filter(|pos| pos.iter().map(Option::is_some).eq(want))
        .collect()
}

/// Of `found`, the one axis longer than 1 in input 0 (of shape `shape`), or the one axis
/// there is; `None` when that is not one axis (the others of length 1 are checked later).
fn pick(found: &[[Option<usize>; 3]], shape: &[usize], slot: usize) -> Option<[Option<usize>; 3]> {
    if let [one] = found {
        return Some(*one);
    }
    let mut long = found
        .iter()
        .filter(|pos| pos[slot].is_some_and(|p| shape.get(p).is_some_and(|n| *n > 1)));
    match (long.next(), long.next()) {
        (Some(one), None) => Some(*one),
        _ => None,
    }
}

/// Every axis of `ein` is one of the roles in `wanted`.
fn only_roles(ein: &EinSum, wanted: &[[bool; 3]]) -> bool {
    ein.axes.iter_all_axes().all(|axis| {
        let present = [
            !axis.inputs[0].is_empty(),
            !axis.inputs[1].is_empty(),
            !axis.outputs[0].is_empty(),
        ];
        wanted.contains(&present)
    })
}

impl Layout {
    /// The layout of the chain `nodes` (the scores' EinSum, scalar steps, the softmax, the
    /// output's EinSum, `probs_slot` its probabilities' slot; `q_head` the head axis of q),
    /// when this module can run it.
    pub fn of(
        model: &TypedModel,
        nodes: &[usize],
        probs_slot: usize,
        q_head: usize,
    ) -> TractResult<Option<Self>> {
        let (Some(&first), Some(&last)) = (nodes.first(), nodes.last()) else {
            return Ok(None);
        };
        let (e1, e2) = (model.node(first), model.node(last));
        let (Some(ein1), Some(ein2)) = (e1.op_as::<EinSum>(), e2.op_as::<EinSum>()) else {
            return Ok(None);
        };
        let facts = [
            model.outlet_fact(e1.inputs[0])?,
            model.outlet_fact(e1.inputs[1])?,
            model.outlet_fact(e2.inputs[1 - probs_slot])?,
            model.outlet_fact(e1.id.into())?,
            model.outlet_fact(e2.id.into())?,
        ];
        if facts.iter().any(|f| f.datum_type != f32::datum_type())
            || ein1.operating_dt != f32::datum_type()
            || ein2.operating_dt != f32::datum_type()
        {
            return Ok(None);
        }
        let Some([q, k, v, scores, out]) = facts
            .iter()
            .map(|f| f.shape.as_concrete())
            .collect::<Option<Vec<_>>>()
            .and_then(|s| <[&[usize]; 5]>::try_from(s).ok())
        else {
            return Ok(None);
        };
        // scores = q·kᵀ: head (q, k, out), query (q, out), key (k, out), depth (q, k)
        const HEAD: [bool; 3] = [true, true, true];
        const LEFT: [bool; 3] = [true, false, true];
        const RIGHT: [bool; 3] = [false, true, true];
        const SUMMED: [bool; 3] = [true, true, false];
        // an axis of the output alone (of length 1, checked below)
        const ADDED: [bool; 3] = [false, false, true];
        if !only_roles(ein1, &[HEAD, LEFT, RIGHT, SUMMED, ADDED]) {
            return Ok(None);
        }
        // the head axis is the chain's; other axes of a role (a batch of 1) are checked below
        let head_at = |found: Vec<[Option<usize>; 3]>, slot: usize, at: usize| {
            found.into_iter().find(|pos| pos[slot] == Some(at))
        };
        let (Some(h1), Some(qa), Some(ka), Some(da)) = (
            head_at(roles(ein1, HEAD), 0, q_head),
            pick(&roles(ein1, LEFT), q, 0),
            pick(&roles(ein1, RIGHT), k, 1),
            pick(&roles(ein1, SUMMED), q, 0),
        ) else {
            return Ok(None);
        };
        // out = probs·v: head (all), query (probs, out), key (probs, v), value (v, out)
        let slot = |pos: [Option<usize>; 3]| -> [Option<usize>; 3] {
            // as (probs, v, out)
            if probs_slot == 0 {
                pos
            } else {
                [pos[1], pos[0], pos[2]]
            }
        };
        let (probs_only, v_only) = if probs_slot == 0 {
            (LEFT, RIGHT)
        } else {
            (RIGHT, LEFT)
        };
        if !only_roles(ein2, &[HEAD, probs_only, v_only, SUMMED, ADDED]) {
            return Ok(None);
        }
        let Some(hs) = h1[2] else {
            return Ok(None);
        };
        let (Some(h2), Some(q2), Some(vv), Some(k2)) = (
            head_at(roles(ein2, HEAD), probs_slot, hs).map(slot),
            pick(&roles(ein2, probs_only), scores, probs_slot).map(slot),
            pick(&roles(ein2, v_only), v, 1 - probs_slot).map(slot),
            pick(&roles(ein2, SUMMED), scores, probs_slot).map(slot),
        ) else {
            return Ok(None);
        };
        let p = |o: Option<usize>| o.context("an axis role without its position");
        let (hq, hk) = (p(h1[0])?, p(h1[1])?);
        let (qq, qs) = (p(qa[0])?, p(qa[2])?);
        let (kk, ks) = (p(ka[1])?, p(ka[2])?);
        let (dq, dk) = (p(da[0])?, p(da[1])?);
        // the probabilities are the scores: the same axes at the same positions
        if p(h2[0])? != hs || p(q2[0])? != qs || p(k2[0])? != ks {
            return Ok(None);
        }
        let (hv, kv, vcol) = (p(h2[1])?, p(k2[1])?, p(vv[1])?);
        let (ho, qo, vo) = (p(h2[2])?, p(q2[2])?, p(vv[2])?);
        // the softmax runs over the keys
        let sm = model.node(nodes[nodes.len() - 2]);
        match sm.op_as::<Softmax>() {
            Some(op)
                if op.kind == SoftmaxKind::Softmax
                    && op.quant_output_dt.is_none()
                    && op.axes.as_slice() == [ks] => {}
            _ => return Ok(None),
        }
        let heads = q[hq];
        let (nq, nk, d, dv) = (q[qq], k[kk], q[dq], v[vcol]);
        if k[hk] != heads
            || v[hv] != heads
            || k[dk] != d
            || v[kv] != nk
            || scores[qs] != nq
            || scores[ks] != nk
            || out[qo] != nq
            || out[vo] != dv
            || out[ho] != heads
        {
            return Ok(None);
        }
        // rows are contiguous (the depth, v's values innermost); any other axis is 1
        let strides = |shape| {
            Tensor::natural_strides(shape)
                .iter()
                .map(|s| *s as usize)
                .collect::<TVec<_>>()
        };
        let (sq, sk, sv) = (strides(q), strides(k), strides(v));
        if sq[dq] != 1 || sk[dk] != 1 || sv[vcol] != 1 || d == 0 || nk == 0 || nq == 0 {
            return Ok(None);
        }
        let others_one = |shape: &[usize], used: &[usize]| {
            shape
                .iter()
                .enumerate()
                .all(|(i, n)| used.contains(&i) || *n == 1)
        };
        if !others_one(q, &[hq, qq, dq])
            || !others_one(k, &[hk, kk, dk])
            || !others_one(v, &[hv, kv, vcol])
            || !others_one(out, &[ho, qo, vo])
            || !others_one(scores, &[hs, qs, ks])
        {
            return Ok(None);
        }
        // one head's output is [nq, dv] row-major once its head axis (size 1) is gone
        if qo > vo || dv % TAIL != 0 {
            return Ok(None);
        }
        let mut steps = vec![];
        for id in &nodes[1..nodes.len() - 2] {
            let node = model.node(*id);
            let Some(op) = node.op_as::<TypedBinOp>() else {
                return Ok(None);
            };
            let mut konst = node
                .inputs
                .iter()
                .filter_map(|i| model.outlet_fact(*i).ok()?.konst.clone());
            let (Some(c), None) = (konst.next(), konst.next()) else {
                return Ok(None);
            };
            if c.len() != 1 || c.datum_type() != f32::datum_type() {
                return Ok(None);
            }
            let c = c.cast_to_scalar::<f32>()?;
            steps.push(match op.0.name() {
                "Mul" => Step::Mul(c),
                "Add" => Step::Add(c),
                _ => return Ok(None),
            });
        }
        let mut out_shape: TVec<usize> = out.into();
        out_shape[ho] = 1;
        Ok(Some(Layout {
            nq,
            nk,
            d,
            dv,
            head: [sq[hq], sk[hk], sv[hv]],
            row: [sq[qq], sk[kk], sv[kv]],
            steps,
            out_shape,
        }))
    }

    /// One head's output shape (its values are `[nq, dv]`, row-major).
    pub fn out_shape(&self) -> &[usize] {
        &self.out_shape
    }

    /// The values one head's output holds.
    pub fn out_len(&self) -> usize {
        self.nq * self.dv
    }
}

/// A multiply-add: fused where the CPU has it (so rounded once, as tract's kernels do).
trait MulAdd: Copy {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

#[derive(Clone, Copy)]
struct Fused;
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

#[allow(dead_code)] // used where the CPU may lack FMA (x86 without AVX2 + FMA)
#[derive(Clone, Copy)]
struct Separate;
impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// The rows of a matrix in a slice: row `i` starts at `data[i * stride]`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    stride: usize,
}

impl<'a> Rows<'a> {
    /// The same rows from row `row` and column `col` on.
    fn at(self, row: usize, col: usize) -> Rows<'a> {
        Rows {
            data: &self.data[row * self.stride + col..],
            stride: self.stride,
        }
    }
}

/// `R x C` tile: `acc[r][c] = Σ_kk a[r][kk] * b[kk][c]`, kk in order.
#[inline(always)]
fn tile<M: MulAdd, const R: usize, const C: usize>(a: Rows, b: Rows, k: usize) -> [[f32; C]; R] {
    let mut acc = [[0f32; C]; R];
    let rows: [&[f32]; R] = std::array::from_fn(|r| &a.data[r * a.stride..r * a.stride + k]);
    for (kk, bv) in b.data.chunks(b.stride).take(k).enumerate() {
        let Some(bv) = bv.first_chunk::<C>() else {
            break;
        };
        for r in 0..R {
            let av = rows[r][kk];
            for c in 0..C {
                acc[r][c] = M::mul_add(av, bv[c], acc[r][c]);
            }
        }
    }
    acc
}

/// The first `take` columns of a tile into `c` (rows of stride `c_row`) from column `col`.
#[inline(always)]
fn put<const R: usize, const C: usize>(
    acc: &[[f32; C]; R],
    take: usize,
    c: &mut [f32],
    c_row: usize,
    col: usize,
) {
    for (r, row) in acc.iter().enumerate() {
        c[r * c_row + col..r * c_row + col + take].copy_from_slice(&row[..take]);
    }
}

/// `R` rows of `c = a·b` (`a`: rows of `k`; `b`: `k` rows of at least `n` values, padded to
/// a tail tile's width), `n` columns, into `c` (rows of stride `c_row`).
#[inline(always)]
fn rows_times<M: MulAdd, const R: usize>(
    a: Rows,
    b: Rows,
    k: usize,
    n: usize,
    c: &mut [f32],
    c_row: usize,
) {
    let mut col = 0;
    while col < n {
        if n - col >= COLS {
            put(&tile::<M, R, COLS>(a, b.at(0, col), k), COLS, c, c_row, col);
            col += COLS;
        } else {
            let take = (n - col).min(TAIL);
            put(&tile::<M, R, TAIL>(a, b.at(0, col), k), take, c, c_row, col);
            col += TAIL;
        }
    }
}

/// `c = a·b` for `m` rows, in tiles of [`ROWS`] rows and a tail of single rows.
#[inline(always)]
fn times<M: MulAdd>(a: Rows, m: usize, b: Rows, k: usize, n: usize, c: &mut [f32], c_row: usize) {
    let mut r = 0;
    while r + ROWS <= m {
        rows_times::<M, ROWS>(a.at(r, 0), b, k, n, &mut c[r * c_row..], c_row);
        r += ROWS;
    }
    while r < m {
        rows_times::<M, 1>(a.at(r, 0), b, k, n, &mut c[r * c_row..], c_row);
        r += 1;
    }
}

/// tract's softmax row kernels, made once per group of heads.
pub struct Softmaxer {
    max: Box<dyn Reduce<f32>>,
    exp_sum: Box<dyn MapReduce<f32, f32>>,
    scale: Box<dyn ElementWise<f32, f32>>,
}

impl Softmaxer {
    pub fn new() -> TractResult<Self> {
        Ok(Softmaxer {
            max: Func::ReduceMax.reduce_f32()?,
            exp_sum: Func::Softmax2.map_reduce_f32()?,
            scale: Func::MulByScalar.ew_f32_param()?,
        })
    }

    /// The softmax of one row, as tract's `Softmax` computes it.
    fn row(&self, x: &mut [f32]) -> TractResult<()> {
        let max = self.max.run(x)?;
        let sum = self.exp_sum.run_with_params(x, max)?;
        self.scale.run_with_params(x, sum.recip())
    }
}

/// Scratch for one head, reused across heads: k transposed, the scores.
#[derive(Default)]
pub struct Scratch {
    buf: Vec<f32>,
}

impl Scratch {
    /// Two regions of `a` and `b` values, each starting on a 64-byte boundary.
    fn regions(&mut self, a: usize, b: usize) -> (&mut [f32], &mut [f32]) {
        let round = |n: usize| n.div_ceil(16) * 16;
        self.buf.resize(round(a) + round(b) + 16, 0.0);
        let skew = self.buf.as_ptr().align_offset(64).min(15);
        let (x, y) = self.buf[skew..].split_at_mut(round(a));
        (&mut x[..a], &mut y[..b])
    }
}

/// The heads of one chain's run: its layout, its q, k and v, the softmax kernels.
pub struct Heads<'a> {
    pub layout: &'a Layout,
    pub inputs: [&'a [f32]; 3],
    pub softmax: &'a Softmaxer,
}

impl Heads<'_> {
    /// Head `h`'s output (`[nq, dv]`, row-major) into `out`.
    pub fn run(&self, h: usize, scratch: &mut Scratch, out: &mut [f32]) -> TractResult<()> {
        let (l, [q, k, v]) = (self.layout, self.inputs);
        ensure!(
            out.len() == l.out_len(),
            "attention: an output of the wrong size"
        );
        // every row a tile reads lies inside its input (the tiles do not check again)
        let reach =
            |base: usize, rows: usize, row: usize, width: usize| base + (rows - 1) * row + width;
        ensure!(
            reach(h * l.head[0], l.nq, l.row[0], l.d) <= q.len()
                && reach(h * l.head[1], l.nk, l.row[1], l.d) <= k.len()
                && reach(h * l.head[2], l.nk, l.row[2], l.dv) <= v.len(),
            "attention: head {h} reaches past its inputs"
        );
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2 and FMA, checked just above
                return unsafe { head_fma(self, h, scratch, out) };
            }
            head::<Separate>(self, h, scratch, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        head::<Fused>(self, h, scratch, out)
    }
}

fn head<M: MulAdd>(
    heads: &Heads,
    h: usize,
    scratch: &mut Scratch,
    out: &mut [f32],
) -> TractResult<()> {
    let (l, [q, k, v]) = (heads.layout, heads.inputs);
    let (q, k, v) = (
        &q[h * l.head[0]..],
        &k[h * l.head[1]..],
        &v[h * l.head[2]..],
    );
    // kᵀ: depth rows of the keys, padded to a tile's width (the padding's products are dropped)
    let nkp = l.nk.div_ceil(TAIL) * TAIL;
    let (kt, scores) = scratch.regions(l.d * nkp, l.nq * l.nk);
    for (j, row) in k.chunks(l.row[1]).take(l.nk).enumerate() {
        for (dd, x) in row[..l.d].iter().enumerate() {
            kt[dd * nkp + j] = *x;
        }
    }
    let rows = |data, stride| Rows { data, stride };
    times::<M>(
        rows(q, l.row[0]),
        l.nq,
        rows(kt, nkp),
        l.d,
        l.nk,
        scores,
        l.nk,
    );
    for row in scores.chunks_exact_mut(l.nk) {
        for step in &l.steps {
            match *step {
                Step::Mul(c) => row.iter_mut().for_each(|x| *x *= c),
                Step::Add(c) => row.iter_mut().for_each(|x| *x += c),
            }
        }
        heads.softmax.row(row)?;
    }
    times::<M>(
        rows(scores, l.nk),
        l.nq,
        rows(v, l.row[2]),
        l.nk,
        l.dv,
        out,
        l.dv,
    );
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_fma(
    heads: &Heads,
    h: usize,
    scratch: &mut Scratch,
    out: &mut [f32],
) -> TractResult<()> {
    head::<Fused>(heads, h, scratch, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: f64 = 1.0 / (1u64 << 24) as f64;

    /// n·u / (1 - n·u): the relative error bound of n roundings in a row (Higham's γ_n)
    fn gamma(n: usize) -> f64 {
        n as f64 * U / (1.0 - n as f64 * U)
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104729) % 1013) as f32 / 1013.0 * 3.0 - 1.5)
            .collect()
    }

    /// Odd sizes, so every tail runs: 7 query rows (a tile of 4, then single rows), 21 keys
    /// (a 16-wide tile, then an 8-wide one reading k's padding), 24 values (16 + 8), a depth
    /// of 5; q, k, v laid out [tokens, heads, depth] as CLIP's are, 3 heads; two steps.
    #[test]
    fn one_head_matches_an_f64_reference_within_its_rounding() {
        let (heads, nq, nk, d, dv) = (3, 7, 21, 5, 24);
        let (c1, c2) = (0.3f32, 0.5f32);
        let layout = Layout {
            nq,
            nk,
            d,
            dv,
            head: [d, d, dv],
            row: [heads * d, heads * d, heads * dv],
            steps: vec![Step::Mul(c1), Step::Add(c2)],
            out_shape: tvec![nq, 1, dv],
        };
        let (q, k, v) = (
            values(nq * heads * d, 1),
            values(nk * heads * d, 2),
            values(nk * heads * dv, 3),
        );
        let softmax = Softmaxer::new().unwrap();
        let mut scratch = Scratch::default();
        for h in 0..heads {
            let mut out = vec![f32::NAN; nq * dv];
            let run = Heads {
                layout: &layout,
                inputs: [&q, &k, &v],
                softmax: &softmax,
            };
            run.run(h, &mut scratch, &mut out).unwrap();
            let at = |x: &[f32], row: usize, i: usize, t: usize| {
                x[i * row + h * (row / heads) + t] as f64
            };
            for i in 0..nq {
                // the reference scores, and each one's bound: d fused multiply-adds, the
                // scale and the shift, each rounding once (γ_{d+2} of the terms' magnitudes)
                let (mut s, mut delta) = (vec![0f64; nk], vec![0f64; nk]);
                for j in 0..nk {
                    let dot: f64 = (0..d)
                        .map(|t| at(&q, heads * d, i, t) * at(&k, heads * d, j, t))
                        .sum();
                    let mag: f64 = (0..d)
                        .map(|t| (at(&q, heads * d, i, t) * at(&k, heads * d, j, t)).abs())
                        .sum();
                    s[j] = dot * c1 as f64 + c2 as f64;
                    delta[j] = gamma(d + 2) * (mag * (c1 as f64).abs() + (c2 as f64).abs());
                }
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                let spread = s.iter().map(|x| m - x).fold(0.0, f64::max);
                // each probability, relatively: the scores' error and the subtraction of the
                // max (rounded once) enter the exponential; tract's exp (Cody-Waite reduction,
                // a degree-5 minimax fit) is budgeted 8 ulps; twice, for the numerator and the
                // sum it is divided by, then the sum's own rounding (γ_nk), the reciprocal's
                // and the scaling's (2u)
                let d_max = delta.iter().cloned().fold(0.0, f64::max);
                let rho = d_max + U * (spread + 2.0 * d_max) + 8.0 * U;
                let eta = 2.0 * rho + gamma(nk) + 2.0 * U;
                for c in 0..dv {
                    let want: f64 = (0..nk).map(|j| e[j] / sum * at(&v, heads * dv, j, c)).sum();
                    let weight: f64 = (0..nk)
                        .map(|j| e[j] / sum * at(&v, heads * dv, j, c).abs())
                        .sum();
                    // the output: its probabilities' error, then nk fused multiply-adds
                    // (first order; 1% more covers the second-order terms, of order η²)
                    let bound = ((1.0 + eta) * (1.0 + gamma(nk)) - 1.0) * weight * 1.01;
                    let got = out[i * dv + c] as f64;
                    assert!(
                        (got - want).abs() <= bound,
                        "head {h} row {i} value {c}: {got} against {want} (bound {bound:e})"
                    );
                }
            }
        }
    }

    #[test]
    fn a_head_past_its_inputs_is_an_error() {
        let layout = Layout {
            nq: 2,
            nk: 2,
            d: 4,
            dv: 8,
            head: [4, 4, 8],
            row: [8, 8, 16],
            steps: vec![],
            out_shape: tvec![2, 1, 8],
        };
        let (q, k, v) = (vec![0f32; 16], vec![0f32; 16], vec![0f32; 32]);
        let softmax = Softmaxer::new().unwrap();
        let mut out = vec![0f32; 16];
        let mut scratch = Scratch::default();
        let heads = Heads {
            layout: &layout,
            inputs: [&q, &k, &v],
            softmax: &softmax,
        };
        assert!(heads.run(1, &mut scratch, &mut out).is_ok());
        let err = heads.run(2, &mut scratch, &mut out).unwrap_err();
        assert!(err.to_string().contains("reaches past"), "{err}");
    }
}
