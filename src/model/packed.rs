//! A frozen base weight kept in ggml blocks: a GGUF's (Q4_0, Q4_1, Q8_0, the
//! k-quants, f16, ...) as they are in the file, or Q8_0/Q4_0 made at load
//! (`model::quantized`), rows in Hugging Face order.
//!
//! A LoRA base is never updated, so the engine never needs it as an f32
//! tensor for longer than one matmul: [`crate::model::frozen`] expands a
//! packed weight just before it multiplies and drops the f32 copy right
//! after, in the forward and again in the backward pass. What stays resident
//! is this, at the file's 0.56–2 bytes a weight instead of 4.
//!
//! The expansion is `io::dequant::dequantize`, the same code the dense path
//! loads with, so a packed model computes with bit-identical weights.

use std::fmt;

use crate::cpu::par;
use crate::io::dequant::{GgmlType, dequantize, dequantize_into};

/// A `[rows, cols]` (PyTorch `[out, in]`) matrix in ggml blocks, each row a
/// whole number of blocks.
#[derive(Clone)]
pub struct PackedWeight {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
}

impl fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PackedWeight({:?}, [{}, {}], {} bytes)",
            self.ty,
            self.rows,
            self.cols,
            self.bytes.len()
        )
    }
}

impl PackedWeight {
    /// Wraps `bytes` holding a `[rows, cols]` matrix of type `ty`. Returns a
    /// reason (without the file name) when a row is not a whole number of
    /// blocks or the length does not match.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<Self, String> {
        if !cols.is_multiple_of(ty.block_len()) {
            return Err(format!(
                "a row of {cols} elements is not a whole number of {ty:?} blocks of {}",
                ty.block_len()
            ));
        }
        let expected = rows * cols / ty.block_len() * ty.block_bytes();
        if bytes.len() != expected {
            return Err(format!(
                "[{rows}, {cols}] {ty:?} needs {expected} bytes, got {}",
                bytes.len()
            ));
        }
        Ok(Self {
            ty,
            rows,
            cols,
            bytes,
        })
    }

    /// The storage type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ty
    }

    /// `[rows, cols]`, PyTorch's `[out, in]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Bytes held.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The blocks, row after row.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_len() * self.ty.block_bytes()
    }

    /// The same matrix with its rows reordered: row `r` of the result is row
    /// `source(r)` of this one. Blocks never span rows, so this is exact.
    pub fn reorder_rows(&self, source: impl Fn(usize) -> usize) -> Self {
        let rb = self.row_bytes();
        let mut bytes = Vec::with_capacity(self.bytes.len());
        for r in 0..self.rows {
            let s = source(r);
            bytes.extend_from_slice(&self.bytes[s * rb..(s + 1) * rb]);
        }
        Self {
            bytes,
            ..self.clone()
        }
    }

    /// `x·Wᵀ` for a few rows `x: [n, cols]` (row-major), giving `[n, rows]`,
    /// without expanding the matrix: each of its rows is expanded into a
    /// small buffer and dotted with every row of `x` (how decoding one token
    /// at a time stays fast on a packed model).
    pub fn matmul_few(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "x is [n, cols]");
        let rb = self.row_bytes();
        let per = 64; // W rows per task
        let mut t = vec![0f32; self.rows * n]; // [rows, n]
        par::chunks(&mut t, per * n, |start, out| {
            let first = start / n; // this task's first row of W
            let bytes = &self.bytes[first * rb..(first + out.len() / n) * rb];
            let mut row = vec![0f32; self.cols];
            for (wr, o) in bytes.chunks(rb).zip(out.chunks_mut(n)) {
                dequantize_into(self.ty, wr, &mut row).expect("the length was checked when made");
                for (i, xi) in x.chunks(self.cols).enumerate() {
                    o[i] = row.iter().zip(xi).map(|(a, b)| a * b).sum();
                }
            }
        });
        let mut out = vec![0f32; n * self.rows];
        for r in 0..self.rows {
            for i in 0..n {
                out[i * self.rows + r] = t[r * n + i];
            }
        }
        out
    }

    /// Rows `rows` (each below `shape()[0]`) as f32, row-major
    /// `[rows.len(), cols]`.
    pub fn rows_f32(&self, rows: &[usize]) -> Vec<f32> {
        let rb = self.row_bytes();
        let mut out = Vec::with_capacity(rows.len() * self.cols);
        for &r in rows {
            let row = dequantize(self.ty, &self.bytes[r * rb..(r + 1) * rb], self.cols)
                .expect("a row is a whole number of blocks");
            out.extend_from_slice(&row);
        }
        out
    }

    /// The f32 values, row-major `[rows, cols]`; rows are expanded in
    /// parallel where there are threads (natively, and in the page's
    /// threaded build).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        let rb = self.row_bytes();
        // Runs of rows of about 64K weights each.
        let per = (65_536 / self.cols.max(1)).max(1);
        par::chunks(&mut out, per * self.cols, |start, out| {
            let first = start / self.cols; // this task's first row
            let bytes = &self.bytes[first * rb..(first + out.len() / self.cols) * rb];
            dequantize_into(self.ty, bytes, out).expect("the length was checked when made");
        });
        out
    }
}
