//! The adapter as one download: a `.zip` (stored, not deflated: the float
//! factors barely compress) holding `adapter_model.safetensors`,
//! `adapter_config.json` and `README.md`, the same files the CLI writes; and
//! any other set of files as such a zip (the llama.cpp / Ollama download).

use std::io::{Cursor, Read, Write};

use zip::write::SimpleFileOptions;
use zip::{ZipArchive, ZipWriter};

use crate::error::{Error, Result};
use crate::io::peft::PeftFiles;

/// The zip's entries, in order.
pub const ENTRIES: [&str; 3] = [
    "adapter_model.safetensors",
    "adapter_config.json",
    "README.md",
];

/// Zips the adapter files and the model card.
pub fn adapter_zip(files: &PeftFiles, card: &str) -> Result<Vec<u8>> {
    let contents: [&[u8]; 3] = [
        &files.safetensors,
        files.config_json.as_bytes(),
        card.as_bytes(),
    ];
    let entries: Vec<(&str, &[u8])> = ENTRIES.into_iter().zip(contents).collect();
    zip_files("adapter.zip", &entries)
}

/// Zips `entries` (name, bytes), in order, stored; `file` names the zip in
/// messages.
pub fn zip_files(file: &str, entries: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let large = entries.iter().any(|(_, b)| b.len() > u32::MAX as usize / 2);
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(large);
    let err = |e: &dyn std::fmt::Display| Error::format(file, format!("cannot write: {e}"));
    for (name, bytes) in entries {
        zip.start_file(*name, options).map_err(|e| err(&e))?;
        zip.write_all(bytes).map_err(|e| err(&e))?;
    }
    Ok(zip.finish().map_err(|e| err(&e))?.into_inner())
}

/// The entries of a zip (name, bytes), in order; `file` names it in
/// messages.
pub fn unzip(file: &str, zip: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let err = |e: &dyn std::fmt::Display| Error::format(file, format!("cannot read: {e}"));
    let mut archive = ZipArchive::new(Cursor::new(zip)).map_err(|e| err(&e))?;
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).map_err(|e| err(&e))?;
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(|e| err(&e))?;
            let name = entry.name().map_err(|e| err(&e))?.to_string();
            Ok((name, bytes))
        })
        .collect()
}
