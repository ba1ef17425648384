//! Training data: records parsed from a user's file, rendered into token ids
//! with a mask of the tokens the loss is taken on.

pub mod jsonl;
pub mod render;
pub mod summary;

pub use jsonl::{Record, parse_jsonl, scan_jsonl};
pub use render::{Example, render_record};
pub use summary::{Prepared, Summary, prepare};
