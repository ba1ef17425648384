//! `tabtune export --merged DIR` and `--merged-gguf FILE`: the base with
//! the adapter merged in, written tensor by tensor to disk, then read back
//! as a model and checked against the live model with its adapter.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tabtune::io::self_check::{
    self, SelfCheck, Stored, compare_merged, merged_tolerance, probe_ids,
};
use tabtune::lora::LoraAdapters;
use tabtune::merge::gguf::{self, FileType};
use tabtune::merge::hf::{self, Dtype, Files};
use tabtune::model::load::Loaded;
use tabtune::readback::block_on;
use tabtune::{Error, Result};

use super::files;

/// A folder the merged directory's files are written into.
struct Folder {
    dir: PathBuf,
    open: Option<(PathBuf, BufWriter<File>)>,
}

impl Folder {
    fn io(path: &Path, e: std::io::Error) -> Error {
        Error::format(path.display(), format!("cannot write: {e}"))
    }

    fn close(&mut self) -> Result<()> {
        if let Some((path, mut f)) = self.open.take() {
            f.flush().map_err(|e| Self::io(&path, e))?;
        }
        Ok(())
    }
}

impl Files for Folder {
    fn create(&mut self, name: &str, _len: u64) -> Result<()> {
        self.close()?;
        let path = self.dir.join(name);
        let f = File::create(&path).map_err(|e| Self::io(&path, e))?;
        self.open = Some((path, BufWriter::with_capacity(1 << 20, f)));
        Ok(())
    }
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let (path, f) = self.open.as_mut().expect("create comes first");
        f.write_all(bytes).map_err(|e| Self::io(path, e))
    }
}

/// Writes the merged Hugging Face directory `dir` in `dtype`, then checks
/// it.
pub fn write_hf(loaded: &Loaded, adapters: &LoraAdapters, dir: &str, dtype: Dtype) -> Result<()> {
    let d = Path::new(dir);
    std::fs::create_dir_all(d).map_err(|e| Folder::io(d, e))?;
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
    let stored = match dtype {
        Dtype::F32 => Stored::F32,
        Dtype::F16 => Stored::F16,
        Dtype::Bf16 => Stored::Bf16,
    };
    println!(
        "{}",
        check(loaded, adapters, dir, hf::WEIGHTS, stored).message()
    );
    Ok(())
}

/// Writes the merged GGUF `file` of type `ty`, then checks it.
pub fn write_gguf(
    loaded: &Loaded,
    adapters: &LoraAdapters,
    file: &str,
    ty: FileType,
) -> Result<()> {
    gguf::base_metadata(&loaded.origin)?;
    let path = Path::new(file);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Folder::io(parent, e))?;
    }
    let f = File::create(path).map_err(|e| Folder::io(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, f);
    let bytes = block_on(gguf::write(
        &loaded.model,
        Some(adapters),
        &loaded.origin,
        ty,
        &mut out,
    ))?;
    drop(out);
    eprintln!(
        "{file} written: the merged model in {} ({:.1} MB)",
        ty.label(),
        bytes as f64 / 1e6
    );
    let stored = match ty {
        FileType::F32 => Stored::F32,
        FileType::F16 => Stored::F16,
        FileType::Q8_0 => Stored::Q8_0,
    };
    let name = path
        .file_name()
        .map_or(file.into(), |n| n.to_string_lossy().into_owned());
    println!("{}", check(loaded, adapters, file, &name, stored).message());
    Ok(())
}

/// The merged files at `path` read back as a model and compared with the
/// live model with its adapter.
fn check(
    loaded: &Loaded,
    adapters: &LoraAdapters,
    path: &str,
    name: &str,
    stored: Stored,
) -> SelfCheck {
    let merged = match files::load_model(path, &loaded.model.device) {
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
    block_on(compared.read())
        .unwrap_or_else(|e| self_check::SelfCheck::unreadable(name, e.to_string()))
}
