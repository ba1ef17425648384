//! GGUF v3 writer: metadata and tensors into bytes that llama.cpp and
//! [`crate::io::gguf::Gguf`] read.
//!
//! Layout (<https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>):
//! `"GGUF" u32:3 u64:n_tensors u64:n_kv`, the key/value pairs (`string key,
//! u32 type, value`), the tensor infos (`string name, u32 n_dims, u64
//! dims[n_dims]` in ggml order, `u32 type, u64 offset`), zero padding to the
//! alignment (32, `general.alignment`'s default, never written), then each
//! tensor's data padded to 32. Each offset is relative to the data's start
//! and is the sum of the padded sizes before it, as llama.cpp's loader
//! requires.

use crate::error::{Error, Result};
use crate::io::dequant::GgmlType;
use crate::io::gguf::MetaValue;

/// Alignment of the data section and of every tensor in it.
pub const ALIGNMENT: usize = 32;

/// llama.cpp keeps tensor names in a 64-byte buffer with its terminating zero.
const MAX_NAME: usize = 63;

/// One tensor to write.
struct TensorOut {
    name: String,
    /// ggml order: `dims[0]` is the contiguous one.
    dims: Vec<u64>,
    ty: GgmlType,
    /// Its bytes' count.
    len: usize,
    /// Its bytes; empty for one [declared](GgufWriter::declare), whose
    /// data the caller streams after [`GgufWriter::header`].
    data: Vec<u8>,
}

/// A GGUF file being put together in memory.
#[derive(Default)]
pub struct GgufWriter {
    file: String,
    kv: Vec<(String, MetaValue)>,
    tensors: Vec<TensorOut>,
}

impl GgufWriter {
    /// A writer for the file named `file` (used in error messages).
    pub fn new(file: &str) -> Self {
        Self {
            file: file.to_string(),
            ..Self::default()
        }
    }

    /// Adds one metadata pair; a key given twice is an error.
    pub fn meta(&mut self, key: &str, value: MetaValue) -> Result<()> {
        if self.kv.iter().any(|(k, _)| k == key) {
            return Err(Error::format(
                &self.file,
                format!("key `{key}` written twice"),
            ));
        }
        if let MetaValue::Array(items) = &value {
            check_array(key, items).map_err(|e| Error::format(&self.file, e))?;
        }
        self.kv.push((key.to_string(), value));
        Ok(())
    }

    /// Adds a tensor whose `dims` are in ggml order and whose `data` holds
    /// exactly those elements of type `ty`.
    pub fn tensor(
        &mut self,
        name: &str,
        dims: &[usize],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<()> {
        let len = self.check_tensor(name, dims, ty)?;
        if data.len() != len {
            let n: usize = dims.iter().product();
            return Err(Error::format(
                &self.file,
                format!(
                    "tensor `{name}`: {n} {ty:?} elements need {len} bytes, got {}",
                    data.len()
                ),
            ));
        }
        self.push(name, dims, ty, len, data);
        Ok(())
    }

    /// Adds a tensor like [`tensor`](Self::tensor) whose data is not held:
    /// the caller writes [`header`](Self::header), then each tensor's
    /// `len` bytes in order, each followed by [`padding`]`(len)` zeros.
    /// Returns `len`.
    pub fn declare(&mut self, name: &str, dims: &[usize], ty: GgmlType) -> Result<usize> {
        let len = self.check_tensor(name, dims, ty)?;
        self.push(name, dims, ty, len, Vec::new());
        Ok(len)
    }

    fn push(&mut self, name: &str, dims: &[usize], ty: GgmlType, len: usize, data: Vec<u8>) {
        self.tensors.push(TensorOut {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as u64).collect(),
            ty,
            len,
            data,
        });
    }

    /// Checks a tensor's name and shape; returns its bytes' count.
    fn check_tensor(&self, name: &str, dims: &[usize], ty: GgmlType) -> Result<usize> {
        let fail = |why: String| Err(Error::format(&self.file, format!("tensor `{name}`: {why}")));
        if name.len() > MAX_NAME {
            return fail(format!("the name is longer than {MAX_NAME} bytes"));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return fail("written twice".into());
        }
        if dims.is_empty() || dims.len() > 4 {
            return fail(format!("{} dimensions (1 to 4 allowed)", dims.len()));
        }
        if !dims[0].is_multiple_of(ty.block_len()) {
            return fail(format!(
                "rows of {} are not whole {ty:?} blocks of {}",
                dims[0],
                ty.block_len()
            ));
        }
        let n: usize = dims.iter().product();
        Ok(n / ty.block_len() * ty.block_bytes())
    }

    /// The whole file (every tensor given with its data).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header();
        for t in &self.tensors {
            debug_assert_eq!(t.data.len(), t.len, "tensor `{}` was only declared", t.name);
            out.extend_from_slice(&t.data);
            pad(&mut out);
        }
        out
    }

    /// Everything before the first tensor's data: the metadata, the
    /// tensor infos and the padding to the data's start.
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (key, value) in &self.kv {
            string(&mut out, key);
            out.extend_from_slice(&type_id(value).to_le_bytes());
            write_value(&mut out, value);
        }
        // u64: a file can pass 4 GiB where usize is 32 bits (wasm32).
        let mut offset = 0u64;
        for t in &self.tensors {
            string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += t.len.next_multiple_of(ALIGNMENT) as u64;
        }
        pad(&mut out);
        out
    }
}

/// The zeros that follow a tensor's `len` bytes.
pub fn padding(len: usize) -> usize {
    len.next_multiple_of(ALIGNMENT) - len
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// GGUF's value type ids (`enum gguf_type`).
fn type_id(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::Str(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

/// An array's items must share one type, and must not be arrays (llama.cpp
/// reads no nested arrays).
fn check_array(key: &str, items: &[MetaValue]) -> std::result::Result<(), String> {
    let Some(first) = items.first() else {
        return Ok(());
    };
    if matches!(first, MetaValue::Array(_)) {
        return Err(format!("key `{key}`: arrays of arrays are not written"));
    }
    if let Some(i) = items.iter().position(|v| type_id(v) != type_id(first)) {
        return Err(format!("key `{key}`: item {i} differs in type from item 0"));
    }
    Ok(())
}

fn write_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::Str(s) => string(out, s),
        MetaValue::Array(items) => {
            // An empty array is written as one of u8 items.
            let item_type = items.first().map_or(0, type_id);
            out.extend_from_slice(&item_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::gguf::Gguf;

    #[test]
    fn what_it_writes_reads_back_with_every_value_type_and_aligned_tensors() {
        let mut w = GgufWriter::new("t.gguf");
        let values = [
            MetaValue::U8(7),
            MetaValue::I8(-7),
            MetaValue::U16(700),
            MetaValue::I16(-700),
            MetaValue::U32(70_000),
            MetaValue::I32(-70_000),
            MetaValue::F32(0.25),
            MetaValue::Bool(true),
            MetaValue::Str("héllo".into()),
            MetaValue::Array(vec![
                MetaValue::Str("a".into()),
                MetaValue::Str("bc".into()),
            ]),
            MetaValue::Array(vec![]),
            MetaValue::U64(1 << 40),
            MetaValue::I64(-(1 << 40)),
            MetaValue::F64(-0.125),
        ];
        for (i, v) in values.iter().enumerate() {
            w.meta(&format!("k.{i}"), v.clone()).expect("meta");
        }
        let a: Vec<u8> = (0..3 * 5).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let b = vec![1u8; 34 * 2];
        w.tensor("a", &[5, 3], GgmlType::F32, a.clone()).expect("a");
        w.tensor("b", &[32, 2], GgmlType::Q8_0, b.clone())
            .expect("b");
        let bytes = w.to_bytes();
        let g = Gguf::parse("t.gguf", &bytes).expect("parses");
        assert_eq!(g.version, 3);
        for (i, v) in values.iter().enumerate() {
            assert_eq!(g.meta(&format!("k.{i}")).expect("key"), v, "k.{i}");
        }
        let ta = g.tensor("a").expect("a");
        assert_eq!((ta.dims.clone(), ta.start % ALIGNMENT), (vec![5, 3], 0));
        assert_eq!(g.tensor_bytes(ta), a.as_slice());
        let tb = g.tensor("b").expect("b");
        assert_eq!((tb.ggml_type, tb.start % ALIGNMENT), (GgmlType::Q8_0, 0));
        assert_eq!(g.tensor_bytes(tb), b.as_slice());
        assert_eq!(bytes.len() % ALIGNMENT, 0);
    }

    #[test]
    fn bad_tensors_and_keys_are_refused_with_their_names() {
        let mut w = GgufWriter::new("t.gguf");
        let err = |r: Result<()>| r.expect_err("refused").to_string();
        w.meta("x", MetaValue::U8(1)).expect("first");
        assert!(err(w.meta("x", MetaValue::U8(2))).contains("`x` written twice"));
        let mixed = MetaValue::Array(vec![MetaValue::U8(1), MetaValue::Str("s".into())]);
        assert!(err(w.meta("m", mixed)).contains("item 1 differs"));
        assert!(err(w.tensor("t", &[4], GgmlType::F32, vec![0; 15])).contains("need 16 bytes"));
        assert!(
            err(w.tensor("q", &[16], GgmlType::Q8_0, vec![0; 17])).contains("whole Q8_0 blocks")
        );
        let long = "n".repeat(64);
        assert!(err(w.tensor(&long, &[1], GgmlType::F32, vec![0; 4])).contains("longer than 63"));
        w.tensor("t", &[1], GgmlType::F32, vec![0; 4])
            .expect("first");
        assert!(err(w.tensor("t", &[1], GgmlType::F32, vec![0; 4])).contains("written twice"));
    }
}
