//! Loading a checkpoint's frozen weights from GGUF or HF safetensors, for
//! every family of [`Arch`].
//!
//! The engine keeps Hugging Face's conventions inside: rotate-half RoPE, so
//! q/k rows are in HF order, and linear weights stored `[d_in, d_out]` (the
//! transpose of PyTorch's `[out, in]`) so a projection is `x · W`.
//!
//! Name mapping, one pattern per line (HF name → GGUF name, transform):
//!
//! | HF                                        | GGUF                    | transform        |
//! |-------------------------------------------|-------------------------|------------------|
//! | model.embed_tokens.weight                 | token_embd.weight       | none `[V, d]`    |
//! | model.norm.weight                         | output_norm.weight      | none `[d]`       |
//! | lm_head.weight (untied only)              | output.weight           | transpose        |
//! | model.layers.{i}.input_layernorm.weight   | blk.{i}.attn_norm.weight| none             |
//! | model.layers.{i}.post_attention_layernorm.weight | blk.{i}.ffn_norm.weight | none (Gemma 3: `post_attention_norm`) |
//! | model.layers.{i}.pre_feedforward_layernorm.weight (Gemma 3) | blk.{i}.ffn_norm.weight | none |
//! | model.layers.{i}.post_feedforward_layernorm.weight (Gemma 3) | blk.{i}.post_ffw_norm.weight | none |
//! | model.layers.{i}.self_attn.q_norm.weight (Qwen3, Gemma 3) | blk.{i}.attn_q_norm.weight | none |
//! | model.layers.{i}.self_attn.k_norm.weight (Qwen3, Gemma 3) | blk.{i}.attn_k_norm.weight | none |
//! | model.layers.{i}.self_attn.{q,k,v}_proj.bias (Qwen2) | blk.{i}.attn_{q,k,v}.bias | none |
//! | model.layers.{i}.self_attn.q_proj.weight  | blk.{i}.attn_q.weight   | unpermute(H), transpose |
//! | model.layers.{i}.self_attn.k_proj.weight  | blk.{i}.attn_k.weight   | unpermute(KV), transpose |
//! | model.layers.{i}.self_attn.v_proj.weight  | blk.{i}.attn_v.weight   | transpose        |
//! | model.layers.{i}.self_attn.o_proj.weight  | blk.{i}.attn_output.weight | transpose     |
//! | model.layers.{i}.mlp.gate_proj.weight     | blk.{i}.ffn_gate.weight | transpose        |
//! | model.layers.{i}.mlp.up_proj.weight       | blk.{i}.ffn_up.weight   | transpose        |
//! | model.layers.{i}.mlp.down_proj.weight     | blk.{i}.ffn_down.weight | transpose        |
//!
//! "unpermute" undoes llama.cpp's `convert_hf_to_gguf.py` `permute`, which
//! reorders each head's rows from rotate-half to interleaved pairs; only
//! for Llama ([`Arch::permutes_qk`]). Gemma's norms multiply by `1 + w`:
//! its GGUF files store `1 + w`, its HF files `w`, so `1` is added to
//! those ([`Arch::hf_norm_shift`]).
//!
//! On a CPU device the embedding and the seven projections of a GGUF file
//! stay in the file's blocks ([`Frozen::Packed`], rows unpermuted block-row by block-row, no
//! transpose): the f32 copy exists only inside one matmul; so do any
//! model's when they are quantized at load (`model::quantized`, a source
//! that hands them out in Q8_0/Q4_0 blocks). On a GPU the block-quantized
//! ones stay packed in its memory ([`Frozen::Blocks`], `model::blocks`).
//! Everything else is loaded as f32 ([`Frozen::Dense`]).

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::io::dequant::GgmlType;
use crate::io::gguf::{Gguf, TensorInfo};
use crate::io::safetensors::SafetensorsFile;
use crate::lora::Target;
use crate::model::blocks::{DeviceBlocks, WordBlocks};
use crate::model::config::{Arch, LlamaConfig};
use crate::model::embedding::Embedding;
use crate::model::frozen::Frozen;
use crate::model::packed::PackedWeight;
use crate::train::memory;

/// The frozen weights of one transformer block.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// RMSNorm before attention, `[d]`.
    pub attn_norm: Tensor<1>,
    /// The seven projections, indexed by [`Target`].
    pub proj: [Frozen; 7],
    /// RMSNorm before the MLP, `[d]`.
    pub ffn_norm: Tensor<1>,
    /// q's, k's and v's biases `[H·hd]`, `[KV·hd]`, `[KV·hd]` (Qwen2).
    pub qkv_bias: Option<[Tensor<1>; 3]>,
    /// RMSNorm over each q head and each k head before RoPE, `[hd]` each
    /// (Qwen3, Gemma 3).
    pub qk_norm: Option<[Tensor<1>; 2]>,
    /// RMSNorm of attention's output and of the MLP's before each joins
    /// the residual stream, `[d]` each (Gemma 3).
    pub post_norms: Option<[Tensor<1>; 2]>,
    /// On a GPU, q's, k's and v's blocks joined by rows
    /// ([`DeviceBlocks::join`]; `proj`'s three are then views of it), so
    /// that one launch makes their products (`model::attend`).
    pub qkv: Option<DeviceBlocks>,
    /// Gate's and up's blocks joined so (`model::gate_up`).
    pub gate_up: Option<DeviceBlocks>,
}

impl LayerWeights {
    /// Joins q, k and v, and gate and up, where their bases are blocks that
    /// [`DeviceBlocks::join`] takes within one buffer of `max_buffer` bytes
    /// ([`LayerWeights::qkv`], [`LayerWeights::gate_up`]); done at load.
    pub fn join_blocks(&mut self, max_buffer: Option<u64>) {
        self.qkv = self.join(&[Target::Q, Target::K, Target::V], max_buffer);
        self.gate_up = self.join(&[Target::Gate, Target::Up], max_buffer);
    }

    /// The projections of `targets` joined where [`DeviceBlocks::join`]
    /// can, `proj`'s then views of it; returns the joined blocks.
    fn join(&mut self, targets: &[Target], max_buffer: Option<u64>) -> Option<DeviceBlocks> {
        let parts: Vec<&DeviceBlocks> = targets
            .iter()
            .map(|t| match &self.proj[t.index()] {
                Frozen::Blocks(b) => Some(b),
                _ => None,
            })
            .collect::<Option<_>>()?;
        let (joined, views) = DeviceBlocks::join(&parts, max_buffer)?;
        for (t, view) in targets.iter().zip(views) {
            self.proj[t.index()] = Frozen::Blocks(view);
        }
        Some(joined)
    }
}

/// All frozen weights of a Llama model.
#[derive(Clone, Debug)]
pub struct LlamaWeights {
    /// Token embedding `[vocab, d]` (also the LM head when tied).
    pub embed: Embedding,
    /// Transformer blocks.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm `[d]`.
    pub norm: Tensor<1>,
    /// Untied LM head `[d, vocab]`, `None` when tied to `embed`.
    pub lm_head: Option<Tensor<2>>,
}

/// A checkpoint that yields tensors by their HF name, in PyTorch layout.
pub trait WeightSource {
    /// The file name, for messages.
    fn file(&self) -> &str;
    /// The tensor's PyTorch shape and f32 values, or `None` when absent.
    fn get(&self, hf_name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>>;
    /// A 2-D tensor in the file's own storage, PyTorch layout, HF row order;
    /// `None` when absent or when this source keeps nothing packed.
    fn get_packed(&self, _hf_name: &str) -> Result<Option<PackedWeight>> {
        Ok(None)
    }
    /// The storage type of `hf_name` where the source knows it without
    /// reading the tensor (a GGUF's own; a quantizing source's target for a
    /// float matrix); `None` when absent or not known. A hint:
    /// [`get_packed`](Self::get_packed) may still give `None` (a 1-D
    /// tensor, rows that are not whole blocks).
    fn packed_type(&self, _hf_name: &str) -> Result<Option<GgmlType>> {
        Ok(None)
    }
    /// The tensor's own name in the file where it differs from `hf_name`
    /// (a GGUF's), for messages.
    fn stored_name(&self, _hf_name: &str) -> Option<String> {
        None
    }
    /// Whether Gemma's norm weights are stored as `1 + w` (GGUF) rather
    /// than `w` (HF).
    fn norms_shifted(&self) -> bool {
        false
    }
}

/// Whether `ty` is a plain float type rather than blocks.
pub fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// The packed form of `hf_name` where it would be kept packed on `device`:
/// on a GPU only block types are (so a float tensor is not copied for
/// nothing).
fn packed_for(
    src: &dyn WeightSource,
    hf_name: &str,
    device: &Device,
) -> Result<Option<PackedWeight>> {
    if !crate::model::is_cpu(device) && src.packed_type(hf_name)?.is_some_and(is_float) {
        return Ok(None);
    }
    src.get_packed(hf_name)
}

impl WeightSource for SafetensorsFile<'_> {
    fn file(&self) -> &str {
        SafetensorsFile::file(self)
    }
    fn get(&self, hf_name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        self.get_f32(hf_name)
    }
}

/// A GGUF file seen through the HF naming, with q/k rows unpermuted.
pub struct GgufSource<'a, 'b> {
    /// The parsed file.
    pub gguf: &'b Gguf<'a>,
    /// Its configuration (head counts drive the unpermutation).
    pub config: &'b LlamaConfig,
}

/// Maps an HF tensor name of an `arch` model to its GGUF name, per the
/// table in the module docs.
pub fn gguf_name(arch: Arch, hf_name: &str) -> Option<String> {
    match hf_name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (layer, module) = rest.split_once('.')?;
    let (module, kind) = module.rsplit_once('.')?;
    if !matches!(kind, "weight" | "bias") {
        return None;
    }
    let gguf = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" if arch.sandwich_norms() => "post_attention_norm",
        "post_attention_layernorm" | "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        other => Target::ALL
            .iter()
            .find(|t| t.hf_path() == other)?
            .gguf_name(),
    };
    Some(format!("blk.{layer}.{gguf}.{kind}"))
}

/// Moves q/k rows between HF's rotate-half order and GGUF's interleaved
/// order for `n_head` heads of a PyTorch-layout `[rows, cols]` matrix: GGUF
/// row `h·hd + 2i + j` is HF row `h·hd + j·hd/2 + i` (llama.cpp's
/// `convert_hf_to_gguf.py` `permute`).
fn move_rows(w: &[f32], rows: usize, cols: usize, n_head: usize, to_gguf: bool) -> Vec<f32> {
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let (gguf, hf) = (h * hd + 2 * i + j, h * hd + j * half + i);
                let (src, dst) = if to_gguf { (hf, gguf) } else { (gguf, hf) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The GGUF row that HF row `r` of a q/k matrix comes from, with heads of
/// `hd` rows (see [`move_rows`]).
fn gguf_row_of(r: usize, hd: usize) -> usize {
    let (h, rem) = (r / hd, r % hd);
    let half = hd / 2;
    let (j, i) = (rem / half, rem % half);
    h * hd + 2 * i + j
}

/// GGUF q/k rows (interleaved RoPE) to HF order (rotate-half).
pub fn unpermute_rows_from_gguf(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    move_rows(w, rows, cols, n_head, false)
}

/// HF q/k rows to GGUF order; the inverse of [`unpermute_rows_from_gguf`].
pub fn permute_rows_for_gguf(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    move_rows(w, rows, cols, n_head, true)
}

impl GgufSource<'_, '_> {
    /// The tensor info for `hf_name`, and the head count its rows must be
    /// unpermuted by (q and k only), checked to hold whole heads.
    fn lookup(&self, hf_name: &str) -> Result<Option<(&TensorInfo, Option<usize>)>> {
        let arch = self.config.arch;
        let Some(name) = gguf_name(arch, hf_name) else {
            return Ok(None);
        };
        let Some(info) = self.gguf.tensor(&name) else {
            return Ok(None);
        };
        let n_head = if !arch.permutes_qk() {
            None
        } else if hf_name.ends_with("self_attn.q_proj.weight") {
            Some(self.config.num_heads)
        } else if hf_name.ends_with("self_attn.k_proj.weight") {
            Some(self.config.num_kv_heads)
        } else {
            None
        };
        let shape = info.torch_shape();
        match (n_head, shape.as_slice()) {
            (Some(h), &[rows, _]) if rows % (2 * h) == 0 => {}
            (Some(_), _) => {
                return Err(Error::format(
                    self.file(),
                    format!("tensor {name} has shape {shape:?}, which cannot hold whole heads"),
                ));
            }
            (None, _) => {}
        }
        Ok(Some((info, n_head)))
    }
}

impl WeightSource for GgufSource<'_, '_> {
    fn file(&self) -> &str {
        self.gguf.file()
    }
    fn stored_name(&self, hf_name: &str) -> Option<String> {
        gguf_name(self.config.arch, hf_name)
    }
    fn norms_shifted(&self) -> bool {
        true
    }
    fn get(&self, hf_name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let Some((info, n_head)) = self.lookup(hf_name)? else {
            return Ok(None);
        };
        let shape = info.torch_shape();
        let values = self.gguf.tensor_f32(info)?;
        let values = match (n_head, shape.as_slice()) {
            (Some(h), &[rows, cols]) => unpermute_rows_from_gguf(&values, rows, cols, h),
            _ => values,
        };
        Ok(Some((shape, values)))
    }
    fn get_packed(&self, hf_name: &str) -> Result<Option<PackedWeight>> {
        let Some((info, n_head)) = self.lookup(hf_name)? else {
            return Ok(None);
        };
        let &[rows, cols] = info.torch_shape().as_slice() else {
            return Ok(None);
        };
        let bytes = self.gguf.tensor_bytes(info).to_vec();
        let packed = PackedWeight::new(info.ggml_type, rows, cols, bytes).map_err(|reason| {
            Error::format(self.file(), format!("tensor {}: {reason}", info.name))
        })?;
        Ok(Some(match n_head {
            Some(h) => {
                let hd = rows / h;
                packed.reorder_rows(|r| gguf_row_of(r, hd))
            }
            None => packed,
        }))
    }
    fn packed_type(&self, hf_name: &str) -> Result<Option<GgmlType>> {
        Ok(self.lookup(hf_name)?.map(|(info, _)| info.ggml_type))
    }
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = w[r * cols + c];
        }
    }
    out
}

fn required(src: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let (got, values) = src.get(name)?.ok_or_else(|| {
        Error::format(
            src.file(),
            format!(
                "tensor `{name}` is missing{}",
                src.stored_name(name)
                    .or_else(|| gguf_name(Arch::Llama, name))
                    .map(|g| format!(" (GGUF name `{g}`)"))
                    .unwrap_or_default()
            ),
        )
    })?;
    if got != shape {
        return Err(Error::format(
            src.file(),
            format!("tensor `{name}` has shape {got:?}, the config implies {shape:?}"),
        ));
    }
    Ok(values)
}

/// Refuses, before it is read, a weight of `bytes` that one buffer on
/// `device` cannot hold (a GPU's limit; none on the CPU).
fn fits(src: &dyn WeightSource, name: &str, bytes: u64, device: &Device) -> Result<()> {
    match crate::gpu::max_buffer(device) {
        Some(max) => memory::check_gpu_weight(src.file(), name, bytes, max),
        None => Ok(()),
    }
}

fn vector(src: &dyn WeightSource, name: &str, n: usize, device: &Device) -> Result<Tensor<1>> {
    let v = required(src, name, &[n])?;
    Ok(Tensor::from_data(TensorData::new(v, [n]), device))
}

/// An RMSNorm weight `[n]` as the engine multiplies by it: `1 + w` for a
/// Gemma HF file's `w` ([`Arch::hf_norm_shift`]).
fn norm(
    src: &dyn WeightSource,
    arch: Arch,
    name: &str,
    n: usize,
    device: &Device,
) -> Result<Tensor<1>> {
    let mut v = required(src, name, &[n])?;
    if !src.norms_shifted() {
        let shift = arch.hf_norm_shift();
        v.iter_mut().for_each(|w| *w += shift);
    }
    Ok(Tensor::from_data(TensorData::new(v, [n]), device))
}

/// A PyTorch `[out, in]` weight, returned as `[in, out]`.
fn linear(
    src: &dyn WeightSource,
    name: &str,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> Result<Tensor<2>> {
    fits(src, name, d_in as u64 * d_out as u64 * 4, device)?;
    let v = required(src, name, &[d_out, d_in])?;
    Ok(Tensor::from_data(
        TensorData::new(transpose(&v, d_out, d_in), [d_in, d_out]),
        device,
    ))
}

/// A projection: packed when the source keeps it so (see [`place`]), else
/// dense `[in, out]`.
fn projection(
    src: &dyn WeightSource,
    name: &str,
    (d_in, d_out): (usize, usize),
    device: &Device,
) -> Result<Frozen> {
    if let Some(p) = packed_for(src, name, device)? {
        if p.shape() != [d_out, d_in] {
            return Err(Error::format(
                src.file(),
                format!(
                    "tensor `{name}` has shape {:?}, the config implies {:?}",
                    p.shape(),
                    [d_out, d_in]
                ),
            ));
        }
        match place(src, name, p, device)? {
            Placed::Host(p) => return Ok(Frozen::Packed(p)),
            Placed::Device(b) => return Ok(Frozen::Blocks(b)),
            Placed::Dense => {}
        }
    }
    Ok(Frozen::Dense(linear(src, name, d_in, d_out, device)?))
}

/// Where a weight the source keeps packed lives.
#[allow(clippy::large_enum_variant)] // one at a time, as it loads
enum Placed {
    /// On the CPU: the file's blocks, whatever their type.
    Host(Arc<PackedWeight>),
    /// On a GPU: block-quantized types, repacked for its kernel (k-quants
    /// requantized to Q8_0).
    Device(DeviceBlocks),
    /// On a GPU, an f32/f16/bf16 tensor: expanded to f32 as it loads.
    Dense,
}

/// On the CPU every packed weight stays packed, since the f32 copy is the
/// memory that bounds a model's size; on a GPU the quantized ones do, in
/// the device's own buffers (`model::blocks`).
fn place(src: &dyn WeightSource, name: &str, p: PackedWeight, device: &Device) -> Result<Placed> {
    Ok(if crate::model::is_cpu(device) {
        Placed::Host(Arc::new(p))
    } else if p.ggml_type().block_len() > 1 {
        let blocks = WordBlocks::from_packed(&p);
        fits(src, name, blocks.words.len() as u64 * 4, device)?;
        Placed::Device(DeviceBlocks::upload(&blocks, device))
    } else {
        Placed::Dense
    })
}

impl LlamaWeights {
    /// Loads every weight `config` implies from `src`, checking each shape;
    /// the embedding and projections stay packed where [`place`] says so.
    pub fn load(config: &LlamaConfig, src: &dyn WeightSource, device: &Device) -> Result<Self> {
        let (v, d) = (config.vocab_size, config.hidden_size);
        let name = "model.embed_tokens.weight";
        let placed = match packed_for(src, name, device)? {
            Some(p) if p.shape() == [v, d] => place(src, name, p, device)?,
            _ => Placed::Dense,
        };
        let embed = match placed {
            Placed::Host(p) => Embedding::Packed(p),
            Placed::Device(b) => Embedding::Blocks(b),
            Placed::Dense => {
                fits(src, name, v as u64 * d as u64 * 4, device)?;
                Embedding::Dense(Tensor::from_data(
                    TensorData::new(required(src, name, &[v, d])?, [v, d]),
                    device,
                ))
            }
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        let arch = config.arch;
        for i in 0..config.num_layers {
            let p = |t: Target| {
                let name = format!("model.layers.{i}.{}.weight", t.hf_path());
                projection(src, &name, t.dims(config), device)
            };
            let layer_norm = |module: &str, n: usize| {
                norm(
                    src,
                    arch,
                    &format!("model.layers.{i}.{module}.weight"),
                    n,
                    device,
                )
            };
            let bias = |t: Target| {
                let name = format!("model.layers.{i}.{}.bias", t.hf_path());
                vector(src, &name, t.dims(config).1, device)
            };
            let hd = config.head_dim;
            let mut layer = LayerWeights {
                attn_norm: layer_norm("input_layernorm", d)?,
                proj: [
                    p(Target::Q)?,
                    p(Target::K)?,
                    p(Target::V)?,
                    p(Target::O)?,
                    p(Target::Gate)?,
                    p(Target::Up)?,
                    p(Target::Down)?,
                ],
                ffn_norm: match arch.sandwich_norms() {
                    true => layer_norm("pre_feedforward_layernorm", d)?,
                    false => layer_norm("post_attention_layernorm", d)?,
                },
                qkv_bias: match arch.qkv_bias() {
                    true => Some([bias(Target::Q)?, bias(Target::K)?, bias(Target::V)?]),
                    false => None,
                },
                qk_norm: match arch.qk_norm() {
                    true => Some([
                        layer_norm("self_attn.q_norm", hd)?,
                        layer_norm("self_attn.k_norm", hd)?,
                    ]),
                    false => None,
                },
                post_norms: match arch.sandwich_norms() {
                    true => Some([
                        layer_norm("post_attention_layernorm", d)?,
                        layer_norm("post_feedforward_layernorm", d)?,
                    ]),
                    false => None,
                },
                qkv: None,
                gate_up: None,
            };
            layer.join_blocks(crate::gpu::max_buffer(device));
            layers.push(layer);
        }
        let norm = norm(src, arch, "model.norm.weight", d, device)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(linear(src, "lm_head.weight", d, v, device)?)
        };
        Ok(Self {
            embed,
            layers,
            norm,
            lm_head,
        })
    }

    /// The same weights with the embedding and every projection expanded
    /// to f32.
    pub fn to_dense(&self, device: &Device) -> Self {
        let mut dense = self.clone();
        dense.embed = Embedding::Dense(self.embed.to_dense(device));
        for layer in &mut dense.layers {
            for w in &mut layer.proj {
                *w = Frozen::Dense(w.to_dense(device));
            }
            (layer.qkv, layer.gate_up) = (None, None);
        }
        dense
    }

    /// Matrices whose blocks (a k-quant) were requantized to Q8_0 to stay
    /// packed on a GPU.
    pub fn requantized(&self) -> usize {
        let embed = matches!(&self.embed, Embedding::Blocks(b) if b.requantized);
        let proj = self
            .layers
            .iter()
            .flat_map(|l| &l.proj)
            .filter(|w| matches!(w, Frozen::Blocks(b) if b.requantized))
            .count();
        proj + usize::from(embed)
    }

    /// Bytes the weights hold resident.
    pub fn byte_len(&self) -> usize {
        let f32s = |t: &Tensor<2>| t.shape().num_elements() * 4;
        let vectors = |l: &LayerWeights| {
            let extra = l.qkv_bias.iter().flatten();
            let extra = extra.chain(l.qk_norm.iter().flatten());
            let extra = extra.chain(l.post_norms.iter().flatten());
            [&l.attn_norm, &l.ffn_norm]
                .into_iter()
                .chain(extra)
                .map(|t| t.shape().num_elements() * 4)
                .sum::<usize>()
        };
        let norms =
            self.norm.shape().num_elements() * 4 + self.layers.iter().map(vectors).sum::<usize>();
        self.embed.byte_len()
            + self.lm_head.as_ref().map_or(0, f32s)
            + norms
            + self
                .layers
                .iter()
                .flat_map(|l| l.proj.iter().map(Frozen::byte_len))
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::{gguf_row_of, permute_rows_for_gguf, unpermute_rows_from_gguf};

    #[test]
    fn the_packed_row_order_is_the_dense_unpermutation() {
        let (rows, n_head) = (12, 3);
        let w: Vec<f32> = (0..rows).map(|x| x as f32).collect();
        let dense = unpermute_rows_from_gguf(&w, rows, 1, n_head);
        let packed: Vec<f32> = (0..rows)
            .map(|r| w[gguf_row_of(r, rows / n_head)])
            .collect();
        assert_eq!(packed, dense);
    }

    #[test]
    fn gguf_row_permutation_round_trips_and_interleaves_halves() {
        // 2 heads of head_dim 4, 1 column: HF rows [a0 a1 b0 b1] per head.
        let hf: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let gguf = permute_rows_for_gguf(&hf, 8, 1, 2);
        assert_eq!(gguf, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(unpermute_rows_from_gguf(&gguf, 8, 1, 2), hf);
    }
}
