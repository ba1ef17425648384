//! The CLI's file system side: reading model, data and adapter files into
//! bytes for the core, and writing adapters out.

use std::path::Path;

use burn::tensor::Device;

use tabtune::data::{Prepared, ReadOptions, prepare_stream};
use tabtune::io::bundle::adapter_zip;
use tabtune::io::peft;
use tabtune::lora::LoraAdapters;
use tabtune::model::LlamaConfig;
use tabtune::model::load::{HfFiles, Loaded, load_gguf, load_hf};
use tabtune::tokenizer::TextTokenizer;
use tabtune::{Error, Result};

/// A loaded model and where it came from.
pub struct Model {
    pub loaded: Loaded,
    pub path: String,
}

impl Model {
    /// The tokenizer, or a clear error when the checkpoint has none.
    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        self.loaded.tokenizer.as_ref().ok_or_else(|| {
            Error::format(
                &self.path,
                "the model has no tokenizer, so text cannot be tokenized",
            )
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::format(path.display(), format!("cannot read: {e}")))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    if path.exists() {
        read(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Loads `--model`: a `.gguf` file or an HF directory.
pub fn load_model(path: &str, device: &Device) -> Result<Model> {
    let p = Path::new(path);
    let loaded = if p.is_dir() {
        let config = read(&p.join("config.json"))?;
        let weights = read(&p.join("model.safetensors"))?;
        let tokenizer = read_optional(&p.join("tokenizer.json"))?;
        let tokenizer_config = read_optional(&p.join("tokenizer_config.json"))?;
        let chat_template = read_optional(&p.join("chat_template.jinja"))?;
        load_hf(
            path,
            &HfFiles {
                config: &config,
                weights: &weights,
                tokenizer: tokenizer.as_deref(),
                tokenizer_config: tokenizer_config.as_deref(),
                chat_template: chat_template.as_deref(),
            },
            device,
        )?
    } else if p.is_file() {
        let bytes = read(p)?;
        load_gguf(path, &bytes, device)?
    } else {
        return Err(Error::format(path, "no such file or directory"));
    };
    Ok(Model {
        loaded,
        path: path.to_string(),
    })
}

/// Where scripts/fetch-model.sh puts the default model:
/// `$TABTUNE_CACHE/models/smollm2/...` (cache default `~/.cache/tabtune`).
pub fn default_model_path() -> String {
    let cache = std::env::var("TABTUNE_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tabtune",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    format!("{cache}/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Reads and tokenizes a data file (any supported format) as it streams,
/// the way the page does ([`prepare_stream`]): what `data inspect` shows
/// and what `train` and `eval` use.
pub fn prepare_data(
    path: &str,
    options: &ReadOptions,
    tok: &TextTokenizer,
    seq_len: usize,
) -> Result<Prepared> {
    let file =
        std::fs::File::open(path).map_err(|e| Error::format(path, format!("cannot read: {e}")))?;
    prepare_stream(path, std::io::BufReader::new(file), options, tok, seq_len)
}

/// Reads a PEFT adapter directory.
pub fn read_adapter(dir: &str, model: &LlamaConfig, device: &Device) -> Result<LoraAdapters> {
    let d = Path::new(dir);
    let cfg_path = d.join("adapter_config.json");
    let st_path = d.join("adapter_model.safetensors");
    peft::import(
        &cfg_path.display().to_string(),
        &read(&cfg_path)?,
        &st_path.display().to_string(),
        &read(&st_path)?,
        model,
        device,
    )
}

/// Writes the adapter files and the model card `card` into the directory
/// `dir`, or, when `dir` ends in `.zip`, into that zip (as the page does).
pub fn write_adapter(dir: &str, adapters: &LoraAdapters, base: &str, card: &str) -> Result<()> {
    let d = Path::new(dir);
    let io = |e: std::io::Error| Error::format(dir, format!("cannot write: {e}"));
    let files = peft::export(adapters, base)?;
    if dir.ends_with(".zip") {
        return std::fs::write(d, adapter_zip(&files, card)?).map_err(io);
    }
    std::fs::create_dir_all(d).map_err(io)?;
    std::fs::write(d.join("adapter_model.safetensors"), &files.safetensors).map_err(io)?;
    std::fs::write(d.join("adapter_config.json"), &files.config_json).map_err(io)?;
    std::fs::write(d.join("README.md"), card).map_err(io)?;
    Ok(())
}
