//! Text generation with a KV cache: prefill the prompt once, then one token
//! per forward pass. Greedy by default; temperature sampling when asked.
//!
//! [`Decoder`] splits each token into a device step and a [`Readback`];
//! [`generate`] is the one loop over it, awaited by the page and blocked on
//! by the CLI.

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData, Transaction};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::error::{Error, Result};
use crate::lora::LoraAdapters;
use crate::model::{KvCache, Llama, Mode};
use crate::readback::{Readback, one};
use crate::tokenizer::TextTokenizer;

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
    /// Whether a stop id ended it.
    ended: bool,
}

/// The id from a readback: the argmax, or the draw's slot in the probabilities.
fn pick(data: &TensorData, draw: Option<f32>) -> Result<u32> {
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

/// The one element of a single-tensor readback, picked.
fn pick_one(data: Vec<TensorData>, draw: Option<f32>) -> Result<u32> {
    pick(one(&data)?, draw)
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
            ended: false,
        }
    }

    /// Tokens produced so far (stop token excluded).
    pub fn produced(&self) -> &[u32] {
        &self.produced
    }

    /// Whether a stop id ended generation (rather than `max_tokens` or the
    /// context's end).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Runs the model on the pending input; the next token is read with the
    /// readback. `None` once generation is over (stop token, `max_tokens`,
    /// or the context is full).
    pub fn step(&mut self) -> Option<Readback<u32>> {
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
            let id: Tensor<1, Int> = logits.argmax(1).reshape([1]);
            Readback::new(Transaction::default().register(id), |d| pick_one(d, None))
        } else {
            let probs: Tensor<1> =
                softmax(logits.div_scalar(self.config.temperature), 1).reshape([v]);
            let draw: f32 = self.rng.random();
            Readback::new(Transaction::default().register(probs), move |d| {
                pick_one(d, Some(draw))
            })
        })
    }

    /// Takes the read token; returns false when it ends generation.
    pub fn accept(&mut self, id: u32) -> bool {
        if self.stop.contains(&id) {
            self.done = true;
            self.ended = true;
            return false;
        }
        self.produced.push(id);
        self.input = vec![id as i64];
        true
    }
}

/// Continues `prompt` until a `stop` id or `max_tokens`; returns the new
/// ids (the stop id excluded). `on_token` sees each id as it comes and may
/// return false to stop early. The one decode loop: the CLI blocks on it,
/// the page awaits it.
pub async fn generate(
    model: &Llama,
    adapters: Option<&LoraAdapters>,
    prompt: &[u32],
    stop: &[u32],
    config: &GenerateConfig,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<Vec<u32>> {
    let mut decoder = Decoder::new(model, adapters, prompt, stop, config.clone());
    while let Some(next) = decoder.step() {
        let id = next.read().await?;
        if !decoder.accept(id) || !on_token(id)? {
            break;
        }
    }
    Ok(decoder.produced().to_vec())
}

/// [`generate`] as text: `on_text` gets each piece as it becomes whole
/// characters; returns all the text, a trailing partial character included.
pub async fn generate_text(
    model: &Llama,
    adapters: Option<&LoraAdapters>,
    tok: &TextTokenizer,
    prompt: &[u32],
    config: &GenerateConfig,
    mut on_text: impl FnMut(&str) -> Result<()>,
) -> Result<String> {
    let mut stream = TextStream::new(tok);
    generate(model, adapters, prompt, &tok.stop_ids(), config, |id| {
        if let Some(text) = stream.push(id) {
            on_text(&text)?;
        }
        Ok(true)
    })
    .await?;
    stream.finish()
}

/// One greedy reply to a prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reply {
    /// Its text (special tokens left out).
    pub text: String,
    /// Tokens generated, the stop token not counted.
    pub tokens: usize,
    /// Whether it ended with one of the tokenizer's stop ids (end of turn,
    /// end of text) within `max_tokens`.
    pub ended: bool,
}

/// Continues `prompt` greedily until a stop id of `tok` or `max_tokens`,
/// and says which ended it.
pub async fn reply(
    model: &Llama,
    adapters: Option<&LoraAdapters>,
    tok: &TextTokenizer,
    prompt: &[u32],
    max_tokens: usize,
) -> Result<Reply> {
    let config = GenerateConfig {
        max_tokens,
        ..GenerateConfig::default()
    };
    let mut decoder = Decoder::new(model, adapters, prompt, &tok.stop_ids(), config);
    while let Some(next) = decoder.step() {
        let id = next.read().await?;
        if !decoder.accept(id) {
            break;
        }
    }
    Ok(Reply {
        text: tok.decode(decoder.produced(), true)?,
        tokens: decoder.produced().len(),
        ended: decoder.ended(),
    })
}

/// Turns generated ids into text as they come, yielding only whole
/// characters: a token can end inside a UTF-8 sequence.
pub struct TextStream<'a> {
    tok: &'a TextTokenizer,
    ids: Vec<u32>,
    shown: String,
}

impl<'a> TextStream<'a> {
    /// An empty stream over `tok`.
    pub fn new(tok: &'a TextTokenizer) -> Self {
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
