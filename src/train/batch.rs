//! Packing examples into a right-padded batch and listing the positions
//! whose next token is trained.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::Example;

/// A padded batch `[B, T]` with its trained (row, target) pairs.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Ids `[B·T]`, row-major, padded with 0.
    pub ids: Vec<i64>,
    /// Rows `B`.
    pub batch: usize,
    /// Columns `T` (the longest example, at most the sequence length).
    pub len: usize,
    /// Flattened positions `b·T + t - 1` whose next token `t` is trained.
    pub trained_positions: Vec<i64>,
    /// The trained token each of `trained_positions` predicts.
    pub targets: Vec<i64>,
    /// Non-padding tokens in the batch.
    pub tokens: usize,
}

impl Batch {
    /// Packs `examples`, each cut to `seq_len` tokens.
    pub fn new(examples: &[&Example], seq_len: usize) -> Self {
        let len = examples
            .iter()
            .map(|e| e.ids.len().min(seq_len))
            .max()
            .unwrap_or(1)
            .max(1);
        let mut ids = vec![0i64; examples.len() * len];
        let (mut trained_positions, mut targets, mut tokens) = (Vec::new(), Vec::new(), 0);
        for (b, e) in examples.iter().enumerate() {
            let n = e.ids.len().min(seq_len);
            tokens += n;
            for t in 0..n {
                ids[b * len + t] = e.ids[t] as i64;
                if t > 0 && e.trained[t] {
                    trained_positions.push((b * len + t - 1) as i64);
                    targets.push(e.ids[t] as i64);
                }
            }
        }
        Self {
            ids,
            batch: examples.len(),
            len,
            trained_positions,
            targets,
            tokens,
        }
    }

    /// The ids as a `[B, T]` tensor.
    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(
            TensorData::new(self.ids.clone(), [self.batch, self.len]),
            device,
        )
    }
}
