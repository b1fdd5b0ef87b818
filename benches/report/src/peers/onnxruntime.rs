//! ONNX Runtime's CPU softmax (MLAS), the peer an inference engine already
//! has: a one-node `Softmax` model (opset 13, last axis), run through the C
//! API with an I/O binding onto preallocated input and output tensors, so a
//! call is the operator and the session's own overhead, nothing else.
//!
//! The library is loaded at run time (the `ort` crate's `load-dynamic`), so
//! the report builds and runs without it: from `ORT_DYLIB_PATH` when set,
//! else from the `onnxruntime` Python package (`pip install onnxruntime`
//! ships `libonnxruntime.so` in `onnxruntime/capi`).

use crate::workload::Shape;
use ort::environment::Environment;
use ort::memory::Allocator;
use ort::session::{IoBinding, Session};
use ort::value::Tensor;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Names the library to load, overriding the search (the `ort` crate's own name for it).
pub const DYLIB_VAR: &str = "ORT_DYLIB_PATH";

/// A loaded ONNX Runtime.
pub struct Runtime {
    env: Environment,
    pub version: String,
    pub path: PathBuf,
}

impl Runtime {
    /// Finds and loads the library; the error says what was tried.
    pub fn load() -> Result<Runtime, String> {
        let path = library()?;
        let builder = ort::init_from(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let env = builder
            .with_name("softmax-report")
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let version = version_of(&path);
        Ok(Runtime { env, version, path })
    }
}

/// The version in the library's file name (`libonnxruntime.so.1.32.0`), or
/// from the build string ONNX Runtime reports.
fn version_of(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let from_name = name
        .as_deref()
        .and_then(|n| n.split_once(".so."))
        .map(|(_, v)| v.to_string());
    from_name.unwrap_or_else(|| {
        let info = ort::info();
        let branch = info
            .split([',', ' '])
            .find_map(|f| f.strip_prefix("git-branch=rel-"));
        branch.unwrap_or("unknown").to_string()
    })
}

/// `ORT_DYLIB_PATH`, else the library inside the `onnxruntime` Python package.
fn library() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(DYLIB_VAR).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let script = "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))";
    let not_found = || {
        format!(
            "not found ({DYLIB_VAR} unset, no onnxruntime Python package: pip install onnxruntime)"
        )
    };
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .map_err(|_| not_found())?;
    if !out.status.success() {
        return Err(not_found());
    }
    let capi = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
    let entries = std::fs::read_dir(&capi).map_err(|_| not_found())?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with("libonnxruntime.so")
                || name == "libonnxruntime.dylib"
                || name == "onnxruntime.dll"
        })
        .collect();
    // The versioned file over the bare symlink, if both are there.
    found.sort();
    found
        .pop()
        .ok_or_else(|| format!("no libonnxruntime in {}", capi.display()))
}

/// One batch shape's session, with one bound (input, output) pair per buffer set.
pub struct OrtSoftmax {
    session: Session,
    sets: Vec<Bound>,
}

struct Bound {
    x: Tensor<f32>,
    y: Tensor<f32>,
    binding: IoBinding,
}

impl OrtSoftmax {
    /// A session of `threads` intra-op threads (1: the calling thread) over
    /// `sets` buffer sets, each input holding `logits`.
    pub fn new(
        rt: &Runtime,
        shape: Shape,
        threads: usize,
        logits: &[f32],
        sets: usize,
    ) -> ort::Result<Self> {
        let session = Session::builder(&rt.env)?
            .with_intra_threads(threads)?
            .with_inter_threads(1)?
            .commit_from_memory(&model())?;
        let dims = [shape.rows, shape.cols];
        let sets = (0..sets)
            .map(|_| {
                let x = Tensor::from_array((dims, logits.to_vec()))?;
                let mut y = Tensor::<f32>::new(&Allocator::default(), dims)?;
                y.try_extract_tensor_mut::<f32>()?.1.fill(f32::NAN);
                let mut binding = session.create_binding()?;
                binding.bind_input("x", &x)?;
                binding.bind_output("y", &mut y)?;
                Ok(Bound { x, y, binding })
            })
            .collect::<ort::Result<Vec<_>>>()?;
        Ok(OrtSoftmax { session, sets })
    }

    /// One softmax of the whole batch of set `set`.
    pub fn run(&mut self, set: usize) {
        let bound = &self.sets[set];
        let outputs = self.session.run_binding(&bound.binding);
        outputs.unwrap_or_else(|e| panic!("ONNX Runtime refused a valid call: {e}"));
    }

    /// Every set's input and output, for the other contestants to run on
    /// (taken once per sample: each take is a few C API calls).
    pub fn buffers(&mut self) -> Vec<(&[f32], &mut [f32])> {
        fn take(Bound { x, y, .. }: &mut Bound) -> (&[f32], &mut [f32]) {
            let x = x.try_extract_tensor::<f32>().expect("an f32 tensor").1;
            let y = y.try_extract_tensor_mut::<f32>().expect("an f32 tensor").1;
            (x, y)
        }
        self.sets.iter_mut().map(take).collect()
    }
}

// ------------------------------------------------------------ the model

/// The ONNX model `y = Softmax(x, axis = -1)`, x and y f32 [rows, cols]
/// (symbolic dimensions), opset 13, as protobuf bytes: a dozen fields of
/// onnx.proto's ModelProto, written here rather than through a protobuf
/// crate and onnx.proto's code generation.
pub fn model() -> Vec<u8> {
    const FLOAT: u64 = 1; // TensorProto.DataType.FLOAT
    const INT: u64 = 2; // AttributeProto.AttributeType.INT
    let tensor = |m: &mut Vec<u8>, field: u32, name: &str| {
        message(m, field, |v| {
            bytes(v, 1, name.as_bytes()); // ValueInfoProto.name
            message(v, 2, |t| {
                // TypeProto.tensor_type
                message(t, 1, |tt| {
                    varint_field(tt, 1, FLOAT); // elem_type
                    message(tt, 2, |shape| {
                        for dim in ["rows", "cols"] {
                            message(shape, 1, |d| bytes(d, 2, dim.as_bytes())); // dim_param
                        }
                    });
                });
            });
        });
    };
    let mut m = Vec::new();
    varint_field(&mut m, 1, 8); // ir_version
    bytes(&mut m, 2, b"softmax-report"); // producer_name
    message(&mut m, 7, |g| {
        // GraphProto.node
        message(g, 1, |n| {
            bytes(n, 1, b"x"); // input
            bytes(n, 2, b"y"); // output
            bytes(n, 4, b"Softmax"); // op_type
            message(n, 5, |a| {
                bytes(a, 1, b"axis");
                varint_field(a, 3, -1i64 as u64); // i
                varint_field(a, 20, INT); // type
            });
        });
        bytes(g, 2, b"softmax"); // GraphProto.name
        tensor(g, 11, "x"); // input
        tensor(g, 12, "y"); // output
    });
    message(&mut m, 8, |o| {
        // opset_import: the default domain, version 13
        bytes(o, 1, b"");
        varint_field(o, 2, 13);
    });
    m
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint field (wire type 0).
fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    varint(out, u64::from(field) << 3);
    varint(out, v);
}

/// A length-delimited field (wire type 2).
fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    varint(out, u64::from(field) << 3 | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A nested message, built by `f`.
fn message(out: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    f(&mut inner);
    bytes(out, field, &inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_little_endian_base_128() {
        let encode = |v: u64| {
            let mut out = Vec::new();
            varint(&mut out, v);
            out
        };
        assert_eq!(encode(0), [0]);
        assert_eq!(encode(127), [127]);
        assert_eq!(encode(300), [0xac, 0x02]);
        // An int64 -1 takes ten bytes, as protobuf writes negative int64s.
        assert_eq!(encode(-1i64 as u64).len(), 10);
    }

    #[test]
    fn the_model_starts_with_its_ir_version_and_names_its_operator() {
        let m = model();
        assert_eq!(&m[..2], [0x08, 8], "field 1 (ir_version), varint 8");
        let has = |needle: &[u8]| m.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"Softmax") && has(b"axis"));
        // The opset import is the last field: (field 8, length 4) "" 13.
        assert_eq!(&m[m.len() - 6..], [0x42, 4, 0x0a, 0, 0x10, 13]);
    }
}
