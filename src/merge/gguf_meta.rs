//! GGUF metadata for a model read from a Hugging Face directory, so that its
//! merged model can be written as a GGUF too: the keys llama.cpp's loader
//! reads (the ones `convert_hf_to_gguf.py` writes) from the configuration,
//! and the vocabulary from `tokenizer.json`.
//!
//! - Hyper-parameters: `{arch}.context_length`, `embedding_length`,
//!   `block_count`, `feed_forward_length`, `attention.head_count`,
//!   `attention.head_count_kv`, `attention.key_length` / `value_length` (the
//!   head size), `attention.layer_norm_rms_epsilon`, `rope.freq_base`,
//!   `vocab_size`, and for Llama `rope.dimension_count`.
//! - Vocabulary (byte-level BPE only, `tokenizer.ggml.model = gpt2`): every
//!   token by id, then `[PAD{id}]` up to the embedding's rows (type unused,
//!   as the converter pads); added tokens typed control (special) or
//!   user-defined (control too when it looks special, `<|…|>`, as the
//!   converter decides), the rest normal; the merges as `"a b"`; the
//!   pre-tokenizer's name as llama.cpp knows it (`smollm`, `qwen2`,
//!   `llama-bpe`, `gpt-2`), found from `tokenizer.json`'s pre-tokenizer;
//!   BOS, EOS, whether BOS is added, and the chat template tabtune trained
//!   with.
//!
//! Refused, naming why: a SentencePiece vocabulary (Gemma's; its GGUF needs
//! the SentencePiece model's scores), a pre-tokenizer llama.cpp has no name
//! for here, and a Gemma 3 whose attention scale or sliding layers
//! llama.cpp would not run as configured.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::io::gguf::MetaValue;
use crate::model::config::{Arch, LlamaConfig};
use crate::tokenizer::TextTokenizer;

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

fn refuse(why: impl std::fmt::Display) -> Error {
    Error::setting(
        "merged GGUF",
        format!(
            "{why}; write the merged Hugging Face directory and convert it with llama.cpp's convert_hf_to_gguf.py, or load the model from a GGUF file"
        ),
    )
}

/// The pre-tokenizer's llama.cpp name for `tokenizer.json`'s
/// `pre_tokenizer`.
fn pre_name(pre: &Value) -> Result<&'static str> {
    if pre.is_null() {
        return Err(refuse(
            "tokenizer.json has no pre-tokenizer, so its vocabulary is not byte-level BPE",
        ));
    }
    let kind = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let parts: Vec<&Value> = match kind(pre).as_str() {
        "Sequence" => pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => vec![pre],
    };
    let kinds: Vec<String> = parts.iter().map(|p| kind(p)).collect();
    let regex = |p: &Value| {
        p.get("pattern")
            .and_then(|p| p.get("Regex"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let uses_regex = |p: &Value| p.get("use_regex").and_then(Value::as_bool).unwrap_or(true);
    match kinds
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        // llama.cpp's name for GPT-2's split is `gpt-2`.
        ["ByteLevel"] if uses_regex(parts[0]) => Ok("gpt-2"),
        ["Digits", "ByteLevel"]
            if parts[0].get("individual_digits").and_then(Value::as_bool) == Some(true) =>
        {
            Ok("smollm")
        }
        ["Split", "ByteLevel"] if !uses_regex(parts[1]) => match regex(parts[0]) {
            Some(r) if r == crate::tokenizer::QWEN2_SPLIT => Ok("qwen2"),
            Some(r) if r == crate::tokenizer::LLAMA3_SPLIT => Ok("llama-bpe"),
            _ => Err(refuse(
                "tokenizer.json splits words by a pattern llama.cpp has no name for here (Qwen2's and Llama 3's are known)",
            )),
        },
        other => Err(refuse(format!(
            "tokenizer.json's pre-tokenizer ({}) has no llama.cpp name here (GPT-2's, SmolLM's, Qwen2's and Llama 3's are known)",
            other.join(" then ")
        ))),
    }
}

/// The merges of a BPE `model`, as `"a b"`.
fn merges(model: &Value) -> Result<Vec<MetaValue>> {
    let list = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| refuse("tokenizer.json's BPE has no merges"))?;
    list.iter()
        .map(|m| match m {
            Value::String(s) => Ok(MetaValue::Str(s.clone())),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => Ok(MetaValue::Str(format!("{a} {b}"))),
                _ => Err(refuse("a merge in tokenizer.json is not two tokens")),
            },
            _ => Err(refuse("a merge in tokenizer.json is not two tokens")),
        })
        .collect()
}

/// The GGUF metadata of a model loaded from a Hugging Face directory with
/// `config`, its tokenizer `tok` (from `tokenizer_json`), named `name`.
pub fn from_hf(
    config: &LlamaConfig,
    tok: Option<&TextTokenizer>,
    tokenizer_json: Option<&[u8]>,
    name: &str,
) -> Result<BTreeMap<String, MetaValue>> {
    let (Some(tok), Some(json)) = (tok, tokenizer_json) else {
        return Err(refuse(
            "the model has no tokenizer.json to take the vocabulary from",
        ));
    };
    let arch = config.arch;
    if arch == Arch::Gemma3 {
        return Err(refuse(
            "Gemma's vocabulary is SentencePiece, whose GGUF needs the SentencePiece model's scores",
        ));
    }
    let t: Value =
        serde_json::from_slice(json).map_err(|e| Error::format("tokenizer.json", e.to_string()))?;
    let model = t.get("model").cloned().unwrap_or(Value::Null);
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Err(refuse(
            "only byte-level BPE vocabularies are written to GGUF here",
        ));
    }
    let pre = pre_name(t.get("pre_tokenizer").unwrap_or(&Value::Null))?;

    // Every id from 0: the model's vocabulary and the added tokens.
    let added: BTreeMap<u32, bool> = t
        .get("added_tokens")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    let id = x.get("id")?.as_u64()? as u32;
                    Some((id, x.get("special")?.as_bool()?))
                })
                .collect()
        })
        .unwrap_or_default();
    let n = tok.vocab_size();
    if n > config.vocab_size {
        return Err(refuse(format!(
            "the tokenizer has {n} tokens, more than the model's {} rows",
            config.vocab_size
        )));
    }
    let mut tokens = Vec::with_capacity(config.vocab_size);
    let mut types = Vec::with_capacity(config.vocab_size);
    for id in 0..config.vocab_size as u32 {
        match tok.id_to_token(id) {
            Some(token) => {
                // As the converter: an added token that is special, or
                // looks it (`<|…|>`), is control.
                let looks = token.starts_with("<|") && token.ends_with("|>");
                types.push(MetaValue::I32(match added.get(&id) {
                    Some(true) => CONTROL,
                    Some(false) if looks => CONTROL,
                    Some(false) => USER_DEFINED,
                    None => NORMAL,
                }));
                tokens.push(MetaValue::Str(token));
            }
            None => {
                tokens.push(MetaValue::Str(format!("[PAD{id}]")));
                types.push(MetaValue::I32(UNUSED));
            }
        }
    }

    let a = arch.gguf_name();
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: MetaValue| {
        m.insert(k.to_string(), v);
    };
    let u = |v: usize| MetaValue::U32(v as u32);
    put("general.architecture", MetaValue::Str(a.into()));
    let short = name.trim_end_matches(['/', '\\']);
    put(
        "general.name",
        MetaValue::Str(short.rsplit(['/', '\\']).next().unwrap_or(short).into()),
    );
    put(
        &format!("{a}.context_length"),
        u(config.max_position_embeddings),
    );
    put(&format!("{a}.embedding_length"), u(config.hidden_size));
    put(&format!("{a}.block_count"), u(config.num_layers));
    put(
        &format!("{a}.feed_forward_length"),
        u(config.intermediate_size),
    );
    put(&format!("{a}.attention.head_count"), u(config.num_heads));
    put(
        &format!("{a}.attention.head_count_kv"),
        u(config.num_kv_heads),
    );
    put(&format!("{a}.attention.key_length"), u(config.head_dim));
    put(&format!("{a}.attention.value_length"), u(config.head_dim));
    put(
        &format!("{a}.attention.layer_norm_rms_epsilon"),
        MetaValue::F32(config.rms_norm_eps as f32),
    );
    put(
        &format!("{a}.rope.freq_base"),
        MetaValue::F32(config.rope_theta as f32),
    );
    put(&format!("{a}.vocab_size"), u(config.vocab_size));
    if arch == Arch::Llama {
        put(&format!("{a}.rope.dimension_count"), u(config.head_dim));
    }
    put("tokenizer.ggml.model", MetaValue::Str("gpt2".into()));
    put("tokenizer.ggml.pre", MetaValue::Str(pre.into()));
    put("tokenizer.ggml.tokens", MetaValue::Array(tokens));
    put("tokenizer.ggml.token_type", MetaValue::Array(types));
    put("tokenizer.ggml.merges", MetaValue::Array(merges(&model)?));
    put("tokenizer.ggml.eos_token_id", MetaValue::U32(tok.eos_id));
    if let Some(b) = tok.bos_id {
        put("tokenizer.ggml.bos_token_id", MetaValue::U32(b));
    }
    // Whether encoding adds BOS, by tokenizer_config.json or a post-processor.
    let adds_bos = tok.bos_id.is_some()
        && tok
            .encode("a", true)
            .ok()
            .and_then(|ids| ids.first().copied())
            == tok.bos_id;
    put("tokenizer.ggml.add_bos_token", MetaValue::Bool(adds_bos));
    put(
        "tokenizer.chat_template",
        MetaValue::Str(tok.template_in_use().into()),
    );
    Ok(m)
}
