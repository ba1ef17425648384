//! The Llama architecture's hyper-parameters, read from the checkpoint itself:
//! GGUF metadata (`llama.*` keys) or a Hugging Face `config.json`.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::io::gguf::Gguf;

/// Shape and constants of a Llama-family causal LM.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Tokens in the vocabulary (rows of the embedding).
    pub vocab_size: usize,
    /// Model width `d`.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP's inner layer.
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
    /// RoPE base frequency θ.
    pub rope_theta: f64,
    /// Longest context the checkpoint was trained for.
    pub max_position_embeddings: usize,
    /// Whether the LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
}

impl LlamaConfig {
    /// Weights in the model: embedding, per layer the four attention and
    /// three MLP projections and two norms, the final norm, and the LM head
    /// unless it is tied.
    pub fn num_parameters(&self) -> usize {
        let d = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let layer = d * q + 2 * d * kv + q * d + 3 * d * self.intermediate_size + 2 * d;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.num_layers * layer + d + head
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
        Ok(())
    }

    /// Reads the `llama.*` metadata of a GGUF file. Whether embeddings are
    /// tied is decided by the absence of an `output.weight` tensor.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch = g.meta_str("general.architecture")?;
        if arch != "llama" {
            return Err(Error::format(
                g.file(),
                format!("architecture `{arch}` is not supported (tabtune reads `llama`)"),
            ));
        }
        let u = |k: &str| g.meta_u64(&format!("llama.{k}")).map(|v| v as usize);
        let hidden_size = u("embedding_length")?;
        let num_heads = u("attention.head_count")?;
        let vocab_size = match g.metadata.get("llama.vocab_size") {
            Some(_) => u("vocab_size")?,
            None => g.meta_strings("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim = match g.metadata.get("llama.attention.key_length") {
            Some(_) => u("attention.key_length")?,
            None => hidden_size / num_heads.max(1),
        };
        let config = Self {
            vocab_size,
            hidden_size,
            intermediate_size: u("feed_forward_length")?,
            num_layers: u("block_count")?,
            num_heads,
            num_kv_heads: match g.metadata.get("llama.attention.head_count_kv") {
                Some(_) => u("attention.head_count_kv")?,
                None => num_heads,
            },
            head_dim,
            rms_norm_eps: g.meta_f64("llama.attention.layer_norm_rms_epsilon")?,
            rope_theta: match g.metadata.get("llama.rope.freq_base") {
                Some(_) => g.meta_f64("llama.rope.freq_base")?,
                None => 10_000.0,
            },
            max_position_embeddings: u("context_length")?,
            tie_word_embeddings: g.tensor("output.weight").is_none(),
        };
        config.validate(g.file())?;
        Ok(config)
    }

    /// Parses a Hugging Face `config.json` of a `LlamaForCausalLM`.
    pub fn from_hf_json(file: &str, bytes: &[u8]) -> Result<Self> {
        let raw: HfConfig = serde_json::from_slice(bytes).map_err(|e| {
            Error::format(
                file,
                format!("line {} column {}: {e}", e.line(), e.column()),
            )
        })?;
        if let Some(mt) = raw.model_type.as_deref().filter(|mt| *mt != "llama") {
            return Err(Error::format(
                file,
                format!("model_type `{mt}` is not supported (tabtune reads `llama`)"),
            ));
        }
        if raw.rope_scaling.as_ref().is_some_and(|s| !s.is_null()) {
            return Err(Error::format(file, "rope_scaling is not supported yet"));
        }
        if let Some(act) = raw.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(Error::format(
                file,
                format!("hidden_act `{act}` is not supported (silu is)"),
            ));
        }
        if raw.attention_bias || raw.mlp_bias {
            return Err(Error::format(
                file,
                "attention or MLP biases are not supported",
            ));
        }
        // transformers >= 5 moved `rope_theta` into `rope_parameters`.
        let rope_theta = match (&raw.rope_parameters, raw.rope_theta) {
            (Some(p), _) => {
                if p.rope_type.as_deref().is_some_and(|t| t != "default") {
                    return Err(Error::format(
                        file,
                        format!(
                            "rope_type `{}` is not supported (default is)",
                            p.rope_type.as_deref().unwrap_or("")
                        ),
                    ));
                }
                p.rope_theta.or(raw.rope_theta).unwrap_or(10_000.0)
            }
            (None, theta) => theta.unwrap_or(10_000.0),
        };
        let config = Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1)),
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings,
        };
        config.validate(file)?;
        Ok(config)
    }
}

/// The fields of `config.json` tabtune uses, with transformers' defaults.
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
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
    rope_parameters: Option<RopeParameters>,
    hidden_act: Option<String>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    rope_scaling: Option<serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    2048
}

#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
}
