//! A frozen base weight kept packed on the compute device, for the GPU path.
//!
//! On the CPU a packed weight stays in the host's memory as the file's ggml
//! blocks (`model::packed`) and is expanded there. A GPU must hold its
//! weights in its own buffers, and a kernel must read them there, so the
//! blocks are repacked once at load into two device tensors a kernel can
//! index without byte arithmetic ([`WordBlocks`]):
//!
//! - `words: [rows, cols / per_word]` u32: each value's quantized field, in
//!   order, `per_word` to a word, lowest bits first (Q8_0: four 8-bit
//!   fields `q + 128`; Q4_0 and Q4_1: eight nibbles);
//! - `params: [rows, blocks × P]` f32: each block's scale `d` (Q8_0, Q4_0)
//!   or scale and minimum `d, m` (Q4_1), widened from the file's f16.
//!
//! Then `x = (field − offset)·d (+ m)`, `offset` 128, 8 or 0: ggml's
//! `dequantize_row_*` value for value. Other block types (the k-quants) are
//! requantized once to Q8_0 on the way (`io::quantize`; its error is tested).
//! At rest this is 1.125 bytes a weight (Q8_0), 0.625 (Q4_0) or 0.75
//! (Q4_1), against 4 for f32.
//!
//! [`BlockOps::dequantize_blocks`] expands such a matrix to f32: on a GPU
//! the kernel in `shaders/dequantize_blocks.wgsl` (`crate::gpu`), on the CPU
//! its Rust twin [`dequantize_words`]. [`blocks_matmul`] multiplies by it
//! as one autodiff node that keeps only the packed tensors, as
//! `model::frozen` does for host blocks. On a GPU its products, `x·Wᵀ`
//! forward and `dY·W` backward ([`BlockOps::blocks_matmul_grad`]), read the
//! packed weight where it lies (`shaders/matmul_blocks.wgsl`, twin
//! [`matmul_words`]): one launch each and no f32 copy; on the CPU the f32
//! copy lives for one product.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
#[cfg(any(feature = "webgpu", feature = "gpu"))]
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension,
};
use burn::tensor::{DType, Device, Int, Shape, Slice, Tensor, TensorData};
use half::f16;

use crate::io::dequant::GgmlType;
use crate::io::quantize::quantize;
use crate::model::packed::PackedWeight;

/// Values per block in every [`BlockFormat`].
pub const BLOCK: usize = 32;

/// Up to this many rows of `x` (decoding), a GPU multiplies by a packed
/// weight one row of it to a workgroup (`shaders/matmul_blocks_few.wgsl`);
/// past it, in tiles (`shaders/matmul_blocks.wgsl`). Neither expands it.
pub const FEW_ROWS: usize = 16;

/// A slice of a device tensor is a view, sharing its memory, when it starts
/// and ends a multiple of this many bytes from the tensor's ends (burn's
/// `slice` on cubecl; WebGPU binds a buffer from offsets of at most 256).
pub const VIEW_ALIGN: usize = 256;

/// The block layouts a device kernel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// `(q + 128 − 128)·d`, 8-bit fields.
    Q8_0,
    /// `(q − 8)·d`, 4-bit fields.
    Q4_0,
    /// `q·d + m`, 4-bit fields.
    Q4_1,
}

impl BlockFormat {
    /// The format for a ggml type, if it is one of these.
    pub fn of(ty: GgmlType) -> Option<Self> {
        match ty {
            GgmlType::Q8_0 => Some(Self::Q8_0),
            GgmlType::Q4_0 => Some(Self::Q4_0),
            GgmlType::Q4_1 => Some(Self::Q4_1),
            _ => None,
        }
    }

    /// Bits per field.
    pub fn bits(self) -> usize {
        match self {
            Self::Q8_0 => 8,
            Self::Q4_0 | Self::Q4_1 => 4,
        }
    }

    /// Fields per u32 word.
    pub fn per_word(self) -> usize {
        32 / self.bits()
    }

    /// f32 parameters per block (`d`, or `d` and `m`).
    pub fn params(self) -> usize {
        match self {
            Self::Q8_0 | Self::Q4_0 => 1,
            Self::Q4_1 => 2,
        }
    }

    /// What a field has subtracted before scaling.
    pub fn offset(self) -> f32 {
        match self {
            Self::Q8_0 => 128.0,
            Self::Q4_0 => 8.0,
            Self::Q4_1 => 0.0,
        }
    }
}

/// A `[rows, cols]` matrix repacked for a device kernel (host side).
#[derive(Clone, Debug, PartialEq)]
pub struct WordBlocks {
    /// The layout.
    pub format: BlockFormat,
    /// Rows (PyTorch's `out`).
    pub rows: usize,
    /// Columns (PyTorch's `in`), a whole number of blocks.
    pub cols: usize,
    /// `[rows, cols / per_word]` fields.
    pub words: Vec<u32>,
    /// `[rows, cols / 32 × params]` scales (and minimums).
    pub params: Vec<f32>,
    /// Whether the source's blocks were another type, requantized to Q8_0.
    pub requantized: bool,
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Appends one ggml block's fields, `per_word` to a word, in value order.
fn push_fields(fields: impl Iterator<Item = u32>, bits: usize, words: &mut Vec<u32>) {
    let per = 32 / bits;
    let mut word = 0u32;
    for (i, f) in fields.enumerate() {
        word |= f << ((i % per) * bits);
        if i % per == per - 1 {
            words.push(word);
            word = 0;
        }
    }
}

impl WordBlocks {
    /// Repacks `w`'s blocks; a type without a [`BlockFormat`] is expanded
    /// and requantized to Q8_0 first.
    pub fn from_packed(w: &PackedWeight) -> Self {
        let [rows, cols] = w.shape();
        let (format, owned);
        let requantized = BlockFormat::of(w.ggml_type()).is_none();
        let bytes = match BlockFormat::of(w.ggml_type()) {
            Some(f) => {
                format = f;
                w.bytes()
            }
            None => {
                format = BlockFormat::Q8_0;
                owned = quantize(GgmlType::Q8_0, &w.to_f32())
                    .expect("a packed row is a whole number of 32-value blocks");
                &owned[..]
            }
        };
        let ty = match format {
            BlockFormat::Q8_0 => GgmlType::Q8_0,
            BlockFormat::Q4_0 => GgmlType::Q4_0,
            BlockFormat::Q4_1 => GgmlType::Q4_1,
        };
        let blocks = rows * cols / BLOCK;
        let mut words = Vec::with_capacity(rows * cols / format.per_word());
        let mut params = Vec::with_capacity(blocks * format.params());
        for b in bytes.chunks_exact(ty.block_bytes()) {
            match format {
                BlockFormat::Q8_0 => {
                    params.push(f16_at(b, 0));
                    let q = b[2..34].iter().map(|&q| (q as i8 as i32 + 128) as u32);
                    push_fields(q, 8, &mut words);
                }
                BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                    let qs = if format == BlockFormat::Q4_0 {
                        params.push(f16_at(b, 0));
                        &b[2..18]
                    } else {
                        params.extend([f16_at(b, 0), f16_at(b, 2)]);
                        &b[4..20]
                    };
                    // ggml: byte j holds value j (low nibble) and j + 16 (high).
                    let low = qs.iter().map(|&q| (q & 0x0F) as u32);
                    let high = qs.iter().map(|&q| (q >> 4) as u32);
                    push_fields(low.chain(high), 4, &mut words);
                }
            }
        }
        Self {
            format,
            rows,
            cols,
            words,
            params,
            requantized,
        }
    }

    /// Bytes the two tensors hold.
    pub fn byte_len(&self) -> usize {
        (self.words.len() + self.params.len()) * 4
    }

    /// The f32 values, row-major (the twin of the kernel).
    pub fn to_f32(&self) -> Vec<f32> {
        dequantize_words(self.format, &self.words, &self.params)
    }
}

/// The Rust twin of `shaders/dequantize_blocks.wgsl`: value `i` of a
/// row-major matrix is field `i` of `words`, less the format's offset, times
/// its block's scale, plus its block's minimum (Q4_1).
pub fn dequantize_words(format: BlockFormat, words: &[u32], params: &[f32]) -> Vec<f32> {
    let (bits, per, p) = (format.bits(), format.per_word(), format.params());
    let mask = (1u32 << bits) - 1;
    let offset = format.offset();
    (0..words.len() * per)
        .map(|i| {
            let field = (words[i / per] >> ((i % per) * bits)) & mask;
            let b = i / BLOCK;
            let v = (field as f32 - offset) * params[b * p];
            if p == 2 { v + params[b * p + 1] } else { v }
        })
        .collect()
}

/// The Rust twin of `shaders/matmul_blocks.wgsl`: with `transpose`, `a:
/// [m, cols]` times the transpose of the packed `[rows, cols]`, giving `[m,
/// rows]`; without, `a: [m, rows]` times it, giving `[m, cols]`; each sum
/// in f64.
pub fn matmul_words(
    format: BlockFormat,
    words: &[u32],
    params: &[f32],
    cols: usize,
    a: &[f32],
    transpose: bool,
) -> Vec<f32> {
    let w = dequantize_words(format, words, params); // [rows, cols]
    if transpose {
        return product_few(&w, cols, a, a.len() / cols);
    }
    let rows = w.len() / cols;
    let m = a.len() / rows;
    let mut c = vec![0f64; m * cols];
    for (ai, ci) in a.chunks(rows).zip(c.chunks_mut(cols)) {
        for (&av, wr) in ai.iter().zip(w.chunks(cols)) {
            for (cv, &wv) in ci.iter_mut().zip(wr) {
                *cv += av as f64 * wv as f64;
            }
        }
    }
    c.into_iter().map(|v| v as f32).collect()
}

/// The Rust twin of `shaders/matmul_blocks_few.wgsl`: `x: [n, cols]`
/// (row-major) times the transpose of the packed `[rows, cols]`, giving
/// `[n, rows]`, each sum in f64.
pub fn matmul_words_few(
    format: BlockFormat,
    words: &[u32],
    params: &[f32],
    cols: usize,
    x: &[f32],
    n: usize,
) -> Vec<f32> {
    let w = dequantize_words(format, words, params); // [rows, cols]
    product_few(&w, cols, x, n)
}

/// `x: [n, cols]` times the transpose of `w: [rows, cols]` (both
/// row-major), giving `[n, rows]`, each sum in f64.
pub fn product_few(w: &[f32], cols: usize, x: &[f32], n: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let mut y = vec![0f32; n * rows];
    for (r, wr) in w.chunks(cols).enumerate() {
        for (k, xk) in x.chunks(cols).take(n).enumerate() {
            let dot: f64 = wr.iter().zip(xk).map(|(a, b)| *a as f64 * *b as f64).sum();
            y[k * rows + r] = dot as f32;
        }
    }
    y
}

/// A [`WordBlocks`] matrix on a device.
#[derive(Clone, Debug)]
pub struct DeviceBlocks {
    /// The layout.
    pub format: BlockFormat,
    /// `[rows, cols / per_word]` u32.
    pub words: Tensor<2, Int>,
    /// `[rows, blocks × params]` f32.
    pub params: Tensor<2>,
    /// Whether the source's blocks were another type, requantized to Q8_0.
    pub requantized: bool,
}

impl DeviceBlocks {
    /// Uploads `w` to `device`.
    pub fn upload(w: &WordBlocks, device: &Device) -> Self {
        let per = w.format.per_word();
        let words = TensorData::new(w.words.clone(), [w.rows, w.cols / per]);
        let params = TensorData::new(
            w.params.clone(),
            [w.rows, w.cols / BLOCK * w.format.params()],
        );
        Self {
            format: w.format,
            words: Tensor::from_data(words, (device, DType::U32)),
            params: Tensor::from_data(params, device),
            requantized: w.requantized,
        }
    }

    /// `parts`' rows joined, in turn, and each part again as a view of the
    /// joined tensors (sharing their memory), when all have one format and
    /// width, each part's rows start and end where a view is free (at a
    /// multiple of [`VIEW_ALIGN`] bytes of both tensors; where they do not,
    /// burn's slice copies), and the joined tensors fit one buffer of
    /// `max_buffer` bytes (a GPU's limit). `None` otherwise. The parts and
    /// the joined tensors are both held until the caller drops the parts.
    pub fn join(
        parts: &[&DeviceBlocks],
        max_buffer: Option<u64>,
    ) -> Option<(DeviceBlocks, Vec<DeviceBlocks>)> {
        let first = parts.first()?;
        let [_, cols] = first.shape();
        let alike = |p: &&DeviceBlocks| p.format == first.format && p.shape()[1] == cols;
        if !parts.iter().all(alike) {
            return None;
        }
        let row_bytes = [first.words.dims()[1] * 4, first.params.dims()[1] * 4];
        let mut ends = Vec::with_capacity(parts.len());
        let mut end = 0;
        for p in parts {
            end += p.shape()[0];
            ends.push(end);
        }
        let free = |rows: usize| {
            row_bytes
                .iter()
                .all(|b| (rows * b).is_multiple_of(VIEW_ALIGN))
        };
        let fits = |b: &usize| max_buffer.is_none_or(|max| (end * b) as u64 <= max);
        if !ends.iter().all(|&e| free(e)) || !row_bytes.iter().all(fits) {
            return None;
        }
        let joined = DeviceBlocks {
            format: first.format,
            words: Tensor::cat(parts.iter().map(|p| p.words.clone()).collect(), 0),
            params: Tensor::cat(parts.iter().map(|p| p.params.clone()).collect(), 0),
            requantized: parts.iter().any(|p| p.requantized),
        };
        let views = parts
            .iter()
            .zip(&ends)
            .map(|(p, &end)| {
                let rows = end - p.shape()[0]..end;
                DeviceBlocks {
                    format: p.format,
                    words: joined.words.clone().slice([rows.clone()]),
                    params: joined.params.clone().slice([rows]),
                    requantized: p.requantized,
                }
            })
            .collect();
        Some((joined, views))
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        let [rows, wpr] = self.words.dims();
        [rows, wpr * self.format.per_word()]
    }

    /// Bytes held on the device.
    pub fn byte_len(&self) -> usize {
        (self.words.shape().num_elements() + self.params.shape().num_elements()) * 4
    }

    /// The matrix as f32 `[rows, cols]`.
    pub fn to_f32(&self) -> Tensor<2> {
        expand(self.words.clone(), self.params.clone(), self.format)
    }

    /// Rows `ids: [n]` as f32 `[n, cols]`, expanding only those rows.
    pub fn rows(&self, ids: Tensor<1, Int>) -> Tensor<2> {
        let words = self.words.clone().select(0, ids.clone());
        let params = self.params.clone().select(0, ids);
        expand(words, params, self.format)
    }

    /// `x·Wᵀ` for `x: [N, cols]`, giving `[N, rows]`; under autodiff the
    /// gradient reaching `x` is `dY·W`, and only the packed tensors are kept.
    pub fn matmul_t(&self, x: Tensor<2>) -> Tensor<2> {
        Tensor::from_dispatch(Dispatch::blocks_matmul(
            x.into_dispatch(),
            self.words.clone().into_dispatch(),
            self.params.clone().into_dispatch(),
            self.format,
        ))
    }

    /// `g·W` for `g: [N, rows]`, giving `[N, cols]` (untracked).
    pub fn matmul_grad(&self, g: Tensor<2>) -> Tensor<2> {
        Tensor::from_dispatch(Dispatch::blocks_matmul_grad(
            g.into_dispatch(),
            self.words.clone().into_dispatch(),
            self.params.clone().into_dispatch(),
            self.format,
        ))
    }
}

/// Blocks whose rows are two or three weights' joined
/// ([`DeviceBlocks::join`]), multiplied as their parts (no gradient).
impl DeviceBlocks {
    /// Each part's `x·W_iᵀ` `[N, split[i]]` for `x: [N, cols]` (`split`: the
    /// parts' rows, two or three, summing to `rows`), in one launch on a
    /// GPU.
    pub fn matmul_t_parts(&self, x: Tensor<2>, split: &[usize]) -> Vec<Tensor<2>> {
        let (x, words, params) = (
            x.into_dispatch(),
            self.words.clone().into_dispatch(),
            self.params.clone().into_dispatch(),
        );
        let rows = self.shape()[0];
        assert_eq!(split.iter().sum::<usize>(), rows, "parts of {rows} rows");
        let outs = match split {
            [first, _] => {
                let (a, b) = Dispatch::blocks_matmul_pair(x, words, params, self.format, *first);
                vec![a, b]
            }
            [a, b, _] => {
                let split = [*a, *b];
                let (q, k, v) =
                    Dispatch::blocks_matmul_triple(x, words, params, self.format, split);
                vec![q, k, v]
            }
            _ => panic!("{} parts: two or three are joined", split.len()),
        };
        outs.into_iter().map(Tensor::from_dispatch).collect()
    }

    /// `Σ gs[i]·W_i` `[N, cols]` for each part's gradient `gs[i]: [N, rows
    /// of part i]` (two or three), in one launch on a GPU.
    pub fn matmul_grad_parts(&self, gs: Vec<Tensor<2>>) -> Tensor<2> {
        let (words, params) = (
            self.words.clone().into_dispatch(),
            self.params.clone().into_dispatch(),
        );
        let mut gs = gs.into_iter().map(Tensor::into_dispatch);
        let mut next = || gs.next().expect("a part's gradient");
        let (g0, g1) = (next(), next());
        let out = match gs.next() {
            None => Dispatch::blocks_matmul_grad_pair(g0, g1, words, params, self.format),
            Some(g2) => Dispatch::blocks_matmul_grad_triple(g0, g1, g2, words, params, self.format),
        };
        assert!(gs.next().is_none(), "two or three parts are joined");
        Tensor::from_dispatch(out)
    }
}

fn expand(words: Tensor<2, Int>, params: Tensor<2>, format: BlockFormat) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::dequantize_blocks(
        words.into_dispatch(),
        params.into_dispatch(),
        format,
    ))
}

/// The shape [`BlockOps::blocks_matmul`] gives for `x` and `words` (for
/// the fusion backend, which records it before the product runs).
#[cfg_attr(not(any(feature = "webgpu", feature = "gpu")), allow(dead_code))]
pub(crate) fn product_shape(x: &Shape, words: &Shape, format: &BlockFormat) -> Shape {
    let _ = format;
    Shape::new([x[0], words[0]])
}

/// The shape [`BlockOps::blocks_matmul_grad`] gives for `g` and `words`.
#[cfg_attr(not(any(feature = "webgpu", feature = "gpu")), allow(dead_code))]
pub(crate) fn grad_shape(g: &Shape, words: &Shape, format: &BlockFormat) -> Shape {
    Shape::new([g[0], words[1] * format.per_word()])
}

/// The shape [`BlockOps::dequantize_blocks`] gives for `words`.
pub(crate) fn expanded_shape(words: &Shape, format: &BlockFormat) -> Shape {
    Shape::new([words[0], words[1] * format.per_word()])
}

/// What burn's fusion backend is told of [`BlockOps::blocks_matmul_pair`]'s
/// outputs: `[N, first]` and `[N, rows − first]`.
#[cfg(any(feature = "webgpu", feature = "gpu"))]
fn pair_meta(
    x: &TensorSpec,
    words: &TensorSpec,
    _params: &TensorSpec,
    _format: &BlockFormat,
    first: &usize,
) -> (TensorSpec, TensorSpec) {
    let spec = |cols: usize| TensorSpec::new(Shape::new([x.shape[0], cols]), x.dtype);
    (spec(*first), spec(words.shape[0] - first))
}

/// What burn's fusion backend is told of
/// [`BlockOps::blocks_matmul_triple`]'s outputs: `[N, split[0]]`,
/// `[N, split[1]]` and `[N, rows − split[0] − split[1]]`.
#[cfg(any(feature = "webgpu", feature = "gpu"))]
fn triple_meta(
    x: &TensorSpec,
    words: &TensorSpec,
    _params: &TensorSpec,
    _format: &BlockFormat,
    split: &[usize; 2],
) -> (TensorSpec, TensorSpec, TensorSpec) {
    let spec = |cols: usize| TensorSpec::new(Shape::new([x.shape[0], cols]), x.dtype);
    let last = words.shape[0] - split[0] - split[1];
    (spec(split[0]), spec(split[1]), spec(last))
}

/// Columns `cols` of `y: [N, _]`.
fn columns<B: Backend>(y: &FloatTensor<B>, cols: std::ops::Range<usize>) -> FloatTensor<B> {
    let n = y.shape()[0];
    B::float_slice(y.clone(), &[Slice::from(0..n), Slice::from(cols)])
}

/// Device-side block expansion and the product over it, as backend
/// operations: a GPU kernel (`crate::gpu`), the Rust twin on the CPU, and
/// autodiff's own backward for the product.
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "webgpu", feature = "gpu")),
    Fusion: cfg(any(feature = "webgpu", feature = "gpu")),
    Autodiff
)]
pub trait BlockOps: Backend {
    /// `words: [rows, cols / per_word]` and `params: [rows, blocks × P]` to
    /// f32 `[rows, cols]`.
    #[fusion(dtype = params, shape = expanded_shape(words, format))]
    fn dequantize_blocks(
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
    ) -> FloatTensor<Self>;

    /// `x: [N, cols]` times the transpose of the expanded `[rows, cols]`.
    /// On a GPU the packed weight is read where it lies, in one launch: a
    /// few rows (decoding) by `shaders/matmul_blocks_few.wgsl`, more by
    /// `shaders/matmul_blocks.wgsl`.
    #[fusion(dtype = x, shape = product_shape(x, words, format))]
    fn blocks_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
    ) -> FloatTensor<Self> {
        let w = Self::dequantize_blocks(words, params, format); // [rows, cols]
        Self::float_matmul(x, Self::float_transpose(w)) // [N, rows]
    }

    /// `g: [N, rows]` times the expanded `[rows, cols]`: the gradient
    /// `dY·W` reaching [`BlockOps::blocks_matmul`]'s `x`. On a GPU, one
    /// launch of `shaders/matmul_blocks.wgsl`.
    #[fusion(dtype = g, shape = grad_shape(g, words, format))]
    fn blocks_matmul_grad(
        g: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
    ) -> FloatTensor<Self> {
        let w = Self::dequantize_blocks(words, params, format); // [rows, cols]
        Self::float_matmul(g, w) // [N, cols]
    }

    /// [`BlockOps::blocks_matmul`] by two weights' rows joined (the first's
    /// `first` rows, then the second's): each weight's product, `[N,
    /// first]` and `[N, rows − first]`. On a GPU, one launch of
    /// `shaders/matmul_blocks.wgsl`.
    #[fusion(meta = pair_meta)]
    fn blocks_matmul_pair(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
        first: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let y = Self::blocks_matmul(x, words, params, format); // [N, rows]
        let rows = y.shape()[1];
        (
            columns::<Self>(&y, 0..first),
            columns::<Self>(&y, first..rows),
        )
    }

    /// [`BlockOps::blocks_matmul`] by three weights' rows joined (`split`:
    /// the first's and the second's rows): each weight's product. On a
    /// GPU, one launch of `shaders/matmul_blocks.wgsl`.
    #[fusion(meta = triple_meta)]
    fn blocks_matmul_triple(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
        split: [usize; 2],
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let y = Self::blocks_matmul(x, words, params, format); // [N, rows]
        let (rows, [a, b]) = (y.shape()[1], split);
        (
            columns::<Self>(&y, 0..a),
            columns::<Self>(&y, a..a + b),
            columns::<Self>(&y, a + b..rows),
        )
    }

    /// The gradient reaching `x` from both of
    /// [`BlockOps::blocks_matmul_pair`]'s products, `g0·W0 + g1·W1` `[N,
    /// cols]` for `g0: [N, first]`, `g1: [N, rows − first]`. On a GPU, one
    /// launch of `shaders/matmul_blocks.wgsl`.
    #[fusion(dtype = g0, shape = grad_shape(g0, words, format))]
    fn blocks_matmul_grad_pair(
        g0: FloatTensor<Self>,
        g1: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
    ) -> FloatTensor<Self> {
        let g = Self::float_cat(vec![g0, g1], 1); // [N, rows]
        Self::blocks_matmul_grad(g, words, params, format)
    }

    /// The gradient reaching `x` from all three of
    /// [`BlockOps::blocks_matmul_triple`]'s products, `Σ gi·Wi` `[N, cols]`.
    /// On a GPU, one launch of `shaders/matmul_blocks.wgsl`.
    #[fusion(dtype = g0, shape = grad_shape(g0, words, format))]
    fn blocks_matmul_grad_triple(
        g0: FloatTensor<Self>,
        g1: FloatTensor<Self>,
        g2: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
    ) -> FloatTensor<Self> {
        let g = Self::float_cat(vec![g0, g1, g2], 1); // [N, rows]
        Self::blocks_matmul_grad(g, words, params, format)
    }
}

impl BlockOps for Flex {
    fn dequantize_blocks(
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
    ) -> FloatTensor<Self> {
        let shape = expanded_shape(&words.shape(), &format);
        let words: Vec<u32> = words
            .into_data()
            .convert::<u32>()
            .try_into_vec()
            .expect("u32 words");
        let params: Vec<f32> = params
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .expect("f32 parameters");
        let values = dequantize_words(format, &words, &params);
        FlexTensor::from_data(TensorData::new(values, shape))
    }
}

impl<B: Backend + BlockOps, C: CheckpointStrategy> BlockOps for Autodiff<B, C> {
    fn dequantize_blocks(
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
    ) -> FloatTensor<Self> {
        // A frozen weight: the values need no gradient.
        let params = Self::inner(params);
        Self::from_inner(B::dequantize_blocks(words, params, format))
    }

    fn blocks_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct BlocksMatmulBackward;

        impl<B: Backend + BlockOps> Backward<B, 1> for BlocksMatmulBackward {
            type State = (IntTensor<B>, FloatTensor<B>, BlockFormat);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (words, params, format) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    // dX = dY·W: [N, rows]·[rows, cols] -> [N, cols]
                    B::blocks_matmul_grad(grad, words, params, format)
                });
            }
        }

        let params = Self::inner(params);
        let (x, node) = x.into_parts();
        match BlocksMatmulBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::blocks_matmul(x, words.clone(), params.clone(), format);
                prep.finish((words, params, format), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::blocks_matmul(x, words, params, format)),
        }
    }
}
