//! File formats, all over bytes (no file system): GGUF, safetensors, PEFT
//! adapters. The CLI reads files; the page hands over `ArrayBuffer`s.

pub mod bundle;
pub mod card;
pub mod dequant;
pub mod gguf;
pub mod peft;
pub mod quantize;
pub mod safetensors;
