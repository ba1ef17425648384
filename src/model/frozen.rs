//! A frozen linear weight, dense or packed, and the matmul that keeps a
//! packed one packed through training.
//!
//! burn's matmul under autodiff keeps its right-hand side until the backward
//! pass, so a base weight expanded to f32 for the forward would stay
//! resident all step: the whole base in f32 again. The base is frozen, so
//! the only gradient it passes on is `dX = dY·W`, which needs `W` and
//! nothing the forward made. [`packed_matmul`] is one autodiff node whose
//! saved state is the packed weight itself (shared, not copied): the forward
//! expands `W`, multiplies and drops it; the backward expands it again. The
//! cost is one expansion per use, small beside the `[N, in]·[in, out]`
//! product it feeds when `N` is a batch of tokens. For a few rows (decoding
//! one token at a time) the CPU backend never expands `W` whole: each of
//! its rows is expanded and dotted in turn.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Device, Tensor, TensorData};

// Up to FEW_ROWS rows of `x` (decoding) are multiplied without expanding `W`.
use crate::model::blocks::{DeviceBlocks, FEW_ROWS};
use crate::model::packed::PackedWeight;

/// A base projection's weight.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // a few hundred, not millions
pub enum Frozen {
    /// f32 `[d_in, d_out]`, multiplied as `x·W`.
    Dense(Tensor<2>),
    /// The checkpoint's blocks, `[d_out, d_in]` (PyTorch layout), expanded
    /// one matmul at a time.
    Packed(Arc<PackedWeight>),
    /// Blocks on a GPU, `[d_out, d_in]`, multiplied there where they lie
    /// (`model::blocks`).
    Blocks(DeviceBlocks),
}

impl Frozen {
    /// `x·W` for `x: [N, d_in]`, giving `[N, d_out]`.
    pub fn apply(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Frozen::Dense(w) => x.matmul(w.clone()),
            Frozen::Packed(w) => packed_matmul(x, w.clone()),
            Frozen::Blocks(w) => w.matmul_t(x),
        }
    }

    /// The weight as an f32 `[d_in, d_out]` tensor on `device`.
    pub fn to_dense(&self, device: &Device) -> Tensor<2> {
        match self {
            Frozen::Dense(w) => w.clone(),
            Frozen::Packed(w) => dense_out_in(w, device).transpose(),
            Frozen::Blocks(w) => w.to_f32().transpose(),
        }
    }

    /// Bytes this weight holds resident.
    pub fn byte_len(&self) -> usize {
        match self {
            Frozen::Dense(w) => w.shape().num_elements() * 4,
            Frozen::Packed(w) => w.byte_len(),
            Frozen::Blocks(w) => w.byte_len(),
        }
    }
}

/// `W` expanded to f32 `[d_out, d_in]`.
fn dense_out_in(w: &PackedWeight, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(w.to_f32(), w.shape()), device)
}

/// `x·Wᵀ` for `x: [N, d_in]` and a packed `W: [d_out, d_in]`, giving
/// `[N, d_out]`; under autodiff the gradient reaching `x` is `dY·W`, and
/// nothing but the shared packed weight is kept for it.
pub fn packed_matmul(x: Tensor<2>, w: Arc<PackedWeight>) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::packed_matmul(x.into_dispatch(), w))
}

/// The packed matmul as a backend operation, so autodiff can be given its
/// own backward.
#[backend_extension(Flex, Autodiff)]
pub trait PackedOps: Backend {
    /// `x: [N, d_in]` times the transpose of `w: [d_out, d_in]`.
    fn packed_matmul(x: FloatTensor<Self>, w: Arc<PackedWeight>) -> FloatTensor<Self> {
        expanded_matmul::<Self>(x, &w)
    }
}

/// `x·Wᵀ` with `W` expanded whole for the one product.
fn expanded_matmul<B: Backend>(x: FloatTensor<B>, w: &PackedWeight) -> FloatTensor<B> {
    let dense = expand::<B>(w, &x.device()); // [d_out, d_in]
    B::float_matmul(x, B::float_transpose(dense)) // [N, d_out]
}

/// `w` as an f32 backend tensor `[d_out, d_in]`.
fn expand<B: Backend>(w: &PackedWeight, device: &B::Device) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(w.to_f32(), w.shape()), device)
}

impl PackedOps for Flex {
    fn packed_matmul(x: FloatTensor<Self>, w: Arc<PackedWeight>) -> FloatTensor<Self> {
        let [n, _] = x.shape().dims::<2>();
        if n > FEW_ROWS {
            return expanded_matmul::<Self>(x, &w);
        }
        let xs: Vec<f32> = x
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .expect("f32 activations");
        let y = w.matmul_few(&xs, n); // [n, d_out]
        FlexTensor::from_data(TensorData::new(y, [n, w.shape()[0]]))
    }
}

impl<B: Backend + PackedOps, C: CheckpointStrategy> PackedOps for Autodiff<B, C> {
    fn packed_matmul(x: FloatTensor<Self>, w: Arc<PackedWeight>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct PackedMatmulBackward;

        impl<B: Backend> Backward<B, 1> for PackedMatmulBackward {
            type State = Arc<PackedWeight>;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let w = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    // dX = dY·W: [N, d_out]·[d_out, d_in] -> [N, d_in]
                    let dense = expand::<B>(&w, &grad.device());
                    B::float_matmul(grad, dense)
                });
            }
        }

        let (x, node) = x.into_parts();
        match PackedMatmulBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::packed_matmul(x, w.clone());
                prep.finish(w, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::packed_matmul(x, w)),
        }
    }
}
