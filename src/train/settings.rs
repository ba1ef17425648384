//! One run's settings as a person gives them (CLI flags or the page's form),
//! checked and turned into a [`TrainConfig`] and a [`LoraConfig`], and a
//! run begun from them ([`RunSettings::begin`]). Field names are the
//! settings' names ([`SETTINGS`](crate::train::setting::SETTINGS)) with `_`
//! for `-`; this file holds their defaults.

use serde::{Deserialize, Serialize};

use burn::tensor::Device;

use std::sync::Arc;

use crate::data::Example;
use crate::data::split::split_indices;
use crate::error::{Error, Result};
use crate::lora::{LoraAdapters, LoraConfig, Target};
use crate::model::Llama;
use crate::train::setting::MAX_STEPS;
use crate::train::{Activations, Schedule, TrainConfig, Trainer};

/// A run ready to step: its trainer (fresh seeded adapters, the training
/// share of the examples) and the held-out share, cut to the sequence
/// length as training cuts.
pub struct Run {
    /// The trainer.
    pub trainer: Trainer,
    /// Held-out examples (none for a tiny set or a share of 0).
    pub validation: Vec<Example>,
    /// Trainable parameters in the adapters.
    pub trainable: usize,
}

/// Everything a person chooses about a run. Unknown fields are refused, so a
/// misspelt setting is an error rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSettings {
    /// LoRA rank r. Default 8.
    pub rank: usize,
    /// LoRA alpha; the update is scaled by alpha/r. Default 16.
    pub alpha: f64,
    /// Dropout on the adapter input. Default 0.05.
    pub dropout: f64,
    /// Scale by alpha/sqrt(r) (rsLoRA). Default false.
    pub rslora: bool,
    /// Peak learning rate. Default 1e-3: measured on the default model
    /// (SmolLM2-135M) and the sample data (24 conversations, 3 epochs = 18
    /// steps), 2e-4 leaves the answers plain (`tabtune eval` loss on the
    /// data after training 3.02) and 1e-3 gives them the data's voice
    /// (1.44); see the README's "Defaults and presets".
    /// Larger models and data sets usually want less: the `careful` preset
    /// uses 2e-4.
    pub lr: f64,
    /// Optimizer steps; when absent, `epochs` sets them. Default absent.
    pub steps: Option<usize>,
    /// Passes over the data when `steps` is absent. Default 3.
    pub epochs: f64,
    /// Examples per micro-batch. Default 4.
    pub batch: usize,
    /// Micro-batches per optimizer step. Default 1.
    pub grad_accum: usize,
    /// Longest example in tokens; longer ones are cut. Default 256.
    pub seq_len: usize,
    /// Warm-up steps. Default 0.
    pub warmup: usize,
    /// `constant`, `linear` or `cosine` decay after warm-up. Default cosine.
    pub schedule: String,
    /// Clip the global gradient norm (0 = off). Default 1.0.
    pub max_grad_norm: f64,
    /// AdamW weight decay. Default 0.
    pub weight_decay: f64,
    /// Seed for adapter init, data order and dropout. Default 42.
    pub seed: u64,
    /// Keep every block's activations for the backward pass instead of
    /// recomputing them block by block: faster, much more memory. Default
    /// false.
    pub keep_activations: bool,
    /// Projections to adapt: `all` or a comma list of q,k,v,o,gate,up,down.
    /// Default all.
    pub targets: String,
    /// Share of the examples held out to measure the validation loss
    /// (seeded by `seed`; none when it would be under 5 examples). Default 0.1.
    pub validation: f64,
    /// Steps between validation losses during training; 0 measures only
    /// before and after. Default 0.
    pub eval_every: usize,
    /// Steps between checkpoints (the CLI's `checkpoint-N/`, the page's
    /// stored run); 0 writes them only on pause, stop or interruption.
    /// Default 50.
    pub save_every: usize,
    /// Validations during training in a row that do not improve on the
    /// best validation loss before the run stops early (0: never). Needs
    /// `eval_every` and held-out examples. Default 0.
    pub patience: usize,
    /// Steps between replies to a few prompts (the person's, else held-out
    /// examples'), shown with the step; 0: none. Default 0.
    pub sample_every: usize,
}

impl Default for RunSettings {
    fn default() -> Self {
        let t = TrainConfig::default();
        let l = LoraConfig::default();
        Self {
            rank: l.rank,
            alpha: l.alpha,
            dropout: l.dropout,
            rslora: l.use_rslora,
            lr: t.lr,
            steps: None,
            epochs: 3.0,
            batch: t.batch_size,
            grad_accum: t.grad_accum,
            seq_len: t.seq_len,
            warmup: t.warmup_steps,
            schedule: "cosine".into(),
            max_grad_norm: t.max_grad_norm,
            weight_decay: t.weight_decay,
            seed: t.seed,
            keep_activations: t.activations == Activations::Keep,
            targets: "all".into(),
            validation: 0.1,
            eval_every: 0,
            save_every: 50,
            patience: 0,
            sample_every: 0,
        }
    }
}

impl RunSettings {
    /// The adapter's settings, checked.
    pub fn lora(&self) -> Result<LoraConfig> {
        let lora = LoraConfig {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            targets: Target::parse_list(&self.targets)?,
            use_rslora: self.rslora,
        };
        lora.validate()?;
        Ok(lora)
    }

    /// Whether the backward pass keeps or recomputes the activations.
    pub fn activations(&self) -> Activations {
        if self.keep_activations {
            Activations::Keep
        } else {
            Activations::Recompute
        }
    }

    /// The optimisation settings for a data set of `examples` examples,
    /// checked by [`TrainConfig::validate`] (each value's range is checked
    /// by [`RunSettings::validate`], which [`RunSettings::begin`] runs
    /// first). Without `steps`, the run lasts `ceil(epochs · examples /
    /// (min(batch, examples) · grad_accum))` steps.
    pub fn train(&self, examples: usize) -> Result<TrainConfig> {
        let schedule = Schedule::parse(&self.schedule).ok_or_else(|| {
            Error::setting(
                "schedule",
                format!("`{}` is not constant, linear or cosine", self.schedule),
            )
        })?;
        let per_step = (self.batch.min(examples).max(1) * self.grad_accum.max(1)) as f64;
        let steps = match self.steps {
            Some(steps) => steps,
            None => {
                let steps = ((self.epochs * examples as f64) / per_step).ceil().max(1.0);
                if steps > MAX_STEPS as f64 {
                    return Err(Error::setting(
                        "epochs",
                        format!(
                            "{} epochs of {examples} examples make {steps} steps, more than {MAX_STEPS}",
                            self.epochs
                        ),
                    ));
                }
                steps as usize
            }
        };
        let config = TrainConfig {
            lr: self.lr,
            steps,
            warmup_steps: self.warmup,
            schedule,
            batch_size: self.batch,
            grad_accum: self.grad_accum,
            seq_len: self.seq_len,
            max_grad_norm: self.max_grad_norm,
            weight_decay: self.weight_decay,
            seed: self.seed,
            activations: self.activations(),
            ..TrainConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Begins a run of `model` on `examples`: the seeded split, adapters and
    /// trainer, every setting checked. The training share is read where it
    /// is (the trainer shares `examples`); the held-out share is copied,
    /// cut to the sequence length as training cuts.
    pub fn begin(&self, model: Llama, examples: Arc<[Example]>, device: &Device) -> Result<Run> {
        self.validate()?;
        let lora = self.lora()?;
        let (train, held) = split_indices(examples.len(), self.validation, self.seed);
        let validation = held
            .iter()
            .map(|&i| examples[i].clone().cut(self.seq_len))
            .collect();
        let config = self.train(train.len())?;
        let adapters = LoraAdapters::init(lora, &model.config, self.seed, device)?;
        let trainable = adapters.num_parameters();
        Ok(Run {
            trainer: Trainer::on(model, adapters, examples, &train, config)?,
            validation,
            trainable,
        })
    }

    /// Checks every setting that does not depend on the data: each against
    /// its range in [`SETTINGS`](crate::train::setting::SETTINGS), then
    /// the adapter and optimiser configs they make.
    pub fn validate(&self) -> Result<()> {
        self.check_ranges()?;
        if self.patience > 0 && self.eval_every == 0 {
            return Err(Error::setting(
                "patience",
                format!(
                    "is {}, and early stopping compares validation losses during training: set eval-every above 0 too",
                    self.patience
                ),
            ));
        }
        self.lora()?;
        self.train(1).map(|_| ())
    }
}
