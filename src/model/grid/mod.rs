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
//!   `[batch, 24, 24, hidden]`, any target holding the native patch or token count, and the
//!   class token's `Expand` to the patches, a constant in exports with a fixed image shape.
//!
//! Whatever else in the graph depends on the grid follows from the input shape through tract's
//! shape inference; a grid-sized constant this module does not know about makes that inference
//! fail, and the load fails with the size named rather than running a wrong graph.

use anyhow::{Context, Result};
use tract_onnx::pb;

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
    shape_targets(graph, native, grid, &mut adapted);
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

mod constants;
mod rewrites;

use rewrites::{box_bias_input, position_table, shape_targets};

#[cfg(test)]
mod tests;
