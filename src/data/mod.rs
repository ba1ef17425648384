//! Training data: records read from a person's file (JSONL, a JSON array,
//! CSV/TSV or plain text), rendered into token ids with a mask of the tokens
//! the loss is taken on, and summarised before training.

mod json;
mod jsonl;
pub mod policy;
pub mod read;
pub mod record;
pub mod render;
mod sink;
pub mod split;
pub mod summary;
pub mod table;
pub mod text;

pub use policy::{BadLines, BadLinesChoice};
pub use read::{Format, ReadOptions, Scan, StreamScan, read, read_stream, read_strict};
pub use record::{NumberedRecord, Record, Schema};
pub use render::{Example, render_examples, render_record};
pub use split::split;
pub use summary::{Prepared, Summary, prepare, prepare_stream, prepare_within};
