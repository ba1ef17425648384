//! Low-rank adapters (Hu et al. 2021, <https://arxiv.org/abs/2106.09685>).
//!
//! An adapted projection computes `y = x·W + s·dropout(x)·A·B` with `W`
//! frozen, `A: [d_in, r]`, `B: [r, d_out]` and `s = alpha/r` (or
//! `alpha/sqrt(r)` with rsLoRA, <https://arxiv.org/abs/2312.03732>). This is
//! PEFT's `lora.Linear.forward`; only `T·(d_in + d_out)·r` extra work per
//! projection, and no gradient is ever formed for `W`.
//!
//! Initialisation follows PEFT's `reset_lora_parameters` with
//! `init_lora_weights=True`: `A ~ U(-1/sqrt(d_in), 1/sqrt(d_in))`
//! (`kaiming_uniform_(a=sqrt(5))`) and `B = 0`, so a fresh adapter leaves the
//! model unchanged. `A` is drawn on the host from a seeded `StdRng`, so the
//! same seed gives the same adapter on every backend.

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::error::{Error, Result};
use crate::model::config::LlamaConfig;

/// A projection LoRA can adapt, in the engine's fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Attention query projection (`q_proj`).
    Q,
    /// Attention key projection (`k_proj`).
    K,
    /// Attention value projection (`v_proj`).
    V,
    /// Attention output projection (`o_proj`).
    O,
    /// MLP gate projection (`gate_proj`).
    Gate,
    /// MLP up projection (`up_proj`).
    Up,
    /// MLP down projection (`down_proj`).
    Down,
}

impl Target {
    /// All targets, in index order.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// Position in [`Target::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// PEFT's `target_modules` name, e.g. `q_proj`.
    pub fn peft_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// Module path inside an HF Llama layer, e.g. `self_attn.q_proj`.
    pub fn hf_path(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// The GGUF tensor stem, e.g. `attn_q`.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        }
    }

    /// `(d_in, d_out)` of this projection for `config`.
    pub fn dims(self, config: &LlamaConfig) -> (usize, usize) {
        let d = config.hidden_size;
        let q = config.num_heads * config.head_dim;
        let kv = config.num_kv_heads * config.head_dim;
        let ff = config.intermediate_size;
        match self {
            Target::Q => (d, q),
            Target::K | Target::V => (d, kv),
            Target::O => (q, d),
            Target::Gate | Target::Up => (d, ff),
            Target::Down => (ff, d),
        }
    }

    /// Parses a target from a name as users write it: `q`, `q_proj`,
    /// `attn_q`, `gate`, `gate_proj`, ...
    pub fn parse(name: &str) -> Option<Target> {
        let n = name.trim().to_ascii_lowercase();
        Target::ALL.into_iter().find(|t| {
            let peft = t.peft_name();
            n == peft || n == peft.trim_end_matches("_proj") || n == t.gguf_name()
        })
    }

    /// Parses a comma-separated target list; `all` means every target.
    pub fn parse_list(list: &str) -> Result<Vec<Target>> {
        if list.trim().eq_ignore_ascii_case("all") {
            return Ok(Target::ALL.to_vec());
        }
        let mut out = Vec::new();
        for part in list.split(',').filter(|p| !p.trim().is_empty()) {
            let t = Target::parse(part).ok_or_else(|| {
                Error::setting(
                    "targets",
                    format!(
                        "`{}` is not a projection LoRA can adapt; use some of q,k,v,o,gate,up,down \
                         (embeddings and the LM head are never adapted)",
                        part.trim()
                    ),
                )
            })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            return Err(Error::setting("targets", "no target given"));
        }
        out.sort();
        Ok(out)
    }
}

/// LoRA hyper-parameters (PEFT's `LoraConfig` fields of the same names).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of `A·B`. Default 8.
    pub rank: usize,
    /// Scale numerator `alpha`; the update is scaled by `alpha/r`. Default 16.
    pub alpha: f64,
    /// Dropout on the adapter's input during training. Default 0.05.
    pub dropout: f64,
    /// Projections to adapt. Default: all seven.
    pub targets: Vec<Target>,
    /// Scale by `alpha/sqrt(r)` instead of `alpha/r`. Default false.
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            targets: Target::ALL.to_vec(),
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    /// The factor `s` in `x·W + s·x·A·B`.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 || self.rank > 1024 {
            return Err(Error::setting(
                "rank",
                format!("{} is not in 1..=1024", self.rank),
            ));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::setting(
                "alpha",
                format!("{} must be positive", self.alpha),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::setting(
                "dropout",
                format!("{} is not in [0, 1)", self.dropout),
            ));
        }
        if self.targets.is_empty() {
            return Err(Error::setting("targets", "no target given"));
        }
        Ok(())
    }
}

/// One adapted projection's factors.
#[derive(Clone, Debug)]
pub struct LoraPair {
    /// `A: [d_in, r]` (PEFT's `lora_A.weight` transposed).
    pub a: Tensor<2>,
    /// `B: [r, d_out]` (PEFT's `lora_B.weight` transposed).
    pub b: Tensor<2>,
}

/// The adapters of a whole model: `layers[i][target.index()]`.
#[derive(Clone, Debug)]
pub struct LoraAdapters {
    /// The hyper-parameters they were made with.
    pub config: LoraConfig,
    /// Per layer, per target, the factors (or `None` when not adapted).
    pub layers: Vec<[Option<LoraPair>; 7]>,
}

impl LoraAdapters {
    /// Fresh adapters: `A` uniform as in PEFT, `B` zero.
    pub fn init(
        config: LoraConfig,
        model: &LlamaConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let r = config.rank;
        let layers = (0..model.num_layers)
            .map(|_| {
                std::array::from_fn(|i| {
                    let t = Target::ALL[i];
                    config.targets.contains(&t).then(|| {
                        let (d_in, d_out) = t.dims(model);
                        let bound = 1.0 / (d_in as f64).sqrt();
                        let a: Vec<f32> = (0..d_in * r)
                            .map(|_| rng.random_range(-bound..bound) as f32)
                            .collect();
                        LoraPair {
                            a: Tensor::from_data(TensorData::new(a, [d_in, r]), device),
                            b: Tensor::zeros([r, d_out], device),
                        }
                    })
                })
            })
            .collect();
        Ok(Self { config, layers })
    }

    /// The adapted projection of `layer`, if any.
    pub fn get(&self, layer: usize, target: Target) -> Option<&LoraPair> {
        self.layers.get(layer)?[target.index()].as_ref()
    }

    /// Every factor in a fixed order (layer, target, A then B), with its
    /// PEFT key.
    pub fn named_tensors(&self) -> Vec<(String, &Tensor<2>)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for t in Target::ALL {
                if let Some(p) = &layer[t.index()] {
                    let stem = format!("base_model.model.model.layers.{i}.{}", t.hf_path());
                    out.push((format!("{stem}.lora_A.weight"), &p.a));
                    out.push((format!("{stem}.lora_B.weight"), &p.b));
                }
            }
        }
        out
    }

    /// Applies `f` to every factor, in [`LoraAdapters::named_tensors`] order.
    pub fn map(&self, mut f: impl FnMut(Tensor<2>) -> Tensor<2>) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                std::array::from_fn(|i| {
                    layer[i].as_ref().map(|p| {
                        let a = f(p.a.clone());
                        let b = f(p.b.clone());
                        LoraPair { a, b }
                    })
                })
            })
            .collect();
        Self {
            config: self.config.clone(),
            layers,
        }
    }

    /// Number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.named_tensors()
            .iter()
            .map(|(_, t)| t.dims().iter().product::<usize>())
            .sum()
    }
}
