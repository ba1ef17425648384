//! Text generation with a KV cache: prefill the prompt once, then one token
//! per forward pass. Greedy by default; temperature sampling when asked.
//!
//! [`Decoder`] splits each token into a device step and a read, so the CLI
//! reads blocking and the browser reads with `await`; [`generate`] is the
//! blocking loop over it.

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::error::{Error, Result};
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

/// Incremental decoding state for one prompt.
pub struct Decoder<'a> {
    model: &'a Llama,
    adapters: Option<&'a LoraAdapters>,
    stop: Vec<u32>,
    config: GenerateConfig,
    cache: KvCache,
    input: Vec<i64>,
    produced: Vec<u32>,
    rng: StdRng,
    done: bool,
}

/// The next token, computed on the device and not yet read.
pub enum PendingToken {
    /// The argmax id `[1]`.
    Greedy(Tensor<1, Int>),
    /// Probabilities `[V]` and a uniform draw to sample with.
    Sample(Tensor<1>, f32),
}

/// The id from a readback: the argmax, or the draw's slot in the probabilities.
fn pick(data: TensorData, draw: Option<f32>) -> Result<u32> {
    match draw {
        None => data
            .iter::<i64>()
            .next()
            .map(|i| i as u32)
            .ok_or_else(|| Error::Backend("empty readback".into())),
        Some(mut x) => {
            let probs: Vec<f32> = data.iter::<f32>().collect();
            let mut pick = probs.len().saturating_sub(1);
            for (i, p) in probs.iter().enumerate() {
                if x < *p {
                    pick = i;
                    break;
                }
                x -= p;
            }
            Ok(pick as u32)
        }
    }
}

impl PendingToken {
    /// Reads the token, blocking (native backends).
    pub fn read(self) -> Result<u32> {
        match self {
            PendingToken::Greedy(t) => pick(t.into_data(), None),
            PendingToken::Sample(p, x) => pick(p.into_data(), Some(x)),
        }
    }

    /// Reads the token without blocking (required on WebGPU in a browser).
    pub async fn read_async(self) -> Result<u32> {
        match self {
            PendingToken::Greedy(t) => {
                pick(t.into_data_async().await.map_err(Error::backend)?, None)
            }
            PendingToken::Sample(p, x) => {
                pick(p.into_data_async().await.map_err(Error::backend)?, Some(x))
            }
        }
    }
}

impl<'a> Decoder<'a> {
    /// Starts decoding after `prompt`; generation ends at any id in `stop`.
    pub fn new(
        model: &'a Llama,
        adapters: Option<&'a LoraAdapters>,
        prompt: &[u32],
        stop: &[u32],
        config: GenerateConfig,
    ) -> Self {
        Self {
            model,
            adapters,
            stop: stop.to_vec(),
            rng: StdRng::seed_from_u64(config.seed),
            config,
            cache: KvCache::default(),
            input: prompt.iter().map(|&i| i as i64).collect(),
            produced: Vec::new(),
            done: prompt.is_empty(),
        }
    }

    /// Tokens produced so far (stop token excluded).
    pub fn produced(&self) -> &[u32] {
        &self.produced
    }

    /// Runs the model on the pending input; `None` once generation is over
    /// (stop token, `max_tokens`, or the context is full).
    pub fn step(&mut self) -> Option<PendingToken> {
        let limit = self.model.config.max_position_embeddings;
        if self.done
            || self.produced.len() >= self.config.max_tokens
            || self.cache.len() + self.input.len() > limit
        {
            self.done = true;
            return None;
        }
        let n = self.input.len();
        let device = &self.model.device;
        let ids = Tensor::<2, Int>::from_data(TensorData::new(self.input.clone(), [1, n]), device);
        let hidden =
            self.model
                .hidden_cached(ids, Some(&mut self.cache), self.adapters, Mode::Eval); // [n, d]
        let last = hidden.slice([n - 1..n, 0..self.model.config.hidden_size]); // [1, d]
        let logits = self.model.logits(last); // [1, V]
        let v = self.model.config.vocab_size;
        Some(if self.config.temperature <= 0.0 {
            PendingToken::Greedy(logits.argmax(1).reshape([1]))
        } else {
            let probs = softmax(logits.div_scalar(self.config.temperature), 1).reshape([v]);
            PendingToken::Sample(probs, self.rng.random())
        })
    }

    /// Takes the read token; returns false when it ends generation.
    pub fn accept(&mut self, id: u32) -> bool {
        if self.stop.contains(&id) {
            self.done = true;
            return false;
        }
        self.produced.push(id);
        self.input = vec![id as i64];
        true
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
    let mut decoder = Decoder::new(model, adapters, prompt, stop, config.clone());
    while let Some(pending) = decoder.step() {
        let id = pending.read()?;
        if !decoder.accept(id) || !on_token(id) {
            break;
        }
    }
    Ok(decoder.produced().to_vec())
}

/// Turns generated ids into text as they come, yielding only whole
/// characters: a token can end inside a UTF-8 sequence.
pub struct TextStream<'a> {
    tok: &'a crate::tokenizer::TextTokenizer,
    ids: Vec<u32>,
    shown: String,
}

impl<'a> TextStream<'a> {
    /// An empty stream over `tok`.
    pub fn new(tok: &'a crate::tokenizer::TextTokenizer) -> Self {
        Self {
            tok,
            ids: Vec::new(),
            shown: String::new(),
        }
    }

    /// Adds `id`; returns the text that became complete, if any.
    pub fn push(&mut self, id: u32) -> Option<String> {
        self.ids.push(id);
        let s = self.tok.decode(&self.ids, true).ok()?;
        if s.len() > self.shown.len() && s.starts_with(&self.shown) && !s.ends_with('\u{FFFD}') {
            let delta = s[self.shown.len()..].to_string();
            self.shown = s;
            return Some(delta);
        }
        None
    }

    /// All the text, including a trailing partial character.
    pub fn finish(self) -> Result<String> {
        self.tok.decode(&self.ids, true)
    }
}
