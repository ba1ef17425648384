//! A run's checkpoint as one file: a safetensors file whose tensors are the
//! trainer's flat state (`params`, and AdamW's `adam_m` and `adam_v` once it
//! has stepped, each f32 `[P]`; `best`, the factors of the best validation
//! loss so far, when there is one) and whose metadata holds the rest as JSON
//! under `tabtune.run` ([`RunRecord`]: the settings, the model's and data's
//! fingerprints, the step, the data order, the losses so far).
//!
//! The CLI writes it as `checkpoint-N/state.safetensors` beside the adapter
//! of that step; the page keeps it in the browser's private storage. Either
//! goes on with [`crate::train::Session::resume_from`].

use std::collections::HashMap;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::data::BadLines;
use crate::error::{Error, Result};
use crate::io::safetensors::SafetensorsFile;
use crate::train::judge::EarlyStop;
use crate::train::session::Validation;
use crate::train::{RunSettings, StepReport, TrainerState};

/// The metadata's `format`.
pub const FORMAT: &str = "tabtune-checkpoint";
/// The record's version; a checkpoint of another is refused.
pub const VERSION: u32 = 1;
/// The metadata key of the [`RunRecord`].
const RECORD: &str = "tabtune.run";

/// The model a run trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMark {
    /// Its name, for messages.
    pub name: String,
    /// Its files' fingerprint (`io::fingerprint::files`).
    pub fingerprint: String,
    /// How its matrices were kept as it loaded (`stored`, `q8_0`, `q4_0`).
    pub base_weights: String,
}

/// The data a run trains on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataMark {
    /// The file's name, for messages.
    pub file: String,
    /// Its tokenized examples' fingerprint (`io::fingerprint::examples`).
    pub fingerprint: String,
    /// Examples in it.
    pub examples: usize,
}

/// Where in its life a checkpointed run was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// Before the validation loss before training.
    Before,
    /// Between steps.
    Training,
    /// A validation loss due before the next step.
    During,
    /// Samples due before the next step.
    Sample,
    /// Training over (all steps taken, stopped, or halted), the validation
    /// loss after not yet measured.
    After,
    /// The validation loss after measured, the stop check not yet made.
    Check,
    /// Over: every step taken, or stopped.
    Ended {
        /// Whether it stopped before its last step.
        stopped: bool,
    },
}

/// Everything in a checkpoint besides the trainer's tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`VERSION`].
    pub version: u32,
    /// The run's settings.
    pub settings: RunSettings,
    /// The choice for the data's bad lines it started with.
    pub bad_lines: BadLines,
    /// Its model.
    pub model: ModelMark,
    /// Its data.
    pub data: DataMark,
    /// Optimizer steps taken.
    pub step: usize,
    /// Steps planned.
    pub steps: usize,
    /// AdamW's updates taken (skipped steps are not), `None` before one.
    pub adam_steps: Option<i32>,
    /// The training examples' order.
    pub order: Vec<usize>,
    /// The next position in it.
    pub cursor: usize,
    /// Shuffles of the order so far.
    pub shuffles: u64,
    /// Where the run was.
    pub place: Place,
    /// Every step's report so far (its numbers stored as their bits, so a
    /// NaN is kept and every value comes back exactly).
    #[serde(with = "exact_steps")]
    pub history: Vec<StepReport>,
    /// The validation losses so far (likewise).
    #[serde(with = "exact_validations")]
    pub validations: Vec<Validation>,
    /// Why the run stopped by itself, when it did.
    pub halted: Option<String>,
    /// Whether it had been asked to stop (a resume goes on regardless).
    pub stop: bool,
    /// Why it stopped early, when it did.
    #[serde(default)]
    pub early: Option<EarlyStop>,
}

/// A [`StepReport`] with its floats as bits.
#[derive(Serialize, Deserialize)]
struct SavedStep {
    step: usize,
    loss: u32,
    grad_norm: u32,
    lr: u64,
    trained_tokens: usize,
    tokens: usize,
    epoch: u64,
    skipped: bool,
}

mod exact_steps {
    use super::{SavedStep, StepReport};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[StepReport], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|r| SavedStep {
                step: r.step,
                loss: r.loss.to_bits(),
                grad_norm: r.grad_norm.to_bits(),
                lr: r.lr.to_bits(),
                trained_tokens: r.trained_tokens,
                tokens: r.tokens,
                epoch: r.epoch.to_bits(),
                skipped: r.skipped,
            })
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<StepReport>, D::Error> {
        Ok(Vec::<SavedStep>::deserialize(d)?
            .into_iter()
            .map(|r| StepReport {
                step: r.step,
                loss: f32::from_bits(r.loss),
                grad_norm: f32::from_bits(r.grad_norm),
                lr: f64::from_bits(r.lr),
                trained_tokens: r.trained_tokens,
                tokens: r.tokens,
                epoch: f64::from_bits(r.epoch),
                skipped: r.skipped,
            })
            .collect())
    }
}

/// A [`Validation`] with its loss as bits.
#[derive(Serialize, Deserialize)]
struct SavedValidation {
    when: crate::train::session::When,
    step: usize,
    loss: u64,
    tokens: usize,
    examples: usize,
}

mod exact_validations {
    use super::{SavedValidation, Validation};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[Validation], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|x| SavedValidation {
                when: x.when,
                step: x.step,
                loss: x.loss.to_bits(),
                tokens: x.tokens,
                examples: x.examples,
            })
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Validation>, D::Error> {
        Ok(Vec::<SavedValidation>::deserialize(d)?
            .into_iter()
            .map(|x| Validation {
                when: x.when,
                step: x.step,
                loss: f64::from_bits(x.loss),
                tokens: x.tokens,
                examples: x.examples,
            })
            .collect())
    }
}

/// A checkpoint, made by [`crate::train::Session::checkpoint`].
pub struct Checkpoint {
    /// Optimizer steps the run had taken.
    pub step: usize,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The file of `record`, `state` and the factors of the best validation
/// loss (`record`'s trainer fields are taken from `state`).
pub fn write(
    mut record: RunRecord,
    state: TrainerState,
    best: Option<&[f32]>,
) -> Result<Checkpoint> {
    record.step = state.step;
    record.order = state.order;
    record.cursor = state.cursor;
    record.shuffles = state.shuffles;
    record.adam_steps = state.moments.as_ref().map(|m| m.2);
    let p = state.params.len();
    let mut buffers = vec![("params", bytes_of(&state.params))];
    if let Some((m, v, _)) = &state.moments {
        buffers.push(("adam_m", bytes_of(m)));
        buffers.push(("adam_v", bytes_of(v)));
    }
    if let Some(best) = best {
        if best.len() != p {
            return Err(Error::Backend(format!(
                "the best factors hold {} values and the factors {p}",
                best.len()
            )));
        }
        buffers.push(("best", bytes_of(best)));
    }
    let views = buffers
        .iter()
        .map(|(name, bytes)| {
            TensorView::new(Dtype::F32, vec![p], bytes)
                .map(|v| (name.to_string(), v))
                .map_err(Error::backend)
        })
        .collect::<Result<Vec<_>>>()?;
    let json = serde_json::to_string(&record).map_err(Error::backend)?;
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        (RECORD.to_string(), json),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(Error::backend)?;
    Ok(Checkpoint {
        step: record.step,
        bytes,
    })
}

/// The factors of the best validation loss in a checkpoint file that
/// [`read`] took, when it holds them.
pub fn read_best(file: &str, bytes: &[u8]) -> Result<Option<Vec<f32>>> {
    let st = SafetensorsFile::parse(file, bytes)?;
    Ok(st.get_f32("best")?.map(|(_, v)| v))
}

/// Reads a checkpoint file (`file` names it in messages).
pub fn read(file: &str, bytes: &[u8]) -> Result<(RunRecord, TrainerState)> {
    let bad = |why: String| Error::format(file, why);
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a tabtune checkpoint (safetensors): {e}")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(
            "not a tabtune checkpoint (no `format: tabtune-checkpoint` in its metadata)".into(),
        ));
    }
    let json = meta
        .get(RECORD)
        .ok_or_else(|| bad(format!("the checkpoint has no `{RECORD}` record")))?;
    let version: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(format!("its record is not JSON: {e}")))?;
    if version.get("version").and_then(|v| v.as_u64()) != Some(VERSION as u64) {
        return Err(bad(format!(
            "the checkpoint is of version {}, and this tabtune reads version {VERSION}",
            version.get("version").unwrap_or(&serde_json::Value::Null)
        )));
    }
    let record: RunRecord =
        serde_json::from_str(json).map_err(|e| bad(format!("its record is unreadable: {e}")))?;
    let st = SafetensorsFile::parse(file, bytes)?;
    let get = |name: &str| -> Result<Option<Vec<f32>>> { Ok(st.get_f32(name)?.map(|(_, v)| v)) };
    let params = get("params")?.ok_or_else(|| bad("the checkpoint has no `params`".into()))?;
    let moments = match (get("adam_m")?, get("adam_v")?, record.adam_steps) {
        (Some(m), Some(v), Some(time)) => Some((m, v, time)),
        (None, None, None) => None,
        _ => return Err(bad("the checkpoint's optimizer state is incomplete".into())),
    };
    let state = TrainerState {
        step: record.step,
        params,
        moments,
        order: record.order.clone(),
        cursor: record.cursor,
        shuffles: record.shuffles,
    };
    Ok((record, state))
}
