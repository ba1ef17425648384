//! The next-token loss of a chunk of logits and its gradient, in one pass
//! of ours per row.
//!
//! burn's `log_softmax`, `gather` and `exp` + `scatter` take about eight
//! passes over the `[c, vocab]` logits, each on one thread in flex. Here,
//! per row: the maximum, the sum of `exp(x − max)` (kept as the row's
//! gradient), and the scaling by its inverse; rows split over the cores:
//!
//! - `nll = log Σ exp(x − max) + max − x[t]`
//! - `d nll / d x = softmax(x) − onehot(t)`.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::activation::log_softmax;
use burn::tensor::{IndexingUpdateOp, Int, Shape, Tensor, TensorData};

use crate::cpu::par;

/// For `logits: [c, V]` and next tokens `targets` (length c), each row's
/// negative log-likelihood `[c]` and the gradient of their sum with respect
/// to the logits, `softmax − onehot` `[c, V]`. One pass of ours on the CPU,
/// burn's ops elsewhere. Not differentiable itself: the gradient is its
/// second output. `logits` must be outside any autodiff graph.
pub fn nll_and_grad(logits: Tensor<2>, targets: &[i64]) -> (Tensor<1>, Tensor<2>) {
    if crate::model::is_cpu(&logits.device()) && !logits.is_autodiff() {
        let (nll, grad) = Dispatch::nll_and_grad(logits.into_dispatch(), targets.to_vec());
        (Tensor::from_dispatch(nll), Tensor::from_dispatch(grad))
    } else {
        reference(logits, targets)
    }
}

/// Each row's NLL `[c]` alone: what evaluation needs (on the CPU the
/// gradient comes in the same pass, so only the GPU saves its passes).
pub fn nll(logits: Tensor<2>, targets: &[i64]) -> Tensor<1> {
    if crate::model::is_cpu(&logits.device()) && !logits.is_autodiff() {
        return nll_and_grad(logits, targets).0;
    }
    let (logp, t) = log_probs(logits, targets);
    logp.gather(1, t).neg().reshape([targets.len()])
}

/// `log_softmax(logits)` `[c, V]` and the targets as `[c, 1]` indices.
fn log_probs(logits: Tensor<2>, targets: &[i64]) -> (Tensor<2>, Tensor<2, Int>) {
    let c = targets.len();
    let t =
        Tensor::<2, Int>::from_data(TensorData::new(targets.to_vec(), [c, 1]), &logits.device()); // [c, 1]
    (log_softmax(logits, 1), t)
}

/// The composed burn ops: the GPU path and the CPU op's reference twin.
pub fn reference(logits: Tensor<2>, targets: &[i64]) -> (Tensor<1>, Tensor<2>) {
    let device = logits.device();
    let c = targets.len();
    let (logp, t) = log_probs(logits, targets); // [c, V], [c, 1]
    let nll = logp.clone().gather(1, t.clone()).neg().reshape([c]); // [c]
    let minus_one = Tensor::<2>::full([c, 1], -1.0, &device);
    let grad = logp.exp().scatter(1, t, minus_one, IndexingUpdateOp::Add); // [c, V]
    (nll, grad)
}

/// The loss and its gradient as a backend operation.
#[backend_extension(Flex)]
pub trait XentOps: Backend {
    /// See [`nll_and_grad`].
    fn nll_and_grad(
        logits: FloatTensor<Self>,
        targets: Vec<i64>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl XentOps for Flex {
    fn nll_and_grad(logits: FlexTensor, targets: Vec<i64>) -> (FlexTensor, FlexTensor) {
        let [c, v] = logits.shape().dims::<2>();
        assert_eq!(targets.len(), c, "one target per row");
        assert!(
            targets.iter().all(|&t| (0..v as i64).contains(&t)),
            "targets index the vocabulary"
        );
        // The gradient overwrites the logits when nothing else holds them.
        let mut grad = if logits.is_contiguous() && logits.layout().start_offset() == 0 {
            logits
        } else {
            logits.to_contiguous()
        };
        let mut nll = vec![0f32; c];
        let data = &mut grad.storage_mut::<f32>()[..c * v];
        par::rows(data, v, &mut nll, |r, x, nll| {
            let t = targets[r] as usize;
            let picked = x[t];
            let max = x.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
            let mut sum = 0f64; // 49,152 terms: f64 keeps the sum to f32's precision
            for a in x.iter_mut() {
                *a = (*a - max).exp();
                sum += *a as f64;
            }
            let inv = (1.0 / sum) as f32;
            for a in x.iter_mut() {
                *a *= inv;
            }
            x[t] -= 1.0;
            *nll = (sum.ln() as f32) + max - picked;
        });
        let nll = FlexTensor::from_data(TensorData::new(nll, Shape::new([c])));
        (nll, grad)
    }
}
