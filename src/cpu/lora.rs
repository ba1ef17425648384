//! LoRA's `s·(x·A)·B` as one operation with its own backward.
//!
//! Every product in it has a rank-r side (`[N, d]·[d, r]`, `[N, r]·[r, d]`
//! and their transposes in the backward pass), small enough that flex runs
//! each on one thread; and the scale is a pass of its own over `[N, d_out]`,
//! forward and backward. Here the products are split over the cores
//! ([`crate::cpu::gemm`]) and the scale rides in them:
//!
//! - forward: `xa = x·A` `[N, r]`, `y = s·xa·B` `[N, d_out]`;
//! - backward, for `dy`: `dxa = s·dy·Bᵀ` `[N, r]`, `dB = s·xaᵀ·dy`
//!   `[r, d_out]`, `dA = xᵀ·dxa` `[d_in, r]`, `dx = dxa·Aᵀ` `[N, d_in]`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Shape, Tensor, TensorData};

use crate::cpu::gemm::{Mat, matmul_into};
use crate::cpu::values;

/// `scale·(x·a)·b` for `x: [N, d_in]`, `a: [d_in, r]`, `b: [r, d_out]`,
/// giving `[N, d_out]`: one operation of ours on the CPU, burn's ops
/// elsewhere.
pub fn lora_delta(x: Tensor<2>, a: Tensor<2>, b: Tensor<2>, scale: f32) -> Tensor<2> {
    if crate::model::is_cpu(&x.device()) {
        Tensor::from_dispatch(Dispatch::lora_delta(
            x.into_dispatch(),
            a.into_dispatch(),
            b.into_dispatch(),
            scale,
        ))
    } else {
        reference(x, a, b, scale)
    }
}

/// The composed burn ops, the scale on the rank-r intermediate: the GPU
/// path and the CPU op's reference twin.
pub fn reference(x: Tensor<2>, a: Tensor<2>, b: Tensor<2>, scale: f32) -> Tensor<2> {
    x.matmul(a).mul_scalar(scale).matmul(b) // [N, r] -> [N, d_out]
}

/// The LoRA delta as a backend operation, so autodiff can be given its own
/// backward.
#[backend_extension(Flex, Autodiff)]
pub trait LoraOps: Backend {
    /// See [`lora_delta`].
    fn lora_delta(
        x: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
}

/// A row-major f32 tensor of `shape` from `v`.
fn tensor(v: Vec<f32>, shape: [usize; 2]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, Shape::new(shape)))
}

/// The forward pass: `(y, xa)`.
fn forward(x: &FlexTensor, a: &FlexTensor, b: &FlexTensor, scale: f32) -> (FlexTensor, Vec<f32>) {
    let [n, d_in] = x.shape().dims::<2>();
    let [a_in, r] = a.shape().dims::<2>();
    let [b_r, d_out] = b.shape().dims::<2>();
    assert!(
        a_in == d_in && b_r == r,
        "x [N, d_in], A [d_in, r], B [r, d_out]"
    );
    let (xv, av, bv) = (values(x), values(a), values(b));
    let mut xa = vec![0f32; n * r];
    matmul_into(&mut xa, Mat::new(&xv, n, d_in), Mat::new(&av, d_in, r), 1.0);
    let mut y = vec![0f32; n * d_out];
    matmul_into(&mut y, Mat::new(&xa, n, r), Mat::new(&bv, r, d_out), scale);
    (tensor(y, [n, d_out]), xa)
}

impl LoraOps for Flex {
    fn lora_delta(x: FlexTensor, a: FlexTensor, b: FlexTensor, scale: f32) -> FlexTensor {
        forward(&x, &a, &b, scale).0
    }
}

/// What the backward pass needs: the inputs (shared, not copied), `x·A`
/// and the scale.
#[derive(Clone, Debug)]
struct Saved {
    x: FlexTensor,
    a: FlexTensor,
    b: FlexTensor,
    xa: Vec<f32>,
    scale: f32,
}

/// `[dx, dA, dB]` for the output's gradient `dy: [N, d_out]`, each only
/// where `want` says its input is tracked.
fn backward(s: &Saved, dy: &FlexTensor, want: [bool; 3]) -> [Option<FlexTensor>; 3] {
    let [n, d_in] = s.x.shape().dims::<2>();
    let [_, r] = s.a.shape().dims::<2>();
    let [_, d_out] = s.b.shape().dims::<2>();
    let (x, a, b, g) = (values(&s.x), values(&s.a), values(&s.b), values(dy));
    let g = Mat::new(&g, n, d_out);
    let mut dxa = vec![0f32; n * r]; // s·dy·Bᵀ
    if want[0] || want[1] {
        matmul_into(&mut dxa, g, Mat::new(&b, r, d_out).t(), s.scale);
    }
    let dx = want[0].then(|| {
        let mut dx = vec![0f32; n * d_in]; // dxa·Aᵀ
        matmul_into(
            &mut dx,
            Mat::new(&dxa, n, r),
            Mat::new(&a, d_in, r).t(),
            1.0,
        );
        tensor(dx, [n, d_in])
    });
    let da = want[1].then(|| {
        let mut da = vec![0f32; d_in * r]; // xᵀ·dxa
        matmul_into(
            &mut da,
            Mat::new(&x, n, d_in).t(),
            Mat::new(&dxa, n, r),
            1.0,
        );
        tensor(da, [d_in, r])
    });
    let db = want[2].then(|| {
        let mut db_t = vec![0f32; d_out * r]; // (s·xaᵀ·dy)ᵀ = s·dyᵀ·xa, split by d_out rows
        matmul_into(&mut db_t, g.t(), Mat::new(&s.xa, n, r), s.scale);
        let mut db = vec![0f32; r * d_out];
        for (o, row) in db_t.chunks(r).enumerate() {
            for (k, v) in row.iter().enumerate() {
                db[k * d_out + o] = *v;
            }
        }
        tensor(db, [r, d_out])
    });
    [dx, da, db]
}

impl<C: CheckpointStrategy> LoraOps for Autodiff<Flex, C> {
    fn lora_delta(
        x: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LoraBackward;

        impl Backward<Flex, 3> for LoraBackward {
            type State = Saved;

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let dy = grads.consume::<Flex>(&ops.node);
                let want = ops.parents.each_ref().map(Option::is_some);
                let found = backward(&ops.state, &dy, want);
                for (parent, grad) in ops.parents.into_iter().zip(found) {
                    if let (Some(node), Some(grad)) = (parent, grad) {
                        grads.register::<Flex>(node.id, grad);
                    }
                }
            }
        }

        let (x, x_node) = x.into_parts();
        let (a, a_node) = a.into_parts();
        let (b, b_node) = b.into_parts();
        match LoraBackward
            .prepare::<C>([x_node, a_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (y, xa) = forward(&x, &a, &b, scale);
                prep.finish(Saved { x, a, b, xa, scale }, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::lora_delta(x, a, b, scale)),
        }
    }
}
