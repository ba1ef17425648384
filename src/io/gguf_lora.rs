//! LoRA adapters as GGUF, the file llama.cpp loads with `--lora` (and
//! Ollama with `ADAPTER`): what llama.cpp's `convert_lora_to_gguf.py` writes
//! from a PEFT adapter.
//!
//! Metadata: `general.architecture` (the base's), `general.type =
//! "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha` (f32),
//! `general.name`, `general.quantization_version = 2`. Tensors, f32, per
//! adapted projection: `blk.{i}.{attn_q|...|ffn_down}.weight.lora_a` with
//! ggml dims `[in, r]` (PEFT's `lora_A [r, in]`, the same bytes) and
//! `...lora_b` `[r, out]` (PEFT's `lora_B [out, r]`). llama.cpp checks
//! `a.ne[0]` and `b.ne[1]` against the base tensor and scales by
//! `alpha / r`, `r` read from `lora_b`; rsLoRA's `alpha / sqrt(r)` is written
//! as `alpha·sqrt(r)`. For the Llama architecture the GGUF base holds q/k
//! rows in interleaved-RoPE order (`convert_hf_to_gguf.py`'s `permute`), so
//! `lora_b`'s rows of `attn_q` (by query heads) and `attn_k` (by key/value
//! heads) are permuted the same way; the engine keeps HF order.

use burn::tensor::{Device, Tensor, TensorData, Transaction};

use crate::error::{Error, Result};
use crate::io::dequant::GgmlType;
use crate::io::gguf::{Gguf, MetaValue};
use crate::io::gguf_write::GgufWriter;
use crate::lora::{LoraAdapters, LoraConfig, LoraPair, Target};
use crate::model::config::LlamaConfig;
use crate::model::weights::{permute_rows_for_gguf, unpermute_rows_from_gguf};
use crate::readback::Readback;

/// The file name the page's download and the CLI's export use.
pub const FILE: &str = "adapter.gguf";

/// The base model an adapter is written for.
#[derive(Debug, Clone)]
pub struct GgufLoraBase {
    /// Its family (`general.architecture`, which must equal the base
    /// GGUF's: llama.cpp refuses the adapter otherwise) and shapes (head
    /// counts for the q/k row order).
    pub config: LlamaConfig,
    /// `general.name` of the adapter.
    pub name: String,
}

impl GgufLoraBase {
    /// The base `config` as loaded under `name` (a file or directory path
    /// keeps only its last part: the name goes into the file).
    pub fn new(config: LlamaConfig, name: &str) -> Self {
        let name = name.trim_end_matches(['/', '\\']);
        let short = name.rsplit(['/', '\\']).next().unwrap_or(name);
        Self {
            config,
            name: format!("{short} LoRA"),
        }
    }
}

/// Serialises `adapters` as a GGUF LoRA for `base`, once the factors are
/// read (all in one transaction, PEFT layout).
pub fn export(adapters: &LoraAdapters, base: &GgufLoraBase) -> Readback<Vec<u8>> {
    let owned = adapters.clone();
    let base = base.clone();
    let tx = adapters
        .named_tensors()
        .into_iter()
        // engine [in, r] / [r, out] -> PEFT [r, in] / [out, r]
        .fold(Transaction::default(), |tx, (_, t)| {
            tx.register(t.clone().transpose())
        });
    Readback::new(tx, move |data| serialize(&owned, &data, &base))
}

/// Writes the file from the factors' values in PEFT layout, in
/// [`LoraAdapters::named_tensors`] order.
fn serialize(adapters: &LoraAdapters, data: &[TensorData], base: &GgufLoraBase) -> Result<Vec<u8>> {
    let c = &adapters.config;
    let r = c.rank;
    let alpha = if c.use_rslora {
        c.alpha * (r as f64).sqrt()
    } else {
        c.alpha
    };
    let mut w = GgufWriter::new(FILE);
    w.meta(
        "general.architecture",
        MetaValue::Str(base.config.arch.gguf_name().into()),
    )?;
    w.meta("general.type", MetaValue::Str("adapter".into()))?;
    w.meta("adapter.type", MetaValue::Str("lora".into()))?;
    w.meta("general.name", MetaValue::Str(base.name.clone()))?;
    w.meta("adapter.lora.alpha", MetaValue::F32(alpha as f32))?;
    w.meta("general.quantization_version", MetaValue::U32(2))?;
    let mut values = data.iter();
    let mut next = |what: &str| -> Result<Vec<f32>> {
        let d = values
            .next()
            .ok_or_else(|| Error::Backend(format!("no values read for {what}")))?;
        Ok(d.iter::<f32>().collect())
    };
    for (i, layer) in adapters.layers.iter().enumerate() {
        for t in Target::ALL {
            if layer[t.index()].is_none() {
                continue;
            }
            let (d_in, d_out) = t.dims(&base.config);
            let stem = format!("blk.{i}.{}.weight", t.gguf_name());
            let a = next(&stem)?;
            let mut b = next(&stem)?;
            if a.len() != r * d_in || b.len() != d_out * r {
                return Err(Error::Backend(format!(
                    "{stem}: factors of {} and {} values, expected [{r}, {d_in}] and [{d_out}, {r}]",
                    a.len(),
                    b.len()
                )));
            }
            let heads = match t {
                Target::Q => Some(base.config.num_heads),
                Target::K => Some(base.config.num_kv_heads),
                _ => None,
            };
            if let Some(h) = heads.filter(|_| base.config.arch.permutes_qk()) {
                b = permute_rows_for_gguf(&b, d_out, r, h);
            }
            w.tensor(
                &format!("{stem}.lora_a"),
                &[d_in, r],
                GgmlType::F32,
                le_bytes(&a),
            )?;
            w.tensor(
                &format!("{stem}.lora_b"),
                &[r, d_out],
                GgmlType::F32,
                le_bytes(&b),
            )?;
        }
    }
    if values.next().is_some() {
        return Err(Error::Backend("more values read than factors".into()));
    }
    Ok(w.to_bytes())
}

/// Reads back a GGUF LoRA for a model of `model`'s shape: the inverse of
/// [`export`] (q/k `lora_b` rows back to HF order where the architecture
/// permutes them). The rank comes from the tensors; `adapter.lora.alpha`
/// gives the scale `alpha / r` (an rsLoRA adapter's, written as
/// `alpha·sqrt(r)`, reads as a plain one of the same scale). Every tensor
/// must belong to an adapted projection of this model.
pub fn import(
    file: &str,
    bytes: &[u8],
    model: &LlamaConfig,
    device: &Device,
) -> Result<LoraAdapters> {
    let g = Gguf::parse(file, bytes)?;
    let fail = |reason: String| Error::format(file, reason);
    let arch = g.meta_str("general.architecture")?;
    if arch != model.arch.gguf_name() {
        return Err(fail(format!(
            "the adapter is for `{arch}`, the model is `{}`",
            model.arch.gguf_name()
        )));
    }
    if g.meta_str("adapter.type")? != "lora" {
        return Err(fail("adapter.type is not `lora`".into()));
    }
    let alpha = g.meta_f64("adapter.lora.alpha")?;
    let mut rank = None;
    let mut targets = Vec::new();
    let mut layers: Vec<[Option<LoraPair>; 7]> =
        (0..model.num_layers).map(|_| Default::default()).collect();
    let mut expected: Vec<String> = Vec::new();
    for (i, layer) in layers.iter_mut().enumerate() {
        for t in Target::ALL {
            let stem = format!("blk.{i}.{}.weight", t.gguf_name());
            let (Some(a), Some(b)) = (
                g.tensor(&format!("{stem}.lora_a")),
                g.tensor(&format!("{stem}.lora_b")),
            ) else {
                continue;
            };
            let (d_in, d_out) = t.dims(model);
            let r = a.dims.get(1).copied().unwrap_or(0) as usize;
            if a.dims != [d_in as u64, r as u64] || b.dims != [r as u64, d_out as u64] || r == 0 {
                return Err(fail(format!(
                    "{stem}: lora_a {:?} and lora_b {:?}, expected [{d_in}, r] and [r, {d_out}]",
                    a.dims, b.dims
                )));
            }
            if *rank.get_or_insert(r) != r {
                return Err(fail(format!(
                    "{stem} has rank {r}, other projections {rank:?}"
                )));
            }
            let a_values = g.tensor_f32(a)?; // PEFT's A [r, in]
            let mut b_values = g.tensor_f32(b)?; // PEFT's B [out, r]
            let heads = match t {
                Target::Q => Some(model.num_heads),
                Target::K => Some(model.num_kv_heads),
                _ => None,
            };
            if let Some(h) = heads.filter(|_| model.arch.permutes_qk()) {
                b_values = unpermute_rows_from_gguf(&b_values, d_out, r, h);
            }
            // PEFT [r, in] / [out, r] -> engine [in, r] / [r, out]
            let a =
                Tensor::<2>::from_data(TensorData::new(a_values, [r, d_in]), device).transpose();
            let b =
                Tensor::<2>::from_data(TensorData::new(b_values, [d_out, r]), device).transpose();
            layer[t.index()] = Some(LoraPair { a, b });
            if !targets.contains(&t) {
                targets.push(t);
            }
            expected.extend([format!("{stem}.lora_a"), format!("{stem}.lora_b")]);
        }
    }
    if let Some(extra) = g.tensors.iter().find(|t| !expected.contains(&t.name)) {
        return Err(fail(format!(
            "tensor `{}` does not belong to a LoRA adapter of this model",
            extra.name
        )));
    }
    let rank = rank.ok_or_else(|| fail("no LoRA tensors".into()))?;
    targets.sort_by_key(|t| t.index());
    let config = LoraConfig {
        rank,
        alpha,
        dropout: 0.0,
        targets,
        use_rslora: false,
    };
    config.validate().map_err(|e| Error::format(file, e))?;
    Ok(LoraAdapters { config, layers })
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The files of the llama.cpp / Ollama download, in order (the CLI's
/// `export --gguf` writes the same): the adapter, an Ollama `Modelfile` that
/// runs the base with it, and a `README.md` saying how to use them.
/// `base_gguf` is the base model's GGUF file name; a base loaded from other
/// files (safetensors) has none, and the two files then name `BASE.gguf`
/// and say how to make it.
pub fn bundle(adapter: Vec<u8>, base_gguf: Option<&str>) -> [(&'static str, Vec<u8>); 3] {
    let base = base_gguf.unwrap_or("BASE.gguf");
    [
        (FILE, adapter),
        ("Modelfile", modelfile(base).into_bytes()),
        ("README.md", usage(base, base_gguf.is_none()).into_bytes()),
    ]
}

fn modelfile(base: &str) -> String {
    [
        "# Run with: ollama create my-model -f Modelfile && ollama run my-model",
        "# FROM names the GGUF file of the base model the adapter was trained on",
        "# (put it next to this file).",
        &format!("FROM ./{base}"),
        &format!("ADAPTER ./{FILE}"),
        "",
    ]
    .join("\n")
}

fn usage(base: &str, convert: bool) -> String {
    let origin = if convert {
        "The base model was not loaded from a GGUF file: convert it first with llama.cpp's\n\
         `convert_hf_to_gguf.py` (the same weights, any quantization) and name the result\n\
         `BASE.gguf`, or change that name below and in the `Modelfile`."
            .to_string()
    } else {
        format!(
            "Trained with tabtune on `{base}`. The adapter changes that base model, so it\n\
             needs it: the same GGUF file (or the same weights in another quantization)."
        )
    };
    [
        "# LoRA adapter for llama.cpp and Ollama",
        "",
        &origin,
        "",
        "llama.cpp:",
        "",
        &format!("    llama-cli -m {base} --lora {FILE}"),
        "",
        &format!("Ollama (with `{base}` next to the `Modelfile`):"),
        "",
        "    ollama create my-model -f Modelfile",
        "    ollama run my-model",
        "",
    ]
    .join("\n")
}
