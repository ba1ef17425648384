//! Rotary position embedding on a GPU as one autodiff node over
//! `shaders/rope.wgsl`: one launch forward, one backward.
//!
//! Composed of burn's ops, rotate-half RoPE is a transpose of the heads, a
//! swap of each head's halves, two products and a sum forward, and about
//! twice that backward, for `q` and `k` in every block. Here it works on a
//! projection's output `[B·T, heads·hd]` as it lies (row `r` is position `r
//! mod T`), so attention reads the result without a transpose: `y = x ⊙ cos
//! + swap(x) ⊙ sin`, with rotate-half's minus in the first half of `sin`
//! and `swap` exchanging each head's halves. Its gradient is the transpose,
//! `dx = dy ⊙ cos + swap(dy ⊙ sin)`, the same kernel reading `sin` at the
//! other half. One launch may rotate two tensors with the same rows (q and
//! k, [`RopeOps::rope_pair`], which `model::attend` takes). On the CPU the
//! twin [`rotate`] runs it for the tests; the CPU's own path stays burn's
//! ops (`model::llama`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
#[cfg(any(feature = "webgpu", feature = "gpu"))]
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension,
};
use burn::tensor::{Tensor, TensorData};

use crate::cpu::owned_values;

/// The kernel's twin: `x` `[rows, width]` rotated by the tables `cos`, `sin`
/// `[len, hd]` (row `r` at position `r mod len`, `width` a multiple of
/// `hd`); `inverse` applies the transpose (the backward pass).
pub fn rotate(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    width: usize,
    hd: usize,
    inverse: bool,
) -> Vec<f32> {
    let (half, len) = (hd / 2, cos.len() / hd);
    (0..x.len())
        .map(|e| {
            let c = e % width % hd;
            let p = if c < half { c + half } else { c - half };
            let table = e / width % len * hd;
            let s = sin[table + if inverse { p } else { c }];
            x[e] * cos[table + c] + x[e - c + p] * s
        })
        .collect()
}

/// RoPE on `x: [B·T, heads·hd]` with `cos`, `sin` `[T, hd]` (rotate-half's
/// minus in the first half of `sin`), as one autodiff node; the tables get
/// no gradient.
pub fn rope(x: Tensor<2>, cos: Tensor<2>, sin: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::rope(
        x.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
    ))
}

/// The kernel on tensors, for values that need no gradient (the page's
/// kernel check).
pub(crate) fn rope_rotate(
    x: Tensor<2>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    inverse: bool,
) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::rope_rotate(
        x.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        inverse,
    ))
}

/// Two tensors with the same rows rotated in one launch, for values that
/// need no gradient (`model::attend`'s q and k, the page's kernel check).
pub(crate) fn rope_pair(
    x1: Tensor<2>,
    x2: Tensor<2>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    inverse: bool,
) -> (Tensor<2>, Tensor<2>) {
    let (y1, y2) = Dispatch::rope_pair(
        x1.into_dispatch(),
        x2.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        inverse,
    );
    (Tensor::from_dispatch(y1), Tensor::from_dispatch(y2))
}

/// What burn's fusion backend is told of [`RopeOps::rope_pair`]'s outputs:
/// each shaped as its input.
#[cfg(any(feature = "webgpu", feature = "gpu"))]
fn pair_meta(
    x1: &TensorSpec,
    x2: &TensorSpec,
    _cos: &TensorSpec,
    _sin: &TensorSpec,
    _inverse: &bool,
) -> (TensorSpec, TensorSpec) {
    (
        TensorSpec::new(x1.shape.clone(), x1.dtype),
        TensorSpec::new(x2.shape.clone(), x2.dtype),
    )
}

/// RoPE's kernel as a backend operation (ours on a GPU, the twin on the
/// CPU), and the node over it with autodiff's own backward.
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "webgpu", feature = "gpu")),
    Fusion: cfg(any(feature = "webgpu", feature = "gpu")),
    Autodiff
)]
pub trait RopeOps: Backend {
    /// `x` rotated, or by the transpose when `inverse` (no gradient).
    #[fusion(dtype = x, shape = x)]
    fn rope_rotate(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        inverse: bool,
    ) -> FloatTensor<Self>;

    /// `x1` and `x2` (the same rows) each rotated as by
    /// [`RopeOps::rope_rotate`], in one launch on a GPU (no gradient).
    #[fusion(meta = pair_meta)]
    fn rope_pair(
        x1: FloatTensor<Self>,
        x2: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        inverse: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        (
            Self::rope_rotate(x1, cos.clone(), sin.clone(), inverse),
            Self::rope_rotate(x2, cos, sin, inverse),
        )
    }

    /// See [`rope`].
    #[fusion(default)]
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::rope_rotate(x, cos, sin, false)
    }
}

impl RopeOps for Flex {
    fn rope_rotate(x: FlexTensor, cos: FlexTensor, sin: FlexTensor, inverse: bool) -> FlexTensor {
        let shape = x.shape();
        let [_, width] = shape.dims::<2>();
        let hd = cos.shape().dims::<2>()[1];
        let out = rotate(
            &owned_values(x),
            &owned_values(cos),
            &owned_values(sin),
            width,
            hd,
            inverse,
        );
        FlexTensor::from_data(TensorData::new(out, shape))
    }
}

impl<B: Backend + RopeOps, C: CheckpointStrategy> RopeOps for Autodiff<B, C> {
    fn rope_pair(
        x1: FloatTensor<Self>,
        x2: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        inverse: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // Only ever called on values that need no gradient.
        let (y1, y2) = B::rope_pair(
            Self::inner(x1),
            Self::inner(x2),
            Self::inner(cos),
            Self::inner(sin),
            inverse,
        );
        (Self::from_inner(y1), Self::from_inner(y2))
    }

    fn rope_rotate(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        inverse: bool,
    ) -> FloatTensor<Self> {
        // Only ever called on values that need no gradient.
        Self::from_inner(B::rope_rotate(
            Self::inner(x),
            Self::inner(cos),
            Self::inner(sin),
            inverse,
        ))
    }

    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct RopeBackward;

        impl<B: Backend + RopeOps> Backward<B, 1> for RopeBackward {
            /// The tables.
            type State = (FloatTensor<B>, FloatTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let g = grads.consume::<B>(&ops.node); // [N, W]
                let (cos, sin) = ops.state;
                if let [Some(node)] = ops.parents {
                    grads.register::<B>(node.id, B::rope_rotate(g, cos, sin, true));
                }
            }
        }

        // The tables are constants of the span: never tracked.
        let (cos, sin) = (Self::inner(cos), Self::inner(sin));
        let (x, x_node) = x.into_parts();
        match RopeBackward
            .prepare::<C>([x_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::rope_rotate(x, cos.clone(), sin.clone(), false);
                prep.finish((cos, sin), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rope_rotate(x, cos, sin, false)),
        }
    }
}
