//! `tabtune export --recipe DIR`: the hand-off to a GPU cluster
//! (`io::recipe`), its files written into `DIR`.

use std::path::Path;

use tabtune::data::summary::prepare_stream;
use tabtune::data::{ReadOptions, read_strict};
use tabtune::io::bundle::ENTRIES;
use tabtune::io::recipe::{self, Recipe};
use tabtune::model::load::Loaded;
use tabtune::train::RunSettings;
use tabtune::{Error, Result};

/// Writes the hand-off for the adapter in `adapter_dir` and the data file
/// `data` (its format found as `train` finds it) into `dir`.
pub fn write(
    dir: &str,
    loaded: &Loaded,
    adapter_dir: &str,
    data: &str,
    settings: &RunSettings,
    base_model: &str,
) -> Result<()> {
    let tok = loaded.tokenizer.as_ref().ok_or_else(|| {
        Error::format(
            &loaded.name,
            "the model has no tokenizer, so text cannot be tokenized",
        )
    })?;
    let read = |p: &Path| {
        std::fs::read(p)
            .map_err(|e| Error::format(p.display().to_string(), format!("cannot read: {e}")))
    };
    let bytes = read(Path::new(data))?;
    let options = ReadOptions::default();
    let records: Vec<_> = read_strict(data, &bytes, &options)?
        .into_iter()
        .map(|r| r.record)
        .collect();
    let seq_len = settings.seq_len;
    let prepared = prepare_stream(data, &bytes[..], &options, tok, seq_len)?;
    let examples: Vec<_> = prepared
        .examples
        .into_iter()
        .map(|e| e.cut(seq_len))
        .collect();
    let train = settings.train(examples.len())?;
    let mut adapter = Vec::new();
    for name in ENTRIES {
        let from = Path::new(adapter_dir).join(name);
        if from.exists() {
            adapter.push((name, read(&from)?));
        }
    }
    let files = recipe::files(&Recipe {
        records: &records,
        examples: &examples,
        train: &train,
        base_model,
        data_file: data,
        adapter: adapter.iter().map(|(n, b)| (*n, b.as_slice())).collect(),
    })?;
    let io = |e: std::io::Error| Error::format(dir, format!("cannot write: {e}"));
    for (name, contents) in files {
        let path = Path::new(dir).join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(path, contents).map_err(io)?;
    }
    Ok(())
}
