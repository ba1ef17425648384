//! Fingerprints that tell whether a checkpoint's run can go on with the
//! model and data chosen now: SHA-256, shown as 16 bytes of hex.
//!
//! A model file is fingerprinted from samples, not whole: its length, its
//! first and last MiB (a GGUF's header and metadata, a safetensors header),
//! and 64 windows of 64 KiB spread evenly between them. Two files that
//! agree there and differ elsewhere pass as one; a different model, or
//! another fine-tune of the same one, differs in every window. A 1 GB model
//! is then fingerprinted from 6 MB, in milliseconds, in the page too.

use sha2::{Digest, Sha256};

use crate::data::Example;

/// Files up to this size are hashed whole.
const WHOLE: usize = 8 << 20;
/// The head and tail hashed of a larger file.
const ENDS: usize = 1 << 20;
/// Windows hashed between them, and their size.
const WINDOWS: usize = 64;
const WINDOW: usize = 64 << 10;

fn hex(digest: &[u8]) -> String {
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of a model's files, in a fixed order (`(name, bytes)`).
pub fn files(files: &[(&str, &[u8])]) -> String {
    let mut h = Sha256::new();
    for (name, bytes) in files {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        if bytes.len() <= WHOLE {
            h.update(bytes);
            continue;
        }
        h.update(&bytes[..ENDS]);
        let span = bytes.len() - 2 * ENDS - WINDOW;
        for i in 0..WINDOWS {
            let at = ENDS + span * i / (WINDOWS - 1);
            h.update(&bytes[at..at + WINDOW]);
        }
        h.update(&bytes[bytes.len() - ENDS..]);
    }
    hex(&h.finalize())
}

/// The fingerprint of tokenized examples: every id and trained flag, in
/// order. It changes with the data file's content and with the tokenizer,
/// not with the file's name.
pub fn examples(examples: &[Example]) -> String {
    let mut h = Sha256::new();
    h.update((examples.len() as u64).to_le_bytes());
    for e in examples {
        let mut bytes = Vec::with_capacity(8 + 5 * e.ids.len());
        bytes.extend((e.ids.len() as u64).to_le_bytes());
        bytes.extend(e.ids.iter().flat_map(|id| id.to_le_bytes()));
        bytes.extend(e.trained.iter().map(|&t| t as u8));
        h.update(&bytes);
    }
    hex(&h.finalize())
}
