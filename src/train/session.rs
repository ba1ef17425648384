//! [`Session`]: the one home of a training run, from a person's settings to
//! the exported files. It holds the loaded model, the prepared data and the
//! current run (seeded split, adapters, trainer, validation losses, pause
//! and stop), and it answers generation with the base or tuned weights and
//! the export with its model card. `tabtune train` and the page's `Engine`
//! are thin drivers over it; both move a run on with [`Session::advance`].
//!
//! A run's life, one [`Progress`] per `advance`:
//!
//! ```text
//! start ─► [validation before] ─► [samples] ─► step … ─► [validation during] ─► [samples] ─► step … ─► [validation after] ─► [stop check] ─► finished
//!              (when held out)      (sample-every)  pause: Paused   (eval-every; patience    (sample-every)   stop: straight  (held-out or the
//!                                                   until resumed    may end training here)                   to validation   person's prompts)
//!                                                                                                             after
//! ```
//!
//! Each validation of the adapter that beats the best so far keeps its
//! factors: [`Session::export_best`] writes them (`train::judge`).

use std::io::{BufRead, Write};
use std::sync::Arc;

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::record::Record;
use crate::data::{BadLines, BadLinesChoice, Example, ReadOptions, Summary, prepare_within};
use crate::error::{Error, Result};
use crate::generate::{GenerateConfig, generate_text, reply};
use crate::io::bundle::{ENTRIES, adapter_zip, zip_files};
use crate::io::card::{CardInfo, model_card};
use crate::io::fingerprint;
use crate::io::gguf_lora::{self, GgufLoraBase};
use crate::io::peft::{self, PeftFiles};
use crate::io::recipe::{self, Recipe};
use crate::io::self_check::{self, MergedWritten, SelfCheck, Written};
use crate::merge;
use crate::merge::gguf::FileType;
use crate::merge::hf::{Dtype, ZipFiles};
use crate::model::load::Loaded;
use crate::model::quantized::BaseWeights;
use crate::readback::Readback;
use crate::tokenizer::{ChatFormat, TextTokenizer};
use crate::train::checkpoint::{self, Checkpoint, DataMark, ModelMark, Place, RunRecord};
use crate::train::judge::{
    self, CHECK_PROMPTS, CHECK_TOKENS, EarlyStop, Prompt, SAMPLE_PROMPTS, SAMPLE_TOKENS, Sample,
    Samples, Source,
};
use crate::train::memory::{self, GpuLimit, HeapLimit, StepShape};
use crate::train::state::read_flat;
use crate::train::{Run, RunSettings, StepReport, Trainer, evaluate};

/// Steps in a row whose loss or gradient norm is not finite before the run
/// stops (each one's update is skipped).
pub const MAX_BAD_STEPS: usize = 3;

/// What a front end shows about a loaded model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The model's name (GGUF `general.name`, or the folder or repository).
    pub name: String,
    /// Transformer layers.
    pub layers: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest context.
    pub context: usize,
    /// Parameters in the base model.
    pub parameters: usize,
    /// Bytes the base's weights hold once loaded (packed or f32).
    pub weight_bytes: usize,
    /// How the base's matrices were kept as they loaded.
    pub base_weights: BaseWeights,
    /// Matrices in a k-quant requantized to Q8_0 to stay packed on a GPU.
    pub requantized: usize,
    /// The template conversations get; `None` without a tokenizer.
    pub chat_format: Option<ChatFormat>,
    /// Why a merged GGUF cannot be written for this model (its vocabulary
    /// has no GGUF form here); `None` when it can.
    pub merged_gguf_refused: Option<String>,
}

/// A prepared data file: its summary, and what each bad-lines choice means
/// for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataReport {
    /// Counts, bad lines, notes and a preview.
    pub summary: Summary,
    /// Each choice for the bad lines, and whether it lets a run start.
    pub bad_lines: Vec<BadLinesChoice>,
}

/// What a front end shows when a run starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// Optimizer steps planned.
    pub steps: usize,
    /// Examples trained on.
    pub examples: usize,
    /// Examples cut to the sequence length.
    pub truncated: usize,
    /// Examples left out with nothing to train after the cut.
    pub skipped: usize,
    /// Parameters in the adapters.
    pub trainable_parameters: usize,
    /// Most tokens one optimizer step can hold.
    pub tokens_per_step_max: usize,
    /// Examples held out for the validation loss.
    pub validation_examples: usize,
    /// Steps already taken: those of the checkpoint it resumed from, 0 for
    /// a new run.
    pub resumed_at: usize,
    /// Steps between checkpoints (0: on pause, stop or interruption only).
    pub save_every: usize,
    /// Prompts the samples during training reply to.
    pub sample_prompts: usize,
    /// Whose they are.
    pub sample_source: Source,
    /// Prompts the stop check after training asks (0: no check: no
    /// prompts, or data without answers).
    pub check_prompts: usize,
    /// Most new tokens the stop check allows: the longest answer in the data.
    pub check_tokens: usize,
}

/// The best validation loss of the run so far, whose factors are kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Best {
    /// Optimizer steps taken when it was measured.
    pub step: usize,
    /// The loss.
    pub loss: f64,
}

/// When a validation loss was measured, or samples taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// With the base model, before the first step.
    Before,
    /// With the adapter as trained so far, every `eval-every` (or
    /// `sample-every`) steps.
    During,
    /// With the adapter as trained, at the end (for samples: the stop check).
    After,
}

/// The loss on the held-out examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// When it was measured.
    pub when: When,
    /// Optimizer steps taken then.
    pub step: usize,
    /// Mean loss per trained token.
    pub loss: f64,
    /// Trained tokens it was taken over.
    pub tokens: usize,
    /// Held-out examples.
    pub examples: usize,
}

/// What one [`Session::advance`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Progress {
    /// Measured the validation loss.
    Validation(Validation),
    /// Replied to the run's prompts.
    Samples(Samples),
    /// Took an optimizer step.
    Step {
        /// The step's report.
        #[serde(flatten)]
        report: StepReport,
        /// Steps planned.
        steps: usize,
    },
    /// Did nothing: the run is paused.
    Paused {
        /// Steps taken so far.
        steps: usize,
    },
    /// The run is over: all steps taken, or stopped.
    Finished {
        /// Whether it was stopped before its last step.
        stopped: bool,
        /// Steps taken.
        steps: usize,
        /// Why the run stopped by itself (steps whose loss was not
        /// finite), `None` when it finished or was asked to stop.
        reason: Option<String>,
        /// Why it stopped early (patience ran out).
        early: Option<EarlyStop>,
    },
}

/// Where the session's run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// No run has started.
    Idle,
    /// Advancing.
    Running,
    /// Paused between steps.
    Paused,
    /// Asked to stop; the next advances end it.
    Stopping,
    /// Took every planned step.
    Finished,
    /// Ended before its last step (stopped, or a step failed).
    Stopped,
}

/// A run's place in its life (see the module's diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Before,
    Training,
    During,
    Sample,
    After,
    Check,
    /// Over; `reported` once [`Progress::Finished`] went out.
    Over {
        stopped: bool,
        reported: bool,
    },
}

struct ActiveRun {
    trainer: Trainer,
    /// The settings and bad-lines choice it started with, and what it
    /// trains, for its checkpoints.
    settings: RunSettings,
    bad_lines: BadLines,
    model: ModelMark,
    data: DataMark,
    data_file: String,
    /// Every step's report.
    history: Vec<StepReport>,
    /// Steps in a row whose update was skipped.
    bad_run: usize,
    /// Why the run stopped by itself.
    halted: Option<String>,
    validation: Vec<Example>,
    validations: Vec<Validation>,
    last: Option<StepReport>,
    phase: Phase,
    paused: bool,
    stop: bool,
    /// Steps between validation losses (0: before and after only).
    eval_every: usize,
    /// The factors of the best validation so far (`judge::standing`).
    best: Option<Tensor<1>>,
    /// Why it stopped early.
    early: Option<EarlyStop>,
    /// What the samples during training reply to.
    sample_prompts: Vec<Prompt>,
    sample_source: Source,
    /// What the stop check asks, and how long it lets each reply be.
    check_prompts: Vec<Prompt>,
    check_source: Source,
    check_tokens: usize,
}

struct DataSet {
    file: String,
    /// `io::fingerprint::examples` of `examples`.
    fingerprint: String,
    /// Shared with the runs on it, never copied.
    examples: Arc<[Example]>,
    summary: Summary,
}

/// The adapter files of a run: PEFT's two files and the model card.
pub struct AdapterFiles {
    /// `adapter_model.safetensors` and `adapter_config.json`.
    pub peft: PeftFiles,
    /// `README.md`.
    pub card: String,
}

impl AdapterFiles {
    /// The three files in one `.zip`, as the page downloads them.
    pub fn zip(&self) -> Result<Vec<u8>> {
        adapter_zip(&self.peft, &self.card)
    }
}

/// One model, one data set and one run.
pub struct Session {
    device: Device,
    backend: String,
    /// What the engine's memory can hold, when the front end knows it.
    limit: Option<HeapLimit>,
    /// What one GPU buffer can hold, on a GPU whose limits are known.
    gpu_limit: Option<GpuLimit>,
    model: Option<Loaded>,
    data: Option<DataSet>,
    run: Option<ActiveRun>,
    /// Prompts the person entered for samples (checked when set).
    prompts: Vec<String>,
}

fn not_finite() -> Error {
    Error::Order(
        "the adapter holds values that are not finite numbers (NaN or infinite), so it is not written"
            .into(),
    )
}

fn missing(what: &str) -> Error {
    Error::Order(format!("no {what} yet"))
}

impl Session {
    /// An empty session computing on `device`; `backend` names it in model
    /// cards (`cpu`, `webgpu`).
    pub fn new(device: Device, backend: &str) -> Self {
        let gpu_limit = crate::gpu::max_buffer(&device).map(|max_buffer| GpuLimit { max_buffer });
        Self {
            device,
            backend: backend.to_string(),
            limit: None,
            gpu_limit,
            model: None,
            data: None,
            run: None,
            prompts: Vec::new(),
        }
    }

    /// Refuse models and runs that would not fit in `limit` (the page's CPU
    /// engine: wasm32's 4 GiB). Without one, nothing is refused for size.
    pub fn limit_memory(&mut self, limit: HeapLimit) {
        self.limit = Some(limit);
    }

    /// Refuse runs that would need a GPU buffer larger than `limit`. A
    /// session on a GPU takes its device's own limit when made; this sets
    /// another (the tests).
    pub fn limit_gpu_buffers(&mut self, limit: GpuLimit) {
        self.gpu_limit = Some(limit);
    }

    /// Refuses model files of `file_bytes` in all (a `.gguf` when `gguf`)
    /// that would not fit, before they are read in.
    pub fn check_load(
        &self,
        name: &str,
        file_bytes: u64,
        gguf: bool,
        base: BaseWeights,
    ) -> Result<()> {
        let quantized = base != BaseWeights::Stored;
        match &self.limit {
            Some(limit) => memory::check_load(name, file_bytes, gguf, quantized, limit),
            None => Ok(()),
        }
    }

    /// The device it computes on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `cpu`, `webgpu`, …
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Takes a loaded model (which must have a tokenizer), dropping the data
    /// and run of the one before.
    pub fn load(&mut self, loaded: Loaded) -> Result<ModelInfo> {
        if loaded.tokenizer.is_none() {
            return Err(Error::format(
                &loaded.name,
                "the model has no tokenizer (tokenizer.json), so text cannot be tokenized",
            ));
        }
        let c = &loaded.model.config;
        let info = ModelInfo {
            name: loaded.name.clone(),
            layers: c.num_layers,
            hidden: c.hidden_size,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            vocab: c.vocab_size,
            context: c.max_position_embeddings,
            parameters: c.num_parameters(),
            weight_bytes: loaded.model.weights.byte_len(),
            requantized: loaded.model.weights.requantized(),
            base_weights: loaded.base_weights,
            chat_format: loaded.tokenizer.as_ref().map(|t| t.chat_format()),
            merged_gguf_refused: merge::gguf::base_metadata(
                &loaded.model,
                loaded.tokenizer.as_ref(),
                &loaded.origin,
            )
            .err()
            .map(|e| e.to_string()),
        };
        self.model = Some(loaded);
        self.data = None;
        self.run = None;
        Ok(info)
    }

    /// The loaded model.
    pub fn model(&self) -> Result<&Loaded> {
        self.model.as_ref().ok_or_else(|| missing("model"))
    }

    /// The loaded model's tokenizer.
    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        self.model()?
            .tokenizer
            .as_ref()
            .ok_or_else(|| missing("tokenizer"))
    }

    /// Reads and tokenizes the data file `file` from `reader` as it
    /// streams, keeping at most `max_tokens` tokens (see
    /// [`prepare_within`]); the counts are taken for `seq_len`.
    pub fn prepare_data(
        &mut self,
        file: &str,
        reader: impl BufRead,
        options: &ReadOptions,
        seq_len: usize,
        max_tokens: usize,
    ) -> Result<DataReport> {
        let prepared = prepare_within(
            file,
            reader,
            options,
            self.tokenizer()?,
            seq_len,
            max_tokens,
        )?;
        let report = DataReport {
            bad_lines: BadLines::choices(
                prepared.summary.problems.len() + prepared.summary.more_problems,
            ),
            summary: prepared.summary.clone(),
        };
        self.data = Some(DataSet {
            file: file.to_string(),
            fingerprint: fingerprint::examples(&prepared.examples),
            examples: Arc::from(prepared.examples),
            summary: prepared.summary,
        });
        Ok(report)
    }

    /// Starts a run on the prepared data: every setting checked, the bad
    /// lines refused when `bad_lines` says stop, then fresh seeded adapters,
    /// optimizer, split and data order.
    pub fn start(&mut self, settings: &RunSettings, bad_lines: BadLines) -> Result<RunInfo> {
        self.begin(settings, bad_lines, false)
    }

    /// [`Session::start`]; `resuming` a checkpointed run, settings that
    /// were fine when it started are not refused again for want of prompts.
    fn begin(
        &mut self,
        settings: &RunSettings,
        bad_lines: BadLines,
        resuming: bool,
    ) -> Result<RunInfo> {
        let model = self.model()?.model.clone();
        let data = self.data.as_ref().ok_or_else(|| missing("data"))?;
        bad_lines.check(
            &data.file,
            &data.summary.problems,
            data.summary.more_problems,
        )?;
        let Run {
            trainer,
            validation,
            trainable,
        } = settings.begin(model, Arc::clone(&data.examples), &self.device)?;
        let c = &trainer.config;
        if self.limit.is_some() || self.gpu_limit.is_some() {
            // Before the first step. The worst batch: the longest examples,
            // every position trained.
            let longest = data.examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
            let len = longest.min(c.seq_len);
            let batch = c.batch_size.min(trainer.num_examples());
            let shape = StepShape {
                batch,
                seq_len: len,
                trained: batch * len,
                activations: c.activations,
            };
            let config = &trainer.model().config;
            if let Some(limit) = &self.limit {
                memory::check_step(config, &settings.lora()?, &shape, limit)?;
            }
            if let Some(limit) = &self.gpu_limit {
                memory::check_gpu_step(config, &shape, limit)?;
            }
        }
        // The prompts: samples reply to the person's, else held-out ones,
        // else training ones; the stop check asks held-out ones, else the
        // person's, and lets a reply be as long as the data's longest
        // answer. The person's are tokenized as the data was: a user turn
        // for conversations, as they are for prompt/completion and text.
        let tok = self.tokenizer()?;
        let raw = data.summary.turns == 0;
        let entered = judge::entered_prompts(&self.prompts, tok, raw, c.seq_len)?;
        let most = CHECK_PROMPTS.max(SAMPLE_PROMPTS);
        let held = judge::example_prompts(&validation, tok, most, c.seq_len)?;
        let (sample_prompts, sample_source) = match (entered.is_empty(), held.is_empty()) {
            (false, _) => (entered.clone(), Source::Yours),
            (true, false) => (
                held[..held.len().min(SAMPLE_PROMPTS)].to_vec(),
                Source::HeldOut,
            ),
            // Nothing held out: every example is a training one.
            (true, true) => (
                judge::example_prompts(&data.examples, tok, SAMPLE_PROMPTS, c.seq_len)?,
                Source::Training,
            ),
        };
        let check_tokens = judge::longest_answer(&data.examples, c.seq_len).min(CHECK_TOKENS);
        let (mut check_prompts, check_source) = match held.is_empty() {
            false => (
                held.into_iter().take(CHECK_PROMPTS).collect(),
                Source::HeldOut,
            ),
            true => (entered, Source::Yours),
        };
        if check_tokens == 0 {
            check_prompts.clear();
        }
        if settings.patience > 0 && validation.is_empty() {
            return Err(Error::setting(
                "patience",
                format!(
                    "early stopping compares validation losses, and no examples are held out (a validation share of {} of {} examples is under 5): raise validation, or set patience to 0",
                    settings.validation,
                    data.examples.len()
                ),
            ));
        }
        if settings.sample_every > 0 && sample_prompts.is_empty() && !resuming {
            return Err(Error::setting(
                "sample-every",
                "samples need prompts, and these examples have none (text trained throughout): enter a few sample prompts, or set sample-every to 0",
            ));
        }
        let info = RunInfo {
            steps: c.steps,
            examples: trainer.num_examples(),
            truncated: trainer.truncated,
            skipped: trainer.skipped,
            trainable_parameters: trainable,
            tokens_per_step_max: c
                .batch_size
                .saturating_mul(c.grad_accum)
                .saturating_mul(c.seq_len),
            validation_examples: validation.len(),
            resumed_at: 0,
            save_every: settings.save_every,
            sample_prompts: sample_prompts.len(),
            sample_source,
            check_prompts: check_prompts.len(),
            check_tokens,
        };
        let loaded = self.model()?;
        self.run = Some(ActiveRun {
            trainer,
            settings: settings.clone(),
            bad_lines,
            model: ModelMark {
                name: loaded.name.clone(),
                fingerprint: loaded.fingerprint.clone(),
                base_weights: loaded.base_weights.name().to_string(),
            },
            data: DataMark {
                file: data.file.clone(),
                fingerprint: data.fingerprint.clone(),
                examples: data.examples.len(),
            },
            history: Vec::new(),
            bad_run: 0,
            halted: None,
            data_file: data.file.clone(),
            validation,
            validations: Vec::new(),
            last: None,
            phase: Phase::Before,
            paused: false,
            stop: false,
            eval_every: settings.eval_every,
            best: None,
            early: None,
            sample_prompts,
            sample_source,
            check_prompts,
            check_source,
            check_tokens,
        });
        Ok(info)
    }

    /// Prompts for the samples (a user turn each for chat models; at most
    /// `judge::MAX_PROMPTS`), checked now and used by the runs started or
    /// resumed after; empty: held-out examples' prompts.
    pub fn set_prompts(&mut self, prompts: Vec<String>) -> Result<()> {
        judge::check_prompts(&prompts)?;
        self.prompts = prompts;
        Ok(())
    }

    /// The best validation loss of the run so far (the adapter's own, not
    /// the base model's before training), whose adapter
    /// [`Session::export_best`] writes.
    pub fn best(&self) -> Option<Best> {
        let run = self.run.as_ref()?;
        run.best.as_ref()?;
        let v = &run.validations[judge::standing(&run.validations).best?];
        Some(Best {
            step: v.step,
            loss: v.loss,
        })
    }

    /// The run, when its adapter holds only finite numbers: an adapter
    /// with a NaN or an infinity is never exported.
    async fn finite_run(&self) -> Result<&ActiveRun> {
        let run = self.run()?;
        match run.trainer.finite().read().await? {
            true => Ok(run),
            false => Err(not_finite()),
        }
    }

    fn run(&self) -> Result<&ActiveRun> {
        self.run.as_ref().ok_or_else(|| missing("run"))
    }

    fn run_mut(&mut self) -> Result<&mut ActiveRun> {
        self.run.as_mut().ok_or_else(|| missing("run"))
    }

    /// Where the run stands.
    pub fn status(&self) -> RunStatus {
        match &self.run {
            None => RunStatus::Idle,
            Some(r) => match r.phase {
                Phase::Over { stopped: true, .. } => RunStatus::Stopped,
                Phase::Over { stopped: false, .. } => RunStatus::Finished,
                _ if r.stop => RunStatus::Stopping,
                _ if r.paused => RunStatus::Paused,
                _ => RunStatus::Running,
            },
        }
    }

    /// Holds the run between steps: [`Session::advance`] answers
    /// [`Progress::Paused`] until [`Session::resume`].
    pub fn pause(&mut self) -> Result<()> {
        self.run_mut()?.paused = true;
        Ok(())
    }

    /// Lets a paused run go on.
    pub fn resume(&mut self) -> Result<()> {
        self.run_mut()?.paused = false;
        Ok(())
    }

    /// Ends the run early: the next advances measure the validation loss
    /// after (when there is a held-out set) and finish.
    pub fn stop(&mut self) -> Result<()> {
        let run = self.run_mut()?;
        run.stop = true;
        run.paused = false;
        Ok(())
    }

    /// Every step's report in this run, in order (a resumed run's include
    /// those before its checkpoint).
    pub fn history(&self) -> &[StepReport] {
        self.run.as_ref().map_or(&[], |r| &r.history)
    }

    /// The run's state as one checkpoint file (`train::checkpoint`), read
    /// from the device between two steps.
    pub async fn checkpoint(&self) -> Result<Checkpoint> {
        let run = self.run()?;
        let state = run.trainer.state().read().await?;
        let best = match &run.best {
            Some(t) => Some(read_flat(t).read().await?),
            None => None,
        };
        checkpoint::write(run.record(), state, best.as_deref())
    }

    /// Starts the run a checkpoint file holds (`file` names it in
    /// messages) on the model and data loaded now, and puts it back where
    /// it was: the next advance does what the checkpointed run's next
    /// advance would have done, with the same numbers. Refused, saying
    /// which, when the model (or how its weights were kept) or the data
    /// differ from the checkpoint's.
    pub fn resume_from(&mut self, file: &str, bytes: &[u8]) -> Result<RunInfo> {
        let (record, state) = checkpoint::read(file, bytes)?;
        let best = checkpoint::read_best(file, bytes)?;
        let consistent = record.history.len() == record.step
            && record
                .history
                .iter()
                .enumerate()
                .all(|(i, r)| r.step == i + 1);
        if !consistent {
            return Err(Error::format(
                file,
                "the checkpoint's step history does not match its step count",
            ));
        }
        let loaded = self.model()?;
        let refuse = |why: String| Err(Error::format(file, why));
        if loaded.fingerprint != record.model.fingerprint {
            return refuse(format!(
                "the run was trained on the model {} and the model loaded now ({}) is another file: load the run's model to resume it",
                record.model.name, loaded.name
            ));
        }
        if loaded.base_weights.name() != record.model.base_weights {
            return refuse(format!(
                "the run's model was loaded with base weights `{}` and is loaded now with `{}`: load it again with `{}` to resume",
                record.model.base_weights,
                loaded.base_weights.name(),
                record.model.base_weights
            ));
        }
        let data = self.data.as_ref().ok_or_else(|| missing("data"))?;
        if data.fingerprint != record.data.fingerprint {
            return refuse(format!(
                "the run was trained on {} ({} examples) and the data chosen now ({}, {} examples) is different: choose the run's data file, unchanged, with the same format and sequence length, to resume",
                record.data.file,
                record.data.examples,
                data.file,
                data.examples.len()
            ));
        }
        let mut info = self.begin(&record.settings, record.bad_lines, true)?;
        let run = self.run.as_mut().ok_or_else(|| missing("run"))?;
        if let Err(e) = run.trainer.restore(state) {
            self.run = None;
            return Err(Error::format(file, e));
        }
        run.bad_run = record
            .history
            .iter()
            .rev()
            .take_while(|r| r.skipped)
            .count();
        run.last = record.history.iter().rev().find(|r| !r.skipped).cloned();
        run.history = record.history;
        run.validations = record.validations;
        if judge::standing(&run.validations).best.is_some()
            && let Some(best) = best
        {
            match run.trainer.flat_params(best) {
                Ok(t) => run.best = Some(t),
                Err(e) => {
                    self.run = None;
                    return Err(Error::format(file, e));
                }
            }
        }
        let run = self.run.as_mut().ok_or_else(|| missing("run"))?;
        // A resume asks the run to go on: one that was stopped (not halted)
        // before its last step trains on; one that ended reports its end
        // (its adapter is back for trying and downloading).
        let go_on = record.halted.is_none() && record.early.is_none() && record.step < record.steps;
        run.halted = record.halted;
        run.early = record.early;
        run.phase = match record.place {
            Place::Before => Phase::Before,
            Place::Training => Phase::Training,
            Place::During => Phase::During,
            Place::Sample => Phase::Sample,
            Place::After | Place::Check if go_on => Phase::Training,
            Place::After => Phase::After,
            Place::Check => Phase::Check,
            Place::Ended { stopped: true } if go_on => Phase::Training,
            Place::Ended { stopped } => Phase::Over {
                stopped,
                reported: false,
            },
        };
        info.resumed_at = record.step;
        Ok(info)
    }

    /// The validation losses measured in this run, in order.
    pub fn validations(&self) -> &[Validation] {
        self.run.as_ref().map_or(&[], |r| &r.validations)
    }

    /// Moves the run on by one piece of work: a validation loss, a step,
    /// or the end; reads its numbers from the device.
    pub async fn advance(&mut self) -> Result<Progress> {
        let tok = self
            .model
            .as_ref()
            .and_then(|m| m.tokenizer.as_ref())
            .ok_or_else(|| missing("tokenizer"))?;
        let run = self.run.as_mut().ok_or_else(|| missing("run"))?;
        let result = run.advance(tok).await;
        if result.is_err() {
            run.phase = Phase::Over {
                stopped: true,
                reported: true,
            };
        }
        result
    }

    /// Continues `prompt` (a user turn for chat models, raw text otherwise)
    /// greedily for at most `max_tokens`, with the run's adapter when
    /// `tuned`. `on_text` gets each new piece; returns the whole reply.
    pub async fn generate(
        &self,
        prompt: &str,
        max_tokens: usize,
        tuned: bool,
        on_text: impl FnMut(&str) -> Result<()>,
    ) -> Result<String> {
        let model = self.model()?;
        let tok = self.tokenizer()?;
        let adapters = match tuned {
            false => None,
            true => Some(self.run()?.trainer.adapters()),
        };
        let prompt = tok.encode_prompt(prompt, false)?;
        let config = GenerateConfig {
            max_tokens,
            ..GenerateConfig::default()
        };
        generate_text(&model.model, adapters, tok, &prompt, &config, on_text).await
    }

    /// The run's adapter as PEFT files and a model card recording the data
    /// file, the examples and the settings the run used; `base_model` goes
    /// into the config and the card.
    pub async fn export(&self, base_model: &str) -> Result<AdapterFiles> {
        let run = self.finite_run().await?;
        let t = &run.trainer;
        let after = run
            .validations
            .iter()
            .rev()
            .find(|v| v.when == When::After)
            .map(|v| v.loss);
        let last = run.last.as_ref().map(|r| r.loss);
        self.adapter_files(run, t.adapters(), t.steps_done(), last, after, base_model)
            .await
    }

    /// The adapter of the best validation loss so far ([`Session::best`])
    /// as [`Session::export`] writes the last one; its model card gives
    /// that step and loss.
    pub async fn export_best(&self, base_model: &str) -> Result<AdapterFiles> {
        let run = self.run()?;
        let (Some(best), Some(params)) = (self.best(), run.best.as_ref()) else {
            return Err(Error::Order(
                "no validation loss of the adapter has been measured yet, so there is no best adapter".into(),
            ));
        };
        // Its loss was finite, and so, it follows, were its factors; but
        // nothing not finite is ever written.
        if !Readback::scalar(params.clone().abs().sum(), f32::is_finite)
            .read()
            .await?
        {
            return Err(not_finite());
        }
        let adapters = run.trainer.adapters_of(params);
        // The training loss of the last step whose update was taken.
        let loss = run.history[..best.step.min(run.history.len())]
            .iter()
            .rev()
            .find(|r| !r.skipped)
            .map(|r| r.loss);
        self.adapter_files(run, &adapters, best.step, loss, Some(best.loss), base_model)
            .await
    }

    /// PEFT files and model card of `adapters`, trained `steps_done` steps
    /// of `run` to a training loss `loss`, with a validation loss `after`.
    async fn adapter_files(
        &self,
        run: &ActiveRun,
        adapters: &crate::lora::LoraAdapters,
        steps_done: usize,
        loss: Option<f32>,
        after: Option<f64>,
        base_model: &str,
    ) -> Result<AdapterFiles> {
        let t = &run.trainer;
        let peft = peft::export(adapters, base_model).read().await?;
        let before = run
            .validations
            .iter()
            .find(|v| v.when == When::Before)
            .map(|v| v.loss);
        let validation = match (before, after) {
            (Some(before), Some(after)) => Some((before, after, run.validation.len())),
            _ => None,
        };
        let card = model_card(&CardInfo {
            base_model,
            data_file: &run.data_file,
            examples: t.num_examples(),
            steps_done,
            final_loss: loss,
            lora: &t.adapters().config,
            train: &t.config,
            backend: &self.backend,
            base_weights: self
                .model
                .as_ref()
                .map_or(BaseWeights::Stored, |m| m.base_weights),
            validation,
        });
        Ok(AdapterFiles { peft, card })
    }

    /// The adapter for llama.cpp and Ollama as one `.zip`: `adapter.gguf`,
    /// a `Modelfile` naming `base_gguf` (the base model's GGUF file; none
    /// for a safetensors base) and a
    /// README, the files `tabtune export --gguf` writes.
    pub async fn export_gguf_zip(&self, base_gguf: Option<&str>) -> Result<Vec<u8>> {
        let run = self.finite_run().await?;
        let loaded = self.model.as_ref().ok_or_else(|| missing("model"))?;
        let base = GgufLoraBase::new(loaded.model.config.clone(), &loaded.name);
        let adapter = gguf_lora::export(run.trainer.adapters(), &base)
            .read()
            .await?;
        let files = gguf_lora::bundle(adapter, base_gguf);
        let entries: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        zip_files("tabtune-adapter-gguf.zip", &entries)
    }

    /// The base with the run's adapter merged in, as one GGUF of type `ty`
    /// written to `out` a tensor at a time (`merge::gguf`); returns its
    /// bytes. Only for a GGUF base.
    pub async fn export_merged_gguf(&self, ty: FileType, out: &mut dyn Write) -> Result<u64> {
        let run = self.finite_run().await?;
        let loaded = self.model.as_ref().ok_or_else(|| missing("model"))?;
        let adapters = Some(run.trainer.adapters());
        let tok = loaded.tokenizer.as_ref();
        merge::gguf::write(&loaded.model, adapters, tok, &loaded.origin, ty, out).await
    }

    /// The base with the run's adapter merged in, as a Hugging Face
    /// directory in `dtype`, zipped and streamed to `out` as it is made
    /// (`merge::hf`).
    pub async fn export_merged_zip(&self, dtype: Dtype, out: &mut dyn Write) -> Result<()> {
        let run = self.finite_run().await?;
        let loaded = self.model.as_ref().ok_or_else(|| missing("model"))?;
        let mut zip = ZipFiles::new(out);
        merge::hf::write(
            &loaded.model,
            Some(run.trainer.adapters()),
            loaded.tokenizer.as_ref(),
            &loaded.origin,
            &loaded.name,
            dtype,
            &mut zip,
        )
        .await?;
        zip.finish()?
            .flush()
            .map_err(|e| Error::format("merged model (.zip)", format!("cannot write: {e}")))
    }

    /// The hand-off to TRL (`io::recipe`) as one `.zip`: the run's adapter
    /// (PEFT files and card, `base_model` in its config), `records` (the
    /// data file read again, in TRL's formats), the file's examples as
    /// tabtune tokenized them (all of them, the run's held-out ones too, as
    /// `tabtune export --recipe` writes them), the run's settings, the script
    /// and the `accelerate` configs. Refused when the data is no longer the
    /// run's: another file chosen since, or the file changed (its good
    /// records counted otherwise).
    pub async fn export_recipe(&self, base_model: &str, records: &[Record]) -> Result<Vec<u8>> {
        let run = self.run()?;
        let data = self.data.as_ref().ok_or_else(|| missing("data"))?;
        if data.file != run.data_file || data.summary.records != records.len() {
            return Err(Error::format(
                &data.file,
                format!(
                    "reads as {} records now, and the run was started on {} of {}: choose the run's data file again, unchanged",
                    records.len(),
                    data.summary.records,
                    run.data_file
                ),
            ));
        }
        let train = &run.trainer.config;
        let examples: Vec<Example> = data
            .examples
            .iter()
            .map(|e| e.clone().cut(train.seq_len))
            .collect();
        let adapter = self.export(base_model).await?;
        let files = recipe::files(&Recipe {
            records,
            examples: &examples,
            train,
            base_model,
            data_file: &run.data_file,
            adapter: vec![
                (ENTRIES[0], adapter.peft.safetensors.as_slice()),
                (ENTRIES[1], adapter.peft.config_json.as_bytes()),
                (ENTRIES[2], adapter.card.as_bytes()),
            ],
        })?;
        let entries: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        zip_files("tabtune-trl.zip", &entries)
    }

    /// Reads merged files back as a model and compares its logits with the
    /// base's with the run's live adapter (`io::self_check`).
    pub async fn check_merged(&self, written: MergedWritten<'_>) -> Result<SelfCheck> {
        let run = self.run()?;
        let loaded = self.model.as_ref().ok_or_else(|| missing("model"))?;
        let tok = loaded.tokenizer.as_ref();
        Ok(self_check::check_merged(&loaded.model, tok, run.trainer.adapters(), written).await)
    }

    /// Reads a download (`zip`, from [`AdapterFiles::zip`] or
    /// [`Session::export_gguf_zip`]) back as PEFT or llama.cpp would, and
    /// compares the model's logits with it and with the run's live adapter
    /// (`io::self_check`).
    pub async fn check_download(&self, zip: &[u8]) -> Result<SelfCheck> {
        self.check_written(Written::Zip(zip)).await
    }

    /// [`Session::check_download`] for files as written (the CLI reads
    /// them back from disk).
    pub async fn check_written(&self, written: Written<'_>) -> Result<SelfCheck> {
        let run = self.run()?;
        let loaded = self.model.as_ref().ok_or_else(|| missing("model"))?;
        let tok = loaded.tokenizer.as_ref();
        Ok(self_check::check(&loaded.model, tok, run.trainer.adapters(), written).await)
    }
}

impl ActiveRun {
    /// Why the run stops after [`MAX_BAD_STEPS`] skipped steps, the last
    /// of them `last`, and what to change.
    fn bad_steps_message(&self, last: &StepReport) -> String {
        let first = (last.step + 1).saturating_sub(self.bad_run);
        let kept = first.saturating_sub(1);
        let c = &self.trainer.config;
        let cause = if kept == 0 {
            "The base model's own loss on these examples is not finite, before any update: the model file may be damaged, or its numbers overflow on this data.".to_string()
        } else {
            let clip = if c.max_grad_norm == 0.0 {
                ", and turn gradient clipping on (max-grad-norm 1)"
            } else {
                ""
            };
            format!(
                "The likely cause is a learning rate too high for this model and data ({}): try {}{clip}.",
                c.lr,
                c.lr / 10.0
            )
        };
        format!(
            "steps {first} to {} had a loss or gradient norm that is not a finite number (the last: loss {}, gradient norm {}); their updates were skipped and the run stopped with the adapter as it was after step {kept}. {cause}",
            last.step, last.loss, last.grad_norm
        )
    }

    /// The checkpoint record of this run as it stands (the trainer's own
    /// fields are filled in by `checkpoint::write`).
    fn record(&self) -> RunRecord {
        RunRecord {
            version: checkpoint::VERSION,
            settings: self.settings.clone(),
            bad_lines: self.bad_lines,
            model: self.model.clone(),
            data: self.data.clone(),
            step: 0,
            steps: self.trainer.config.steps,
            adam_steps: None,
            order: Vec::new(),
            cursor: 0,
            shuffles: 0,
            place: match self.phase {
                Phase::Before => Place::Before,
                Phase::During => Place::During,
                Phase::Sample => Place::Sample,
                Phase::Check => Place::Check,
                Phase::Over { stopped, .. } => Place::Ended { stopped },
                Phase::After => Place::After,
                Phase::Training => Place::Training,
            },
            history: self.history.clone(),
            validations: self.validations.clone(),
            halted: self.halted.clone(),
            stop: self.stop,
            early: self.early.clone(),
        }
    }

    async fn validate(&mut self, when: When) -> Result<Progress> {
        let t = &self.trainer;
        let adapters = (when != When::Before).then_some(t.adapters());
        let (loss, tokens) = evaluate(
            t.model(),
            adapters,
            &self.validation,
            t.config.batch_size,
            t.config.seq_len,
        )?
        .read()
        .await?;
        let v = Validation {
            when,
            step: t.steps_done(),
            loss,
            tokens,
            examples: self.validation.len(),
        };
        self.validations.push(v.clone());
        let standing = judge::standing(&self.validations);
        if standing.best == Some(self.validations.len() - 1) {
            self.best = Some(self.trainer.params());
        }
        let patience = self.settings.patience;
        if when == When::During && patience > 0 && standing.since_best >= patience {
            // `since_best` counts only validations after a best.
            let best = standing.best.map(|i| &self.validations[i]);
            self.early = Some(EarlyStop {
                step: v.step,
                patience,
                best_step: best.map_or(0, |b| b.step),
                best_loss: best.map_or(f64::NAN, |b| b.loss),
            });
        }
        Ok(Progress::Validation(v))
    }

    /// Whether samples are due with `done` steps taken.
    fn sample_due(&self, done: usize) -> bool {
        let every = self.settings.sample_every;
        every > 0
            && !self.sample_prompts.is_empty()
            && done.is_multiple_of(every)
            && done < self.trainer.config.steps
    }

    /// Replies to `prompts` with the adapter as it is (the base model
    /// before the first step), greedily, each up to `max_tokens`.
    async fn replies(
        &self,
        tok: &TextTokenizer,
        when: When,
        prompts: &[Prompt],
        source: Source,
        max_tokens: usize,
    ) -> Result<Samples> {
        let t = &self.trainer;
        let adapters = (when != When::Before).then_some(t.adapters());
        let mut samples = Vec::with_capacity(prompts.len());
        for p in prompts {
            samples.push(Sample {
                prompt: p.text.clone(),
                reply: reply(t.model(), adapters, tok, &p.ids, max_tokens).await?,
            });
        }
        Ok(Samples {
            when,
            step: t.steps_done(),
            max_tokens,
            source,
            ended: samples.iter().filter(|s| s.reply.ended).count(),
            samples,
        })
    }

    async fn advance(&mut self, tok: &TextTokenizer) -> Result<Progress> {
        let held = !self.validation.is_empty();
        loop {
            let (done, steps) = (self.trainer.steps_done(), self.trainer.config.steps);
            match self.phase {
                Phase::Before => {
                    self.phase = match self.sample_due(0) {
                        true => Phase::Sample,
                        false => Phase::Training,
                    };
                    if held {
                        return self.validate(When::Before).await;
                    }
                }
                Phase::Training if self.stop || done >= steps => self.phase = Phase::After,
                Phase::Training if self.paused => return Ok(Progress::Paused { steps: done }),
                Phase::Training => {
                    let report = self.trainer.step().await?;
                    self.history.push(report.clone());
                    if report.skipped {
                        self.bad_run += 1;
                        if self.bad_run >= MAX_BAD_STEPS {
                            self.halted = Some(self.bad_steps_message(&report));
                            self.phase = Phase::After;
                            return Ok(Progress::Step { report, steps });
                        }
                    } else {
                        self.bad_run = 0;
                        self.last = Some(report.clone());
                    }
                    let every = self.eval_every;
                    if held && every > 0 && report.step % every == 0 && report.step < steps {
                        self.phase = Phase::During;
                    } else if self.sample_due(report.step) {
                        self.phase = Phase::Sample;
                    }
                    return Ok(Progress::Step { report, steps });
                }
                Phase::During if self.stop => self.phase = Phase::After,
                Phase::During => {
                    let progress = self.validate(When::During).await?;
                    self.phase = match () {
                        _ if self.early.is_some() => Phase::After,
                        _ if self.sample_due(done) => Phase::Sample,
                        _ => Phase::Training,
                    };
                    return Ok(progress);
                }
                Phase::Sample if self.stop => self.phase = Phase::After,
                Phase::Sample => {
                    let when = if done == 0 {
                        When::Before
                    } else {
                        When::During
                    };
                    let samples = self
                        .replies(
                            tok,
                            when,
                            &self.sample_prompts,
                            self.sample_source,
                            SAMPLE_TOKENS,
                        )
                        .await?;
                    self.phase = Phase::Training;
                    return Ok(Progress::Samples(samples));
                }
                Phase::After => {
                    self.phase = Phase::Check;
                    if held && done > 0 {
                        return self.validate(When::After).await;
                    }
                }
                Phase::Check => {
                    self.phase = Phase::Over {
                        stopped: done < steps || self.halted.is_some(),
                        reported: false,
                    };
                    if done > 0 && self.halted.is_none() && !self.check_prompts.is_empty() {
                        let samples = self
                            .replies(
                                tok,
                                When::After,
                                &self.check_prompts,
                                self.check_source,
                                self.check_tokens,
                            )
                            .await?;
                        return Ok(Progress::Samples(samples));
                    }
                }
                Phase::Over {
                    stopped,
                    reported: false,
                } => {
                    self.phase = Phase::Over {
                        stopped,
                        reported: true,
                    };
                    return Ok(Progress::Finished {
                        stopped,
                        steps: done,
                        reason: self.halted.clone(),
                        early: self.early.clone(),
                    });
                }
                Phase::Over { reported: true, .. } => {
                    return Err(Error::Order("the run is over".into()));
                }
            }
        }
    }
}
