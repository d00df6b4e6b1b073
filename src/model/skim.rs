//! Skim: reads the structure of an ONNX file — its nodes, inputs, outputs and small
//! initializers — without loading its weights. CLIP's learned logit scale is one scalar in a
//! 150-600 MB `model.onnx`; parsing the whole file for it doubled the peak memory of loading a
//! model on a 1 GB device.
//!
//! The protobuf is walked field by field: every field of the graph is copied except initializers
//! larger than [`SMALL`] bytes, which are skipped with a seek; the copy is then decoded as an
//! ordinary `GraphProto`.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use prost::Message;
use tract_onnx::pb;

/// Initializers up to this size (their whole protobuf record) are kept.
pub const SMALL: u64 = 4096;

/// `ModelProto.graph` and `GraphProto.initializer` field numbers.
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;

/// The graph of the ONNX file at `path` with only its small initializers.
pub fn graph_skeleton(path: &Path) -> Result<pb::GraphProto> {
    let file = File::open(path).with_context(|| format!("unable to open {}", path.display()))?;
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
    };
    let mut skeleton = vec![];
    let mut found = false;
    while let Some((field, wire)) = r.tag()? {
        if field == MODEL_GRAPH && wire == 2 {
            let len = r.varint()?;
            copy_graph(&mut r, len, &mut skeleton)?;
            found = true;
        } else {
            r.skip(wire)?;
        }
    }
    if !found {
        bail!(
            "unable to read {}: it holds no graph; is the file complete? re-download it",
            path.display()
        );
    }
    pb::GraphProto::decode(skeleton.as_slice()).with_context(|| {
        format!(
            "unable to parse the graph of {}; is the file complete? re-download it",
            path.display()
        )
    })
}

/// Copies the `len` bytes of a GraphProto into `out`, leaving out large initializers.
fn copy_graph(r: &mut Reader, len: u64, out: &mut Vec<u8>) -> Result<()> {
    let mut left = len;
    while left > 0 {
        let start = out.len();
        let (field, wire) = r.tag()?.context("the graph ends early")?;
        let mut used = encode_varint(field << 3 | wire, out);
        match wire {
            0 => used += encode_varint(r.varint()?, out),
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                used += n;
                r.copy(n, out)?;
            }
            2 => {
                let n = r.varint()?;
                used += encode_varint(n, out) + n;
                if field == GRAPH_INITIALIZER && n > SMALL {
                    out.truncate(start);
                    r.seek(n)?;
                } else {
                    r.copy(n, out)?;
                }
            }
            w => bail!("unsupported protobuf wire type {w}"),
        }
        left = left
            .checked_sub(used)
            .context("a graph field runs past the graph")?;
    }
    Ok(())
}

struct Reader {
    inner: BufReader<File>,
}

impl Reader {
    /// The next field's number and wire type, or `None` at the end of the file.
    fn tag(&mut self) -> Result<Option<(u64, u64)>> {
        let mut first = [0u8; 1];
        match self.inner.read_exact(&mut first) {
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            r => r?,
        }
        let v = self.varint_from(first[0])?;
        Ok(Some((v >> 3, v & 7)))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut b = [0u8; 1];
        self.inner.read_exact(&mut b)?;
        self.varint_from(b[0])
    }

    fn varint_from(&mut self, first: u8) -> Result<u64> {
        let (mut v, mut shift, mut b) = ((first & 0x7f) as u64, 7, first);
        while b & 0x80 != 0 {
            if shift > 63 {
                bail!("malformed protobuf varint");
            }
            let mut next = [0u8; 1];
            self.inner.read_exact(&mut next)?;
            b = next[0];
            v |= ((b & 0x7f) as u64) << shift;
            shift += 7;
        }
        Ok(v)
    }

    fn copy(&mut self, n: u64, out: &mut Vec<u8>) -> Result<()> {
        let got = self.inner.by_ref().take(n).read_to_end(out)?;
        if got as u64 != n {
            bail!("the file ends inside a field");
        }
        Ok(())
    }

    fn seek(&mut self, n: u64) -> Result<()> {
        self.inner.seek_relative(i64::try_from(n)?)?;
        Ok(())
    }

    fn skip(&mut self, wire: u64) -> Result<()> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.seek(8),
            5 => self.seek(4),
            2 => {
                let n = self.varint()?;
                self.seek(n)
            }
            w => bail!("unsupported protobuf wire type {w}"),
        }
    }
}

fn encode_varint(mut v: u64, out: &mut Vec<u8>) -> u64 {
    let mut n = 1;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
        n += 1;
    }
    out.push(v as u8);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeleton_keeps_structure_and_small_initializers_only() {
        let big = pb::TensorProto {
            name: "w".into(),
            dims: vec![2048],
            data_type: 1,
            raw_data: vec![7u8; 8192],
            ..Default::default()
        };
        let scalar = pb::TensorProto {
            name: "logit_scale".into(),
            dims: vec![],
            data_type: 1,
            raw_data: 4.6052f32.to_le_bytes().to_vec(),
            ..Default::default()
        };
        let node = pb::NodeProto {
            op_type: "Exp".into(),
            input: vec!["logit_scale".into()],
            output: vec!["s".into()],
            ..Default::default()
        };
        let graph = pb::GraphProto {
            name: "g".into(),
            node: vec![node.clone()],
            initializer: vec![big, scalar.clone()],
            ..Default::default()
        };
        let model = pb::ModelProto {
            ir_version: 8,
            producer_name: "test".into(),
            graph: Some(graph),
            ..Default::default()
        };
        let dir = std::env::temp_dir().join(format!("promptcam-skim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.onnx");
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        let g = graph_skeleton(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(g.name, "g");
        assert_eq!(g.node, vec![node]);
        assert_eq!(
            g.initializer,
            vec![scalar],
            "the 8 KB weight is skipped, the scalar kept"
        );
    }

    #[test]
    fn a_file_without_graph_is_refused() {
        let dir = std::env::temp_dir().join(format!("promptcam-skim-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.onnx");
        std::fs::write(
            &path,
            pb::ModelProto {
                ir_version: 8,
                ..Default::default()
            }
            .encode_to_vec(),
        )
        .unwrap();
        let e = format!("{:#}", graph_skeleton(&path).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("holds no graph"), "{e}");
    }
}
