//! A base quantized at load: the `base_weights` choice, and the weight
//! source that applies it.
//!
//! A safetensors model (f32, f16 or bf16) or a GGUF's f32/f16/bf16 tensors
//! can be turned into Q8_0 or Q4_0 blocks as they load, so the frozen base
//! stays packed (1.06 or 0.56 bytes a weight instead of 4) on the CPU. The
//! embedding and the seven projections are quantized; norms and an untied
//! LM head stay f32, and tensors a GGUF already stores in blocks stay as
//! they are. An embedding that is also the LM head (tied) is never taken
//! below Q8_0, as llama.cpp's own quantization keeps the output layer at
//! higher precision. A matrix whose rows are not whole blocks of 32 stays
//! f32. On a GPU the blocks stay packed in its memory (`model::blocks`);
//! a matrix read as f32 instead (`get`) gets the same quantized values, so
//! every device trains on the same numbers.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::dequant::GgmlType;
use crate::io::quantize::quantize;
use crate::lora::Target;
use crate::model::packed::PackedWeight;
use crate::model::weights::{WeightSource, is_float};

/// How the base's matrices are kept once loaded. Default: as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseWeights {
    /// As the file stores them: a GGUF's blocks, a safetensors model in f32.
    #[default]
    Stored,
    /// f32/f16/bf16 matrices quantized to Q8_0 (8 bits and an f16 scale per
    /// 32 weights: 0.5% relative RMS error on Gaussian weights).
    Q8_0,
    /// f32/f16/bf16 matrices quantized to Q4_0 (4 bits and an f16 scale per
    /// 32 weights: 8.5% relative RMS error on Gaussian weights).
    Q4_0,
}

impl BaseWeights {
    /// The choices, as [`BaseWeights::parse`] reads them.
    pub const NAMES: [&'static str; 3] = ["stored", "q8_0", "q4_0"];

    /// Every choice, in the order of [`BaseWeights::NAMES`].
    const ALL: [BaseWeights; 3] = [Self::Stored, Self::Q8_0, Self::Q4_0];

    /// Reads `stored`, `q8_0` or `q4_0` (any case).
    pub fn parse(text: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                Error::setting(
                    "base-weights",
                    format!("`{text}` is not one of {}", Self::NAMES.join(", ")),
                )
            })
    }

    /// `stored`, `q8_0` or `q4_0`.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The block type it quantizes to, `None` for [`BaseWeights::Stored`].
    pub fn ggml_type(self) -> Option<GgmlType> {
        match self {
            Self::Stored => None,
            Self::Q8_0 => Some(GgmlType::Q8_0),
            Self::Q4_0 => Some(GgmlType::Q4_0),
        }
    }
}

/// Whether `hf_name` is a matrix the choice applies to: the embedding or
/// one of a block's seven projections.
fn quantizable(hf_name: &str) -> bool {
    hf_name == "model.embed_tokens.weight"
        || hf_name.strip_prefix("model.layers.").is_some_and(|rest| {
            Target::ALL
                .iter()
                .any(|t| rest.ends_with(&format!(".{}.weight", t.hf_path())))
        })
}

/// `inner` with its embedding and projections quantized to `ty`.
pub struct Quantizing<'a> {
    /// The file's own source.
    pub inner: &'a dyn WeightSource,
    /// Q8_0 or Q4_0.
    pub ty: GgmlType,
    /// Whether the embedding is also the LM head: then it is quantized to
    /// Q8_0 at least.
    pub tied_head: bool,
}

impl Quantizing<'_> {
    /// The type `hf_name` is quantized to.
    fn type_for(&self, hf_name: &str) -> GgmlType {
        if self.tied_head && hf_name == "model.embed_tokens.weight" {
            GgmlType::Q8_0
        } else {
            self.ty
        }
    }
}

impl WeightSource for Quantizing<'_> {
    fn file(&self) -> &str {
        self.inner.file()
    }

    fn stored_name(&self, hf_name: &str) -> Option<String> {
        self.inner.stored_name(hf_name)
    }

    fn norms_shifted(&self) -> bool {
        self.inner.norms_shifted()
    }

    fn packed_type(&self, hf_name: &str) -> Result<Option<GgmlType>> {
        Ok(match self.inner.packed_type(hf_name)? {
            Some(t) if !is_float(t) || !quantizable(hf_name) => Some(t),
            Some(_) => Some(self.type_for(hf_name)),
            None => None, // not known until read (a safetensors tensor)
        })
    }

    fn get(&self, hf_name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        if quantizable(hf_name)
            && let Some(p) = self.get_packed(hf_name)?
        {
            return Ok(Some((p.shape().to_vec(), p.to_f32())));
        }
        self.inner.get(hf_name)
    }

    fn get_packed(&self, hf_name: &str) -> Result<Option<PackedWeight>> {
        if !quantizable(hf_name)
            || self
                .inner
                .packed_type(hf_name)?
                .is_some_and(|t| !is_float(t))
        {
            return self.inner.get_packed(hf_name); // already in blocks: kept as it is
        }
        let ty = self.type_for(hf_name);
        let Some((shape, values)) = self.inner.get(hf_name)? else {
            return Ok(None);
        };
        let &[rows, cols] = shape.as_slice() else {
            return Ok(None);
        };
        if !cols.is_multiple_of(ty.block_len()) {
            return Ok(None); // rows that are not whole blocks stay f32
        }
        let fail =
            |reason: String| Error::format(self.file(), format!("tensor `{hf_name}`: {reason}"));
        let bytes = quantize(ty, &values).map_err(fail)?;
        PackedWeight::new(ty, rows, cols, bytes)
            .map(Some)
            .map_err(fail)
    }
}
