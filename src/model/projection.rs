//! An adapted projection with its frozen base in the same autodiff node, on
//! a GPU: `out = x·W + s·dropout(x)·A·B`.
//!
//! As two nodes (burn's product for `x·W`, then [`adapted`]) `x` gets two
//! gradients, `dY·Wᵀ` and the adapter's, and autodiff adds them: one more
//! launch per projection (seven a block, each pass). Here the backward pass
//! computes `dY·Wᵀ` itself and `shaders/lora_rows.wgsl` adds the adapter's
//! `dx` to it as it writes it, so `x` gets one gradient. The forward pass is
//! the base's product and [`adapted`]'s one launch, as before.
//!
//! The base is a dense f32 `[d_in, d_out]` weight or blocks `[d_out, d_in]`
//! expanded for each product (`model::blocks`), as `Frozen::apply` takes
//! them; a CPU-packed base keeps the two nodes.
//!
//! [`adapted`]: crate::model::adapted::adapted

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;

use crate::lora::LoraPair;
use crate::model::adapted::{AdaptedOps, Adapter, Saved, backward_into, forward_saved};
use crate::model::blocks::{BlockFormat, BlockOps, DeviceBlocks};
use crate::model::frozen::Frozen;

/// `x·W + s·dropout(x)·A·B` for `x: [N, d_in]` as one node, for a dense or
/// blocks base; `None` for a base the node does not take (CPU-packed).
pub fn project(x: Tensor<2>, w: &Frozen, pair: &LoraPair, adapter: Adapter) -> Option<Tensor<2>> {
    let (a, b) = (
        pair.a.clone().into_dispatch(),
        pair.b.clone().into_dispatch(),
    );
    let out = match w {
        Frozen::Dense(w) => {
            Dispatch::project_dense(x.into_dispatch(), w.clone().into_dispatch(), a, b, adapter)
        }
        Frozen::Blocks(DeviceBlocks {
            format,
            words,
            params,
            ..
        }) => Dispatch::project_blocks(
            x.into_dispatch(),
            words.clone().into_dispatch(),
            params.clone().into_dispatch(),
            *format,
            a,
            b,
            adapter,
        ),
        Frozen::Packed(_) => return None,
    };
    Some(Tensor::from_dispatch(out)) // [N, d_out]
}

/// The adapted projection over its base as backend operations: only
/// autodiff's differs from the base's product followed by `adapted`.
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "webgpu", feature = "gpu")),
    Fusion: cfg(any(feature = "webgpu", feature = "gpu")),
    Autodiff
)]
pub trait ProjectionOps: AdaptedOps + BlockOps {
    /// `x·W + s·dropout(x)·A·B`, `W: [d_in, d_out]` dense.
    #[fusion(default)]
    fn project_dense(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        adapter: Adapter,
    ) -> FloatTensor<Self> {
        let y = Self::float_matmul(x.clone(), w);
        Self::adapted(y, x, a, b, adapter)
    }

    /// `x·Wᵀ + s·dropout(x)·A·B`, `W: [d_out, d_in]` in blocks.
    #[fusion(default)]
    fn project_blocks(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        adapter: Adapter,
    ) -> FloatTensor<Self> {
        let y = Self::blocks_matmul(x.clone(), words, params, format);
        Self::adapted(y, x, a, b, adapter)
    }
}

impl ProjectionOps for Flex {}

#[cfg(any(feature = "webgpu", feature = "gpu"))]
impl ProjectionOps for burn_cubecl::CubeBackend {}

/// A frozen base as the node keeps it (shared, not copied).
#[derive(Clone, Debug)]
enum Base<B: Backend> {
    /// `[d_in, d_out]` f32.
    Dense(FloatTensor<B>),
    /// `[d_out, d_in]` in blocks.
    Blocks(IntTensor<B>, FloatTensor<B>, BlockFormat),
}

impl<B: Backend + BlockOps> Base<B> {
    /// `x·W`: `[N, d_in]` to `[N, d_out]`.
    fn forward(&self, x: FloatTensor<B>) -> FloatTensor<B> {
        match self {
            Base::Dense(w) => B::float_matmul(x, w.clone()),
            Base::Blocks(words, params, format) => {
                B::blocks_matmul(x, words.clone(), params.clone(), *format)
            }
        }
    }

    /// `dY·Wᵀ`: `[N, d_out]` to `[N, d_in]`.
    fn input_grad(&self, g: FloatTensor<B>) -> FloatTensor<B> {
        match self {
            Base::Dense(w) => B::float_matmul(g, B::float_transpose(w.clone())),
            Base::Blocks(words, params, format) => {
                let w = B::dequantize_blocks(words.clone(), params.clone(), *format); // [d_out, d_in]
                B::float_matmul(g, w)
            }
        }
    }
}

/// The node: the base's product, then the adapter's launch; backward, the
/// base's `dY·Wᵀ` and the adapter's, added in the adapter's launch.
fn project_node<B: Backend + ProjectionOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    base: Base<B>,
    a: FloatTensor<Autodiff<B, C>>,
    b: FloatTensor<Autodiff<B, C>>,
    adapter: Adapter,
) -> FloatTensor<Autodiff<B, C>> {
    #[derive(Debug)]
    struct ProjectionBackward;

    impl<B: Backend + ProjectionOps> Backward<B, 3> for ProjectionBackward {
        type State = (Saved<B>, Base<B>);

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let g = grads.consume::<B>(&ops.node); // [N, d_out]
            let (saved, base) = ops.state;
            let ids = ops.parents.map(|n| n.map(|n| n.id));
            let dx_base = ids[0].is_some().then(|| base.input_grad(g.clone())); // [N, d_in]
            backward_into(g, saved, ids, dx_base, grads);
        }
    }

    let (x, x_node) = x.into_parts();
    let (a, a_node) = a.into_parts();
    let (b, b_node) = b.into_parts();
    match ProjectionBackward
        .prepare::<C>([x_node, a_node, b_node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = base.forward(x.clone()); // [N, d_out]
            let (out, saved) = forward_saved(y, x, a, b, adapter);
            prep.finish((saved, base), out)
        }
        OpsKind::UnTracked(prep) => {
            let y = base.forward(x.clone());
            prep.finish(B::adapted(y, x, a, b, adapter))
        }
    }
}

impl<B: Backend + ProjectionOps, C: CheckpointStrategy> ProjectionOps for Autodiff<B, C> {
    fn project_dense(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        adapter: Adapter,
    ) -> FloatTensor<Self> {
        project_node::<B, C>(x, Base::Dense(Self::inner(w)), a, b, adapter)
    }

    fn project_blocks(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        adapter: Adapter,
    ) -> FloatTensor<Self> {
        let words = Self::int_inner(words);
        project_node::<B, C>(
            x,
            Base::Blocks(words, Self::inner(params), format),
            a,
            b,
            adapter,
        )
    }
}
