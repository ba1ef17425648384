//! File formats, all over bytes (no file system): GGUF (read, and written for
//! adapters), safetensors, PEFT adapters. The CLI reads files; the page hands over `ArrayBuffer`s.

pub mod bundle;
pub mod card;
pub mod dequant;
pub mod fingerprint;
pub mod gguf;
pub mod gguf_lora;
pub mod gguf_write;
pub mod peft;
pub mod quantize;
pub mod recipe;
pub mod safetensors;
pub mod self_check;
