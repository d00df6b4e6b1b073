//! Grid: runs an OWL-ViT or OWLv2 export at another input size than the one it was exported for
//! (OWL-ViT B/32: 768 px, a 24x24 grid of patches), by rewriting the ONNX graph before tract
//! imports it, as transformers does when the model is called with `interpolate_pos_encoding=True`:
//!
//! - the position embeddings: the class position is kept and the patch positions, reshaped to the
//!   native grid, are resized to the new grid by bicubic interpolation (`align_corners=False`,
//!   PyTorch's kernel with a = -0.75 and clamped borders), [`interpolate_bicubic`];
//! - the box bias that `box_predictor` adds before the sigmoid: recomputed for the new grid,
//!   [`box_bias`] (`compute_box_bias`), whether the export stores it as a constant or computes it
//!   in the graph (older exports take Log of a constant grid of coordinates);
//! - every shape written into the graph for the native grid: the `Reshape` to
//!   `[batch, 24, 24, hidden]` and any target holding the native patch or token count.
//!
//! Whatever else in the graph depends on the grid follows from the input shape through tract's
//! shape inference; a grid-sized constant this module does not know about makes that inference
//! fail, and the load fails with the size named rather than running a wrong graph.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// A grid of patches, rows x columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub rows: usize,
    pub cols: usize,
}

impl Grid {
    pub fn square(side: usize) -> Grid {
        Grid {
            rows: side,
            cols: side,
        }
    }

    pub fn patches(self) -> usize {
        self.rows * self.cols
    }
}

impl std::fmt::Display for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.cols, self.rows)
    }
}

/// transformers' `compute_box_bias(rows, cols)`: per patch (row-major), the inverse sigmoid of
/// its corner coordinate `((col + 1) / cols, (row + 1) / rows)` and of the patch size
/// `(1 / cols, 1 / rows)`, each with transformers' 1e-4 margin; computed in f32 as torch does.
pub fn box_bias(grid: Grid) -> Vec<f32> {
    let logit = |v: f32| {
        let v = v.clamp(0.0, 1.0);
        (v + 1e-4).ln() - (-v + 1e-4).ln_1p()
    };
    let w = logit(1.0 / grid.cols as f32);
    let h = logit(1.0 / grid.rows as f32);
    let mut out = Vec::with_capacity(grid.patches() * 4);
    for r in 0..grid.rows {
        for c in 0..grid.cols {
            out.extend([
                logit((c + 1) as f32 / grid.cols as f32),
                logit((r + 1) as f32 / grid.rows as f32),
                w,
                h,
            ]);
        }
    }
    out
}

/// PyTorch's cubic convolution weights (a = -0.75) for a fractional offset `t`.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// For each output index, the four source indices (clamped to the border) and their weights, as
/// `nn.functional.interpolate(mode="bicubic", align_corners=False)` computes them.
fn cubic_taps(from: usize, to: usize) -> Vec<([usize; 4], [f64; 4])> {
    // torch: scale = in / out in the input's float type, source = scale * (o + 0.5) - 0.5,
    // not clamped at 0 for cubic
    let scale = from as f32 / to as f32;
    (0..to)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            let base = real.floor();
            let t = (real - base) as f64;
            let base = base as i64;
            let idx = [-1i64, 0, 1, 2].map(|k| (base + k).clamp(0, from as i64 - 1) as usize);
            (idx, cubic_weights(t))
        })
        .collect()
}

/// Resizes a `[from.rows * from.cols, dim]` table (row-major grid positions, `dim` values each)
/// to `to`, by bicubic interpolation of every channel.
pub fn interpolate_bicubic(table: &[f32], dim: usize, from: Grid, to: Grid) -> Vec<f32> {
    assert_eq!(table.len(), from.patches() * dim, "table size");
    let ty = cubic_taps(from.rows, to.rows);
    let tx = cubic_taps(from.cols, to.cols);
    let mut out = vec![0f32; to.patches() * dim];
    let mut acc = vec![0f64; dim];
    for (r, (iy, wy)) in ty.iter().enumerate() {
        for (c, (ix, wx)) in tx.iter().enumerate() {
            acc.fill(0.0);
            for (y, wy) in iy.iter().zip(wy) {
                for (x, wx) in ix.iter().zip(wx) {
                    let w = wy * wx;
                    let src = &table[(y * from.cols + x) * dim..][..dim];
                    for (a, s) in acc.iter_mut().zip(src) {
                        *a += w * *s as f64;
                    }
                }
            }
            let dst = &mut out[(r * to.cols + c) * dim..][..dim];
            for (d, a) in dst.iter_mut().zip(&acc) {
                *d = *a as f32;
            }
        }
    }
    out
}

/// What [`adapt`] changed, for the log.
#[derive(Debug, Default)]
pub struct Adapted {
    pub changes: Vec<String>,
}

/// Rewrites an OWL-ViT / OWLv2 graph exported for the `native` grid (`hidden` wide vision tower)
/// to run on `grid`; see the module header. Fails, naming what it could not find, when the graph
/// does not have the structure of those exports.
pub fn adapt(
    proto: &mut pb::ModelProto,
    native: Grid,
    grid: Grid,
    hidden: usize,
) -> Result<Adapted> {
    let mut adapted = Adapted::default();
    let opsets = proto.opset_import.clone();
    let graph = proto.graph.as_mut().context("the file holds no graph")?;
    position_table(graph, native, grid, hidden, &mut adapted)?;
    box_bias_input(graph, &opsets, native, grid, &mut adapted)?;
    reshape_targets(graph, native, grid, &mut adapted);
    // shapes recorded for the native size would contradict the new ones
    graph.value_info.clear();
    for o in &mut graph.output {
        clear_shape(o);
    }
    Ok(adapted)
}

fn clear_shape(v: &mut pb::ValueInfoProto) {
    if let Some(pb::type_proto::Value::TensorType(t)) =
        v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape = None;
    }
}

/// Sets the static height and width of the graph input `name` (`[batch, 3, H, W]`), so that
/// onnxruntime accepts the adapted graph at the new size.
pub fn set_input_size(proto: &mut pb::ModelProto, name: &str, height: usize, width: usize) {
    let Some(g) = proto.graph.as_mut() else {
        return;
    };
    for i in g.input.iter_mut().filter(|i| i.name == name) {
        if let Some(pb::type_proto::Value::TensorType(t)) =
            i.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            if let Some(shape) = t.shape.as_mut() {
                for (ix, v) in [(2, height), (3, width)] {
                    if let Some(d) = shape.dim.get_mut(ix) {
                        d.value =
                            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v as i64));
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------ constants

/// A constant the graph holds, resolved to numbers.
#[derive(Clone, Debug)]
struct Value {
    shape: Vec<usize>,
    f32s: Vec<f32>,
}

fn load(t: &pb::TensorProto) -> Option<Tensor> {
    tract_onnx::tensor::load_tensor(&tract_onnx::data_resolver::FopenDataResolver, t, None).ok()
}

fn to_value(t: &Tensor) -> Option<Value> {
    let f = t.cast_to::<f32>().ok()?;
    let v = f.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
    Some(Value {
        shape: t.shape().to_vec(),
        f32s: v,
    })
}

fn to_i64s(t: &Tensor) -> Option<Vec<i64>> {
    let f = t.cast_to::<i64>().ok()?;
    Some(f.try_as_plain_ram().ok()?.as_slice::<i64>().ok()?.to_vec())
}

struct Index<'a> {
    graph: &'a pb::GraphProto,
    producer: HashMap<&'a str, usize>,
    init: HashMap<&'a str, usize>,
}

impl<'a> Index<'a> {
    fn new(graph: &'a pb::GraphProto) -> Index<'a> {
        let mut producer = HashMap::new();
        for (ix, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), ix);
            }
        }
        let init = graph
            .initializer
            .iter()
            .enumerate()
            .map(|(ix, t)| (t.name.as_str(), ix))
            .collect();
        Index {
            graph,
            producer,
            init,
        }
    }

    fn node(&self, name: &str) -> Option<&'a pb::NodeProto> {
        self.producer.get(name).map(|ix| &self.graph.node[*ix])
    }

    /// The tensor named `name` when it is an initializer or a `Constant` output.
    fn tensor(&self, name: &str) -> Option<Tensor> {
        if let Some(ix) = self.init.get(name) {
            return load(&self.graph.initializer[*ix]);
        }
        let n = self.node(name)?;
        if n.op_type == "Constant" {
            let a = n.attribute.iter().find(|a| a.name == "value")?;
            return load(a.t.as_ref()?);
        }
        None
    }

    /// Resolves `name` to numbers when it is a constant, or a constant seen through the few ops
    /// an export puts between a stored table and its use (Identity, Cast, Unsqueeze, Gather of
    /// constant indices, per-tensor DequantizeLinear).
    fn resolve(&self, name: &str, depth: usize) -> Option<Value> {
        if depth > 8 {
            return None;
        }
        if let Some(t) = self.tensor(name) {
            return to_value(&t);
        }
        let n = self.node(name)?;
        match n.op_type.as_str() {
            "Identity" | "Cast" => self.resolve(n.input.first()?, depth + 1),
            "Unsqueeze" => {
                let v = self.resolve(n.input.first()?, depth + 1)?;
                let axes: Vec<i64> = match n.input.get(1) {
                    Some(a) => to_i64s(&self.tensor(a)?)?,
                    None => attr(n, "axes")?.ints.clone(),
                };
                let mut shape = v.shape.clone();
                let rank = shape.len() + axes.len();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|a| {
                        if *a < 0 {
                            (*a + rank as i64) as usize
                        } else {
                            *a as usize
                        }
                    })
                    .collect();
                axes.sort();
                for a in axes {
                    if a > shape.len() {
                        return None;
                    }
                    shape.insert(a, 1);
                }
                Some(Value { shape, ..v })
            }
            "DequantizeLinear" => {
                let x = self.resolve(n.input.first()?, depth + 1)?;
                let scale = self.resolve(n.input.get(1)?, depth + 1)?;
                let zp = match n.input.get(2) {
                    Some(z) if !z.is_empty() => self.resolve(z, depth + 1)?,
                    _ => Value {
                        shape: vec![],
                        f32s: vec![0.0],
                    },
                };
                if scale.f32s.len() != 1 || zp.f32s.len() != 1 {
                    return None;
                }
                let (s, z) = (scale.f32s[0], zp.f32s[0]);
                Some(Value {
                    shape: x.shape,
                    f32s: x.f32s.iter().map(|q| (q - z) * s).collect(),
                })
            }
            "Gather" => {
                let axis = attr(n, "axis").map(|a| a.i).unwrap_or(0);
                if axis != 0 {
                    return None;
                }
                let data = self.resolve(n.input.first()?, depth + 1)?;
                let idx_t = self.tensor(n.input.get(1)?)?;
                let idx = to_i64s(&idx_t)?;
                let rows = *data.shape.first()?;
                let row: usize = data.shape[1..].iter().product();
                let mut f32s = Vec::with_capacity(idx.len() * row);
                for i in idx {
                    let i = if i < 0 { i + rows as i64 } else { i };
                    if i < 0 || i as usize >= rows {
                        return None;
                    }
                    f32s.extend_from_slice(&data.f32s[i as usize * row..][..row]);
                }
                let mut shape = idx_t.shape().to_vec();
                shape.extend_from_slice(&data.shape[1..]);
                Some(Value { shape, f32s })
            }
            _ => None,
        }
    }

    /// Whether `name` depends on a graph input other than through its shape: the part of the
    /// graph that runs per frame. Shapes are fixed once the input size is.
    fn data_dependent(&self, name: &str, memo: &mut HashMap<String, bool>) -> bool {
        if let Some(v) = memo.get(name) {
            return *v;
        }
        let v = if self.init.contains_key(name) {
            false
        } else if let Some(n) = self.node(name) {
            if matches!(n.op_type.as_str(), "Shape" | "Size" | "Constant") {
                false
            } else {
                n.input
                    .iter()
                    .filter(|i| !i.is_empty())
                    .any(|i| self.data_dependent(i, memo))
            }
        } else {
            // a graph input
            self.graph.input.iter().any(|i| i.name == name)
        };
        memo.insert(name.to_string(), v);
        v
    }

    /// The nodes `name` is computed from (in graph order) and the initializers they read.
    fn ancestors(&self, name: &str) -> (Vec<usize>, HashSet<&'a str>) {
        let mut nodes = HashSet::new();
        let mut inits = HashSet::new();
        let mut stack = vec![name.to_string()];
        while let Some(n) = stack.pop() {
            if let Some((k, _)) = self.init.get_key_value(n.as_str()) {
                inits.insert(*k);
            } else if let Some(ix) = self.producer.get(n.as_str()) {
                if nodes.insert(*ix) {
                    stack.extend(
                        self.graph.node[*ix]
                            .input
                            .iter()
                            .filter(|i| !i.is_empty())
                            .cloned(),
                    );
                }
            }
        }
        let mut nodes: Vec<usize> = nodes.into_iter().collect();
        nodes.sort();
        (nodes, inits)
    }
}

fn attr<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn f32_initializer(name: String, shape: &[usize], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims: shape.iter().map(|d| *d as i64).collect(),
        data_type: 1,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn i64_initializer(name: String, data: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims: vec![data.len() as i64],
        data_type: 7,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A fresh tensor name.
fn fresh(graph: &pb::GraphProto, base: &str) -> String {
    let taken: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .chain(graph.input.iter().map(|i| i.name.as_str()))
        .collect();
    let mut name = base.to_string();
    let mut k = 1;
    while taken.contains(name.as_str()) {
        name = format!("{base}.{k}");
        k += 1;
    }
    name
}

// ------------------------------------------------------------------------------ the rewrites

/// Finds the `Add` of the vision embeddings and the position embeddings (a constant
/// `[native + 1, hidden]` table, possibly gathered by constant ids and dequantized) and feeds it
/// the interpolated `[1, grid + 1, hidden]` table instead.
fn position_table(
    graph: &mut pb::GraphProto,
    native: Grid,
    grid: Grid,
    hidden: usize,
    adapted: &mut Adapted,
) -> Result<()> {
    let tokens = native.patches() + 1;
    let mut found: Vec<(usize, usize, Value)> = vec![];
    {
        let index = Index::new(graph);
        for (ix, n) in graph.node.iter().enumerate() {
            if n.op_type != "Add" || n.input.len() != 2 {
                continue;
            }
            for (k, input) in n.input.iter().enumerate() {
                // cheap test first: only a table of the right size is resolved
                let Some(v) = index.resolve(input, 0) else {
                    continue;
                };
                let dims: Vec<usize> = v.shape.iter().copied().skip_while(|d| *d == 1).collect();
                if dims == [tokens, hidden] {
                    found.push((ix, k, v));
                }
            }
        }
    }
    let (node, input, table) = match found.len() {
        1 => found.remove(0),
        0 => bail!("found no position embeddings of {tokens} x {hidden} (a {native} grid plus the class token); is it an OWL-ViT export?"),
        n => bail!("found {n} candidate position-embedding tables of {tokens} x {hidden}; the graph is not one promptcam knows how to resize"),
    };
    let patches = interpolate_bicubic(&table.f32s[hidden..], hidden, native, grid);
    let mut data = table.f32s[..hidden].to_vec();
    data.extend(patches);
    let name = fresh(graph, &format!("promptcam.position_embedding.{grid}"));
    graph.initializer.push(f32_initializer(
        name.clone(),
        &[1, grid.patches() + 1, hidden],
        &data,
    ));
    graph.node[node].input[input] = name;
    adapted.changes.push(format!(
        "position embeddings {tokens}x{hidden} -> {}x{hidden} (bicubic)",
        grid.patches() + 1
    ));
    Ok(())
}

/// Finds the box bias (`pred_boxes = Sigmoid(box_head + bias)`), checks it is OWL-ViT's for the
/// native grid when it can be computed without an image, and feeds the new grid's instead.
fn box_bias_input(
    graph: &mut pb::GraphProto,
    opsets: &[pb::OperatorSetIdProto],
    native: Grid,
    grid: Grid,
    adapted: &mut Adapted,
) -> Result<()> {
    let (node, input, kind) = {
        let index = Index::new(graph);
        let mut name = "pred_boxes".to_string();
        // through Identity nodes to the Sigmoid
        let sigmoid = loop {
            let n = index
                .node(&name)
                .context("found no node computing the output `pred_boxes`")?;
            match n.op_type.as_str() {
                "Identity" => name = n.input[0].clone(),
                "Sigmoid" => break n,
                other => bail!("`pred_boxes` comes from a {other} node, not the Sigmoid of OWL-ViT's box predictor"),
            }
        };
        let add_name = &sigmoid.input[0];
        let add_ix = *index
            .producer
            .get(add_name.as_str())
            .context("the box sigmoid has no input node")?;
        let add = &graph.node[add_ix];
        if add.op_type != "Add" || add.input.len() != 2 {
            bail!(
                "the box sigmoid's input comes from a {} node, not the Add of the box bias",
                add.op_type
            );
        }
        let mut memo = HashMap::new();
        let sides: Vec<bool> = add
            .input
            .iter()
            .map(|i| index.data_dependent(i, &mut memo))
            .collect();
        let k = match sides.as_slice() {
            [true, false] => 1,
            [false, true] => 0,
            _ => bail!("found no box bias: both inputs of the box Add depend on the image"),
        };
        let bias_name = add.input[k].clone();
        // check the native bias when it can be evaluated without an image
        let want = box_bias(native);
        let stored = index.resolve(&bias_name, 0);
        let kind = if let Some(v) = stored {
            check_bias(&v.f32s, &want, native)?;
            "a stored constant"
        } else {
            let (nodes, _) = index.ancestors(&bias_name);
            let reads_input = nodes.iter().any(|ix| {
                graph.node[*ix]
                    .input
                    .iter()
                    .any(|i| graph.input.iter().any(|g| g.name == *i))
            });
            if reads_input {
                // computed from the image's shape (through the whole vision tower's shapes):
                // replaced by the values transformers computes for the new grid, not checked
                "computed in the graph from the image's shape"
            } else {
                let got = eval(&index, opsets, &bias_name)
                    .context("unable to evaluate the box bias the graph computes")?;
                check_bias(&got, &want, native)?;
                "computed in the graph from constants"
            }
        };
        (add_ix, k, kind)
    };
    let name = fresh(graph, &format!("promptcam.box_bias.{grid}"));
    graph.initializer.push(f32_initializer(
        name.clone(),
        &[1, grid.patches(), 4],
        &box_bias(grid),
    ));
    graph.node[node].input[input] = name;
    adapted.changes.push(format!(
        "box bias ({kind}) for {} patches -> {}",
        native.patches(),
        grid.patches()
    ));
    Ok(())
}

fn check_bias(got: &[f32], want: &[f32], native: Grid) -> Result<()> {
    if got.len() != want.len() {
        bail!(
            "the box bias has {} values; OWL-ViT's for a {native} grid has {}",
            got.len(),
            want.len()
        );
    }
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    if worst > 1e-3 {
        bail!("the box bias differs from OWL-ViT's for a {native} grid by up to {worst}; the graph is not one promptcam knows how to resize");
    }
    Ok(())
}

/// Evaluates the constant subgraph computing `name` with tract.
fn eval(index: &Index, opsets: &[pb::OperatorSetIdProto], name: &str) -> Result<Vec<f32>> {
    let (nodes, inits) = index.ancestors(name);
    let graph = pb::GraphProto {
        name: "box_bias".into(),
        node: nodes
            .iter()
            .map(|ix| index.graph.node[*ix].clone())
            .collect(),
        initializer: index
            .graph
            .initializer
            .iter()
            .filter(|t| inits.contains(t.name.as_str()))
            .cloned()
            .collect(),
        output: vec![pb::ValueInfoProto {
            name: name.to_string(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let proto = pb::ModelProto {
        ir_version: 8,
        opset_import: opsets.to_vec(),
        graph: Some(graph),
        ..Default::default()
    };
    let model = tract_onnx::onnx()
        .parse(&proto, None)?
        .model
        .into_typed()?
        .into_runnable()?;
    let out = model.run(tvec![])?;
    let t = out[0].cast_to::<f32>()?;
    Ok(t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}

/// Rewrites the grid written into `Reshape` targets (a constant, or constant pieces of a
/// `Concat`): a consecutive `rows, cols` pair, else an element equal to the patch count or the
/// token count.
fn reshape_targets(graph: &mut pb::GraphProto, native: Grid, grid: Grid, adapted: &mut Adapted) {
    // (node, input slot, new values) for every constant to replace
    let mut edits: Vec<(usize, usize, Vec<i64>)> = vec![];
    let mut count = 0;
    {
        let index = Index::new(graph);
        let constant = |name: &str| index.tensor(name).and_then(|t| to_i64s(&t));
        for (r, n) in graph.node.iter().enumerate() {
            let Some(target) = n.input.get(1).filter(|_| n.op_type == "Reshape") else {
                continue;
            };
            // the target's pieces: (node, slot, values) per constant, None where computed
            let pieces: Vec<Option<(usize, usize, Vec<i64>)>> = match constant(target) {
                Some(v) => vec![Some((r, 1, v))],
                None => match index.producer.get(target.as_str()) {
                    Some(&c) if graph.node[c].op_type == "Concat" => graph.node[c]
                        .input
                        .iter()
                        .enumerate()
                        .map(|(k, i)| constant(i).map(|v| (c, k, v)))
                        .collect(),
                    _ => continue,
                },
            };
            let flat: Vec<Option<i64>> = pieces
                .iter()
                .flat_map(|p| match p {
                    Some((_, _, v)) => v.iter().map(|x| Some(*x)).collect::<Vec<_>>(),
                    None => vec![None],
                })
                .collect();
            let new = regrid(&flat, native, grid);
            if new == flat {
                continue;
            }
            count += 1;
            let mut at = 0;
            for p in pieces {
                match p {
                    Some((node, slot, old)) => {
                        let values: Vec<i64> = new[at..at + old.len()]
                            .iter()
                            .map(|x| x.unwrap_or_default())
                            .collect();
                        at += old.len();
                        if values != old {
                            edits.push((node, slot, values));
                        }
                    }
                    None => at += 1,
                }
            }
        }
    }
    for (node, slot, values) in edits {
        let name = fresh(graph, "promptcam.grid_shape");
        graph
            .initializer
            .push(i64_initializer(name.clone(), &values));
        graph.node[node].input[slot] = name;
    }
    if count > 0 {
        adapted.changes.push(format!(
            "{count} reshape target(s) from the {native} grid to {grid}"
        ));
    }
}

/// One reshape target's elements (None where computed) with the native grid replaced.
fn regrid(flat: &[Option<i64>], native: Grid, grid: Grid) -> Vec<Option<i64>> {
    let (rows, cols, patches) = (
        native.rows as i64,
        native.cols as i64,
        native.patches() as i64,
    );
    let mut out = flat.to_vec();
    let mut i = 0;
    while i < flat.len() {
        match (flat[i], flat.get(i + 1).copied().flatten()) {
            (Some(a), Some(b)) if a == rows && b == cols => {
                out[i] = Some(grid.rows as i64);
                out[i + 1] = Some(grid.cols as i64);
                i += 2;
                continue;
            }
            (Some(a), _) if a == patches => out[i] = Some(grid.patches() as i64),
            (Some(a), _) if a == patches + 1 => out[i] = Some(grid.patches() as i64 + 1),
            _ => {}
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regrid_rewrites_the_pair_and_the_counts_only() {
        let (n, g) = (Grid::square(24), Grid { rows: 12, cols: 15 });
        assert_eq!(
            regrid(&[None, Some(24), Some(24), None], n, g),
            vec![None, Some(12), Some(15), None]
        );
        assert_eq!(
            regrid(&[Some(1), Some(577), Some(12), Some(64)], n, g),
            vec![Some(1), Some(181), Some(12), Some(64)]
        );
        assert_eq!(
            regrid(&[Some(-1), Some(576), Some(24)], n, g),
            vec![Some(-1), Some(180), Some(24)]
        );
    }

    #[test]
    fn box_bias_matches_transformers_at_the_corners() {
        // transformers: compute_box_bias(24, 24)[0] and [-1] (float32)
        let b = box_bias(Grid::square(24));
        assert_eq!(b.len(), 576 * 4);
        let logit = |v: f64| (v + 1e-4).ln() - (1.0 - v + 1e-4).ln();
        for (got, want) in b[..4].iter().zip([
            logit(1.0 / 24.0),
            logit(1.0 / 24.0),
            logit(1.0 / 24.0),
            logit(1.0 / 24.0),
        ]) {
            assert!((*got as f64 - want).abs() < 1e-4, "{got} vs {want}");
        }
        // the last patch's corner is (1, 1): log(1.0001) - log(1e-4)
        assert!((b[576 * 4 - 4] as f64 - logit(1.0)).abs() < 1e-3);
        // row-major: patch 1 is the next column, same row
        assert!(b[4] > b[0] && b[5] == b[1]);
        // a non-square grid: x by columns, y by rows
        let r = box_bias(Grid { rows: 2, cols: 3 });
        assert_eq!(r.len(), 6 * 4);
        assert!((r[2] as f64 - logit(1.0 / 3.0)).abs() < 1e-5);
        assert!((r[3] as f64 - logit(1.0 / 2.0)).abs() < 1e-5);
    }

    #[test]
    fn bicubic_keeps_a_same_size_table_and_linear_ramps() {
        let from = Grid::square(4);
        let table: Vec<f32> = (0..16 * 2).map(|v| v as f32 * 0.5 - 3.0).collect();
        assert_eq!(interpolate_bicubic(&table, 2, from, from), table);
        // a constant stays constant (the weights sum to 1), also when shrinking
        let ones = vec![1.5f32; 16];
        for v in interpolate_bicubic(&ones, 1, from, Grid { rows: 3, cols: 2 }) {
            assert!((v - 1.5).abs() < 1e-6);
        }
    }

    #[test]
    fn bicubic_matches_torch_on_a_small_grid() {
        // torch.nn.functional.interpolate(torch.arange(16.).reshape(1, 1, 4, 4) ** 2,
        //     size=(3, 3), mode="bicubic", align_corners=False)
        let table: Vec<f32> = (0..16).map(|v| (v * v) as f32).collect();
        let got = interpolate_bicubic(&table, 1, Grid::square(4), Grid::square(3));
        let want: [f64; 9] = [
            1.6817210, 5.1018486, 12.697905, 35.605331, 54.125, 76.820610, 136.34377, 169.96298,
            207.75819,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-4, "{got:?}");
        }
        // upsampling to a non-square grid (6 rows, 5 columns): the first row and the last value
        let got = interpolate_bicubic(&table, 1, Grid::square(4), Grid { rows: 6, cols: 5 });
        let want: [f64; 5] = [-1.4074521, -1.4227707, -0.30555585, 2.6776583, 5.7893400];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-4, "{got:?}");
        }
        assert!((got[29] - 235.83173).abs() < 1e-3);
    }
}
