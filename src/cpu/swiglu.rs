//! SwiGLU's `silu(g)·u` as one operation.
//!
//! Composed from burn's ops under autodiff, `silu(g)·u` takes three passes
//! over `[N, ffn]` forward (sigmoid, two products) and five backward, each
//! on one thread in flex. Here the forward is one pass and the backward one
//! pass giving both gradients, split over the cores:
//!
//! - `y = g·σ(g)·u`
//! - `du = dy·g·σ(g)`, `dg = dy·u·σ(g)·(1 + g·(1 − σ(g)))`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::activation::silu;
use burn::tensor::{DType, Tensor};

use crate::cpu::{par, values};

/// `silu(gate)·up` for `gate, up: [N, F]`: one pass of ours on the CPU,
/// burn's ops elsewhere.
pub fn swiglu(gate: Tensor<2>, up: Tensor<2>) -> Tensor<2> {
    if crate::model::is_cpu(&gate.device()) {
        Tensor::from_dispatch(Dispatch::swiglu(gate.into_dispatch(), up.into_dispatch()))
    } else {
        reference(gate, up)
    }
}

/// The composed burn ops: the GPU path and the CPU op's reference twin.
pub fn reference(gate: Tensor<2>, up: Tensor<2>) -> Tensor<2> {
    silu(gate) * up
}

/// SwiGLU as a backend operation, so autodiff can be given its own backward.
#[backend_extension(Flex, Autodiff)]
pub trait SwigluOps: Backend {
    /// `silu(gate)·up`, element-wise.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
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

impl SwigluOps for Flex {
    fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        assert_eq!(gate.shape(), up.shape(), "gate and up are one shape");
        let (g, u) = (values(&gate), values(&up));
        let mut out = FlexTensor::empty(gate.shape(), DType::F32);
        par::chunks(out.storage_mut::<f32>(), par::CHUNK, |start, y| {
            let (g, u) = (&g[start..start + y.len()], &u[start..start + y.len()]);
            for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                *y = g * sigmoid(g) * u;
            }
        });
        out
    }
}

/// `(dgate, dup)` of `silu(gate)·up` for the output's gradient `dy`.
fn backward_flex(gate: &FlexTensor, up: &FlexTensor, dy: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let (g, u, d) = (values(gate), values(up), values(dy));
    let mut dg = FlexTensor::empty(gate.shape(), DType::F32);
    let mut du = FlexTensor::empty(gate.shape(), DType::F32);
    par::chunks2(
        dg.storage_mut::<f32>(),
        du.storage_mut::<f32>(),
        par::CHUNK,
        |start, dg, du| {
            let end = start + dg.len();
            let (g, u, d) = (&g[start..end], &u[start..end], &d[start..end]);
            for i in 0..dg.len() {
                let s = sigmoid(g[i]);
                du[i] = d[i] * g[i] * s;
                dg[i] = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
            }
        },
    );
    (dg, du)
}

impl<C: CheckpointStrategy> SwigluOps for Autodiff<Flex, C> {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SwigluBackward;

        impl Backward<Flex, 2> for SwigluBackward {
            /// The inputs, shared with their owners rather than copied.
            type State = (FlexTensor, FlexTensor);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (gate, up) = ops.state;
                let dy = grads.consume::<Flex>(&ops.node);
                let (dg, du) = backward_flex(&gate, &up, &dy);
                let [g_node, u_node] = ops.parents;
                if let Some(node) = g_node {
                    grads.register::<Flex>(node.id, dg);
                }
                if let Some(node) = u_node {
                    grads.register::<Flex>(node.id, du);
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
                let out = Flex::swiglu(g.clone(), u.clone());
                prep.finish((g, u), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::swiglu(g, u)),
        }
    }
}
