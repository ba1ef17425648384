//! The hyper-parameters of the decoder families tabtune reads (Llama,
//! Qwen2, Qwen3, Gemma 3), from the checkpoint itself: GGUF metadata
//! (`{arch}.*` keys) or a Hugging Face `config.json`.
//!
//! The families share one forward pass (`model::llama`) and differ in the
//! parts [`Arch`] names:
//!
//! | family | `config.json` `model_type` | GGUF arch | differences from Llama |
//! | --- | --- | --- | --- |
//! | Llama | `llama` | `llama` | none; GGUF stores q/k rows permuted for interleaved RoPE |
//! | Qwen2, Qwen2.5 | `qwen2` | `qwen2` | bias on q, k and v |
//! | Qwen3 | `qwen3` | `qwen3` | RMSNorm over each q and k head before RoPE; head size given |
//! | Gemma 3 | `gemma3_text` | `gemma3` | embeddings scaled by √d; norms `(1 + w)` (GGUF stores `1 + w`); q/k head norms; a norm after attention and after the MLP too; GeGLU (tanh GELU); sliding-window layers with their own RoPE base; attention scaled by `query_pre_attn_scalar^-½` |

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::io::gguf::Gguf;

/// The model families tabtune reads, as the page and the CLI list them.
pub const SUPPORTED_FAMILIES: &str =
    "Llama (SmolLM2 and others without RoPE scaling), Qwen2 / Qwen2.5, Qwen3 and Gemma 3 (text)";

/// A decoder family: what its blocks add to Llama's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama and its many copies (SmolLM2, TinyLlama, ...).
    Llama,
    /// Qwen2 and Qwen2.5.
    Qwen2,
    /// Qwen3 (dense).
    Qwen3,
    /// Gemma 3, the text model.
    Gemma3,
}

impl Arch {
    /// The family of a GGUF `general.architecture`.
    pub fn from_gguf(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma3" => Self::Gemma3,
            _ => return None,
        })
    }

    /// The family of a `config.json` `model_type`.
    pub fn from_model_type(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma3_text" => Self::Gemma3,
            _ => return None,
        })
    }

    /// Its GGUF `general.architecture` (and metadata key prefix).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3",
        }
    }

    /// Its `config.json` `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Gemma3 => "gemma3_text",
            other => other.gguf_name(),
        }
    }

    /// transformers' class for it.
    pub fn hf_class(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Gemma3 => "Gemma3ForCausalLM",
        }
    }

    /// Whether llama.cpp's converter stores q/k rows permuted for
    /// interleaved RoPE (the others use NeoX RoPE, HF's own row order).
    pub fn permutes_qk(self) -> bool {
        self == Self::Llama
    }

    /// Whether q, k and v carry a bias.
    pub fn qkv_bias(self) -> bool {
        self == Self::Qwen2
    }

    /// Whether each q and k head is RMS-normed before RoPE.
    pub fn qk_norm(self) -> bool {
        matches!(self, Self::Qwen3 | Self::Gemma3)
    }

    /// Whether attention's and the MLP's outputs are normed before they
    /// join the residual stream (Gemma's four norms a block).
    pub fn sandwich_norms(self) -> bool {
        self == Self::Gemma3
    }

    /// What an RMSNorm weight `w` of a Hugging Face file multiplies by,
    /// less `w`: Gemma scales by `1 + w` (its GGUF files store `1 + w`).
    pub fn hf_norm_shift(self) -> f32 {
        match self {
            Self::Gemma3 => 1.0,
            _ => 0.0,
        }
    }

    /// The factor token embeddings are scaled by, if any: `√d` for Gemma.
    pub fn embed_scale(self, hidden_size: usize) -> Option<f32> {
        (self == Self::Gemma3).then(|| (hidden_size as f32).sqrt())
    }

    /// transformers' `tie_word_embeddings` default.
    fn ties_by_default(self) -> bool {
        self == Self::Gemma3
    }
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: `silu(gate)·up`.
    Silu,
    /// GeGLU with tanh GELU: `gelu_tanh(gate)·up` (Gemma).
    GeluTanh,
}

impl Activation {
    fn parse(file: &str, name: &str) -> Result<Self> {
        match name {
            "silu" | "swish" => Ok(Self::Silu),
            "gelu_pytorch_tanh" | "gelu_tanh" => Ok(Self::GeluTanh),
            other => Err(Error::format(
                file,
                format!("hidden_act `{other}` is not supported (silu and gelu_pytorch_tanh are)"),
            )),
        }
    }
}

/// Sliding-window attention on some layers: each position sees itself and
/// the `size - 1` before it (transformers' `kv_idx > q_idx - window`).
#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindow {
    /// Keys a query sees, itself included.
    pub size: usize,
    /// Per layer: whether it slides.
    pub layers: Vec<bool>,
    /// The RoPE base of the sliding layers.
    pub rope_theta: f64,
}

/// Shape and constants of a causal LM of one of the [`Arch`] families.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// The family.
    pub arch: Arch,
    /// Tokens in the vocabulary (rows of the embedding).
    pub vocab_size: usize,
    /// Model width `d`.
    pub hidden_size: usize,
    /// Width of the gated MLP's inner layer.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency θ (of the full-attention layers).
    pub rope_theta: f64,
    /// Longest context the checkpoint was trained for.
    pub max_position_embeddings: usize,
    /// Whether the LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// The MLP's gate activation.
    pub hidden_act: Activation,
    /// What attention logits are scaled by: `1/√head_dim` unless the
    /// checkpoint says otherwise (Gemma's `query_pre_attn_scalar^-½`).
    pub attn_scale: f64,
    /// Sliding-window layers, if any.
    pub sliding_window: Option<SlidingWindow>,
}

fn unsupported(file: &str, what: &str, name: &str) -> Error {
    let hint = if name == "gemma3" && what == "model_type" {
        " (this is the multimodal Gemma 3; tabtune reads the text model, model_type `gemma3_text`)"
    } else {
        ""
    };
    Error::format(
        file,
        format!("{what} `{name}` is not supported{hint}: tabtune reads {SUPPORTED_FAMILIES}"),
    )
}

impl LlamaConfig {
    /// Weights in the model: embedding, per layer the four attention and
    /// three MLP projections, their biases and norms, the final norm, and
    /// the LM head unless it is tied.
    pub fn num_parameters(&self) -> usize {
        let d = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let bias = if self.arch.qkv_bias() { q + 2 * kv } else { 0 };
        let qk_norm = if self.arch.qk_norm() {
            2 * self.head_dim
        } else {
            0
        };
        let norms = if self.arch.sandwich_norms() { 4 } else { 2 } * d;
        let layer = d * q + 2 * d * kv + q * d + 3 * d * self.intermediate_size;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.num_layers * (layer + bias + qk_norm + norms) + d + head
    }

    /// Whether attention is scaled by `1/√head_dim` (the kernels' own scale).
    pub fn default_attn_scale(&self) -> bool {
        let default = 1.0 / (self.head_dim as f64).sqrt();
        (self.attn_scale - default).abs() <= 1e-12 * default
    }

    /// The sliding window of layer `layer`, if it slides.
    pub fn window(&self, layer: usize) -> Option<usize> {
        let w = self.sliding_window.as_ref()?;
        w.layers
            .get(layer)
            .copied()
            .unwrap_or(false)
            .then_some(w.size)
    }

    /// Checks the numbers are consistent with each other.
    pub fn validate(&self, file: &str) -> Result<()> {
        let fail = |reason: String| Err(Error::format(file, reason));
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, v) in sizes {
            if v == 0 || v > 1 << 24 {
                return fail(format!("{name} = {v} is out of range"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return fail(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return fail(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return fail("rms_norm_eps and rope_theta must be positive".into());
        }
        if !(self.attn_scale.is_finite() && self.attn_scale > 0.0) {
            return fail(format!(
                "the attention scale {} must be positive",
                self.attn_scale
            ));
        }
        if let Some(w) = &self.sliding_window {
            if w.size == 0 {
                return fail("sliding_window must be at least 1".into());
            }
            if w.layers.len() != self.num_layers {
                return fail(format!(
                    "layer_types lists {} layers but the model has {}",
                    w.layers.len(),
                    self.num_layers
                ));
            }
            if w.rope_theta.is_nan() || w.rope_theta <= 0.0 {
                return fail("the sliding layers' RoPE base must be positive".into());
            }
        }
        Ok(())
    }

    /// Reads the `{arch}.*` metadata of a GGUF file; the architecture is
    /// checked before anything else. Whether embeddings are tied is decided
    /// by the absence of an `output.weight` tensor. What llama.cpp fixes
    /// rather than stores, it fixes here too: Gemma 3's every sixth layer
    /// is global and the others slide with RoPE base 10,000 (unless the
    /// file says otherwise), and its
    /// attention scale is `1/√head_dim` (`1/√(d/heads)` for the 62-layer
    /// 27B), as `llama-model.cpp` sets them.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let name = g.meta_str("general.architecture")?;
        let arch =
            Arch::from_gguf(name).ok_or_else(|| unsupported(g.file(), "architecture", name))?;
        let prefix = arch.gguf_name();
        let key = |k: &str| format!("{prefix}.{k}");
        let has = |k: &str| g.metadata.contains_key(&key(k));
        let u = |k: &str| g.meta_u64(&key(k)).map(|v| v as usize);
        let hidden_size = u("embedding_length")?;
        let num_heads = u("attention.head_count")?;
        let num_layers = u("block_count")?;
        let vocab_size = match has("vocab_size") {
            true => u("vocab_size")?,
            false => g.meta_strings("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim = match has("attention.key_length") {
            true => u("attention.key_length")?,
            false => hidden_size / num_heads.max(1),
        };
        // RoPE that is not plain (Llama 3's frequency factors, linear or
        // YaRN scaling, partial rotation): refused, not run wrong.
        let scaling = g
            .metadata
            .get(&key("rope.scaling.type"))
            .and_then(|v| v.as_str())
            .filter(|t| *t != "none");
        let rotated = match has("rope.dimension_count") {
            true => Some(u("rope.dimension_count")?),
            false => None,
        };
        if let Some(t) = scaling {
            return Err(Error::format(
                g.file(),
                format!("RoPE scaling `{t}` is not supported yet"),
            ));
        }
        if g.tensor("rope_freqs.weight").is_some() {
            return Err(Error::format(
                g.file(),
                "RoPE frequency factors (rope_freqs.weight, Llama 3.1+) are not supported yet",
            ));
        }
        if let Some(n) = rotated.filter(|&n| n != head_dim) {
            return Err(Error::format(
                g.file(),
                format!(
                    "RoPE on {n} of each head's {head_dim} dimensions is not supported (all of them are)"
                ),
            ));
        }
        let (hidden_act, attn_scale, sliding_window) = match arch {
            Arch::Gemma3 => {
                let size = match has("attention.sliding_window") {
                    true => u("attention.sliding_window")?,
                    false => 0,
                };
                let scaled_by = if num_layers == 62 {
                    hidden_size / num_heads.max(1)
                } else {
                    head_dim
                };
                // Newer converters write the pattern (a period, or a flag
                // per layer) and the sliding layers' base; llama.cpp's
                // defaults are 6 and 10,000.
                let layers: Vec<bool> = match g
                    .metadata
                    .get(&key("attention.sliding_window_pattern"))
                {
                    Some(v) => match (v.as_u64(), v.as_array()) {
                        (Some(period), _) => (0..num_layers)
                            .map(|i| period == 0 || !(i as u64 + 1).is_multiple_of(period))
                            .collect(),
                        (None, Some(flags)) => {
                            flags.iter().map(|f| f.as_bool() == Some(true)).collect()
                        }
                        _ => {
                            return Err(Error::format(
                                g.file(),
                                format!(
                                    "{prefix}.attention.sliding_window_pattern is neither a number nor flags"
                                ),
                            ));
                        }
                    },
                    None => (0..num_layers)
                        .map(|i| !(i + 1).is_multiple_of(6))
                        .collect(),
                };
                let rope_theta = match has("rope.freq_base_swa") {
                    true => g.meta_f64(&key("rope.freq_base_swa"))?,
                    false => 10_000.0,
                };
                let sliding = (size > 0).then_some(SlidingWindow {
                    size,
                    layers,
                    rope_theta,
                });
                (
                    Activation::GeluTanh,
                    1.0 / (scaled_by as f64).sqrt(),
                    sliding,
                )
            }
            _ => (Activation::Silu, 1.0 / (head_dim as f64).sqrt(), None),
        };
        let config = Self {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size: u("feed_forward_length")?,
            num_layers,
            num_heads,
            num_kv_heads: match has("attention.head_count_kv") {
                true => u("attention.head_count_kv")?,
                false => num_heads,
            },
            head_dim,
            rms_norm_eps: g.meta_f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: match has("rope.freq_base") {
                true => g.meta_f64(&key("rope.freq_base"))?,
                false => 10_000.0,
            },
            max_position_embeddings: u("context_length")?,
            tie_word_embeddings: g.tensor("output.weight").is_none(),
            hidden_act,
            attn_scale,
            sliding_window,
        };
        config.validate(g.file())?;
        Ok(config)
    }

    /// Parses a Hugging Face `config.json` of a causal LM of one of the
    /// [`Arch`] families; the family is checked before anything else.
    pub fn from_hf_json(file: &str, bytes: &[u8]) -> Result<Self> {
        let json_err = |e: serde_json::Error| {
            Error::format(
                file,
                format!("line {} column {}: {e}", e.line(), e.column()),
            )
        };
        // The family first, so an unsupported one is named whatever its fields.
        #[derive(Deserialize)]
        struct Family {
            model_type: Option<String>,
        }
        let family: Family = serde_json::from_slice(bytes).map_err(json_err)?;
        let model_type = family.model_type.as_deref().unwrap_or("llama");
        let arch = Arch::from_model_type(model_type)
            .ok_or_else(|| unsupported(file, "model_type", model_type))?;
        let raw: HfConfig = serde_json::from_slice(bytes).map_err(json_err)?;
        let fail = |reason: String| Err(Error::format(file, reason));
        if raw.rope_scaling.as_ref().is_some_and(|s| !s.is_null()) {
            return fail("rope_scaling is not supported yet".into());
        }
        let act = raw
            .hidden_activation
            .as_deref()
            .or(raw.hidden_act.as_deref())
            .unwrap_or(match arch {
                Arch::Gemma3 => "gelu_pytorch_tanh",
                _ => "silu",
            });
        let hidden_act = Activation::parse(file, act)?;
        if raw.attention_bias && arch != Arch::Qwen2 || raw.mlp_bias {
            return fail(format!(
                "attention or MLP biases are not supported for {}",
                arch.model_type()
            ));
        }
        for (name, v) in [
            ("final_logit_softcapping", raw.final_logit_softcapping),
            ("attn_logit_softcapping", raw.attn_logit_softcapping),
        ] {
            if v.is_some() {
                return fail(format!("{name} is not supported yet"));
            }
        }
        if raw.use_bidirectional_attention == Some(true) {
            return fail("use_bidirectional_attention is not supported (causal LMs only)".into());
        }
        let (rope_theta, local_theta) = rope_thetas(file, arch, &raw)?;
        let head_dim = raw.head_dim.unwrap_or(match arch {
            Arch::Gemma3 => 256,
            Arch::Qwen3 => 128,
            _ => raw.hidden_size / raw.num_attention_heads.max(1),
        });
        let attn_scale = match arch {
            Arch::Gemma3 => 1.0 / raw.query_pre_attn_scalar.unwrap_or(256.0).sqrt(),
            _ => 1.0 / (head_dim as f64).sqrt(),
        };
        // transformers' default for Gemma's sliding layers is 10,000.
        let local_theta = local_theta.unwrap_or(match arch {
            Arch::Gemma3 => 10_000.0,
            _ => rope_theta,
        });
        let sliding_window = sliding(file, arch, &raw, local_theta)?;
        let config = Self {
            arch,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(arch.ties_by_default()),
            hidden_act,
            attn_scale,
            sliding_window,
        };
        config.validate(file)?;
        Ok(config)
    }
}

/// One `rope_parameters` entry (or the old top-level keys).
fn rope_entry(file: &str, entry: &Value, what: &str) -> Result<Option<f64>> {
    if let Some(t) = entry
        .get("rope_type")
        .and_then(Value::as_str)
        .filter(|t| *t != "default")
    {
        return Err(Error::format(
            file,
            format!("{what}rope_type `{t}` is not supported (default is)"),
        ));
    }
    Ok(entry.get("rope_theta").and_then(Value::as_f64))
}

/// The RoPE bases of the full-attention layers and, where the checkpoint
/// gives one, of the sliding layers: transformers >= 5 keeps them in
/// `rope_parameters` (per layer type for Gemma 3), older files in
/// `rope_theta` and `rope_local_base_freq`.
fn rope_thetas(file: &str, arch: Arch, raw: &HfConfig) -> Result<(f64, Option<f64>)> {
    let default = match arch {
        Arch::Gemma3 => 1_000_000.0,
        _ => 10_000.0,
    };
    let Some(p) = raw.rope_parameters.as_ref().filter(|p| !p.is_null()) else {
        return Ok((raw.rope_theta.unwrap_or(default), raw.rope_local_base_freq));
    };
    let (full, local) = match (p.get("full_attention"), p.get("sliding_attention")) {
        (None, None) => (rope_entry(file, p, "")?, None),
        (full, local) => (
            match full {
                Some(f) => rope_entry(file, f, "full_attention ")?,
                None => None,
            },
            match local {
                Some(l) => rope_entry(file, l, "sliding_attention ")?,
                None => None,
            },
        ),
    };
    Ok((
        full.or(raw.rope_theta).unwrap_or(default),
        local.or(raw.rope_local_base_freq),
    ))
}

/// The sliding layers as transformers decides them: `layer_types` when
/// given; else Gemma 3's every sixth layer global (`sliding_window_pattern`),
/// and Qwen's layers from `max_window_layers` on when `use_sliding_window`.
fn sliding(
    file: &str,
    arch: Arch,
    raw: &HfConfig,
    local_theta: f64,
) -> Result<Option<SlidingWindow>> {
    let n = raw.num_hidden_layers;
    // `sliding_window` absent takes transformers' default (4096); `null`
    // means no window for Qwen and is refused for Gemma (transformers
    // cannot run it either).
    let size = match (arch, &raw.sliding_window) {
        (Arch::Gemma3, Some(Value::Null)) => {
            return Err(Error::format(
                file,
                "sliding_window is null, but Gemma 3's sliding layers need one",
            ));
        }
        (Arch::Gemma3, w) => window_size(file, w)?,
        (Arch::Qwen2 | Arch::Qwen3, Some(Value::Null)) => return Ok(None),
        (Arch::Qwen2 | Arch::Qwen3, w) if raw.use_sliding_window == Some(true) => {
            window_size(file, w)?
        }
        _ => return Ok(None),
    };
    let layers: Vec<bool> = match &raw.layer_types {
        Some(types) => types
            .iter()
            .map(|t| match t.as_str() {
                "sliding_attention" => Ok(true),
                "full_attention" => Ok(false),
                other => Err(Error::format(
                    file,
                    format!("layer type `{other}` is not supported (sliding_attention and full_attention are)"),
                )),
            })
            .collect::<Result<_>>()?,
        None if arch == Arch::Gemma3 => {
            let pattern = raw.sliding_window_pattern.unwrap_or(6).max(1);
            (0..n).map(|i| !(i + 1).is_multiple_of(pattern)).collect()
        }
        None => (0..n)
            .map(|i| i >= raw.max_window_layers.unwrap_or(28))
            .collect(),
    };
    Ok(layers.iter().any(|&s| s).then_some(SlidingWindow {
        size,
        layers,
        rope_theta: local_theta,
    }))
}

/// `sliding_window` as a size (4096 when absent).
fn window_size(file: &str, w: &Option<Value>) -> Result<usize> {
    match w {
        None => Ok(4096),
        Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
            Error::format(file, format!("sliding_window {v} is not a whole number"))
        }),
    }
}

/// The fields of `config.json` tabtune uses, with transformers' defaults
/// (the per-family ones are applied in [`LlamaConfig::from_hf_json`]).
#[derive(Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_local_base_freq: Option<f64>,
    rope_parameters: Option<Value>,
    hidden_act: Option<String>,
    hidden_activation: Option<String>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    rope_scaling: Option<Value>,
    query_pre_attn_scalar: Option<f64>,
    /// Kept as JSON: `null` and absent mean different things.
    #[serde(default, deserialize_with = "present")]
    sliding_window: Option<Value>,
    sliding_window_pattern: Option<usize>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    layer_types: Option<Vec<String>>,
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    use_bidirectional_attention: Option<bool>,
}

/// A field that is present, `null` included, as `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    2048
}
