//! The LM head's next-token loss, computed a chunk of rows at a time so the
//! `[rows, vocab]` logits are never held whole.
//!
//! Autodiff would keep every intermediate of `log_softmax(h·W)` for all M
//! trained rows until the backward pass: several `[M, vocab]` f32 tensors,
//! 201 MB each at batch 4 × 256 with a 49,152-token vocabulary. The LM head
//! is frozen, so the only gradient needed is `dL/dh = (softmax(h·W) −
//! onehot(t))·Wᵀ`, which is `[M, d]`. Each chunk computes its loss and that
//! gradient outside the graph and drops its logits; the graph then gets one
//! small node, `s = Σ h ⊙ dL/dh`, whose gradient with respect to `h` is
//! exactly `dL/dh`. The returned value is `s − detach(s) + NLL`: the NLL
//! itself (the first two cancel exactly), with `dL/dh` flowing back.

use burn::tensor::{Int, Tensor, TensorData};

use crate::cpu::xent;

use crate::model::Llama;

/// Rows of logits computed at once: `[128, 49152]` f32 is 25 MB.
pub const LOSS_CHUNK_ROWS: usize = 128;

impl Llama {
    /// Sum of the next-token negative log-likelihood over the positions in
    /// `rows` of the flattened `[B·T]` sequence, whose next tokens are
    /// `targets` (both length M). Only those M rows go through the LM head,
    /// [`LOSS_CHUNK_ROWS`] at a time. When `hidden` is in an autodiff graph,
    /// the result carries the exact gradient with respect to it.
    pub fn nll_sum(&self, hidden: Tensor<2>, rows: &[i64], targets: &[i64]) -> Tensor<1> {
        self.nll_sum_chunked(hidden, rows, targets, LOSS_CHUNK_ROWS)
    }

    /// [`Llama::nll_sum`] with `chunk` rows of logits at a time.
    pub fn nll_sum_chunked(
        &self,
        hidden: Tensor<2>,
        rows: &[i64],
        targets: &[i64],
        chunk: usize,
    ) -> Tensor<1> {
        let device = hidden.device();
        let m = rows.len();
        let index = Tensor::<1, Int>::from_data(TensorData::new(rows.to_vec(), [m]), &device);
        let picked = hidden.select(0, index); // [M, d]
        let tracked = picked.is_tracked();
        let plain = picked.clone().inner(); // [M, d], outside the graph
        let head = self.head(); // expanded once for every chunk, then dropped
        let mut nll = Tensor::<1>::zeros([1], &device);
        let mut grads = Vec::new();
        for start in (0..m).step_by(chunk.max(1)) {
            let end = (start + chunk.max(1)).min(m);
            let logits = head.logits(plain.clone().slice(start..end)); // [c, V]
            let t = &targets[start..end];
            if tracked {
                // d(−log p_t)/d logits = softmax − onehot(t)    [c, V]
                let (row_nll, g) = xent::nll_and_grad(logits, t); // [c], [c, V]
                nll = nll + row_nll.sum();
                grads.push(head.input_grad(g)); // [c, d]
            } else {
                nll = nll + xent::nll(logits, t).sum();
            }
        }
        if !tracked {
            return nll;
        }
        let grad = Tensor::cat(grads, 0); // [M, d]
        let s = (picked * grad).sum(); // [1], ds/dpicked = grad
        s.clone() - s.detach() + nll
    }

    /// The LM head as f32 on the device.
    fn head(&self) -> Head {
        match &self.weights.lm_head {
            Some(w) => Head::Untied(w.clone()),
            None => Head::Tied(self.weights.embed.to_dense(&self.device)),
        }
    }
}

/// The LM head's matrix for the length of one loss.
enum Head {
    /// `[d, V]`.
    Untied(Tensor<2>),
    /// The embedding `[V, d]`.
    Tied(Tensor<2>),
}

impl Head {
    /// Logits `[c, V]` of hidden states `h: [c, d]`.
    fn logits(&self, h: Tensor<2>) -> Tensor<2> {
        match self {
            Head::Untied(w) => h.matmul(w.clone()),
            Head::Tied(e) => h.matmul(e.clone().transpose()),
        }
    }

    /// `g·Wᵀ`: the gradient reaching the hidden states `[c, d]` from the
    /// gradient `g: [c, vocab]` of the logits.
    fn input_grad(&self, g: Tensor<2>) -> Tensor<2> {
        match self {
            Head::Untied(w) => g.matmul(w.clone().transpose()),
            Head::Tied(e) => g.matmul(e.clone()),
        }
    }
}
