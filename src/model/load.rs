//! Turning user-supplied bytes into a ready model and tokenizer.

use burn::tensor::Device;

use crate::error::{Error, Result};
use std::collections::BTreeMap;

use crate::io::fingerprint;
use crate::io::gguf::{Gguf, MetaValue};
use crate::io::safetensors::SafetensorsFile;
use crate::model::config::LlamaConfig;
use crate::model::llama::Llama;
use crate::model::quantized::{BaseWeights, Quantizing};
use crate::model::weights::{GgufSource, LlamaWeights, WeightSource};
use crate::tokenizer::TextTokenizer;

/// A model and, when the checkpoint carries one, its tokenizer.
pub struct Loaded {
    /// The model.
    pub model: Llama,
    /// The tokenizer (GGUF metadata or `tokenizer.json`).
    pub tokenizer: Option<TextTokenizer>,
    /// A short name for the base model, for adapter configs and model cards.
    pub name: String,
    /// How the base's matrices were kept as they loaded.
    pub base_weights: BaseWeights,
    /// What the checkpoint said besides its weights, kept for a merged
    /// export (`crate::merge`).
    pub origin: Origin,
    /// The model files' fingerprint (`io::fingerprint::files`): a run's
    /// checkpoint goes on only with the model it was trained on.
    pub fingerprint: String,
}

/// A checkpoint's description besides its weights: what a merged model
/// written in the same format copies.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A GGUF file's metadata (architecture, vocabulary, chat template).
    Gguf(BTreeMap<String, MetaValue>),
    /// A Hugging Face directory's small files, as read.
    Hf {
        /// The directory's name (a path, or a repository).
        name: String,
        /// `config.json`.
        config: Vec<u8>,
        /// `tokenizer.json`, `tokenizer_config.json` and
        /// `chat_template.jinja`, those present, by name.
        tokenizer: Vec<(&'static str, Vec<u8>)>,
    },
}

/// The files of a Hugging Face model directory, as bytes.
pub struct HfFiles<'a> {
    /// `config.json`.
    pub config: &'a [u8],
    /// `model.safetensors`.
    pub weights: &'a [u8],
    /// `tokenizer.json`, if present.
    pub tokenizer: Option<&'a [u8]>,
    /// `tokenizer_config.json` (chat template, special tokens), if present.
    pub tokenizer_config: Option<&'a [u8]>,
    /// `chat_template.jinja` (transformers >= 4.50 saves it apart), if present.
    pub chat_template: Option<&'a [u8]>,
}

/// A tokenizer that can emit ids past the embedding would index out of it.
fn check_vocab(file: &str, tokenizer: Option<&TextTokenizer>, config: &LlamaConfig) -> Result<()> {
    match tokenizer {
        Some(t) if t.vocab_size() > config.vocab_size => Err(Error::format(
            file,
            format!(
                "the tokenizer has {} tokens but the model embeds only {}: they do not belong together",
                t.vocab_size(),
                config.vocab_size
            ),
        )),
        // An id past the embedding would index out of it in every step.
        Some(t) if t.largest_id() as usize >= config.vocab_size => Err(Error::format(
            file,
            format!(
                "the tokenizer gives ids up to {} (its BOS, EOS and added tokens included) but the model embeds only {} tokens: they do not belong together",
                t.largest_id(),
                config.vocab_size
            ),
        )),
        _ => Ok(()),
    }
}

/// Loads every weight from `src`, quantized as `base` says.
fn load_weights(
    config: &LlamaConfig,
    src: &dyn WeightSource,
    base: BaseWeights,
    device: &Device,
) -> Result<LlamaWeights> {
    match base.ggml_type() {
        None => LlamaWeights::load(config, src, device),
        Some(ty) => {
            let tied_head = config.tie_word_embeddings;
            let src = Quantizing {
                inner: src,
                ty,
                tied_head,
            };
            LlamaWeights::load(config, &src, device)
        }
    }
}

/// Loads a GGUF file's model and tokenizer. `file` names it in messages.
pub fn load_gguf(file: &str, bytes: &[u8], device: &Device) -> Result<Loaded> {
    load_gguf_with(file, bytes, BaseWeights::Stored, device)
}

/// [`load_gguf`], its f32/f16/bf16 matrices kept as `base` says.
pub fn load_gguf_with(
    file: &str,
    bytes: &[u8],
    base: BaseWeights,
    device: &Device,
) -> Result<Loaded> {
    let gguf = Gguf::parse(file, bytes)?;
    let config = LlamaConfig::from_gguf(&gguf)?;
    let source = GgufSource {
        gguf: &gguf,
        config: &config,
    };
    let weights = load_weights(&config, &source, base, device)?;
    let tokenizer = match gguf.metadata.get("tokenizer.ggml.model") {
        Some(_) => Some(TextTokenizer::from_gguf(&gguf)?),
        None => None,
    };
    check_vocab(file, tokenizer.as_ref(), &config)?;
    let name = gguf
        .metadata
        .get("general.name")
        .and_then(|v| v.as_str())
        .unwrap_or(file)
        .to_string();
    Ok(Loaded {
        model: Llama {
            config,
            weights,
            device: device.clone(),
        },
        tokenizer,
        name,
        base_weights: base,
        origin: Origin::Gguf(gguf.metadata.clone()),
        fingerprint: fingerprint::files(&[("model.gguf", bytes)]),
    })
}

/// Loads a Hugging Face model from its files' bytes. `dir` names the
/// directory in messages.
pub fn load_hf(dir: &str, files: &HfFiles, device: &Device) -> Result<Loaded> {
    load_hf_with(dir, files, BaseWeights::Stored, device)
}

/// [`load_hf`], its matrices kept as `base` says.
pub fn load_hf_with(
    dir: &str,
    files: &HfFiles,
    base: BaseWeights,
    device: &Device,
) -> Result<Loaded> {
    let config = LlamaConfig::from_hf_json(&format!("{dir}/config.json"), files.config)?;
    let st = SafetensorsFile::parse(&format!("{dir}/model.safetensors"), files.weights)?;
    let weights = load_weights(&config, &st, base, device)?;
    let tokenizer = match files.tokenizer {
        Some(t) => Some(TextTokenizer::from_hf(
            dir,
            t,
            files.tokenizer_config,
            files.chat_template,
        )?),
        None => None,
    };
    check_vocab(dir, tokenizer.as_ref(), &config)?;
    Ok(Loaded {
        model: Llama {
            config,
            weights,
            device: device.clone(),
        },
        tokenizer,
        name: dir.to_string(),
        base_weights: base,
        origin: Origin::Hf {
            name: dir.to_string(),
            config: files.config.to_vec(),
            tokenizer: [
                ("tokenizer.json", files.tokenizer),
                ("tokenizer_config.json", files.tokenizer_config),
                ("chat_template.jinja", files.chat_template),
            ]
            .into_iter()
            .filter_map(|(n, b)| Some((n, b?.to_vec())))
            .collect(),
        },
        fingerprint: fingerprint::files(
            &[
                ("config.json", Some(files.config)),
                ("model.safetensors", Some(files.weights)),
                ("tokenizer.json", files.tokenizer),
                ("tokenizer_config.json", files.tokenizer_config),
                ("chat_template.jinja", files.chat_template),
            ]
            .into_iter()
            .filter_map(|(n, b)| Some((n, b?)))
            .collect::<Vec<_>>(),
        ),
    })
}
