//! Causal grouped-query attention on a GPU as one autodiff node over
//! kernels of ours: one launch forward, two backward.
//!
//! burn's attention under autodiff is its composed fallback: `q·kᵀ`, the
//! scale, a causal mask built from two ranges, the softmax's max, shift,
//! exponent, sum and division, `·v`; each a kernel launch, and the backward
//! pass about twice as many. Before it the keys and values are copied `H /
//! KV` times over for grouped-query attention, and the backward pass sums
//! them back. Here (FlashAttention's scheme, without its tiling of the
//! output): `shaders/attention_forward.wgsl` gives `o` and each row's
//! log-sum-exp, reading each group's keys and values where they lie;
//! `attention_backward_dq.wgsl` and `attention_backward_dkv.wgsl` recompute
//! the probabilities from the log-sum-exp and give `dq`, then `dk` and
//! `dv`. No `[T, T]` score matrix is ever stored. The tensors are in the
//! projections' own layout, `[b, t, heads, hd]` (a free reshape of `x·W`'s
//! `[b·t, heads·hd]`), so no head is transposed or copied before or after.
//!
//! Each operation gives its outputs in buffers of their own (the forward
//! pass's `o` and `lse`; the backward pass's `dq`, `dk`, `dv` and `D =
//! rowsum(dO ⊙ o)`): slicing one flat output would cost a copy launch
//! wherever an offset misses the GPU's 256-byte alignment, as it does for
//! most sequence lengths. The kernels read their sizes from a uniform
//! `info`, so the backward kernels' eight tensors fit WebGPU's default
//! eight storage buffers. On the CPU the twins [`forward`] and [`backward`]
//! run them for the tests (on flat values: `o` then `lse`; `dq`, `dk`, `dv`
//! then `D`); the CPU's own path stays burn's attention.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
#[cfg(any(feature = "webgpu", feature = "gpu"))]
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Shape, Tensor, TensorData};

use crate::cpu::owned_values;

/// The most head dimensions the kernels take (four values per invocation).
pub const MAX_HEAD_DIM: usize = 256;

/// The sizes of one attention: `q: [b, t, h, hd]`, `k, v: [b, t, kv, hd]`
/// (sequence, position, head, value: the projections' own layout, as
/// FlashAttention takes them, so no head is ever transposed or copied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Sequences.
    pub b: usize,
    /// Query heads.
    pub h: usize,
    /// Key and value heads (`h` is a multiple).
    pub kv: usize,
    /// Positions.
    pub t: usize,
    /// Values per head.
    pub hd: usize,
}

impl Dims {
    /// The sizes of `q` and `k` (shapes `[b, t, h, hd]`, `[b, t, kv, hd]`).
    pub fn of(q: &Shape, k: &Shape) -> Self {
        let [b, t, h, hd] = q.dims::<4>();
        let [kb, kt, kv, khd] = k.dims::<4>();
        assert_eq!(
            (kb, kt, khd),
            (b, t, hd),
            "q {q:?} and k {k:?} do not match"
        );
        assert!(kv > 0 && h % kv == 0, "{h} query heads over {kv} key heads");
        Self { b, h, kv, t, hd }
    }

    /// Query rows `b·t·h` (row `(b·t + i)·h + head` is position `i` of
    /// `head` in sequence `b`).
    pub fn rows(&self) -> usize {
        self.b * self.t * self.h
    }

    /// Values in `q` (and in `o`).
    pub fn q_len(&self) -> usize {
        self.rows() * self.hd
    }

    /// Values in `k` (and in `v`).
    pub fn k_len(&self) -> usize {
        self.b * self.t * self.kv * self.hd
    }

    /// Whether our kernels take these sizes (and index them in u32).
    pub fn supported(&self) -> bool {
        // q (and o, dq) is the largest buffer: h >= kv and hd >= 1.
        self.hd <= MAX_HEAD_DIM && self.t > 0 && u32::try_from(self.q_len()).is_ok()
    }

    /// The position of query row `row`.
    fn position(&self, row: usize) -> usize {
        row / self.h % self.t
    }

    /// Where key (and value) `j` of query row `row`'s group starts.
    fn key(&self, row: usize, j: usize) -> usize {
        let b = row / (self.t * self.h);
        let g = row % self.h / (self.h / self.kv);
        ((b * self.t + j) * self.kv + g) * self.hd
    }
}

/// The shape of `lse` and `D`, one value per query row: `[b, t, h]`.
pub(crate) fn rows_shape(q: &Shape) -> Shape {
    let [b, t, h, _] = q.dims::<4>();
    Shape::new([b, t, h])
}

/// What burn's fusion backend is told of [`AttentionOps::attention_forward`]'s
/// outputs: `o` shaped as `q`, `lse` `[b, t, h]`.
#[cfg(any(feature = "webgpu", feature = "gpu"))]
fn forward_meta(
    q: &TensorSpec,
    _k: &TensorSpec,
    _v: &TensorSpec,
    _scale: &f32,
) -> (TensorSpec, TensorSpec) {
    (
        TensorSpec::new(q.shape.clone(), q.dtype),
        TensorSpec::new(rows_shape(&q.shape), q.dtype),
    )
}

/// What burn's fusion backend is told of [`AttentionOps::attention_backward`]'s
/// outputs: `dq` shaped as `q`, `dk` and `dv` as `k`, `D` `[b, t, h]`.
#[cfg(any(feature = "webgpu", feature = "gpu"))]
#[allow(clippy::too_many_arguments)]
fn backward_meta(
    q: &TensorSpec,
    k: &TensorSpec,
    _v: &TensorSpec,
    _o: &TensorSpec,
    _lse: &TensorSpec,
    _d_o: &TensorSpec,
    _scale: &f32,
) -> (TensorSpec, TensorSpec, TensorSpec, TensorSpec) {
    (
        TensorSpec::new(q.shape.clone(), q.dtype),
        TensorSpec::new(k.shape.clone(), q.dtype),
        TensorSpec::new(k.shape.clone(), q.dtype),
        TensorSpec::new(rows_shape(&q.shape), q.dtype),
    )
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The forward kernel's twin: `[o, lse]` flat, for row-major `q`, `k`, `v`.
pub fn forward(q: &[f32], k: &[f32], v: &[f32], d: Dims, scale: f32) -> Vec<f32> {
    let (rows, hd) = (d.rows(), d.hd);
    let mut out = vec![0f32; rows * (hd + 1)];
    for row in 0..rows {
        let i = d.position(row);
        let qi = &q[row * hd..(row + 1) * hd];
        let s: Vec<f32> = (0..=i)
            .map(|j| scale * dot(qi, &k[d.key(row, j)..d.key(row, j) + hd]))
            .collect();
        let m = s.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
        let p: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
        let l: f32 = p.iter().sum();
        for (j, pj) in p.iter().enumerate() {
            let vj = &v[d.key(row, j)..d.key(row, j) + hd];
            for (o, x) in out[row * hd..(row + 1) * hd].iter_mut().zip(vj) {
                *o += pj / l * x;
            }
        }
        out[rows * hd + row] = m + l.ln();
    }
    out
}

/// The backward kernels' twin: `[dq, dk, dv, D]` flat, for `d_o` the
/// output's gradient and `fwd` the forward pass's output.
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    fwd: &[f32],
    d_o: &[f32],
    d: Dims,
    scale: f32,
) -> Vec<f32> {
    let (rows, hd, kl) = (d.rows(), d.hd, d.k_len());
    let mut out = vec![0f32; d.q_len() + 2 * kl + rows];
    let (dq, rest) = out.split_at_mut(d.q_len());
    let (dk, rest) = rest.split_at_mut(kl);
    let (dv, big_d) = rest.split_at_mut(kl);
    for row in 0..rows {
        let i = d.position(row);
        let r = row * hd..(row + 1) * hd;
        let (qi, doi) = (&q[r.clone()], &d_o[r.clone()]);
        let di = dot(doi, &fwd[r.clone()]);
        big_d[row] = di;
        let lse = fwd[rows * hd + row];
        for j in 0..=i {
            let kr = d.key(row, j)..d.key(row, j) + hd;
            let p = (scale * dot(qi, &k[kr.clone()]) - lse).exp();
            let ds = p * (dot(doi, &v[kr.clone()]) - di);
            for c in 0..hd {
                dq[row * hd + c] += scale * ds * k[kr.start + c];
                dk[kr.start + c] += scale * ds * qi[c];
                dv[kr.start + c] += p * doi[c];
            }
        }
    }
    out
}

/// `softmax(scale·q·kᵀ + causal mask)·v` for `q: [b, t, h, hd]` and `k, v:
/// [b, t, kv, hd]` (`h / kv` query heads share each key head), giving `[b,
/// t, h, hd]`, as one autodiff node; `scale` is `1/sqrt(hd)`.
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let scale = 1.0 / (q.dims()[3] as f32).sqrt();
    Tensor::from_dispatch(Dispatch::causal_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        scale,
    ))
}

/// The forward operation on tensors: `(o, lse)`, for values that need no
/// gradient (the page's kernel check).
pub(crate) fn attention_forward(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f32,
) -> (Tensor<4>, Tensor<3>) {
    let (o, lse) = Dispatch::attention_forward(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        scale,
    );
    (Tensor::from_dispatch(o), Tensor::from_dispatch(lse))
}

/// The backward operation on tensors: `(dq, dk, dv, D)`, for values that
/// need no gradient (the page's kernel check).
pub(crate) fn attention_backward(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    (o, lse): (Tensor<4>, Tensor<3>),
    d_o: Tensor<4>,
    scale: f32,
) -> (Tensor<4>, Tensor<4>, Tensor<4>, Tensor<3>) {
    let (dq, dk, dv, big_d) = Dispatch::attention_backward(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        o.into_dispatch(),
        lse.into_dispatch(),
        d_o.into_dispatch(),
        scale,
    );
    (
        Tensor::from_dispatch(dq),
        Tensor::from_dispatch(dk),
        Tensor::from_dispatch(dv),
        Tensor::from_dispatch(big_d),
    )
}

/// Causal attention's kernels as backend operations (ours on a GPU, the
/// twins on the CPU), and the node over them with autodiff's own backward.
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "webgpu", feature = "gpu")),
    Fusion: cfg(any(feature = "webgpu", feature = "gpu")),
    Autodiff
)]
pub trait AttentionOps: Backend {
    /// `(o, lse)` (no gradient).
    #[fusion(meta = forward_meta)]
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `(dq, dk, dv, D)` for the output's gradient `d_o`, from the forward
    /// pass's `o` and `lse` (no gradient).
    #[fusion(meta = backward_meta)]
    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        scale: f32,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );

    /// See [`causal_attention`].
    #[fusion(default)]
    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        Self::attention_forward(q, k, v, scale).0
    }
}

/// `values` cut in consecutive tensors of `shapes`.
fn flex_parts<const N: usize>(values: Vec<f32>, shapes: [Shape; N]) -> [FlexTensor; N] {
    let mut start = 0;
    shapes.map(|shape| {
        let end = start + shape.num_elements();
        let part = values[start..end].to_vec();
        start = end;
        FlexTensor::from_data(TensorData::new(part, shape))
    })
}

impl AttentionOps for Flex {
    fn attention_forward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        scale: f32,
    ) -> (FlexTensor, FlexTensor) {
        assert_eq!(v.shape(), k.shape(), "v and k differ");
        let d = Dims::of(&q.shape(), &k.shape());
        let shapes = [q.shape(), rows_shape(&q.shape())];
        let out = forward(
            &owned_values(q),
            &owned_values(k),
            &owned_values(v),
            d,
            scale,
        );
        let [o, lse] = flex_parts(out, shapes);
        (o, lse)
    }

    fn attention_backward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        o: FlexTensor,
        lse: FlexTensor,
        d_o: FlexTensor,
        scale: f32,
    ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
        assert_eq!(v.shape(), k.shape(), "v and k differ");
        let d = Dims::of(&q.shape(), &k.shape());
        let shapes = [q.shape(), k.shape(), k.shape(), rows_shape(&q.shape())];
        let mut fwd = owned_values(o);
        fwd.extend(owned_values(lse));
        let out = backward(
            &owned_values(q),
            &owned_values(k),
            &owned_values(v),
            &fwd,
            &owned_values(d_o),
            d,
            scale,
        );
        let [dq, dk, dv, big_d] = flex_parts(out, shapes);
        (dq, dk, dv, big_d)
    }
}

impl<B: Backend + AttentionOps, C: CheckpointStrategy> AttentionOps for Autodiff<B, C> {
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        use burn::backend::AutodiffBackend;
        // Only ever called on values that need no gradient.
        let (o, lse) = B::attention_forward(Self::inner(q), Self::inner(k), Self::inner(v), scale);
        (Self::from_inner(o), Self::from_inner(lse))
    }

    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        scale: f32,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        use burn::backend::AutodiffBackend;
        let (dq, dk, dv, big_d) = B::attention_backward(
            Self::inner(q),
            Self::inner(k),
            Self::inner(v),
            Self::inner(o),
            Self::inner(lse),
            Self::inner(d_o),
            scale,
        );
        (
            Self::from_inner(dq),
            Self::from_inner(dk),
            Self::from_inner(dv),
            Self::from_inner(big_d),
        )
    }

    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AttentionBackward;

        impl<B: Backend + AttentionOps> Backward<B, 3> for AttentionBackward {
            /// `q`, `k`, `v`, the forward pass's `o` and `lse`, the scale.
            type State = (
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                f32,
            );

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let g = grads.consume::<B>(&ops.node); // [b, t, h, hd]
                let (q, k, v, o, lse, scale) = ops.state;
                // dq [b, t, h, hd]; dk, dv [b, t, kv, hd]; D is the kernels' own.
                let (dq, dk, dv, _) = B::attention_backward(q, k, v, o, lse, g, scale);
                for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
                    if let Some(node) = parent {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let (q, q_node) = q.into_parts();
        let (k, k_node) = k.into_parts();
        let (v, v_node) = v.into_parts();
        match AttentionBackward
            .prepare::<C>([q_node, k_node, v_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (o, lse) = B::attention_forward(q.clone(), k.clone(), v.clone(), scale);
                prep.finish((q, k, v, o.clone(), lse, scale), o)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::causal_attention(q, k, v, scale)),
        }
    }
}
