//! tabtune: fine-tune small language models with LoRA, natively or in a
//! browser tab.
//!
//! The core takes bytes and returns plain structs; it never touches the file
//! system, threads or clocks, so the same code compiles for
//! `wasm32-unknown-unknown`. See `ARCHITECTURE.md` for the map.

#![warn(missing_docs)]

pub mod counting;
pub mod cpu;
pub mod data;
pub mod error;
pub mod generate;
pub mod gpu;
pub mod io;
pub mod lora;
pub mod merge;
pub mod model;
pub mod readback;
pub mod tokenizer;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
