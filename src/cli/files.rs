//! The CLI's file system side: reading model, data and adapter files into
//! bytes for the core, and writing adapters out.

use std::path::Path;

use burn::tensor::Device;

use tabtune::io::bundle::ENTRIES;
use tabtune::io::peft;
use tabtune::io::self_check::Written;
use tabtune::lora::LoraAdapters;
use tabtune::model::LlamaConfig;
use tabtune::model::files::{ModelFiles, load_files_with};
use tabtune::model::load::{Loaded, load_gguf_with};
use tabtune::model::quantized::BaseWeights;
use tabtune::tokenizer::TextTokenizer;
use tabtune::train::session::AdapterFiles;
use tabtune::{Error, Result};

/// The model's tokenizer, or a clear error when the checkpoint has none.
pub fn tokenizer(loaded: &Loaded) -> Result<&TextTokenizer> {
    loaded.tokenizer.as_ref().ok_or_else(|| {
        Error::format(
            &loaded.name,
            "the model has no tokenizer, so text cannot be tokenized",
        )
    })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::format(path.display(), format!("cannot read: {e}")))
}

/// Loads `--model`: a `.gguf` file, or a Hugging Face directory whose files
/// are picked by the same rule as the page's ([`ModelFiles::choose`]).
pub fn load_model(path: &str, device: &Device) -> Result<Loaded> {
    load_model_with(path, super::base_weights(), device)
}

/// [`load_model`], its matrices kept as `base` says.
pub fn load_model_with(path: &str, base: BaseWeights, device: &Device) -> Result<Loaded> {
    let p = Path::new(path);
    if p.is_file() {
        return load_gguf_with(path, &read(p)?, base, device);
    }
    if !p.is_dir() {
        return Err(Error::format(path, "no such file or directory"));
    }
    let listing =
        std::fs::read_dir(p).map_err(|e| Error::format(path, format!("cannot list: {e}")))?;
    let names: Vec<String> = listing
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let chosen = match ModelFiles::choose(&names).map_err(|e| Error::format(path, e))? {
        ModelFiles::Gguf { file } => vec![file],
        ModelFiles::Hf { files } => files,
    };
    let bytes = chosen
        .iter()
        .map(|n| read(&p.join(n)))
        .collect::<Result<Vec<_>>>()?;
    let files: Vec<(&str, &[u8])> = chosen
        .iter()
        .map(String::as_str)
        .zip(bytes.iter().map(Vec::as_slice))
        .collect();
    load_files_with(path, &files, base, device)
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

/// Writes the adapter files and its model card into the directory `dir`,
/// or, when `dir` ends in `.zip`, into that zip (as the page does).
pub fn write_adapter(dir: &str, adapter: &AdapterFiles) -> Result<()> {
    let d = Path::new(dir);
    let io = |e: std::io::Error| Error::format(dir, format!("cannot write: {e}"));
    if dir.ends_with(".zip") {
        return std::fs::write(d, adapter.zip()?).map_err(io);
    }
    std::fs::create_dir_all(d).map_err(io)?;
    let files: [(&str, &[u8]); 3] = [
        (ENTRIES[0], &adapter.peft.safetensors),
        (ENTRIES[1], adapter.peft.config_json.as_bytes()),
        (ENTRIES[2], adapter.card.as_bytes()),
    ];
    for (name, bytes) in files {
        std::fs::write(d.join(name), bytes).map_err(io)?;
    }
    Ok(())
}

/// Reads the adapter [`write_adapter`] wrote to `dir` back from disk and
/// hands it to `check` (the self-check before a download).
pub fn read_back<T>(dir: &str, check: impl FnOnce(Written<'_>) -> Result<T>) -> Result<T> {
    let d = Path::new(dir);
    if dir.ends_with(".zip") {
        let zip = read(d)?;
        return check(Written::Zip(&zip));
    }
    let config = read(&d.join(ENTRIES[1]))?;
    let weights = read(&d.join(ENTRIES[0]))?;
    check(Written::Peft {
        config: &config,
        weights: &weights,
    })
}
