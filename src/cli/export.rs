//! `tabtune export`: a trained adapter in the files other tools load.

use std::path::Path;

use clap::Args;

use tabtune::io::gguf_lora::{self, GgufLoraBase};
use tabtune::io::self_check::{self, Written};
use tabtune::lora::LoraAdapters;
use tabtune::merge::gguf::{self, FileType};
use tabtune::merge::hf::Dtype;
use tabtune::model::load::Loaded;
use tabtune::readback::block_on;
use tabtune::{Error, Result};

use super::settings::{self, SettingsArgs};
use super::{ModelArg, merged, model_and_adapter, recipe};

/// `tabtune export`'s arguments.
#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    model: ModelArg,
    /// The PEFT adapter directory to export (from `tabtune train`, the page's
    /// download unzipped, or PEFT itself).
    #[arg(long)]
    adapter: String,
    /// Write the adapter for llama.cpp and Ollama into this directory:
    /// `adapter.gguf` (llama.cpp: `llama-cli -m BASE.gguf --lora adapter.gguf`),
    /// an Ollama `Modelfile` (`FROM` the base's file, `ADAPTER ./adapter.gguf`)
    /// and a README.md on using them; the page's "for llama.cpp / Ollama"
    /// download holds the same files.
    #[arg(long, value_name = "DIR")]
    gguf: Option<String>,
    /// Write the base with the adapter merged into it as a Hugging Face
    /// directory (`model.safetensors` in `--dtype`, `config.json`, the
    /// tokenizer's files, `README.md`) that transformers loads with no
    /// adapter.
    #[arg(long, value_name = "DIR")]
    merged: Option<String>,
    /// The merged directory's weight type: bf16, f16 or f32.
    #[arg(long, default_value = "bf16", value_name = "TYPE")]
    dtype: String,
    /// Write the base with the adapter merged into it as one GGUF file
    /// (`--gguf-type`) that llama.cpp and Ollama run with no adapter; the
    /// base must be a GGUF (its vocabulary and chat template are copied).
    #[arg(long, value_name = "FILE")]
    merged_gguf: Option<String>,
    /// The merged GGUF's type: q8_0, f16 or f32.
    #[arg(long, default_value = "q8_0", value_name = "TYPE")]
    gguf_type: String,
    /// Write a hand-off to TRL into this directory: the adapter, `--data`
    /// in TRL's formats and as tabtune tokenizes it, `recipe.json` (the
    /// settings below), a TRL `SFTTrainer` script `train.py` that continues
    /// from the adapter with the same settings and answers-only loss, and
    /// `accelerate` configs for one GPU and several.
    #[arg(long, value_name = "DIR", requires = "data")]
    recipe: Option<String>,
    /// The training data for `--recipe` (any format `train` reads, found
    /// from the file).
    #[arg(long)]
    data: Option<String>,
    /// The base model's name for `--recipe`'s script: a Hugging Face
    /// repository, a folder or a `.gguf` file (default: `--model`).
    #[arg(long)]
    base_model: Option<String>,
    #[command(flatten)]
    settings: SettingsArgs<settings::All>,
}

/// Runs `tabtune export`: everything asked for is checked, then each is
/// written in turn.
pub fn run(a: ExportArgs) -> Result<()> {
    if a.recipe.is_none() && a.gguf.is_none() && a.merged.is_none() && a.merged_gguf.is_none() {
        return Err(Error::setting(
            "export",
            "say what to write: --gguf DIR (a GGUF LoRA for llama.cpp and Ollama), --merged DIR or --merged-gguf FILE (the model with the adapter merged in), or --recipe DIR --data FILE (a TRL hand-off)",
        ));
    }
    let dtype = Dtype::parse("--dtype", &a.dtype)?;
    let ty = FileType::parse("--gguf-type", &a.gguf_type)?;
    if let Some(dir) = a.merged.as_deref() {
        merged::refuse_inputs("--merged", dir, &a.model.model, &a.adapter)?;
    }
    if let Some(file) = a.merged_gguf.as_deref() {
        merged::refuse_inputs("--merged-gguf", file, &a.model.model, &a.adapter)?;
    }
    // Its README.md would replace the adapter's model card.
    if let Some(dir) = a.gguf.as_deref() {
        let same = |p: &str| std::fs::canonicalize(p).ok();
        if same(dir).is_some() && same(dir) == same(&a.adapter) {
            return Err(Error::setting(
                "--gguf",
                format!(
                    "{dir} is the adapter's own directory: its README.md would replace the adapter's model card; write to another directory"
                ),
            ));
        }
    }
    let (loaded, adapters) = model_and_adapter(&a.model.model, Some(&a.adapter))?;
    let adapters = adapters.expect("an adapter was asked for");
    if a.merged_gguf.is_some() {
        gguf::base_metadata(&loaded.model, loaded.tokenizer.as_ref(), &loaded.origin)?;
    }
    if let Some(dir) = a.recipe.as_deref() {
        let data = a
            .data
            .as_deref()
            .expect("clap requires --data with --recipe");
        let base = a.base_model.as_deref().unwrap_or(&a.model.model);
        recipe::write(
            dir,
            &loaded,
            &a.adapter,
            data,
            &a.settings.settings()?,
            base,
        )?;
        eprintln!(
            "the TRL hand-off written to {dir}: run `accelerate launch --config_file accelerate/one_gpu.yaml train.py` there"
        );
    }
    if let Some(dir) = a.merged.as_deref() {
        merged::write_hf(&loaded, &adapters, dir, dtype)?;
    }
    if let Some(file) = a.merged_gguf.as_deref() {
        merged::write_gguf(&loaded, &adapters, file, ty)?;
    }
    match a.gguf.as_deref() {
        Some(dir) => write_lora(&a, &loaded, &adapters, dir),
        None => Ok(()),
    }
}

/// `--gguf DIR`: the adapter for llama.cpp and Ollama, then its check.
fn write_lora(a: &ExportArgs, loaded: &Loaded, adapters: &LoraAdapters, dir: &str) -> Result<()> {
    let base = GgufLoraBase::new(loaded.model.config.clone(), &loaded.name);
    let bytes = block_on(gguf_lora::export(adapters, &base).read())?;
    let d = Path::new(dir);
    let io = |e: std::io::Error| Error::format(dir, format!("cannot write: {e}"));
    std::fs::create_dir_all(d).map_err(io)?;
    // The Modelfile names the base's GGUF file; a model directory has none.
    let model = Path::new(&a.model.model);
    let base_gguf = model
        .is_file()
        .then(|| model.file_name().map(|f| f.to_string_lossy().into_owned()))
        .flatten();
    for (name, contents) in gguf_lora::bundle(bytes, base_gguf.as_deref()) {
        std::fs::write(d.join(name), contents).map_err(io)?;
    }
    eprintln!("adapter.gguf, Modelfile and README.md written to {dir}");
    // The adapter as written, read back from disk as llama.cpp reads it.
    let written = std::fs::read(d.join(gguf_lora::FILE)).map_err(io)?;
    let tok = loaded.tokenizer.as_ref();
    let check = block_on(self_check::check(
        &loaded.model,
        tok,
        adapters,
        Written::Gguf(&written),
    ));
    println!("{}", check.message());
    Ok(())
}
