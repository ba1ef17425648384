//! Text generation with a KV cache: prefill the prompt once, then one token
//! per forward pass. Greedy by default; temperature sampling when asked.

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::error::Result;
use crate::lora::LoraAdapters;
use crate::model::{KvCache, Llama, Mode};

/// Decoding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// Most new tokens. Default 128.
    pub max_tokens: usize,
    /// 0 = greedy (argmax); otherwise softmax temperature. Default 0.
    pub temperature: f64,
    /// Seed for sampling. Default 0.
    pub seed: u64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            temperature: 0.0,
            seed: 0,
        }
    }
}

/// Continues `prompt` until a `stop` id or `max_tokens`; returns the new
/// ids (the stop id excluded). `on_token` sees each id as it comes and may
/// return false to stop early.
pub fn generate(
    model: &Llama,
    adapters: Option<&LoraAdapters>,
    prompt: &[u32],
    stop: &[u32],
    config: &GenerateConfig,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    let device = &model.device;
    let mut cache = KvCache::default();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut out = Vec::new();
    let mut input: Vec<i64> = prompt.iter().map(|&i| i as i64).collect();
    let limit = model.config.max_position_embeddings;
    while out.len() < config.max_tokens && cache.len() + input.len() <= limit && !input.is_empty() {
        let n = input.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(input.clone(), [1, n]), device);
        let hidden = model.hidden_cached(ids, Some(&mut cache), adapters, Mode::Eval); // [n, d]
        let last = hidden.slice([n - 1..n, 0..model.config.hidden_size]); // [1, d]
        let logits = model.logits(last); // [1, V]
        let next = if config.temperature <= 0.0 {
            logits.argmax(1).into_scalar::<i64>() as u32
        } else {
            let probs: Vec<f32> = softmax(logits.div_scalar(config.temperature), 1)
                .into_data()
                .try_to_vec()
                .unwrap_or_default();
            let mut x: f32 = rng.random();
            let mut pick = probs.len().saturating_sub(1);
            for (i, p) in probs.iter().enumerate() {
                if x < *p {
                    pick = i;
                    break;
                }
                x -= p;
            }
            pick as u32
        };
        if stop.contains(&next) {
            break;
        }
        out.push(next);
        if !on_token(next) {
            break;
        }
        input = vec![next as i64];
    }
    Ok(out)
}
