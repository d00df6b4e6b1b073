//! Constants: the graph's tensors resolved to numbers ([`Index`]: which node produces what,
//! initializers, `Constant` outputs and the few ops an export puts between a table and its
//! use), and the new initializers the rewrites add.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;
use tract_onnx::prelude::*;

/// A constant the graph holds, resolved to numbers.
#[derive(Clone, Debug)]
pub(super) struct Value {
    pub(super) shape: Vec<usize>,
    pub(super) f32s: Vec<f32>,
}

pub(super) fn load(t: &pb::TensorProto) -> Option<Tensor> {
    tract_onnx::tensor::load_tensor(&tract_onnx::data_resolver::FopenDataResolver, t, None).ok()
}

pub(super) fn to_value(t: &Tensor) -> Option<Value> {
    let f = t.cast_to::<f32>().ok()?;
    let v = f.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
    Some(Value {
        shape: t.shape().to_vec(),
        f32s: v,
    })
}

pub(super) fn to_i64s(t: &Tensor) -> Option<Vec<i64>> {
    let f = t.cast_to::<i64>().ok()?;
    Some(f.try_as_plain_ram().ok()?.as_slice::<i64>().ok()?.to_vec())
}

pub(super) struct Index<'a> {
    pub(super) graph: &'a pb::GraphProto,
    pub(super) producer: HashMap<&'a str, usize>,
    pub(super) init: HashMap<&'a str, usize>,
}

impl<'a> Index<'a> {
    pub(super) fn new(graph: &'a pb::GraphProto) -> Index<'a> {
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

    pub(super) fn node(&self, name: &str) -> Option<&'a pb::NodeProto> {
        self.producer.get(name).map(|ix| &self.graph.node[*ix])
    }

    /// The tensor named `name` when it is an initializer or a `Constant` output.
    pub(super) fn tensor(&self, name: &str) -> Option<Tensor> {
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
    pub(super) fn resolve(&self, name: &str, depth: usize) -> Option<Value> {
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
    pub(super) fn data_dependent(&self, name: &str, memo: &mut HashMap<String, bool>) -> bool {
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
    pub(super) fn ancestors(&self, name: &str) -> (Vec<usize>, HashSet<&'a str>) {
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

pub(super) fn attr<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub(super) fn f32_initializer(name: String, shape: &[usize], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims: shape.iter().map(|d| *d as i64).collect(),
        data_type: 1,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub(super) fn i64_initializer(name: String, data: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims: vec![data.len() as i64],
        data_type: 7,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A fresh tensor name.
pub(super) fn fresh(graph: &pb::GraphProto, base: &str) -> String {
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
