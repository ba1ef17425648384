//! The Llama-architecture causal LM: configuration, weights, forward pass,
//! and loading a model from a GGUF file or a Hugging Face directory's bytes.

pub mod adapted;
pub mod attend;
pub mod attention;
pub mod blocks;
pub mod config;
pub mod embedding;
pub mod files;
pub mod frozen;
pub mod gate_up;
pub mod llama;
pub mod load;
pub mod loss;
pub mod norm;
pub mod packed;
pub mod projection;
pub mod quantized;
pub mod rope;
pub mod swiglu;
pub mod weights;

pub use config::LlamaConfig;
pub use llama::{KvCache, Llama, Mode, Span};

use burn::backend::DispatchDevice;
use burn::tensor::Device;

/// Whether `device` is the CPU (burn's flex backend), where some ops are
/// best done another way than on a GPU.
pub fn is_cpu(device: &Device) -> bool {
    matches!(
        device.clone().inner().as_dispatch(),
        DispatchDevice::Flex(_)
    )
}
