//! A block's output as the root of its own backward pass, seeded with the
//! gradient that reaches it from above (recomputed activations,
//! [`crate::train::backward`]).
//!
//! burn's `backward()` starts from a root whose gradient is ones, so the
//! plain way to push `dL/dy` into a recomputed block is the scalar `Σ y ⊙
//! dL/dy`: a product, a sum, the seed, and the product's backward, four
//! kernel launches per block on a GPU for a value nobody reads. [`seeded`]
//! is one autodiff node instead: its value is `dL/dy` itself (no launch) and
//! its backward hands `dL/dy` to `y` as `y`'s gradient, whatever reaches it
//! (the root's own seed, a fill of `[N, d]` ones, is dropped).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;

/// A root for `backward()` that gives `y: [N, d]` (under autodiff) the
/// gradient `upstream: [N, d]` (the same shape; its value is `upstream`'s).
pub fn seeded(y: Tensor<2>, upstream: Tensor<2>) -> Tensor<2> {
    assert_eq!(y.dims(), upstream.dims(), "the gradient is shaped as y");
    Tensor::from_dispatch(Dispatch::seeded(
        y.into_dispatch(),
        upstream.into_dispatch(),
    ))
}

/// The node as a backend operation: only autodiff does anything with it.
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "webgpu", feature = "gpu")),
    Fusion: cfg(any(feature = "webgpu", feature = "gpu")),
    Autodiff
)]
pub trait SeedOps: Backend {
    /// `upstream`, as [`seeded`]'s value.
    #[fusion(default)]
    fn seeded(y: FloatTensor<Self>, upstream: FloatTensor<Self>) -> FloatTensor<Self> {
        let _ = y;
        upstream
    }
}

impl SeedOps for Flex {}

#[cfg(any(feature = "webgpu", feature = "gpu"))]
impl SeedOps for burn_cubecl::CubeBackend {}

impl<B: Backend + SeedOps, C: CheckpointStrategy> SeedOps for Autodiff<B, C> {
    fn seeded(y: FloatTensor<Self>, upstream: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SeedBackward;

        impl<B: Backend> Backward<B, 1> for SeedBackward {
            /// The gradient to hand to `y`.
            type State = FloatTensor<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                // The root's own gradient (ones) is not used.
                let _ = grads.consume::<B>(&ops.node);
                let [parent] = ops.parents;
                if let Some(node) = parent {
                    grads.register::<B>(node.id, ops.state);
                }
            }
        }

        let (_, node) = y.into_parts();
        let upstream = Self::inner(upstream);
        match SeedBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(upstream.clone(), upstream),
            OpsKind::UnTracked(prep) => prep.finish(upstream),
        }
    }
}
