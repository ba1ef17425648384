//! Which files make a model: one `.gguf` file, or a Hugging Face model's
//! `config.json` + `model.safetensors` + `tokenizer.json` with, when
//! present, `tokenizer_config.json` and `chat_template.jinja`. The CLI asks
//! with a directory's listing, the page with the files a person chose; the
//! page's hub download fetches [`HF_REQUIRED`] and [`HF_OPTIONAL`].

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::load::{HfFiles, Loaded, load_gguf_with, load_hf_with};
use crate::model::quantized::BaseWeights;

use burn::tensor::Device;

/// The files a Hugging Face model cannot load without.
pub const HF_REQUIRED: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// The files a Hugging Face model uses when they are there (the chat
/// template and special tokens).
pub const HF_OPTIONAL: [&str; 2] = ["tokenizer_config.json", "chat_template.jinja"];

/// The files to read, out of those offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelFiles {
    /// One GGUF file.
    Gguf {
        /// Its name.
        file: String,
    },
    /// A Hugging Face model: the required files and the optional ones
    /// present, in the order of [`HF_REQUIRED`] then [`HF_OPTIONAL`].
    Hf {
        /// Their names.
        files: Vec<String>,
    },
}

/// The last path component of `name`.
fn base(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

impl ModelFiles {
    /// Picks the model's files out of `names` (bare names or paths): a
    /// complete Hugging Face set, else one `.gguf`; or says what is missing
    /// or too much.
    pub fn choose(names: &[&str]) -> Result<ModelFiles> {
        let fail = |reason: String| Err(Error::format("model files", reason));
        if names.is_empty() {
            return fail(
                "none chosen: choose a .gguf file, or model.safetensors + config.json + tokenizer.json"
                    .into(),
            );
        }
        let has = |want: &str| names.iter().any(|n| base(n) == want);
        let missing: Vec<&str> = HF_REQUIRED.into_iter().filter(|n| !has(n)).collect();
        if missing.is_empty() {
            let files = HF_REQUIRED
                .into_iter()
                .chain(HF_OPTIONAL)
                .filter(|n| has(n))
                .map(String::from)
                .collect();
            return Ok(ModelFiles::Hf { files });
        }
        let gguf: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| n.to_ascii_lowercase().ends_with(".gguf"))
            .collect();
        match gguf.as_slice() {
            [one] => {
                return Ok(ModelFiles::Gguf {
                    file: one.to_string(),
                });
            }
            [] => {}
            many => return fail(format!("choose one .gguf file, not {}", many.len())),
        }
        let chosen: Vec<&str> = names.iter().map(|n| base(n)).collect();
        fail(format!(
            "Missing {}: choose model.safetensors, config.json and tokenizer.json together \
             (you chose {})",
            missing.join(", "),
            chosen.join(", ")
        ))
    }
}

/// Loads a model from the files [`ModelFiles::choose`] picked, given as
/// `(name, bytes)`; `name` names the model (a repository or folder) in
/// messages and in the adapter's config when it is a Hugging Face model.
pub fn load_files(name: &str, files: &[(&str, &[u8])], device: &Device) -> Result<Loaded> {
    load_files_with(name, files, BaseWeights::Stored, device)
}

/// [`load_files`], the base's matrices kept as `base` says.
pub fn load_files_with(
    name: &str,
    files: &[(&str, &[u8])],
    base_weights: BaseWeights,
    device: &Device,
) -> Result<Loaded> {
    let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    let get = |want: &str| files.iter().find(|(n, _)| base(n) == want).map(|f| f.1);
    match ModelFiles::choose(&names)? {
        ModelFiles::Gguf { file } => {
            let bytes = files
                .iter()
                .find(|(n, _)| *n == file)
                .map(|f| f.1)
                .unwrap_or_default();
            load_gguf_with(base(&file), bytes, base_weights, device)
        }
        ModelFiles::Hf { .. } => {
            let required =
                |n: &str| get(n).ok_or_else(|| Error::format(name, format!("{n} is missing")));
            load_hf_with(
                name,
                &HfFiles {
                    config: required("config.json")?,
                    weights: required("model.safetensors")?,
                    tokenizer: get("tokenizer.json"),
                    tokenizer_config: get("tokenizer_config.json"),
                    chat_template: get("chat_template.jinja"),
                },
                base_weights,
                device,
            )
        }
    }
}
