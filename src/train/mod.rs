//! The training loop, independent of any front end: the CLI, the tests and
//! the browser worker all drive [`Trainer::step`].
//!
//! One optimizer step = `grad_accum` micro-batches; the loss of each is the
//! sum of token NLLs divided by the trained tokens of the *whole* step, so
//! accumulated gradients equal those of one big batch. Gradients are clipped
//! by their global L2 norm (`torch.nn.utils.clip_grad_norm_`), then AdamW
//! updates every factor at once with the scheduled learning rate ([`flat`]).

pub mod backward;
pub mod batch;
pub mod checkpoint;
pub mod flat;
pub mod join;
pub mod judge;
pub mod memory;
pub mod schedule;
pub mod seed;
pub mod session;
pub mod setting;
pub mod settings;
pub mod state;

use std::sync::Arc;

use burn::tensor::{Tensor, Transaction};
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

use crate::data::Example;
use crate::error::{Error, Result};
use crate::lora::LoraAdapters;
use crate::model::{Llama, Mode};
use crate::readback::{Readback, first};
pub use backward::{Activations, gradients, step_seed};
pub use batch::Batch;
use flat::{AdamWConfig, FlatAdamW, Layout};
pub use schedule::Schedule;
pub use session::{Progress, RunStatus, Session};
pub use settings::{Run, RunSettings};
pub use state::TrainerState;

/// Optimisation settings. Defaults follow common LoRA SFT recipes.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Peak learning rate. Default 1e-3 (measured: see `RunSettings::lr`).
    pub lr: f64,
    /// Optimizer steps in the run (sets the schedule's length). Default 100.
    pub steps: usize,
    /// Warm-up steps with a linearly rising rate. Default 0.
    pub warmup_steps: usize,
    /// Decay after warm-up. Default cosine.
    pub schedule: Schedule,
    /// Examples per micro-batch. Default 4.
    pub batch_size: usize,
    /// Micro-batches per optimizer step. Default 1.
    pub grad_accum: usize,
    /// Longest example in tokens; longer ones are cut. Default 256.
    pub seq_len: usize,
    /// Clip the global gradient norm to this (0 = off). Default 1.0.
    pub max_grad_norm: f64,
    /// AdamW decoupled weight decay. Default 0.0.
    pub weight_decay: f64,
    /// AdamW β1. Default 0.9.
    pub beta1: f64,
    /// AdamW β2. Default 0.999.
    pub beta2: f64,
    /// AdamW ε. Default 1e-8.
    pub eps: f64,
    /// Seed for adapter init, data order and dropout. Default 42.
    pub seed: u64,
    /// Whether the backward pass keeps every block's activations or
    /// recomputes them block by block. Default [`Activations::Recompute`].
    pub activations: Activations,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            steps: 100,
            warmup_steps: 0,
            schedule: Schedule::Cosine,
            batch_size: 4,
            grad_accum: 1,
            seq_len: 256,
            max_grad_norm: 1.0,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            seed: 42,
            activations: Activations::Recompute,
        }
    }
}

impl TrainConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, why: String| Err(Error::setting(name, why));
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr < 1.0) {
            return bad("lr", format!("{} is not in (0, 1)", self.lr));
        }
        if self.steps == 0 {
            return bad("steps", "must be at least 1".into());
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            return bad("batch", format!("{} is not in 1..=4096", self.batch_size));
        }
        if self.grad_accum == 0 {
            return bad("grad-accum", "must be at least 1".into());
        }
        if self.seq_len < 2 || self.seq_len > 1 << 16 {
            return bad("seq-len", format!("{} is not in 2..=65536", self.seq_len));
        }
        if self.max_grad_norm.is_nan() || self.max_grad_norm < 0.0 {
            return bad("max-grad-norm", "must be >= 0".into());
        }
        Ok(())
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepReport {
    /// 1-based optimizer step just taken.
    pub step: usize,
    /// Mean NLL over the step's trained tokens (before the update).
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Trained tokens in the step.
    pub trained_tokens: usize,
    /// All non-padding tokens processed in the step.
    pub tokens: usize,
    /// Epochs completed so far (fractional).
    pub epoch: f64,
    /// Whether the update was skipped because the loss or the gradient norm
    /// was not finite.
    pub skipped: bool,
}

/// Owns the adapters, optimizer state and data cursor of one run.
pub struct Trainer {
    model: Llama,
    /// The adapters being trained (plain tensors, no autodiff): each factor
    /// a slice of `params`.
    adapters: LoraAdapters,
    /// Every factor, flat `[P]`, laid out by `layout`.
    params: Tensor<1>,
    layout: Layout,
    /// Settings.
    pub config: TrainConfig,
    optim: FlatAdamW,
    step: usize,
    /// The examples, shared with whoever prepared them (never copied); the
    /// trainer reads those `order` names, each cut to the sequence length
    /// when batched.
    data: Arc<[Example]>,
    order: Vec<usize>,
    cursor: usize,
    rng: StdRng,
    /// Shuffles of `order` so far (one at the start, one an epoch): with the
    /// seed, what a checkpoint needs to put `rng` back where it was.
    shuffles: u64,
    /// Examples cut to the sequence length.
    pub truncated: usize,
    /// Examples left out because no trained token survived the cut.
    pub skipped: usize,
}

impl Trainer {
    /// A trainer over all of `data`. Examples with nothing to train are
    /// left out.
    pub fn new(
        model: Llama,
        adapters: LoraAdapters,
        data: Vec<Example>,
        config: TrainConfig,
    ) -> Result<Self> {
        let all: Vec<usize> = (0..data.len()).collect();
        Self::on(model, adapters, Arc::from(data), &all, config)
    }

    /// A trainer over the examples of `data` that `picked` names (the
    /// training share of a split). Examples with nothing to train within
    /// the sequence length are left out.
    pub fn on(
        model: Llama,
        adapters: LoraAdapters,
        data: Arc<[Example]>,
        picked: &[usize],
        config: TrainConfig,
    ) -> Result<Self> {
        config.validate()?;
        let seq_len = config.seq_len;
        let truncated = picked
            .iter()
            .filter(|&&i| data[i].ids.len() > seq_len)
            .count();
        let mut order: Vec<usize> = picked
            .iter()
            .copied()
            .filter(|&i| data[i].trained_within(seq_len) > 0)
            .collect();
        let skipped = picked.len() - order.len();
        if order.is_empty() {
            return Err(Error::setting(
                "data",
                "no example has a trained token within the sequence length",
            ));
        }
        let optim = FlatAdamW::new(AdamWConfig {
            beta1: config.beta1 as f32,
            beta2: config.beta2 as f32,
            eps: config.eps as f32,
            weight_decay: config.weight_decay as f32,
            max_grad_norm: config.max_grad_norm,
        });
        let factors = adapters.named_tensors();
        if factors.is_empty() {
            return Err(Error::setting("targets", "no projection has an adapter"));
        }
        let layout = Layout::new(factors.iter().map(|(_, t)| t.dims()).collect());
        let params = layout.join(factors.into_iter().map(|(_, t)| t.clone()).collect());
        let adapters = layout.views(&adapters, &params);
        let mut rng = StdRng::seed_from_u64(config.seed);
        order.shuffle(&mut rng);
        Ok(Self {
            model,
            adapters,
            params,
            layout,
            config,
            optim,
            step: 0,
            data,
            order,
            cursor: 0,
            rng,
            shuffles: 1,
            truncated,
            skipped,
        })
    }

    /// The adapters being trained.
    pub fn adapters(&self) -> &LoraAdapters {
        &self.adapters
    }

    /// The model being adapted.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// Whether every factor is a finite number (NaN and infinities make
    /// the sum of magnitudes not finite), read when the readback is.
    pub fn finite(&self) -> Readback<bool> {
        Readback::scalar(self.params.clone().abs().sum(), f32::is_finite)
    }

    /// Optimizer steps taken.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Examples in the training set.
    pub fn num_examples(&self) -> usize {
        self.order.len()
    }

    fn next_batch(&mut self) -> Batch {
        let mut picked = Vec::with_capacity(self.config.batch_size);
        for _ in 0..self.config.batch_size.min(self.order.len()) {
            if self.cursor == self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.shuffles += 1;
                self.cursor = 0;
            }
            picked.push(self.order[self.cursor]);
            self.cursor += 1;
        }
        let examples: Vec<&Example> = picked.iter().map(|&i| &self.data[i]).collect();
        Batch::new(&examples, self.config.seq_len)
    }

    fn epoch(&self) -> f64 {
        let n = self.order.len();
        let seen = self.step * self.config.grad_accum * self.config.batch_size.min(n);
        seen as f64 / n as f64
    }

    /// One optimizer step on the next `grad_accum` batches of the data.
    pub async fn step(&mut self) -> Result<StepReport> {
        let micro: Vec<Batch> = (0..self.config.grad_accum)
            .map(|_| self.next_batch())
            .collect();
        self.step_batches(&micro).await
    }

    /// One optimizer step on the given micro-batches. The loss and the
    /// gradient's norm are read from the device before the update; when
    /// either is not finite (NaN or infinite) the update is skipped: the
    /// factors and AdamW's moments stay as they were, the step still counts
    /// (its data is used, the schedule moves on), and the report says so.
    pub async fn step_batches(&mut self, micro: &[Batch]) -> Result<StepReport> {
        let trained: usize = micro.iter().map(|b| b.trained_positions.len()).sum();
        if trained == 0 {
            return Err(Error::setting("data", "the batch has no trained token"));
        }
        let lr = self.config.lr
            * self
                .config
                .schedule
                .factor(self.step, self.config.warmup_steps, self.config.steps);
        let seed = step_seed(self.config.seed, self.step);
        let (loss_sum, grads) = gradients(
            &self.model,
            &self.adapters,
            micro,
            trained,
            seed,
            self.config.activations,
        );
        let grad = self.layout.join(grads); // [P]
        let norm = FlatAdamW::norm(&grad); // [1]
        // One transaction for the loss sum and the norm.
        let read = Transaction::default().register(loss_sum).register(norm);
        let (loss_sum, grad_norm) = Readback::new(read, |data| match data.as_slice() {
            [loss_sum, norm] => Ok((first(loss_sum)?, first(norm)?)),
            _ => Err(Error::Backend(format!(
                "expected 2 readbacks, got {}",
                data.len()
            ))),
        })
        .read()
        .await?;
        let loss = loss_sum / trained as f32;
        let skipped = !(loss.is_finite() && grad_norm.is_finite());
        if !skipped {
            // One flat update of every factor (global-norm clip, AdamW).
            let params = self.optim.step(lr, self.params.clone(), grad, grad_norm);
            self.adapters = self.layout.views(&self.adapters, &params);
            self.params = params;
        }
        self.step += 1;
        Ok(StepReport {
            step: self.step,
            loss,
            grad_norm,
            lr,
            trained_tokens: trained,
            tokens: micro.iter().map(|b| b.tokens).sum(),
            epoch: self.epoch(),
            skipped,
        })
    }
}

/// The NLL sum `[1]` of `model` (+ `adapters`) over `examples` on exactly
/// the tokens training would use, still on the device, and the token count.
fn eval_sum(
    model: &Llama,
    adapters: Option<&LoraAdapters>,
    examples: &[Example],
    batch_size: usize,
    seq_len: usize,
) -> Result<(Tensor<1>, usize)> {
    let mut sum = Tensor::<1>::zeros([1], &model.device);
    let mut count = 0usize;
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let batch = Batch::new(&refs, seq_len);
        if batch.trained_positions.is_empty() {
            continue;
        }
        let hidden = model.hidden(batch.ids_tensor(&model.device), adapters, Mode::Eval);
        sum = sum + model.nll_sum(hidden, &batch.trained_positions, &batch.targets);
        count += batch.trained_positions.len();
    }
    if count == 0 {
        return Err(Error::setting("data", "no trained token to evaluate"));
    }
    Ok((sum, count))
}

/// Mean NLL and token count of `model` (+ `adapters`) over `examples`,
/// on exactly the tokens training would use, read when the readback is.
pub fn evaluate(
    model: &Llama,
    adapters: Option<&LoraAdapters>,
    examples: &[Example],
    batch_size: usize,
    seq_len: usize,
) -> Result<Readback<(f64, usize)>> {
    let (sum, count) = eval_sum(model, adapters, examples, batch_size, seq_len)?;
    Ok(Readback::scalar(sum, move |sum| {
        (sum as f64 / count as f64, count)
    }))
}
