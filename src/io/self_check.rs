//! The check before a download: the written adapter files, read back the way
//! their consumers read them, give the live model's logits.
//!
//! After an export the files are parsed again (`io::peft::import` for the
//! PEFT files, `io::gguf_lora::import` for the GGUF LoRA) and the model's
//! logits with the reloaded adapter are compared with those with the live
//! one on a few tokens ([`probe_ids`]). A failed check blocks nothing; it
//! says what differs.

use burn::tensor::{Int, Tensor, TensorData, Transaction};
use serde::Serialize;

use crate::error::Result;
use crate::io::bundle::{ENTRIES, unzip};
use crate::io::{gguf_lora, peft};
use crate::lora::LoraAdapters;
use crate::model::Llama;
use crate::model::load::{HfFiles, Loaded, load_gguf, load_hf};
use crate::readback::Readback;
use crate::tokenizer::TextTokenizer;

/// The largest logit difference a check passes with, relative to the
/// largest logit (at least 1): the files hold f32 factors, so a faithful
/// round trip differs by float reassociation at most.
pub const TOLERANCE: f32 = 1e-4;

/// Tokens the check runs on, at most.
pub const PROBE_TOKENS: usize = 32;

/// What a check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelfCheck {
    /// The file checked, e.g. `adapter.gguf`.
    pub file: String,
    /// Tokens compared.
    pub tokens: usize,
    /// Largest `|logit(reloaded) − logit(live)|`.
    pub max_abs_diff: f32,
    /// Largest `|logit|` of the live model.
    pub max_logit: f32,
    /// The largest difference passed, relative to the largest logit (at
    /// least 1): [`TOLERANCE`] for adapters and f32 files, more for weights
    /// rounded to 16 or 8 bits ([`merged_tolerance`]).
    pub tolerance: f32,
    /// Whether the difference is within `tolerance`; `false` too when
    /// the file could not be read back (see `error`).
    pub passed: bool,
    /// Why the file could not be read back, if it could not.
    pub error: Option<String>,
}

impl SelfCheck {
    /// A check that could not compare: the file did not read back.
    pub fn unreadable(file: &str, error: String) -> Self {
        Self {
            file: file.to_string(),
            tokens: 0,
            max_abs_diff: f32::NAN,
            max_logit: f32::NAN,
            tolerance: TOLERANCE,
            passed: false,
            error: Some(error),
        }
    }

    /// One line for people: what was compared and how it came out.
    pub fn message(&self) -> String {
        match &self.error {
            Some(e) => format!("self-check FAILED: {} does not read back: {e}", self.file),
            None if !self.max_logit.is_finite() => format!(
                "self-check FAILED: the live model's own logits are not finite numbers (NaN or infinite) on {} tokens, so {} cannot be compared with them: the base model, or the run, is damaged",
                self.tokens, self.file
            ),
            None if self.passed => format!(
                "self-check passed: {} read back gives the live model's logits on {} tokens (max difference {:.2e}, largest logit {:.1})",
                self.file, self.tokens, self.max_abs_diff, self.max_logit
            ),
            None => format!(
                "self-check FAILED: {} read back gives logits up to {:.3e} away from the live model's on {} tokens (largest logit {:.1}; allowed {:.1e})",
                self.file,
                self.max_abs_diff,
                self.tokens,
                self.max_logit,
                self.tolerance * self.max_logit.max(1.0)
            ),
        }
    }
}

/// The tokens to compare on: a fixed sentence as the model tokenizes it
/// (BOS included), at most [`PROBE_TOKENS`]; without a tokenizer, the ids
/// `1..=16`.
pub fn probe_ids(tok: Option<&TextTokenizer>, vocab: usize) -> Vec<u32> {
    let text = "The quick brown fox jumps over the lazy dog. 1, 2, 3!";
    let mut ids = tok
        .and_then(|t| t.encode(text, true).ok())
        .filter(|ids| !ids.is_empty())
        .unwrap_or_else(|| (1..=16).collect());
    ids.truncate(PROBE_TOKENS);
    ids.retain(|&id| (id as usize) < vocab);
    ids
}

/// Compares the logits of `ids` with `live` and with `reloaded` (read back
/// from `file`).
pub fn compare(
    model: &Llama,
    live: &LoraAdapters,
    reloaded: &LoraAdapters,
    ids: &[u32],
    file: &str,
) -> Readback<SelfCheck> {
    let input = input(ids, model);
    let a = model.forward(input.clone(), Some(live)); // [1, T, V]
    let b = model.forward(input, Some(reloaded));
    differences(a, b, ids.len(), file, TOLERANCE)
}

/// How a merged model's weights are stored, for its check's tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// f32: exact.
    F32,
    /// f16: 11 significant bits.
    F16,
    /// bf16: 8 significant bits.
    Bf16,
    /// Q8_0 blocks: 8 bits a weight and one f16 scale per 32.
    Q8_0,
}

impl From<crate::merge::gguf::FileType> for Stored {
    fn from(ty: crate::merge::gguf::FileType) -> Self {
        use crate::merge::gguf::FileType;
        match ty {
            FileType::F32 => Stored::F32,
            FileType::F16 => Stored::F16,
            FileType::Q8_0 => Stored::Q8_0,
        }
    }
}

impl From<crate::merge::hf::Dtype> for Stored {
    fn from(dtype: crate::merge::hf::Dtype) -> Self {
        use crate::merge::hf::Dtype;
        match dtype {
            Dtype::F32 => Stored::F32,
            Dtype::F16 => Stored::F16,
            Dtype::Bf16 => Stored::Bf16,
        }
    }
}

/// The largest logit difference a merged model's check passes with,
/// relative to the largest logit (at least 1). The largest of ~10⁶ logits'
/// differences was measured with a trained adapter on the default model
/// (Q4_1) and Gemma 3 270M (Q4_K_M): f32 3.2e-6 and 6.4e-6 (held to the
/// adapters' [`TOLERANCE`]), f16 1.3e-3 and 2.1e-3, bf16 7.7e-3 and 1.5e-2,
/// Q8_0 3.3e-2 and 6.0e-2; a tiny random Gemma 3 (`tests/merged.rs`, logits
/// near 2) f16 5.2e-3. The bounds are about twice the largest. Only f32 tells a merged adapter from a missing
/// one this way: the rounding of the others moves logits as much as a
/// short run's adapter does. The rounding itself is held to PyTorch's and
/// gguf-py's, byte for byte, by `scripts/merged_check.py`.
pub fn merged_tolerance(stored: Stored) -> f32 {
    match stored {
        Stored::F32 => TOLERANCE,
        Stored::F16 => 1e-2,
        Stored::Bf16 => 3e-2,
        Stored::Q8_0 => 0.12,
    }
}

/// Compares the logits of `ids` with `live` (the model with its adapter)
/// and with `merged` (the merged files read back as a model, no adapter),
/// passing within `tolerance` ([`merged_tolerance`]).
pub fn compare_merged(
    model: &Llama,
    live: Option<&LoraAdapters>,
    merged: &Llama,
    ids: &[u32],
    file: &str,
    tolerance: f32,
) -> Readback<SelfCheck> {
    let a = model.forward(input(ids, model), live); // [1, T, V]
    let b = merged.forward(input(ids, merged), None);
    differences(a, b, ids.len(), file, tolerance)
}

fn input(ids: &[u32], model: &Llama) -> Tensor<2, Int> {
    let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let t = ids.len();
    Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &model.device)
}

/// The check of logits `b` against `a`, both `[1, T, V]`.
fn differences(
    a: Tensor<3>,
    b: Tensor<3>,
    t: usize,
    file: &str,
    tolerance: f32,
) -> Readback<SelfCheck> {
    let diff = (b - a.clone()).abs().max();
    let largest = a.abs().max();
    let tx = Transaction::default().register(diff).register(largest);
    let file = file.to_string();
    Readback::new(tx, move |data: Vec<TensorData>| -> Result<SelfCheck> {
        let scalar = |d: &TensorData| d.iter::<f32>().next().unwrap_or(f32::NAN);
        let (max_abs_diff, max_logit) = (scalar(&data[0]), scalar(&data[1]));
        Ok(SelfCheck {
            file,
            tokens: t,
            max_abs_diff,
            max_logit,
            tolerance,
            passed: max_abs_diff <= tolerance * max_logit.max(1.0),
            error: None,
        })
    })
}

/// Files as written, to read back.
pub enum Written<'a> {
    /// `adapter_config.json` and `adapter_model.safetensors`.
    Peft {
        /// `adapter_config.json`.
        config: &'a [u8],
        /// `adapter_model.safetensors`.
        weights: &'a [u8],
    },
    /// `adapter.gguf`.
    Gguf(&'a [u8]),
    /// A download (`.zip`) holding either.
    Zip(&'a [u8]),
}

/// Reads `written` back as its consumers do and compares the logits with
/// `live`'s on [`probe_ids`]; a file that does not read back fails the
/// check with the reason.
pub async fn check(
    model: &Llama,
    tok: Option<&TextTokenizer>,
    live: &LoraAdapters,
    written: Written<'_>,
) -> SelfCheck {
    let (file, reloaded) = reload(model, written);
    let reloaded = match reloaded {
        Ok(r) => r,
        Err(e) => return SelfCheck::unreadable(&file, e.to_string()),
    };
    let ids = probe_ids(tok, model.config.vocab_size);
    match compare(model, live, &reloaded, &ids, &file).read().await {
        Ok(c) => c,
        Err(e) => SelfCheck::unreadable(&file, e.to_string()),
    }
}

/// The adapter `written` holds, and the file it came from.
fn reload(model: &Llama, written: Written<'_>) -> (String, Result<LoraAdapters>) {
    let (config, device) = (&model.config, &model.device);
    match written {
        Written::Peft {
            config: json,
            weights,
        } => (
            ENTRIES[0].to_string(),
            peft::import(ENTRIES[1], json, ENTRIES[0], weights, config, device),
        ),
        Written::Gguf(bytes) => (
            gguf_lora::FILE.to_string(),
            gguf_lora::import(gguf_lora::FILE, bytes, config, device),
        ),
        Written::Zip(zip) => {
            let entries = match unzip("the download", zip) {
                Ok(e) => e,
                Err(e) => return ("the download".into(), Err(e)),
            };
            let get = |name: &str| {
                entries
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, b)| b.as_slice())
            };
            match (get(ENTRIES[1]), get(ENTRIES[0]), get(gguf_lora::FILE)) {
                (Some(json), Some(weights), _) => reload(
                    model,
                    Written::Peft {
                        config: json,
                        weights,
                    },
                ),
                (_, _, Some(bytes)) => reload(model, Written::Gguf(bytes)),
                _ => (
                    "the download".into(),
                    Err(crate::error::Error::format(
                        "the download",
                        "holds neither the PEFT files nor adapter.gguf",
                    )),
                ),
            }
        }
    }
}

/// Merged files as written, to read back as a model.
pub enum MergedWritten<'a> {
    /// One GGUF (`export --merged-gguf`, the page's merged GGUF).
    Gguf(&'a [u8], Stored),
    /// A `.zip` of the Hugging Face directory (the page's download).
    Zip(&'a [u8], Stored),
}

/// Reads merged files back as a model on `model`'s device and compares
/// its logits with `model`'s with `live` on [`probe_ids`], within
/// [`merged_tolerance`]; files that do not read back fail with the reason.
pub async fn check_merged(
    model: &Llama,
    tok: Option<&TextTokenizer>,
    live: &LoraAdapters,
    written: MergedWritten<'_>,
) -> SelfCheck {
    let device = &model.device;
    let (file, stored, merged) = match written {
        MergedWritten::Gguf(bytes, stored) => {
            let file = "the merged GGUF";
            (file, stored, load_gguf(file, bytes, device))
        }
        MergedWritten::Zip(zip, stored) => {
            let file = crate::merge::hf::WEIGHTS;
            (file, stored, load_zip(zip, device))
        }
    };
    let merged = match merged {
        Ok(m) => m,
        Err(e) => return SelfCheck::unreadable(file, e.to_string()),
    };
    let ids = probe_ids(tok, model.config.vocab_size);
    let tol = merged_tolerance(stored);
    match compare_merged(model, Some(live), &merged.model, &ids, file, tol)
        .read()
        .await
    {
        Ok(c) => c,
        Err(e) => SelfCheck::unreadable(file, e.to_string()),
    }
}

/// A zipped Hugging Face directory as a model.
fn load_zip(zip: &[u8], device: &burn::tensor::Device) -> Result<Loaded> {
    let entries = unzip("the download", zip)?;
    let get = |name: &str| {
        entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    };
    let need = |name: &str| {
        get(name)
            .ok_or_else(|| crate::error::Error::format("the download", format!("holds no {name}")))
    };
    load_hf(
        "the download",
        &HfFiles {
            config: need("config.json")?,
            weights: need(crate::merge::hf::WEIGHTS)?,
            tokenizer: get("tokenizer.json"),
            tokenizer_config: get("tokenizer_config.json"),
            chat_template: get("chat_template.jinja"),
        },
        device,
    )
}
