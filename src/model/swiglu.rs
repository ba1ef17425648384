//! SwiGLU's `silu(g)·u` as one operation.
//!
//! Composed from burn's ops under autodiff, `silu(g)·u` takes three passes
//! over `[N, ffn]` forward (sigmoid, two products) and five backward, each
//! on one thread in flex, and as many kernel launches on a GPU. Here the
//! forward is one pass and the backward one pass giving both gradients,
//! split over the cores on the CPU and one launch each of
//! `shaders/swiglu_forward.wgsl` and `swiglu_backward.wgsl` on a GPU
//! (`crate::gpu`), the CPU's pass split with `crate::cpu::par`:
//!
//! - `y = g·σ(g)·u`
//! - `du = dy·g·σ(g)`, `dg = dy·u·σ(g)·(1 + g·(1 − σ(g)))`.
//!
//! The backward operation gives both gradients in one tensor `[2·N, F]`
//! (`dg`'s rows, then `du`'s), one operation for burn's fusion backend; the
//! node takes each half as a view.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::activation::silu;
use burn::tensor::{DType, Shape, Slice, Tensor};

use crate::cpu::{par, values};

/// `silu(gate)·up` for `gate, up: [N, F]`: one operation of ours.
pub fn swiglu(gate: Tensor<2>, up: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::swiglu(gate.into_dispatch(), up.into_dispatch()))
}

/// The backward operation on tensors: `[dgate; dup]` `[2·N, F]` for the
/// output's gradient `dy`, for values that need no gradient (the page's
/// kernel check).
pub fn swiglu_backward(gate: Tensor<2>, up: Tensor<2>, dy: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::swiglu_backward(
        gate.into_dispatch(),
        up.into_dispatch(),
        dy.into_dispatch(),
    ))
}

/// The composed burn ops: the operation's reference.
pub fn reference(gate: Tensor<2>, up: Tensor<2>) -> Tensor<2> {
    silu(gate) * up
}

/// The backward operation's output shape: `[2·N, F]` for `gate: [N, F]`.
fn stacked(gate: &Shape) -> Shape {
    let [n, f] = gate.dims::<2>();
    Shape::new([2 * n, f])
}

/// SwiGLU as backend operations (one pass on the CPU, our kernels on a
/// GPU), so autodiff can be given its own backward.
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "webgpu", feature = "gpu")),
    Fusion: cfg(any(feature = "webgpu", feature = "gpu")),
    Autodiff
)]
pub trait SwigluOps: Backend {
    /// `silu(gate)·up`, element-wise.
    #[fusion(dtype = gate, shape = gate)]
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `[dgate; dup]` `[2·N, F]` for the output's gradient `dy` (no gradient).
    #[fusion(dtype = gate, shape = stacked(gate))]
    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// The logistic function, as flex computes it (no overflow either side).
#[inline]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `g·σ(g)·u`.
#[inline]
fn value(g: f32, u: f32) -> f32 {
    g * sigmoid(g) * u
}

/// `(dg, du)` for the output's gradient `d`.
#[inline]
fn grads(g: f32, u: f32, d: f32) -> (f32, f32) {
    let s = sigmoid(g);
    (d * u * s * (1.0 + g * (1.0 - s)), d * g * s)
}

/// The forward kernel's twin (`shaders/swiglu_forward.wgsl`).
pub fn forward(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| value(g, u)).collect()
}

/// The backward kernel's twin (`shaders/swiglu_backward.wgsl`): `dgate`'s
/// values, then `dup`'s.
pub fn backward(gate: &[f32], up: &[f32], dy: &[f32]) -> Vec<f32> {
    let (dg, du): (Vec<f32>, Vec<f32>) = (0..gate.len())
        .map(|i| grads(gate[i], up[i], dy[i]))
        .unzip();
    [dg, du].concat()
}

/// `[dgate; dup]` of `silu(gate)·up` for the output's gradient `dy`.
fn backward_flex(gate: &FlexTensor, up: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let (g, u, d) = (values(gate), values(up), values(dy));
    let mut out = FlexTensor::empty(stacked(&gate.shape()), DType::F32);
    let (dg, du) = out.storage_mut::<f32>().split_at_mut(g.len());
    par::chunks2(dg, du, par::CHUNK, |start, dg, du| {
        let end = start + dg.len();
        let (g, u, d) = (&g[start..end], &u[start..end], &d[start..end]);
        for i in 0..dg.len() {
            (dg[i], du[i]) = grads(g[i], u[i], d[i]);
        }
    });
    out
}

impl SwigluOps for Flex {
    fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        assert_eq!(gate.shape(), up.shape(), "gate and up are one shape");
        let (g, u) = (values(&gate), values(&up));
        let mut out = FlexTensor::empty(gate.shape(), DType::F32);
        par::chunks(out.storage_mut::<f32>(), par::CHUNK, |start, y| {
            let (g, u) = (&g[start..start + y.len()], &u[start..start + y.len()]);
            for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                *y = value(g, u);
            }
        });
        out
    }

    fn swiglu_backward(gate: FlexTensor, up: FlexTensor, dy: FlexTensor) -> FlexTensor {
        backward_flex(&gate, &up, &dy)
    }
}

impl<B: Backend + SwigluOps, C: CheckpointStrategy> SwigluOps for Autodiff<B, C> {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SwigluBackward;

        impl<B: Backend + SwigluOps> Backward<B, 2> for SwigluBackward {
            /// The inputs, shared with their owners rather than copied.
            type State = (FloatTensor<B>, FloatTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (gate, up) = ops.state;
                let dy = grads.consume::<B>(&ops.node); // [N, F]
                let n = gate.shape().dims::<2>()[0];
                let both = B::swiglu_backward(gate, up, dy); // [2·N, F]
                let half = |rows: std::ops::Range<usize>| {
                    B::float_slice(both.clone(), &[Slice::from(rows)])
                };
                let [g_node, u_node] = ops.parents;
                if let Some(node) = g_node {
                    grads.register::<B>(node.id, half(0..n));
                }
                if let Some(node) = u_node {
                    grads.register::<B>(node.id, half(n..2 * n));
                }
            }
        }

        let (g, g_node) = gate.into_parts();
        let (u, u_node) = up.into_parts();
        match SwigluBackward
            .prepare::<C>([g_node, u_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::swiglu(g.clone(), u.clone());
                prep.finish((g, u), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::swiglu(g, u)),
        }
    }

    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        use burn::backend::AutodiffBackend;
        // Only ever called on values that need no gradient.
        Self::from_inner(B::swiglu_backward(
            Self::inner(gate),
            Self::inner(up),
            Self::inner(dy),
        ))
    }
}
