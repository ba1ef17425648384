//! What a training step will need in memory, estimated before it runs, so
//! the engine can refuse settings that would not fit instead of crashing
//! ([`check_step`], [`check_load`] against a [`HeapLimit`]).
//!
//! The terms, for `N = batch × length` tokens, `S = batch × heads ×
//! length²` attention scores, `L` blocks (f32 = 4 bytes):
//!
//! - adapters and AdamW: each factor, its gradient and two moments:
//!   `4 × 4 × P` for `P` adapter parameters;
//! - one block's graph — what its backward keeps, counted from
//!   `model/llama.rs` under burn's autodiff (an operation keeps an operand
//!   only when the other side needs a gradient): per token, the dropped
//!   inputs of the seven projections (`3d + q + 2d` floats and `ff` for
//!   `down`) with their bool masks, the residual before the MLP norm (`d`),
//!   the rotated queries and the repeated keys and values (`3q`), SiLU's
//!   input and output, `up` (`3 ff`; the CPU's one-pass SwiGLU keeps only
//!   its two inputs, so this counts one `ff` more than it holds), `x·A`
//!   (`7 r`); and twice `S` floats
//!   (softmax's exponentials and probabilities) with an `S` bool causal
//!   mask; the backward's own temporaries add a fifth again;
//! - recomputed ([`Activations::Recompute`]): every block's input (`L·N·d`)
//!   plus one block's graph; kept: `L` block graphs (and their inputs);
//! - the loss: the tied LM head expanded to f32 (`vocab × d`), a chunk of
//!   128 rows of logits and one same-sized intermediate beside it, and the
//!   `[M, d]` rows and gradient.
//!
//! Two factors were set by measurement (`tests/memory_estimate.rs`, the
//! default model): the backward's temporaries (a fifth of the graph) and the
//! loss chunk's intermediates (one); with them the estimates came out
//! 1.03-1.10x the measured peaks, a margin a guard wants. Since SwiGLU
//! became one operation the setting that keeps every block's graph measures
//! 1.18x (the extra `ff` above, thirty times), the others 1.03-1.10x.
//!
//! The peak is the larger of the loss and the deepest block's backward,
//! above the weights, which [`LlamaWeights::byte_len`] counts exactly.
//! `tests/memory_estimate.rs` holds the estimate within 25% of the measured
//! peak at several settings.
//!
//! [`LlamaWeights::byte_len`]: crate::model::weights::LlamaWeights::byte_len

use crate::error::{Error, Result};
use crate::lora::LoraConfig;
use crate::model::LlamaConfig;
use crate::model::loss::LOSS_CHUNK_ROWS;
use crate::train::Activations;

/// The shape of one micro-batch.
#[derive(Clone, Copy, Debug)]
pub struct StepShape {
    /// Examples in the micro-batch.
    pub batch: usize,
    /// Padded length in tokens (at most the sequence length setting).
    pub seq_len: usize,
    /// Trained positions (at most `batch × seq_len`).
    pub trained: usize,
    /// Kept or recomputed.
    pub activations: Activations,
}

const F32: f64 = 4.0;

/// Adapter parameters over every block.
fn adapter_params(c: &LlamaConfig, lora: &LoraConfig) -> f64 {
    let per_block: f64 = lora
        .targets
        .iter()
        .map(|t| {
            let (din, dout) = t.dims(c);
            lora.rank as f64 * (din + dout) as f64
        })
        .sum();
    per_block * c.num_layers as f64
}

/// Bytes one block's autodiff graph keeps.
fn block_graph(c: &LlamaConfig, lora: &LoraConfig, s: &StepShape) -> f64 {
    let (b, t) = (s.batch as f64, s.seq_len as f64);
    let n = b * t;
    let (d, ff) = (c.hidden_size as f64, c.intermediate_size as f64);
    let q = (c.num_heads * c.head_dim) as f64;
    let scores = b * c.num_heads as f64 * t * t;
    // Each adapted projection keeps its dropped input and bool mask, and x·A.
    let inputs: f64 = lora.targets.iter().map(|t| t.dims(c).0 as f64).sum();
    let adapted = inputs * (F32 + 1.0) + (lora.targets.len() * lora.rank) as f64 * F32;
    let kept = (d + 3.0 * q + 3.0 * ff) * F32; // MLP norm input, q/k/v for attention, SiLU in/out, up
    let block = n * (adapted + kept) + scores * (2.0 * F32 + 1.0);
    block * 1.2 // the backward's temporaries
}

/// Bytes above the weights one optimizer step needs at its peak (in f64
/// and then saturated, so settings of any size give a number, never an
/// overflow).
pub fn estimate_step(c: &LlamaConfig, lora: &LoraConfig, s: &StepShape) -> u64 {
    let n = (s.batch * s.seq_len) as f64;
    let (d, v, layers) = (
        c.hidden_size as f64,
        c.vocab_size as f64,
        c.num_layers as f64,
    );
    let adapters = 4.0 * F32 * adapter_params(c, lora);
    let block = block_graph(c, lora, s);
    let head = if c.tie_word_embeddings {
        v * d * F32
    } else {
        0.0
    };
    let chunk = LOSS_CHUNK_ROWS.min(s.trained) as f64 * v * F32; // [rows, V]
    let loss = head + 2.0 * chunk + 2.0 * s.trained as f64 * d * F32;
    let inputs = layers * n * d * F32;
    let activations = match s.activations {
        Activations::Recompute => inputs + block.max(loss),
        Activations::Keep => layers * (block + n * d * F32) + loss,
    };
    (adapters + activations) as u64
}

/// What a CPU engine's memory can hold, as its front end knows it.
#[derive(Clone, Copy, Debug)]
pub struct HeapLimit {
    /// Bytes the engine's memory can grow to (4 GiB for wasm32).
    pub total: u64,
    /// Bytes allocated now.
    pub live: fn() -> usize,
}

impl HeapLimit {
    /// Bytes that can still be allocated.
    pub fn left(&self) -> u64 {
        self.total.saturating_sub((self.live)() as u64)
    }
}

const MIB: u64 = 1 << 20;

/// Refuses a run whose step would not fit in what `limit` leaves, saying
/// what to lower.
pub fn check_step(
    c: &LlamaConfig,
    lora: &LoraConfig,
    s: &StepShape,
    limit: &HeapLimit,
) -> Result<()> {
    let need = estimate_step(c, lora, s);
    let left = limit.left();
    if need <= left {
        return Ok(());
    }
    let keep = match s.activations {
        Activations::Keep => ", or turn Keep activations off",
        Activations::Recompute => "",
    };
    let least = StepShape {
        batch: 1,
        seq_len: s.seq_len.min(32),
        trained: s.seq_len.min(32),
        activations: Activations::Recompute,
    };
    let floor = estimate_step(c, lora, &least);
    if floor > left {
        return Err(Error::setting(
            "batch",
            format!(
                "even one example of {} tokens needs about {} MiB, and the engine has {} MiB left \
                 of its {} MiB: this model is too large for it (choose a smaller one)",
                least.seq_len,
                floor.div_ceil(MIB),
                left / MIB,
                limit.total / MIB
            ),
        ));
    }
    Err(Error::setting(
        "batch",
        format!(
            "a step of {} examples × {} tokens needs about {} MiB, but the engine has {} MiB \
             left of its {} MiB: lower Batch or Sequence length{keep}",
            s.batch,
            s.seq_len,
            need.div_ceil(MIB),
            left / MIB,
            limit.total / MIB
        ),
    ))
}

/// Refuses model files of `file_bytes` in all that would not fit in what
/// `limit` leaves: the files themselves, and the weights made from them (a
/// GGUF's packed weights are about as large as the file; safetensors
/// become f32, up to twice an f16 file, or with `quantized` (Q8_0/Q4_0 at
/// load) at most 0.53 of an f16 file, one tensor's f32 copy at a time). An
/// untied GGUF `output.weight` is loaded in f32 and is not counted: the
/// run's own check still applies.
pub fn check_load(
    name: &str,
    file_bytes: u64,
    gguf: bool,
    quantized: bool,
    limit: &HeapLimit,
) -> Result<()> {
    let need = file_bytes.saturating_mul(if gguf || quantized { 2 } else { 3 });
    let left = limit.left();
    if need <= left {
        return Ok(());
    }
    Err(Error::format(
        name,
        format!(
            "loading this model needs about {} MiB, but the engine has {} MiB left of its {} MiB: \
             choose a smaller model (or a more quantized file of it, or quantize it at load)",
            need.div_ceil(MIB),
            left / MIB,
            limit.total / MIB
        ),
    ))
}

/// What one buffer on a GPU can hold (`gpu::max_buffer`: for WebGPU the
/// smaller of `maxBufferSize` and `maxStorageBufferBindingSize`; burn's wgpu
/// runtime requests the adapter's own limits, so these are the device's).
/// A tensor larger than this cannot be made at all; WebGPU states no limit
/// on the total, so the guard checks each buffer.
#[derive(Clone, Copy, Debug)]
pub struct GpuLimit {
    /// Bytes in one buffer.
    pub max_buffer: u64,
}

/// Refuses, before it is made, a base weight of `bytes` that one GPU buffer
/// of `max_buffer` bytes cannot hold, naming the file and tensor.
pub fn check_gpu_weight(file: &str, name: &str, bytes: u64, max_buffer: u64) -> Result<()> {
    if bytes <= max_buffer {
        return Ok(());
    }
    Err(Error::format(
        file,
        format!(
            "tensor `{name}` needs one GPU buffer of {} MiB, but this GPU's buffers hold at \
             most {} MiB: quantize the base at load (Base weights Q8_0 or Q4_0), or use the \
             CPU engine",
            bytes.div_ceil(MIB),
            max_buffer / MIB
        ),
    ))
}

/// The largest single tensor a training step makes on a GPU, in bytes,
/// and what it is: the attention scores `[B, heads, T, T]`, a chunk of
/// logits `[rows, vocab]`, the tied LM head expanded to f32 `[vocab, d]`
/// (the loss expands it whole), or the MLP's `[B·T, ff]`.
pub fn largest_step_buffer(c: &LlamaConfig, s: &StepShape) -> (u64, &'static str) {
    let (b, t) = (s.batch as u64, s.seq_len as u64);
    let (d, v, ff) = (
        c.hidden_size as u64,
        c.vocab_size as u64,
        c.intermediate_size as u64,
    );
    let f32s = |n: u64| n.saturating_mul(4);
    [
        (f32s(b * c.num_heads as u64 * t * t), "the attention scores"),
        (
            f32s(LOSS_CHUNK_ROWS.min(s.trained) as u64 * v),
            "a chunk of logits",
        ),
        (f32s(v * d), "the LM head in f32"),
        (f32s(b * t * ff), "the MLP's activations"),
    ]
    .into_iter()
    .max_by_key(|&(bytes, _)| bytes)
    .expect("four terms")
}

/// Refuses a run on a GPU whose step would need a buffer larger than the
/// device allows, saying what to lower.
pub fn check_gpu_step(c: &LlamaConfig, s: &StepShape, limit: &GpuLimit) -> Result<()> {
    let (need, what) = largest_step_buffer(c, s);
    if need <= limit.max_buffer {
        return Ok(());
    }
    // The setting to change: the batch (or length) for activations, as the
    // CPU's guard says; the engine (the page's `backend` choice) for a
    // vocabulary too large for the GPU.
    let (setting, advice) = match what {
        "the attention scores" | "the MLP's activations" => {
            ("batch", "lower Sequence length or Batch")
        }
        _ => (
            "backend",
            "this model's vocabulary is too large for this GPU's buffers: use the CPU engine",
        ),
    };
    Err(Error::setting(
        setting,
        format!(
            "a step of {} examples × {} tokens needs one GPU buffer of {} MiB for {what}, but \
             this GPU's buffers hold at most {} MiB: {advice}",
            s.batch,
            s.seq_len,
            need.div_ceil(MIB),
            limit.max_buffer / MIB
        ),
    ))
}
