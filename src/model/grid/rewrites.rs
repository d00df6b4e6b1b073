//! The rewrites [`adapt`](super::adapt) applies: the position table, the box bias and the
//! shapes written for the native grid.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use super::constants::*;
use super::{box_bias, interpolate_bicubic, Adapted, Grid};

/// Finds the `Add` of the vision embeddings and the position embeddings (a constant
/// `[native + 1, hidden]` table, possibly gathered by constant ids and dequantized) and feeds it
/// the interpolated `[1, grid + 1, hidden]` table instead.
pub(super) fn position_table(
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
pub(super) fn box_bias_input(
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

pub(super) fn check_bias(got: &[f32], want: &[f32], native: Grid) -> Result<()> {
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
pub(super) fn eval(
    index: &Index,
    opsets: &[pb::OperatorSetIdProto],
    name: &str,
) -> Result<Vec<f32>> {
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

/// One constant of a shape: (node, input slot, values).
type Piece = (usize, usize, Vec<i64>);

/// Rewrites the grid written into shape targets: a `Reshape`'s target and an `Expand`'s shape
/// (the class token's broadcast to the patches, which an export with a fixed image shape holds
/// as a constant). In each, a consecutive `rows, cols` pair, else an element equal to the patch
/// count or the token count, is replaced; see [`shape_sources`] for the forms a target takes.
pub(super) fn shape_targets(
    graph: &mut pb::GraphProto,
    native: Grid,
    grid: Grid,
    adapted: &mut Adapted,
) {
    // (node, input slot) -> new values, for every constant to replace
    let mut edits: BTreeMap<(usize, usize), Vec<i64>> = BTreeMap::new();
    let mut count = 0;
    {
        let index = Index::new(graph);
        for (r, n) in graph.node.iter().enumerate() {
            if !matches!(n.op_type.as_str(), "Reshape" | "Expand") || n.input.len() < 2 {
                continue;
            }
            let mut changed = false;
            for pieces in shape_sources(&index, r, 1) {
                let piece_edits = regrid_pieces(pieces, native, grid);
                changed |= !piece_edits.is_empty();
                edits.extend(piece_edits);
            }
            count += usize::from(changed);
        }
    }
    for ((node, slot), values) in edits {
        let name = fresh(graph, "promptcam.grid_shape");
        graph
            .initializer
            .push(i64_initializer(name.clone(), &values));
        graph.node[node].input[slot] = name;
    }
    if count > 0 {
        adapted.changes.push(format!(
            "{count} Reshape/Expand shape(s) from the {native} grid to {grid}"
        ));
    }
}

/// One shape's constant pieces regridded ([`regrid`] over the shape they make together): the
/// (node, input slot) and new values of each piece that changes.
fn regrid_pieces(
    pieces: Vec<Option<Piece>>,
    native: Grid,
    grid: Grid,
) -> Vec<((usize, usize), Vec<i64>)> {
    let flat: Vec<Option<i64>> = pieces
        .iter()
        .flat_map(|p| match p {
            Some((_, _, v)) => v.iter().map(|x| Some(*x)).collect::<Vec<_>>(),
            None => vec![None],
        })
        .collect();
    let new = regrid(&flat, native, grid);
    let mut changed = vec![];
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
                    changed.push(((node, slot), values));
                }
            }
            None => at += 1,
        }
    }
    changed
}

/// The shapes that input `slot` of node `node` is built from, each as its pieces in order (a
/// constant, or None where computed):
/// - a constant: one shape of one piece;
/// - a `Concat`: one shape, its inputs the pieces;
/// - a `Where` (how torch exports `expand` with a constant target: `Where(Equal(shape, -1s),
///   ones, shape)`): the shapes its two branches and the `Equal`'s inputs are, each on its own.
fn shape_sources(index: &Index, node: usize, slot: usize) -> Vec<Vec<Option<Piece>>> {
    let graph = index.graph;
    let constant = |n: usize, k: usize| {
        let name = graph.node[n].input.get(k)?;
        index
            .tensor(name)
            .and_then(|t| to_i64s(&t))
            .map(|v| (n, k, v))
    };
    let direct = |n: usize, k: usize| -> Option<Vec<Option<Piece>>> {
        if let Some(c) = constant(n, k) {
            return Some(vec![Some(c)]);
        }
        let &p = index.producer.get(graph.node[n].input.get(k)?.as_str())?;
        (graph.node[p].op_type == "Concat").then(|| {
            (0..graph.node[p].input.len())
                .map(|i| constant(p, i))
                .collect()
        })
    };
    if let Some(shape) = direct(node, slot) {
        return vec![shape];
    }
    let Some(&w) = graph.node[node]
        .input
        .get(slot)
        .and_then(|i| index.producer.get(i.as_str()))
    else {
        return vec![];
    };
    if graph.node[w].op_type != "Where" {
        return vec![];
    }
    let mut shapes: Vec<_> = [1, 2].iter().filter_map(|&k| direct(w, k)).collect();
    if let Some(&e) = graph.node[w]
        .input
        .first()
        .and_then(|i| index.producer.get(i.as_str()))
    {
        if graph.node[e].op_type == "Equal" {
            shapes.extend(
                [0, 1]
                    .iter()
                    .filter_map(|&k| constant(e, k).map(|c| vec![Some(c)])),
            );
        }
    }
    shapes
}

/// One shape target's elements (None where computed) with the native grid replaced.
pub(super) fn regrid(flat: &[Option<i64>], native: Grid, grid: Grid) -> Vec<Option<i64>> {
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
