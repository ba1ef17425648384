//! `tabtune export --merged DIR` and `--merged-gguf FILE`: the base with
//! the adapter merged in, written tensor by tensor to disk, then read back
//! as a model and checked against the live model with its adapter.
//!
//! Each weights file is written as `NAME.partial` and renamed when whole,
//! so a failed write never leaves a file that looks finished; the partial
//! one is removed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tabtune::io::self_check::{SelfCheck, Stored, compare_merged, merged_tolerance, probe_ids};
use tabtune::lora::LoraAdapters;
use tabtune::merge::gguf::{self, FileType};
use tabtune::merge::hf::{self, Dtype, Files};
use tabtune::model::load::{HfFiles, Loaded, load_hf};
use tabtune::model::quantized::BaseWeights;
use tabtune::readback::block_on;
use tabtune::{Error, Result};

use super::files;

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::format(path.display(), format!("cannot write: {e}"))
}

/// `path` with `.partial` added, written before it is renamed to `path`.
fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// A file written as `.partial` and renamed when [`finish`](Self::finish)ed;
/// dropped unfinished, the partial file is removed.
struct Staged {
    path: PathBuf,
    out: Option<BufWriter<File>>,
}

impl Staged {
    fn create(path: &Path) -> Result<Self> {
        let f = File::create(partial(path)).map_err(|e| io_err(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: Some(BufWriter::with_capacity(1 << 20, f)),
        })
    }

    fn writer(&mut self) -> &mut BufWriter<File> {
        self.out.as_mut().expect("open until finished")
    }

    fn finish(mut self) -> Result<()> {
        let mut out = self.out.take().expect("open until finished");
        out.flush().map_err(|e| io_err(&self.path, e))?;
        drop(out);
        std::fs::rename(partial(&self.path), &self.path).map_err(|e| io_err(&self.path, e))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(partial(&self.path));
        }
    }
}

/// A folder the merged directory's files are written into.
struct Folder {
    dir: PathBuf,
    open: Option<Staged>,
}

impl Folder {
    fn close(&mut self) -> Result<()> {
        match self.open.take() {
            Some(f) => f.finish(),
            None => Ok(()),
        }
    }
}

impl Files for Folder {
    fn create(&mut self, name: &str, _len: u64) -> Result<()> {
        self.close()?;
        self.open = Some(Staged::create(&self.dir.join(name))?);
        Ok(())
    }
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let f = self.open.as_mut().expect("create comes first");
        let path = f.path.clone();
        f.writer().write_all(bytes).map_err(|e| io_err(&path, e))
    }
}

/// Refuses to write over the model or the adapter the export reads.
pub fn refuse_inputs(what: &str, out: &str, model: &str, adapter: &str) -> Result<()> {
    let same = |p: &str| std::fs::canonicalize(p).ok();
    let target = same(out);
    if target.is_none() {
        return Ok(());
    }
    for (input, name) in [(model, "the base model"), (adapter, "the adapter")] {
        if target == same(input) {
            return Err(Error::setting(
                what,
                format!("{out} is {name} this export reads: write to another path"),
            ));
        }
    }
    Ok(())
}

/// Writes the merged Hugging Face directory `dir` in `dtype`, then checks
/// it.
pub fn write_hf(loaded: &Loaded, adapters: &LoraAdapters, dir: &str, dtype: Dtype) -> Result<()> {
    let d = Path::new(dir);
    std::fs::create_dir_all(d).map_err(|e| io_err(d, e))?;
    let mut folder = Folder {
        dir: d.to_path_buf(),
        open: None,
    };
    let names = block_on(hf::write(
        &loaded.model,
        Some(adapters),
        loaded.tokenizer.as_ref(),
        &loaded.origin,
        &loaded.name,
        dtype,
        &mut folder,
    ))?;
    folder.close()?;
    eprintln!("{} written to {dir}", names.join(", "));
    let check = check(loaded, adapters, dir, hf::WEIGHTS, dtype.into());
    println!("{}", check.message());
    Ok(())
}

/// Writes the merged GGUF `file` of type `ty`, then checks it.
pub fn write_gguf(
    loaded: &Loaded,
    adapters: &LoraAdapters,
    file: &str,
    ty: FileType,
) -> Result<()> {
    gguf::base_metadata(&loaded.model, loaded.tokenizer.as_ref(), &loaded.origin)?;
    let path = Path::new(file);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    let mut out = Staged::create(path)?;
    let bytes = block_on(gguf::write(
        &loaded.model,
        Some(adapters),
        loaded.tokenizer.as_ref(),
        &loaded.origin,
        ty,
        out.writer(),
    ))?;
    out.finish()?;
    eprintln!(
        "{file} written: the merged model in {} ({:.1} MB)",
        ty.label(),
        bytes as f64 / 1e6
    );
    let name = path
        .file_name()
        .map_or(file.into(), |n| n.to_string_lossy().into_owned());
    println!(
        "{}",
        check(loaded, adapters, file, &name, ty.into()).message()
    );
    Ok(())
}

/// The merged files at `path` read back as a model (its weights as stored,
/// whatever `--base-weights` says) and compared with the live model with
/// its adapter. The check holds that second model in memory.
fn check(
    loaded: &Loaded,
    adapters: &LoraAdapters,
    path: &str,
    name: &str,
    stored: Stored,
) -> SelfCheck {
    let device = &loaded.model.device;
    let merged = if Path::new(path).is_dir() {
        read_dir(path, device)
    } else {
        files::load_model_with(path, BaseWeights::Stored, device)
    };
    let merged = match merged {
        Ok(m) => m,
        Err(e) => return SelfCheck::unreadable(name, e.to_string()),
    };
    let ids = probe_ids(loaded.tokenizer.as_ref(), loaded.model.config.vocab_size);
    let tol = merged_tolerance(stored);
    let compared = compare_merged(
        &loaded.model,
        Some(adapters),
        &merged.model,
        &ids,
        name,
        tol,
    );
    block_on(compared.read()).unwrap_or_else(|e| SelfCheck::unreadable(name, e.to_string()))
}

/// The merged directory as written: `config.json`, `model.safetensors` and
/// the tokenizer's files where the base had them (a base without a
/// vocabulary writes none).
fn read_dir(dir: &str, device: &burn::tensor::Device) -> Result<Loaded> {
    let read = |f: &str| {
        let p = Path::new(dir).join(f);
        p.exists()
            .then(|| std::fs::read(&p).map_err(|e| Error::format(p.display(), e.to_string())))
            .transpose()
    };
    let need = |f: &str| read(f)?.ok_or_else(|| Error::format(dir, format!("{f} is missing")));
    let (config, weights) = (need("config.json")?, need(hf::WEIGHTS)?);
    let (tok, tok_config, template) = (
        read("tokenizer.json")?,
        read("tokenizer_config.json")?,
        read("chat_template.jinja")?,
    );
    load_hf(
        dir,
        &HfFiles {
            config: &config,
            weights: &weights,
            tokenizer: tok.as_deref(),
            tokenizer_config: tok_config.as_deref(),
            chat_template: template.as_deref(),
        },
        device,
    )
}
