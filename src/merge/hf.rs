//! The merged model as a Hugging Face directory: `model.safetensors`,
//! `config.json`, the tokenizer's files and a `README.md`, which
//! `AutoModelForCausalLM.from_pretrained(dir)` and
//! `AutoTokenizer.from_pretrained(dir)` load as they are.
//!
//! - `model.safetensors`: every tensor of [`super::plan`] under its HF name,
//!   in f32, f16 or bf16 ([`Dtype`]; rounded to nearest even, as PyTorch's
//!   `.to()`), `__metadata__ {"format": "pt"}`. The header is written from
//!   the plan before any weight is made, so the weights stream.
//! - `config.json`: the base's own with `dtype` set, for a base read from
//!   a directory; for a GGUF base, written from its configuration in the
//!   form transformers 5 saves (`rope_parameters`, `layer_types`), with
//!   the older keys (`rope_theta`, `rope_local_base_freq`) beside them.
//! - The tokenizer: the base directory's files as they were; for a GGUF
//!   base, `tokenizer.json` (the pipeline tabtune rebuilt from the GGUF's
//!   vocabulary, which its tests hold to transformers' ids), a
//!   `tokenizer_config.json` with the special tokens and the chat template
//!   tabtune trained with, and a `generation_config.json` whose
//!   `eos_token_id` lists the ids tabtune's generation stops at.
//!
//! Gemma's norms are written as HF files keep them, `w` where the engine
//! multiplies by `1 + w`.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{Value, json};
use zip::ZipWriter;
use zip::write::{SimpleFileOptions, StreamWriter};

use crate::error::{Error, Result};
use crate::lora::LoraAdapters;
use crate::model::Llama;
use crate::model::config::{Activation, Arch, LlamaConfig};
use crate::model::load::Origin;
use crate::tokenizer::TextTokenizer;

use super::{Planned, plan, values};

/// The weights' file.
pub const WEIGHTS: &str = "model.safetensors";

/// The element type of the merged weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 4 bytes a weight: exact.
    F32,
    /// 2 bytes; overflows past 65504 (Gemma's activations can).
    F16,
    /// 2 bytes, f32's range: what most checkpoints ship in.
    Bf16,
}

impl Dtype {
    /// Parses `f32`, `f16` or `bf16` (a setting named `what`).
    pub fn parse(what: &str, s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Dtype::F32),
            "f16" | "float16" => Ok(Dtype::F16),
            "bf16" | "bfloat16" => Ok(Dtype::Bf16),
            _ => Err(Error::setting(
                what,
                format!("`{s}` is not a weight type here: f32, f16 or bf16"),
            )),
        }
    }

    /// safetensors' name for it.
    pub fn safetensors(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::Bf16 => "BF16",
        }
    }

    /// transformers' name for it (`config.json`'s `dtype`).
    pub fn torch(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::Bf16 => "bfloat16",
        }
    }

    /// Bytes a weight.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// `values` as this type's little-endian bytes.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            Dtype::Bf16 => values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        }
    }
}

/// Where the directory's files go: a folder (the CLI) or a `.zip` streamed
/// to a download (the page).
pub trait Files {
    /// Starts file `name`, which will be `len` bytes.
    fn create(&mut self, name: &str, len: u64) -> Result<()>;
    /// Appends to the file started last.
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
}

/// The safetensors header for `tensors` in `dtype`: the 8-byte length and
/// the JSON, padded with spaces to a multiple of 8.
pub fn safetensors_header(tensors: &[Planned], dtype: Dtype) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), json!({"format": "pt"}));
    // u64: the file can pass 4 GiB where usize is 32 bits (wasm32).
    let mut offset = 0u64;
    for p in tensors {
        let end = offset + (p.len() * dtype.size()) as u64;
        map.insert(
            p.name.clone(),
            json!({"dtype": dtype.safetensors(), "shape": p.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header = Value::Object(map).to_string().into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out
}

/// `config.json` for a model loaded from a GGUF file: `config` in the keys
/// transformers reads for its family.
pub fn config_json(config: &LlamaConfig, tok: Option<&TextTokenizer>, dtype: Dtype) -> Value {
    let arch = config.arch;
    let mut c = json!({
        "architectures": [arch.hf_class()],
        "model_type": arch.model_type(),
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "rms_norm_eps": config.rms_norm_eps,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": arch.qkv_bias(),
        "attention_dropout": 0.0,
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "dtype": dtype.torch(),
        "use_cache": true,
    });
    let act = match config.hidden_act {
        Activation::Silu => "silu",
        Activation::GeluTanh => "gelu_pytorch_tanh",
    };
    let o = c.as_object_mut().expect("an object");
    match arch {
        Arch::Llama => {
            o.insert("hidden_act".into(), act.into());
            o.insert("mlp_bias".into(), false.into());
        }
        Arch::Qwen2 | Arch::Qwen3 => {
            o.insert("hidden_act".into(), act.into());
            o.insert("use_sliding_window".into(), false.into());
            o.insert("sliding_window".into(), Value::Null);
            o.insert(
                "layer_types".into(),
                json!(vec!["full_attention"; config.num_layers]),
            );
        }
        Arch::Gemma3 => {
            o.insert("hidden_activation".into(), act.into());
            // attn_scale = query_pre_attn_scalar^-1/2.
            let scalar = 1.0 / (config.attn_scale * config.attn_scale);
            // transformers types it as an int (a float is refused) when whole.
            let scalar = match (scalar - scalar.round()).abs() < 1e-6 * scalar {
                true => json!(scalar.round() as i64),
                false => json!(scalar),
            };
            o.insert("query_pre_attn_scalar".into(), scalar);
            o.insert("final_logit_softcapping".into(), Value::Null);
            o.insert("attn_logit_softcapping".into(), Value::Null);
            let (size, layers, local) = match &config.sliding_window {
                Some(w) => (w.size, w.layers.clone(), w.rope_theta),
                None => (
                    config.max_position_embeddings,
                    vec![false; config.num_layers],
                    10_000.0,
                ),
            };
            let types: Vec<&str> = layers
                .iter()
                .map(|&s| {
                    if s {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                })
                .collect();
            o.insert("sliding_window".into(), size.into());
            o.insert("layer_types".into(), json!(types));
            o.insert("rope_local_base_freq".into(), json!(local));
            o.insert(
                "rope_parameters".into(),
                json!({
                    "full_attention": {"rope_type": "default", "rope_theta": config.rope_theta},
                    "sliding_attention": {"rope_type": "default", "rope_theta": local},
                }),
            );
        }
    }
    if let Some(t) = tok {
        o.insert("eos_token_id".into(), t.eos_id.into());
        if let Some(b) = t.bos_id {
            o.insert("bos_token_id".into(), b.into());
        }
    }
    c
}

/// `tokenizer_config.json` for a tokenizer rebuilt from a GGUF file.
fn tokenizer_config(tok: &TextTokenizer) -> Value {
    let name = |id: u32| tok.id_to_token(id).map(Value::from).unwrap_or(Value::Null);
    let mut c = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": name(tok.eos_id),
        "bos_token": tok.bos_id.map(name).unwrap_or(Value::Null),
        "add_bos_token": tok.add_bos,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 1_000_000_000_000_000_000u64,
    });
    // The template tabtune trained with: the model's own, or for a model
    // without one the turns it gave conversations.
    c["chat_template"] = tok.template_in_use().into();
    c
}

/// The directory's small files: `config.json` and the tokenizer's.
pub fn small_files(
    config: &LlamaConfig,
    tok: Option<&TextTokenizer>,
    origin: &Origin,
    dtype: Dtype,
) -> Result<Vec<(String, Vec<u8>)>> {
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON values serialise");
    Ok(match origin {
        Origin::Hf {
            config: json,
            tokenizer,
            ..
        } => {
            let mut c: Value = serde_json::from_slice(json)
                .map_err(|e| Error::format("config.json", e.to_string()))?;
            if let Some(o) = c.as_object_mut() {
                o.remove("torch_dtype");
                o.insert("dtype".into(), dtype.torch().into());
            }
            let mut files = vec![("config.json".to_string(), pretty(&c))];
            files.extend(tokenizer.iter().map(|(n, b)| (n.to_string(), b.clone())));
            files
        }
        Origin::Gguf(_) => {
            let mut files = vec![(
                "config.json".to_string(),
                pretty(&config_json(config, tok, dtype)),
            )];
            if let Some(t) = tok {
                files.push(("tokenizer.json".into(), t.to_json()?.into_bytes()));
                files.push(("tokenizer_config.json".into(), pretty(&tokenizer_config(t))));
                // generate() stops where tabtune's generation stops (EOS, and
                // Gemma's end of turn where its turns are in use).
                let mut g = json!({ "eos_token_id": t.stop_ids() });
                if let Some(b) = t.bos_id {
                    g["bos_token_id"] = b.into();
                }
                files.push(("generation_config.json".into(), pretty(&g)));
            }
            files
        }
    })
}

/// The directory's `README.md`.
fn readme(base: &str, adapters: Option<&LoraAdapters>, dtype: Dtype) -> String {
    let how = match adapters {
        Some(a) => format!(
            "with a LoRA adapter (rank {}, alpha {}, on {}) merged into its weights",
            a.config.rank,
            a.config.alpha,
            a.config
                .targets
                .iter()
                .map(|t| t.peft_name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "as it was loaded".to_string(),
    };
    format!(
        "---\nbase_model: {base:?}\nlibrary_name: transformers\ntags:\n- tabtune\n- merged-lora\n---\n\n\
# {base}, fine-tuned\n\nThe base model `{base}` {how}, in {}, written by tabtune. It needs no adapter:\n\n\
```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n\
model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")\n\
tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")\n```\n\n\
For llama.cpp, convert it with llama.cpp's `convert_hf_to_gguf.py`, or download the merged GGUF instead.\n",
        dtype.torch()
    )
}

/// Writes the merged directory to `out`, the weights one tensor at a
/// time; returns the files' names in the order written.
pub async fn write(
    model: &Llama,
    adapters: Option<&LoraAdapters>,
    tok: Option<&TextTokenizer>,
    origin: &Origin,
    base: &str,
    dtype: Dtype,
    out: &mut dyn Files,
) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for (name, bytes) in small_files(&model.config, tok, origin, dtype)? {
        out.create(&name, bytes.len() as u64)?;
        out.write(&bytes)?;
        names.push(name);
    }
    let card = readme(base, adapters, dtype);
    out.create("README.md", card.len() as u64)?;
    out.write(card.as_bytes())?;
    names.push("README.md".into());

    let tensors = plan(&model.config);
    let header = safetensors_header(&tensors, dtype);
    let sizes = tensors.iter().map(|p| (p.len() * dtype.size()) as u64);
    let len = header.len() as u64 + sizes.sum::<u64>();
    out.create(WEIGHTS, len)?;
    out.write(&header)?;
    let mut written = header.len() as u64;
    let shift = model.config.arch.hf_norm_shift();
    for p in &tensors {
        for rows in p.pieces() {
            let mut v = values(model, adapters, p, rows).get().await?;
            if p.is_norm() && shift != 0.0 {
                v.iter_mut().for_each(|w| *w -= shift);
            }
            let bytes = dtype.encode(&v);
            written += bytes.len() as u64;
            out.write(&bytes)?;
        }
    }
    if written != len {
        return Err(Error::format(
            WEIGHTS,
            format!("{written} bytes made, its header says {len}"),
        ));
    }
    names.push(WEIGHTS.into());
    Ok(names)
}

/// The directory's files held in memory (tests and small models).
#[derive(Default)]
pub struct InMemory {
    /// Each file's name and bytes, in the order written.
    pub files: BTreeMap<String, Vec<u8>>,
    last: String,
}

impl Files for InMemory {
    fn create(&mut self, name: &str, len: u64) -> Result<()> {
        self.files
            .insert(name.to_string(), Vec::with_capacity(len as usize));
        self.last = name.to_string();
        Ok(())
    }
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.files
            .get_mut(&self.last)
            .expect("create comes first")
            .extend_from_slice(bytes);
        Ok(())
    }
}

/// The directory as a `.zip` (entries stored: weights barely compress)
/// streamed to a writer as it is made: nothing is seeked back to, so the
/// page's download never holds the archive.
pub struct ZipFiles<W: Write> {
    zip: ZipWriter<StreamWriter<W>>,
}

impl<W: Write> ZipFiles<W> {
    /// A zip written to `out`.
    pub fn new(out: W) -> Self {
        Self {
            zip: ZipWriter::new_stream(out),
        }
    }

    /// Writes the central directory; returns the writer.
    pub fn finish(self) -> Result<W> {
        let w = self.zip.finish().map_err(zip_err)?;
        Ok(w.into_inner())
    }
}

fn zip_err(e: impl std::fmt::Display) -> Error {
    Error::format("merged model (.zip)", format!("cannot write: {e}"))
}

impl<W: Write> Files for ZipFiles<W> {
    fn create(&mut self, name: &str, len: u64) -> Result<()> {
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(len >= u64::from(u32::MAX));
        self.zip.start_file(name, options).map_err(zip_err)
    }
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.zip.write_all(bytes).map_err(zip_err)
    }
}
