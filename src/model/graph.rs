//! Graph: reads one ONNX file, checks that tract can run it correctly, fixes its input shapes,
//! folds inputs that are constant for a prompt set (token ids) into the graph, and optimizes it.
//!
//! Quantized exports come in three formats. onnxruntime's dynamic int8 (`DynamicQuantizeLinear` +
//! `MatMulInteger` / `ConvInteger`) runs; it needs the importer to ignore the file's `value_info`,
//! whose symbolic dimensions tract cannot unify. Static QDQ exports load but tract computes wrong
//! attention probabilities from them, and QOperator exports use ops tract lacks: both are refused
//! with a message rather than run into garbage.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// How an ONNX file is quantized, from the ops it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuantFormat {
    Float,
    /// onnxruntime `quantize_dynamic`: weights int8, activations quantized at run time.
    DynamicInt8,
    /// `quantize_static` in QDQ format (QuantizeLinear / DequantizeLinear pairs on activations).
    StaticQdq,
    /// `quantize_static` in QOperator format (QLinear* ops); the op named is one tract lacks.
    QOperator(String),
}

pub fn classify_ops<'a>(ops: impl Iterator<Item = &'a str>) -> QuantFormat {
    let mut format = QuantFormat::Float;
    for op in ops {
        let qoperator = op.starts_with("QLinear")
            || matches!(
                op,
                "QGemm"
                    | "QAttention"
                    | "QEmbedLayerNormalization"
                    | "DynamicQuantizeMatMul"
                    | "MatMulIntegerToFloat"
            );
        if qoperator {
            return QuantFormat::QOperator(op.to_string());
        }
        if op == "QuantizeLinear" {
            format = QuantFormat::StaticQdq;
        } else if matches!(
            op,
            "DynamicQuantizeLinear" | "MatMulInteger" | "ConvInteger"
        ) && format == QuantFormat::Float
        {
            format = QuantFormat::DynamicInt8;
        }
    }
    format
}

/// How one input of a graph is fed.
pub enum Input {
    /// Fed at run time, with this type and shape.
    Fed(DatumType, Vec<usize>),
    /// Folded into the graph as a constant (e.g. the token ids of a prompt set).
    Const(Tensor),
}

/// One ONNX file, parsed once.
pub struct OnnxGraph {
    pub path: PathBuf,
    proto: pb::ModelProto,
    pub format: QuantFormat,
}

impl OnnxGraph {
    pub fn read(path: &Path) -> Result<OnnxGraph> {
        Self::read_with(path, |_| Ok(()))
    }

    /// Like [`OnnxGraph::read`], rewriting the parsed file with `rewrite` first (e.g. OWL-ViT's
    /// grid adaptation, `grid/`), before any load-time rewrite of our own.
    pub fn read_with(
        path: &Path,
        rewrite: impl FnOnce(&mut pb::ModelProto) -> Result<()>,
    ) -> Result<OnnxGraph> {
        let mut proto = Self::parse(path)?;
        rewrite(&mut proto)?;
        Self::from_proto(path, proto)
    }

    /// Parses an ONNX file as it is.
    pub fn parse(path: &Path) -> Result<pb::ModelProto> {
        if !path.is_file() {
            bail!(
                "unable to find model file {}; {}",
                path.display(),
                super::dir::FETCH_HINT
            );
        }
        tract_onnx::onnx()
            .proto_model_for_path(path)
            .with_context(|| {
                format!(
                    "unable to parse {} as ONNX; is the file complete? re-download it",
                    path.display()
                )
            })
    }

    fn from_proto(path: &Path, mut proto: pb::ModelProto) -> Result<OnnxGraph> {
        let graph = proto
            .graph
            .as_ref()
            .with_context(|| format!("unable to use {}: it holds no graph", path.display()))?;
        let format = classify_ops(graph.node.iter().map(|n| n.op_type.as_str()));
        match &format {
            QuantFormat::StaticQdq => bail!(
                "unable to use {}: it is a statically quantized (QDQ) export, which tract runs incorrectly \
                 (every attention probability comes out 1.0); use the fp32 file or the dynamic int8 \
                 *_quantized.onnx made by onnxruntime's quantize_dynamic (see models/README.md)",
                path.display()
            ),
            QuantFormat::QOperator(op) => bail!(
                "unable to use {}: it is a QOperator-format quantized export ({op}), whose ops tract does not \
                 implement; use the fp32 file or the dynamic int8 *_quantized.onnx made by onnxruntime's \
                 quantize_dynamic (see models/README.md)",
                path.display()
            ),
            QuantFormat::DynamicInt8 => {
                if let Some(g) = proto.graph.as_mut() {
                    let n = super::quant::decompose_dynamic_quantize(g);
                    tracing::debug!("{}: {n} DynamicQuantizeLinear decomposed", path.display());
                }
            }
            QuantFormat::Float => {}
        }
        Ok(OnnxGraph {
            path: path.to_path_buf(),
            proto,
            format,
        })
    }

    fn graph(&self) -> &pb::GraphProto {
        // checked in read()
        self.proto.graph.as_ref().expect("graph checked at read")
    }

    /// Names of the graph's real inputs (initializers listed as inputs excluded).
    pub fn input_names(&self) -> Vec<String> {
        let g = self.graph();
        let inits: std::collections::HashSet<&str> =
            g.initializer.iter().map(|i| i.name.as_str()).collect();
        g.input
            .iter()
            .map(|i| i.name.clone())
            .filter(|n| !inits.contains(n.as_str()))
            .collect()
    }

    pub fn output_names(&self) -> Vec<String> {
        self.graph().output.iter().map(|o| o.name.clone()).collect()
    }

    pub fn has_output(&self, name: &str) -> bool {
        self.graph().output.iter().any(|o| o.name == name)
    }

    /// The nodes and initializers, for graph walks (e.g. reading CLIP's logit scale).
    pub fn proto_graph(&self) -> &pb::GraphProto {
        self.graph()
    }

    /// Builds an optimized tract model: every input of the file must be given in `inputs`
    /// (fed or constant), and only `outputs` are kept (so unused towers are pruned). A model
    /// bound for the GPU comes back decluttered instead, and [`runnable`] finishes it there.
    pub fn optimized(&self, inputs: &[(&str, Input)], outputs: &[&str]) -> Result<TypedModel> {
        self.check_io(inputs, outputs)?;
        build(
            &self.path,
            &self.format,
            std::borrow::Cow::Borrowed(&self.proto),
            inputs,
            outputs,
        )
    }

    /// Like [`OnnxGraph::optimized`] for the last model made from this file: the parsed file is
    /// freed as soon as tract has imported it, before optimization, so the weights are not held
    /// twice at the peak of loading.
    pub fn into_optimized(self, inputs: &[(&str, Input)], outputs: &[&str]) -> Result<TypedModel> {
        self.check_io(inputs, outputs)?;
        build(
            &self.path,
            &self.format,
            std::borrow::Cow::Owned(self.proto),
            inputs,
            outputs,
        )
    }

    fn check_io(&self, inputs: &[(&str, Input)], outputs: &[&str]) -> Result<()> {
        let file = self.path.display();
        let names = self.input_names();
        for (name, _) in inputs {
            if !names.iter().any(|n| n == name) {
                bail!(
                    "unable to use {file}: it has no input `{name}` (its inputs: {}); is it the right export for this model?",
                    names.join(", ")
                );
            }
        }
        for n in &names {
            if !inputs.iter().any(|(name, _)| name == n) {
                bail!("unable to use {file}: it has an input `{n}` that promptcam does not know how to feed; is it the right export for this model?");
            }
        }
        for o in outputs {
            if !self.has_output(o) {
                bail!(
                    "unable to use {file}: it has no output `{o}` (its outputs: {}); is it the right export for this model?",
                    self.output_names().join(", ")
                );
            }
        }
        Ok(())
    }
}

fn build(
    path: &Path,
    format: &QuantFormat,
    proto: std::borrow::Cow<'_, pb::ModelProto>,
    inputs: &[(&str, Input)],
    outputs: &[&str],
) -> Result<TypedModel> {
    let file = path.display();
    let dir = path.parent().and_then(Path::to_str);
    let t0 = std::time::Instant::now();
    let mut onnx = tract_onnx::onnx().with_ignore_value_info(*format == QuantFormat::DynamicInt8);
    super::quantize::register(&mut onnx.op_register);
    let mut model = onnx
        .parse(&proto, dir)
        .with_context(|| format!("unable to import {file} into tract"))?
        .model;
    drop(proto);
    let order: Vec<String> = model
        .input_outlets()?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    for (ix, name) in order.iter().enumerate() {
        let spec = inputs.iter().find(|(n, _)| n == name).map(|(_, s)| s);
        let fact = match spec {
            Some(Input::Fed(dt, shape)) => InferenceFact::dt_shape(*dt, shape.clone()),
            Some(Input::Const(t)) => InferenceFact::dt_shape(t.datum_type(), t.shape().to_vec()),
            None => bail!("unable to use {file}: input `{name}` has no shape given"),
        };
        model.set_input_fact(ix, fact)?;
    }
    model.select_outputs_by_name(outputs)?;
    let t_import = t0.elapsed();
    let mut typed = model
        .into_typed()
        .with_context(|| format!("unable to analyse {file} with tract"))?;
    let t_typed = t0.elapsed();
    // fold the constant inputs into the graph
    let mut kept = vec![];
    for (ix, name) in order.iter().enumerate() {
        let outlet = typed.input_outlets()?[ix];
        match inputs.iter().find(|(n, _)| n == name).map(|(_, s)| s) {
            Some(Input::Const(t)) => {
                let mut patch = TypedModelPatch::default();
                let wire = patch.add_const(format!("{name}.folded"), t.clone())?;
                patch.shunt_outside(&typed, outlet, wire)?;
                patch.apply(&mut typed)?;
            }
            _ => kept.push(outlet),
        }
    }
    // the fed inputs, in the caller's order
    let fed: Vec<&str> = inputs
        .iter()
        .filter(|(_, s)| matches!(s, Input::Fed(..)))
        .map(|(n, _)| *n)
        .collect();
    let by_name: Vec<OutletId> = fed
        .iter()
        .map(|n| {
            kept.iter()
                .copied()
                .find(|o| typed.node(o.node).name == *n)
                .context("input lost while folding")
        })
        .collect::<Result<_>>()?;
    typed.set_input_outlets(&by_name)?;
    // a model with a fed input, built while the GPU is selected, stays decluttered for tract's
    // CUDA transform (`device::plan`); int8 and one-shot constant models run on the CPU
    if *format != QuantFormat::DynamicInt8
        && !by_name.is_empty()
        && super::device::current() == super::device::Device::Cuda
    {
        let mut decluttered = typed
            .into_decluttered()
            .with_context(|| format!("unable to simplify {file} with tract"))?;
        super::device::mark_for_gpu(&mut decluttered, &file.to_string());
        return Ok(decluttered);
    }
    let mut typed = typed
        .into_decluttered()
        .with_context(|| format!("unable to simplify {file} with tract"))?;
    let t_declutter = t0.elapsed();
    // PROMPTCAM_HEAD_SPLIT=0 keeps tract's own attention: for benchmarks (BENCHMARKS.md)
    if std::env::var("PROMPTCAM_HEAD_SPLIT").as_deref() != Ok("0") {
        // PROMPTCAM_ATTENTION=0 runs each head through tract's plan, not in one pass
        let one_pass = std::env::var("PROMPTCAM_ATTENTION").as_deref() != Ok("0");
        let n = super::heads::split(&mut typed, super::heads::SPLIT_MIN, one_pass)
            .with_context(|| format!("unable to split the attention heads of {file}"))?;
        tracing::debug!("{file}: {n} attention chains split by heads");
    }
    let mut optimized = typed
        .into_optimized()
        .with_context(|| format!("unable to optimize {file} with tract"))?;
    let t_opt = t0.elapsed();
    // PROMPTCAM_GELU_FUSE=0 keeps tract's three ops: for benchmarks (BENCHMARKS.md)
    if std::env::var("PROMPTCAM_GELU_FUSE").as_deref() != Ok("0") {
        let n = super::gelu::fuse(&mut optimized)
            .with_context(|| format!("unable to fuse the QuickGELUs of {file}"))?;
        tracing::debug!("{file}: {n} QuickGELUs fused");
    }
    // PROMPTCAM_NORM_FUSE=0 keeps tract's four ops: for benchmarks (BENCHMARKS.md)
    if std::env::var("PROMPTCAM_NORM_FUSE").as_deref() != Ok("0") {
        let n = super::norm::fuse(&mut optimized)
            .with_context(|| format!("unable to fuse the layer norms of {file}"))?;
        tracing::debug!("{file}: {n} layer norms fused");
    }
    if *format == QuantFormat::DynamicInt8 {
        let n = super::quant::fold_constants(&mut optimized)
            .with_context(|| format!("unable to fold the constants of {file}"))?;
        tracing::debug!("{file}: {n} constant folds");
        // PROMPTCAM_INT8_FUSE=0 keeps tract's own passes: for benchmarks (BENCHMARKS.md)
        if std::env::var("PROMPTCAM_INT8_FUSE").as_deref() != Ok("0") {
            let n = super::fused::fuse(&mut optimized)
                .with_context(|| format!("unable to fuse the int8 passes of {file}"))?;
            tracing::debug!("{file}: {n} int8 passes fused");
        }
    }
    tracing::debug!(
        "{file}: import {:?}, analyse {:?}, declutter {:?}, optimize {:?}, int8 passes {:?}",
        t_import,
        t_typed - t_import,
        t_declutter - t_typed,
        t_opt - t_declutter,
        t0.elapsed() - t_opt
    );
    Ok(optimized)
}

/// Applies the patch `patch_at` makes at each node of `model` (taken in evaluation order) where
/// it finds its pattern, then drops the nodes left unused; returns how many it applied. The
/// patterns must not overlap: a patch leaves the other matches' nodes as they were.
pub(super) fn rewrite_each(
    model: &mut TypedModel,
    mut patch_at: impl FnMut(&TypedModel, usize) -> TractResult<Option<TypedModelPatch>>,
) -> TractResult<usize> {
    let mut count = 0;
    for id in model.eval_order()? {
        if let Some(patch) = patch_at(model, id)? {
            patch.apply(model)?;
            count += 1;
        }
    }
    if count > 0 {
        model.compact()?;
    }
    Ok(count)
}

/// An optimized model ready to run, with the output order of the `optimized` call.
pub type Runnable = Arc<TypedRunnableModel>;

/// Plans a model of [`OnnxGraph::optimized`] on the device it was built for (`device::plan`).
pub fn runnable(model: TypedModel) -> Result<Runnable> {
    super::device::plan(model)
}

/// Runs a model once on the current executor's threads (`threads::in_pool`): how every
/// model's frame and text runs go.
pub fn run(model: &Runnable, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
    crate::threads::in_pool(|| model.run(inputs))
}

/// One op type's share of a profiled run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OpTime {
    pub op: String,
    pub nodes: usize,
    pub ms: f64,
}

/// Runs `model` once, timing every node, and sums the times by op type (slowest first): where
/// a model loses time, for `promptcam bench --profile`. On the executor's threads, like [`run`].
pub fn profile(model: &Runnable, inputs: TVec<TValue>) -> Result<Vec<OpTime>> {
    use std::collections::HashMap;
    let mut by_op: HashMap<String, (usize, std::time::Duration)> = HashMap::new();
    crate::threads::in_pool(|| -> Result<()> {
        let mut state = tract_onnx::tract_core::plan::SimpleState::new(model)?;
        state
            .run_plan_with_eval(inputs, |ctx, op_state, node, input| {
                let t = std::time::Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, input);
                let e = by_op.entry(node.op().name().to_string()).or_default();
                e.0 += 1;
                e.1 += t.elapsed();
                out
            })
            .context("unable to profile the model")?;
        Ok(())
    })?;
    let mut v: Vec<OpTime> = by_op
        .into_iter()
        .map(|(op, (nodes, d))| OpTime {
            op,
            nodes,
            ms: d.as_secs_f64() * 1000.0,
        })
        .collect();
    v.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(v)
}

/// Each op type's median time over several profiled runs, slowest first.
pub fn median_profile(runs: &[Vec<OpTime>]) -> Vec<OpTime> {
    use std::collections::BTreeMap;
    let mut by_op: BTreeMap<&str, (usize, Vec<f64>)> = BTreeMap::new();
    for run in runs {
        for o in run {
            let e = by_op.entry(&o.op).or_default();
            e.0 = o.nodes;
            e.1.push(o.ms);
        }
    }
    let mut v: Vec<OpTime> = by_op
        .into_iter()
        .map(|(op, (nodes, mut ms))| {
            ms.sort_by(f64::total_cmp);
            OpTime {
                op: op.to_string(),
                nodes,
                ms: ms[ms.len() / 2],
            }
        })
        .collect();
    v.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    v
}

/// How many matrix products of a model run on one tract kernel.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KernelUse {
    /// tract-linalg's kernel name, e.g. `avx2_mmm_i32_8x8` or `fma_mmm_f32_16x6`; a model
    /// whose product picks one of two kernels by shape at run time lists both.
    pub kernel: String,
    /// The kernel's family: its name up to `_mmm` (`avx2`, `fma`, `arm64simd`, `generic`, ...).
    pub family: String,
    pub nodes: usize,
}

/// The kernels tract chose for the matrix products (`OptMatMul`) of an optimized model, most
/// used first: what `promptcam bench` prints, since the same file runs other kernels on other
/// CPUs (issue 21: int8 on AVX2 without VNNI fell to a path 100x slower than fp32).
pub fn kernels(model: &TypedModel) -> Vec<KernelUse> {
    use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;
    fn count(model: &TypedModel, by_name: &mut std::collections::BTreeMap<String, usize>) {
        for node in model.nodes() {
            if let Some(op) = node.op_as::<OptMatMul>() {
                for mmm in &op.mmm {
                    *by_name.entry(mmm.name().to_string()).or_default() += 1;
                }
            }
            // an attention chain's products run in a model of its own, or in one pass
            // (`model::attention`: its two products per chain are promptcam's loops)
            if let Some(op) = node.op_as::<super::heads::HeadSplit>() {
                if op.one_pass() {
                    *by_name
                        .entry(super::attention::KERNEL.to_string())
                        .or_default() += 2;
                } else {
                    count(op.model(), by_name);
                }
            }
        }
    }
    let mut by_name = Default::default();
    count(model, &mut by_name);
    let mut v: Vec<KernelUse> = by_name
        .into_iter()
        .map(|(kernel, nodes)| KernelUse {
            family: kernel_family(&kernel).to_string(),
            kernel,
            nodes,
        })
        .collect();
    v.sort_by(|a, b| b.nodes.cmp(&a.nodes).then(a.kernel.cmp(&b.kernel)));
    v
}

/// `avx2_mmm_i32_8x8` -> `avx2`; a name without `_mmm` is its own family.
pub fn kernel_family(kernel: &str) -> &str {
    kernel.split("_mmm").next().unwrap_or(kernel)
}

/// Copies an output tensor into a flat `Vec<f32>` and its shape.
pub fn f32_output(v: &TValue) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = v.cast_to::<f32>()?;
    Ok((
        t.shape().to_vec(),
        t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart_by_their_ops() {
        assert_eq!(
            classify_ops(["MatMul", "Add"].into_iter()),
            QuantFormat::Float
        );
        assert_eq!(
            classify_ops(
                ["DynamicQuantizeLinear", "MatMulInteger", "DequantizeLinear"].into_iter()
            ),
            QuantFormat::DynamicInt8
        );
        assert_eq!(
            classify_ops(["QuantizeLinear", "DequantizeLinear", "MatMul"].into_iter()),
            QuantFormat::StaticQdq
        );
        assert_eq!(
            classify_ops(["QuantizeLinear", "QLinearMatMul"].into_iter()),
            QuantFormat::QOperator("QLinearMatMul".into())
        );
    }
}
