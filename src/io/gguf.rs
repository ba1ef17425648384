//! GGUF v2/v3 reader: header, metadata and tensor directory, over bytes.
//!
//! Layout (<https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>):
//! `"GGUF" u32:version u64:n_tensors u64:n_kv`, then `n_kv` key/value pairs,
//! then `n_tensors` tensor infos (`name, u32:n_dims, u64 dims[n_dims], u32:type,
//! u64:offset`), then the tensor data, which starts at the next multiple of
//! `general.alignment` (default 32). Dims are in ggml order: `dims[0]` is the
//! contiguous one, so a `[d0, d1]` GGUF tensor is a PyTorch `[d1, d0]` matrix.
//!
//! Every length read from the file is checked against the bytes that remain
//! before anything is allocated, so a truncated or lying file is an error,
//! never a panic or an out-of-memory.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::io::dequant::{GgmlType, dequantize};

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string slice, when it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool, when it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array, when it is one.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lives in the file and what it holds.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// GGUF tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order (`dims[0]` contiguous).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub start: usize,
    /// Byte length of the data.
    pub len: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    /// The PyTorch-order shape (`dims` reversed).
    pub fn torch_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file that borrows its bytes.
pub struct Gguf<'a> {
    file: String,
    bytes: &'a [u8],
    /// Format version (2 or 3).
    pub version: u32,
    /// All metadata key/value pairs.
    pub metadata: BTreeMap<String, MetaValue>,
    /// The tensor directory, in file order.
    pub tensors: Vec<TensorInfo>,
}

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_DIMS: u32 = 4;
const MAX_ARRAY_DEPTH: usize = 4;
/// The most items one metadata array may hold: 4,194,304 (128 MiB as
/// `MetaValue`s), 16 times the largest vocabulary known.
const MAX_ARRAY_ITEMS: usize = 1 << 22;

struct Reader<'a> {
    file: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: impl std::fmt::Display) -> Error {
        Error::format(self.file, format!("{reason} (at byte {})", self.pos))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                self.err(format!(
                    "file is truncated: {what} needs {n} bytes, {} remain",
                    self.bytes.len() - self.pos
                ))
            })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must fit in what remains, `min_size` bytes per item.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_size))
            .is_some_and(|bytes| bytes <= self.remaining());
        if !fits {
            return Err(self.err(format!(
                "file is truncated or corrupt: {what} says {n}, more than the {} bytes left can hold",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let raw = self.take(n, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.err(format!("{what} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>("u8")?[0]),
            1 => MetaValue::I8(self.array::<1>("i8")?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array("u16")?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array("i16")?)),
            4 => MetaValue::U32(self.u32("u32")?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array("i32")?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array("f32")?)),
            7 => match self.array::<1>("bool")?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.err(format!("bool value {b} is neither 0 nor 1"))),
            },
            8 => MetaValue::Str(self.string("string length")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err("arrays nested too deeply"));
                }
                let item_ty = self.u32("array item type")?;
                let min_size = match item_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    t => return Err(self.err(format!("unknown metadata type {t}"))),
                };
                let n = self.count("array length", min_size)?;
                // Each item is held as a `MetaValue` (32 bytes), so a long
                // array of bytes would take 32 times its size.
                if n > MAX_ARRAY_ITEMS {
                    return Err(self.err(format!(
                        "a metadata array of {n} items; tabtune reads arrays of at most {MAX_ARRAY_ITEMS} (a vocabulary of 262,144 tokens is the largest known)"
                    )));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_ty, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64("u64")?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array("i64")?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array("f64")?)),
            t => return Err(self.err(format!("unknown metadata type {t}"))),
        })
    }
}

impl<'a> Gguf<'a> {
    /// Parses the header, metadata and tensor directory of `bytes`; `file`
    /// names the source in error messages. Tensor data is read lazily.
    pub fn parse(file: &str, bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader {
            file,
            bytes,
            pos: 0,
        };
        if bytes.len() < 4 || &bytes[..4] != MAGIC {
            return Err(Error::format(file, "not a GGUF file (no \"GGUF\" magic)"));
        }
        r.pos = 4;
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(r.err(format!(
                "GGUF version {version} is not supported (2 or 3 are)"
            )));
        }
        // A tensor info takes at least 8 (name) + 4 + 4 + 8 bytes; a kv pair 8 + 4 + 1.
        let n_tensors = r.count("tensor count", 24)?;
        let n_kv = r.count("metadata count", 13)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key length")?;
            let ty = r.u32("metadata type")?;
            let value = r.value(ty, 0)?;
            metadata.insert(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => return Err(r.err(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string("tensor name length")?;
            let n_dims = r.u32("tensor dims")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(r.err(format!(
                    "tensor {name} has {n_dims} dimensions (1-4 allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64("tensor dim")?);
            }
            let ty = r.u32("tensor type")?;
            let ggml_type = GgmlType::from_id(ty).ok_or_else(|| {
                r.err(format!(
                    "tensor {name} has ggml type {ty}, which tabtune does not read \
                     (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)"
                ))
            })?;
            let offset = r.u64("tensor offset")?;
            raw.push((name, dims, ggml_type, offset));
        }
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, ggml_type, offset) in raw {
            let n = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    Error::format(file, format!("tensor {name} has bad dims {dims:?}"))
                })?;
            if dims[0] % ggml_type.block_len() as u64 != 0 {
                return Err(Error::format(
                    file,
                    format!(
                        "tensor {name}: row length {} is not a multiple of the {:?} block ({})",
                        dims[0],
                        ggml_type,
                        ggml_type.block_len()
                    ),
                ));
            }
            let len = (n / ggml_type.block_len() as u64)
                .checked_mul(ggml_type.block_bytes() as u64)
                .and_then(|l| usize::try_from(l).ok());
            let start = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(data_start));
            let (Some(len), Some(start)) = (len, start) else {
                return Err(Error::format(
                    file,
                    format!("tensor {name}: size overflows"),
                ));
            };
            if start.checked_add(len).is_none_or(|end| end > bytes.len()) {
                return Err(Error::format(
                    file,
                    format!(
                        "file is truncated: tensor {name} needs bytes {start}..{} but the file has {}",
                        start + len,
                        bytes.len()
                    ),
                ));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                start,
                len,
            });
        }
        Ok(Self {
            file: file.to_string(),
            bytes,
            version,
            metadata,
            tensors,
        })
    }

    /// The file's name as given to [`Gguf::parse`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Looks up a tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor's data.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &'a [u8] {
        &self.bytes[info.start..info.start + info.len]
    }

    /// A tensor's values as f32, dequantized, in PyTorch row-major order.
    pub fn tensor_f32(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        dequantize(info.ggml_type, self.tensor_bytes(info), info.n_elements())
            .map_err(|reason| Error::format(&self.file, format!("tensor {}: {reason}", info.name)))
    }

    /// A metadata value that must be present.
    pub fn meta(&self, key: &str) -> Result<&MetaValue> {
        self.metadata
            .get(key)
            .ok_or_else(|| Error::format(&self.file, format!("metadata key `{key}` is missing")))
    }

    /// A metadata integer that must be present.
    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        let v = self.meta(key)?;
        v.as_u64().ok_or_else(|| {
            Error::format(
                &self.file,
                format!("metadata `{key}` should be an integer, is {v:?}"),
            )
        })
    }

    /// A metadata float that must be present.
    pub fn meta_f64(&self, key: &str) -> Result<f64> {
        let v = self.meta(key)?;
        v.as_f64().ok_or_else(|| {
            Error::format(
                &self.file,
                format!("metadata `{key}` should be a number, is {v:?}"),
            )
        })
    }

    /// A metadata string that must be present.
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        let v = self.meta(key)?;
        v.as_str().ok_or_else(|| {
            Error::format(&self.file, format!("metadata `{key}` should be a string"))
        })
    }

    /// A metadata array of strings that must be present.
    pub fn meta_strings(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.meta(key)?;
        v.as_array()
            .and_then(|a| a.iter().map(MetaValue::as_str).collect::<Option<Vec<_>>>())
            .ok_or_else(|| {
                Error::format(
                    &self.file,
                    format!("metadata `{key}` should be a string array"),
                )
            })
    }
}
