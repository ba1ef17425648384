//! RMSNorm on a GPU as one autodiff node over kernels of ours: one launch
//! forward (`shaders/rms_norm_forward.wgsl`), one backward
//! (`shaders/rms_norm_backward.wgsl`).
//!
//! Composed of burn's ops, RMSNorm is a square, a mean, the shift, square
//! root and reciprocal, and two products forward, and about twice as many
//! backward (the mean's broadcast and the sums among them); a block has
//! two, run again when blocks are recomputed. Here a workgroup takes a row:
//!
//! - forward: `r = 1/sqrt(mean(x²) + ε)`, `y = x·r·w`;
//! - backward, for `g = dL/dy`: `dx = r·w·g − x·r³·mean(x·w·g)`.
//!
//! The weight is frozen (LoRA never trains it), so the node gives it no
//! gradient. On the CPU the twins [`forward`] and [`backward`] run it for
//! the tests; the CPU's own path stays burn's ops (`model::llama`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension,
};
use burn::tensor::{Tensor, TensorData};

use crate::cpu::owned_values;

/// `1/sqrt(mean(x²) + ε)` of one row.
fn rstd(x: &[f32], eps: f32) -> f32 {
    let squares: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (squares / x.len() as f32 + eps).sqrt()
}

/// The forward kernel's twin: each row of `x` `[rows, w.len()]` normed and
/// scaled by `w`.
pub fn forward(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    x.chunks(w.len())
        .flat_map(|row| {
            let r = rstd(row, eps);
            row.iter().zip(w).map(move |(v, w)| v * r * w)
        })
        .collect()
}

/// The backward kernel's twin: `dx` for the output's gradient `g` (shaped
/// as `x`).
pub fn backward(x: &[f32], w: &[f32], g: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    x.chunks(d)
        .zip(g.chunks(d))
        .flat_map(|(row, g)| {
            let r = rstd(row, eps);
            let dot: f32 = row.iter().zip(w).zip(g).map(|((x, w), g)| x * w * g).sum();
            let k = r * r * r * dot / d as f32;
            row.iter()
                .zip(w)
                .zip(g)
                .map(move |((x, w), g)| r * w * g - x * k)
        })
        .collect()
}

/// RMSNorm over the last dim of `x: [N, d]` with the frozen weight `w: [d]`
/// as one autodiff node (`w` gets no gradient).
pub fn rms_norm(x: Tensor<2>, w: Tensor<1>, eps: f64) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::rms_norm(
        x.into_dispatch(),
        w.into_dispatch(),
        eps as f32,
    ))
}

/// The forward kernel on tensors, for values that need no gradient (the
/// page's kernel check).
pub(crate) fn rms_norm_forward(x: Tensor<2>, w: Tensor<1>, eps: f32) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::rms_norm_forward(
        x.into_dispatch(),
        w.into_dispatch(),
        eps,
    ))
}

/// The backward kernel on tensors, for values that need no gradient (the
/// page's kernel check).
pub(crate) fn rms_norm_backward(x: Tensor<2>, w: Tensor<1>, g: Tensor<2>, eps: f32) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::rms_norm_backward(
        x.into_dispatch(),
        w.into_dispatch(),
        g.into_dispatch(),
        eps,
    ))
}

/// RMSNorm's kernels as backend operations (ours on a GPU, the twins on the
/// CPU), and the node over them with autodiff's own backward.
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "webgpu", feature = "gpu")),
    Fusion: cfg(any(feature = "webgpu", feature = "gpu")),
    Autodiff
)]
pub trait NormOps: Backend {
    /// `y` (no gradient).
    #[fusion(dtype = x, shape = x)]
    fn rms_norm_forward(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;

    /// `dx` for the output's gradient `g` (no gradient).
    #[fusion(dtype = x, shape = x)]
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self>;

    /// See [`rms_norm`].
    #[fusion(default)]
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        Self::rms_norm_forward(x, w, eps)
    }
}

impl NormOps for Flex {
    fn rms_norm_forward(x: FlexTensor, w: FlexTensor, eps: f32) -> FlexTensor {
        let shape = x.shape();
        let y = forward(&owned_values(x), &owned_values(w), eps);
        FlexTensor::from_data(TensorData::new(y, shape))
    }

    fn rms_norm_backward(x: FlexTensor, w: FlexTensor, g: FlexTensor, eps: f32) -> FlexTensor {
        let shape = x.shape();
        let dx = backward(&owned_values(x), &owned_values(w), &owned_values(g), eps);
        FlexTensor::from_data(TensorData::new(dx, shape))
    }
}

impl<B: Backend + NormOps, C: CheckpointStrategy> NormOps for Autodiff<B, C> {
    fn rms_norm_forward(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        // Only ever called on values that need no gradient.
        Self::from_inner(B::rms_norm_forward(Self::inner(x), Self::inner(w), eps))
    }

    fn rms_norm_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::rms_norm_backward(
            Self::inner(x),
            Self::inner(w),
            Self::inner(g),
            eps,
        ))
    }

    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct NormBackward;

        impl<B: Backend + NormOps> Backward<B, 1> for NormBackward {
            /// `x`, the weight and ε.
            type State = (FloatTensor<B>, FloatTensor<B>, f32);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let g = grads.consume::<B>(&ops.node); // [N, d]
                let (x, w, eps) = ops.state;
                if let [Some(node)] = ops.parents {
                    grads.register::<B>(node.id, B::rms_norm_backward(x, w, g, eps));
                }
            }
        }

        // The weight is frozen: never tracked.
        let w = Self::inner(w);
        let (x, x_node) = x.into_parts();
        match NormBackward
            .prepare::<C>([x_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::rms_norm_forward(x.clone(), w.clone(), eps);
                prep.finish((x, w, eps), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm_forward(x, w, eps)),
        }
    }
}
