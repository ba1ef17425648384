//! The merged model as one GGUF file that llama.cpp and Ollama run with no
//! adapter (`llama-cli -m merged.gguf`, Ollama's `FROM ./merged.gguf`).
//!
//! Metadata: the base GGUF's own (for a model read from a Hugging Face
//! directory, what `gguf_meta` writes for it) (architecture, hyper-parameters,
//! vocabulary, chat template: for a base without one, the template tabtune
//! trained with) with `general.file_type` set to the file's
//! type (`ALL_F32` 0, `MOSTLY_F16` 1, `MOSTLY_Q8_0` 7, llama.cpp's
//! `llama_ftype`), `general.name` marked as merged, and what described the
//! base's own quantization (`quantize.*`, `general.alignment`) left out.
//! Tensors: under llama.cpp's names, q/k rows in the Llama GGUF's
//! interleaved order, Gemma's norms as its GGUF files keep them (`1 + w`);
//! as `convert_hf_to_gguf.py --outtype` writes them: 1-D tensors (norms,
//! biases) in F32, matrices in the file's type (Q8_0 only where a row is
//! whole blocks of 32, else F16).
//!
//! The header is written from the plan before any weight is made; then each
//! tensor, made, encoded and written one at a time.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;

use crate::error::{Error, Result};
use crate::io::dequant::GgmlType;
use crate::io::gguf::MetaValue;
use crate::io::gguf_write::{GgufWriter, padding};
use crate::io::quantize::quantize;
use crate::lora::{LoraAdapters, Target};
use crate::model::Llama;
use crate::model::load::Origin;
use crate::model::weights::{gguf_name, permute_rows_for_gguf};
use crate::tokenizer::TextTokenizer;

use super::gguf_meta::from_hf;
use super::{Part, Planned, plan, values};

/// The chat template's key.
const TEMPLATE: &str = "tokenizer.chat_template";

/// The merged file's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// Every tensor in f32.
    F32,
    /// Matrices in f16.
    F16,
    /// Matrices in Q8_0 blocks.
    Q8_0,
}

impl FileType {
    /// Parses `f32`, `f16` or `q8_0` (a setting named `what`).
    pub fn parse(what: &str, s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(FileType::F32),
            "f16" => Ok(FileType::F16),
            "q8_0" | "q8" => Ok(FileType::Q8_0),
            _ => Err(Error::setting(
                what,
                format!("`{s}` is not a merged GGUF type: f16, q8_0 or f32"),
            )),
        }
    }

    /// llama.cpp's `llama_ftype` number.
    pub fn ftype(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q8_0 => 7,
        }
    }

    /// Its name in file names, e.g. `Q8_0`.
    pub fn label(self) -> &'static str {
        match self {
            FileType::F32 => "F32",
            FileType::F16 => "F16",
            FileType::Q8_0 => "Q8_0",
        }
    }

    /// The type tensor `p` is stored in.
    pub fn tensor_type(self, p: &Planned) -> GgmlType {
        let cols = *p.shape.last().expect("a shape");
        match self {
            _ if p.shape.len() == 1 => GgmlType::F32,
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::Q8_0 if cols.is_multiple_of(32) => GgmlType::Q8_0,
            FileType::Q8_0 => GgmlType::F16,
        }
    }
}

/// `values` as `ty`'s bytes.
fn encode(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    Ok(match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        other => quantize(other, values).map_err(|e| Error::format("merged GGUF", e))?,
    })
}

/// The base's metadata as the merged file carries it; a base without a
/// chat template gets the one tabtune trained with (`tok`'s in use: Gemma's
/// turns or ChatML), so llama.cpp and Ollama prompt it as it was trained.
fn metadata(
    base: &BTreeMap<String, MetaValue>,
    tok: Option<&TextTokenizer>,
    ty: FileType,
) -> Vec<(String, MetaValue)> {
    let mut out: Vec<(String, MetaValue)> = base
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("quantize.")
                && !matches!(
                    k.as_str(),
                    "general.file_type" | "general.alignment" | "general.quantization_version"
                )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some((_, MetaValue::Str(name))) = out.iter_mut().find(|(k, _)| k == "general.name") {
        name.push_str(" (LoRA merged)");
    }
    if let Some(t) = tok.filter(|_| !base.contains_key(TEMPLATE)) {
        out.push((TEMPLATE.into(), MetaValue::Str(t.template_in_use().into())));
    }
    out.push(("general.file_type".into(), MetaValue::U32(ty.ftype())));
    out.push(("general.quantization_version".into(), MetaValue::U32(2)));
    out
}

/// The base's GGUF metadata: a GGUF's own, or for a model loaded from a
/// Hugging Face directory what `gguf_meta` makes of its configuration and
/// `tokenizer.json`; an error says why a merged GGUF cannot be written.
pub fn base_metadata<'a>(
    model: &Llama,
    tok: Option<&TextTokenizer>,
    origin: &'a Origin,
) -> Result<Cow<'a, BTreeMap<String, MetaValue>>> {
    match origin {
        Origin::Gguf(meta) => Ok(Cow::Borrowed(meta)),
        Origin::Hf {
            name, tokenizer, ..
        } => {
            let json = tokenizer
                .iter()
                .find(|(n, _)| *n == "tokenizer.json")
                .map(|(_, b)| b.as_slice());
            Ok(Cow::Owned(from_hf(&model.config, tok, json, name)?))
        }
    }
}

/// Bytes of the merged file for `model` in `ty` (known before writing).
pub fn file_len(
    model: &Llama,
    tok: Option<&TextTokenizer>,
    origin: &Origin,
    ty: FileType,
) -> Result<u64> {
    let (w, lens) = declared(model, tok, origin, ty)?;
    Ok(w.header().len() as u64 + lens.iter().map(|&l| (l + padding(l)) as u64).sum::<u64>())
}

/// The writer with the metadata and every tensor declared, and each
/// tensor's bytes.
fn declared(
    model: &Llama,
    tok: Option<&TextTokenizer>,
    origin: &Origin,
    ty: FileType,
) -> Result<(GgufWriter, Vec<usize>)> {
    let config = &model.config;
    let mut w = GgufWriter::new("merged GGUF");
    let base = base_metadata(model, tok, origin)?;
    for (k, v) in metadata(&base, tok, ty) {
        w.meta(&k, v)?;
    }
    let mut lens = Vec::new();
    for p in plan(config) {
        let name = gguf_name(config.arch, &p.name).expect("every planned tensor has a GGUF name");
        let dims: Vec<usize> = p.shape.iter().rev().copied().collect();
        lens.push(w.declare(&name, &dims, ty.tensor_type(&p))?);
    }
    Ok((w, lens))
}

/// Writes the merged model as a GGUF of type `ty` to `out`; returns the
/// bytes written.
pub async fn write(
    model: &Llama,
    adapters: Option<&LoraAdapters>,
    tok: Option<&TextTokenizer>,
    origin: &Origin,
    ty: FileType,
    out: &mut dyn Write,
) -> Result<u64> {
    let io = |e: std::io::Error| Error::format("merged GGUF", format!("cannot write: {e}"));
    let config = &model.config;
    let (w, lens) = declared(model, tok, origin, ty)?;
    let header = w.header();
    out.write_all(&header).map_err(io)?;
    let mut written = header.len() as u64;
    for (p, len) in plan(config).iter().zip(lens) {
        let tensor_ty = ty.tensor_type(p);
        let heads = match p.part {
            Part::Proj(_, Target::Q) if config.arch.permutes_qk() => Some(config.num_heads),
            Part::Proj(_, Target::K) if config.arch.permutes_qk() => Some(config.num_kv_heads),
            _ => None,
        };
        let mut bytes = 0;
        for rows in p.pieces() {
            let mut v = values(model, adapters, p, rows.clone()).get().await?;
            if let Some(h) = heads {
                v = permute_rows_for_gguf(&v, p.shape[0], p.shape[1], h);
            }
            let b = encode(tensor_ty, &v)?;
            out.write_all(&b).map_err(io)?;
            bytes += b.len();
        }
        if bytes != len {
            return Err(Error::format(
                "merged GGUF",
                format!(
                    "tensor {} made {bytes} bytes, its header says {len}",
                    p.name
                ),
            ));
        }
        out.write_all(&vec![0u8; padding(len)]).map_err(io)?;
        written += (len + padding(len)) as u64;
    }
    out.flush().map_err(io)?;
    Ok(written)
}
