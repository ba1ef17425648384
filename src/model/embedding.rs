//! The token embedding `[vocab, d]`, dense or packed: looking up rows, and,
//! when the LM head is tied to it, the logits `h·Eᵀ`.
//!
//! Packed, a lookup expands only the rows it reads; the logits multiply by
//! the blocks (on the CPU expanding the matrix for one product, see
//! [`crate::model::frozen`]; on a GPU reading them where they lie); the
//! training loss expands it once for all its chunks (`model/loss.rs`).

use std::sync::Arc;

use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::model::blocks::DeviceBlocks;
use crate::model::frozen::packed_matmul;
use crate::model::packed::PackedWeight;

/// The embedding matrix `[vocab, d]`.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per model
pub enum Embedding {
    /// f32 on the device.
    Dense(Tensor<2>),
    /// The checkpoint's blocks.
    Packed(Arc<PackedWeight>),
    /// Blocks on a GPU (`model::blocks`).
    Blocks(DeviceBlocks),
}

impl Embedding {
    /// The rows of `ids: [B, T]`, as `[B·T, d]`.
    pub fn lookup(&self, ids: Tensor<2, Int>) -> Tensor<2> {
        let [b, t] = ids.dims();
        match self {
            Embedding::Dense(e) => {
                let d = e.dims()[1];
                embedding(e.clone(), ids).reshape([b * t, d])
            }
            Embedding::Packed(e) => {
                let device = ids.device();
                // The ids were made on the host; on the CPU this read is a copy.
                let ids: Vec<i64> = ids
                    .into_data()
                    .convert::<i64>()
                    .try_into_vec()
                    .expect("ids are integers");
                let rows: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
                let d = e.shape()[1];
                Tensor::from_data(TensorData::new(e.rows_f32(&rows), [b * t, d]), &device)
            }
            Embedding::Blocks(e) => e.rows(ids.reshape([b * t])),
        }
    }

    /// `h·Eᵀ`: logits `[N, vocab]` of hidden states `h: [N, d]`.
    pub fn logits(&self, h: Tensor<2>) -> Tensor<2> {
        match self {
            Embedding::Dense(e) => h.matmul(e.clone().transpose()),
            Embedding::Packed(e) => packed_matmul(h, e.clone()),
            Embedding::Blocks(e) => e.matmul_t(h),
        }
    }

    /// The matrix as f32 `[vocab, d]` on `device`.
    pub fn to_dense(&self, device: &Device) -> Tensor<2> {
        match self {
            Embedding::Dense(e) => e.clone(),
            Embedding::Packed(e) => {
                Tensor::from_data(TensorData::new(e.to_f32(), e.shape()), device)
            }
            Embedding::Blocks(e) => e.to_f32(),
        }
    }

    /// Bytes held resident.
    pub fn byte_len(&self) -> usize {
        match self {
            Embedding::Dense(e) => e.shape().num_elements() * 4,
            Embedding::Packed(e) => e.byte_len(),
            Embedding::Blocks(e) => e.byte_len(),
        }
    }
}
