//! The attention half of a block on a GPU as one autodiff node: the q, k
//! and v projections (each its frozen base and its adapter), RoPE on q and
//! k, and causal attention, from the normed input `x: [N, d]` to
//! attention's output `[N, H·hd]`.
//!
//! As separate nodes (`model::projection` three times, `model::rope` twice,
//! `model::attention`) `x` got three gradients, which autodiff added: two
//! launches a block, each step. Here the backward pass chains them instead:
//! each adapter's launch adds the base's `dY·Wᵀ` and the projections' part
//! before it (`shaders/lora_rows.wgsl`'s `acc` and `res`), so `x` gets one
//! gradient. RoPE rotates q and k (and their gradients) in one launch
//! instead of two. The other launches are the separate nodes' own (forward
//! in the same order), and so are the values kept for the backward pass.
//!
//! Taken by `Llama::block` on a GPU without a key/value cache from
//! position 0, at sizes the attention kernels take, when all three
//! projections are adapted and their bases are all dense or all blocks;
//! otherwise the separate nodes.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension,
};
use burn::tensor::{Shape, Tensor};

use crate::lora::LoraPair;
use crate::model::adapted::{Adapter, Saved};
use crate::model::attention::{AttentionOps, Dims};
use crate::model::blocks::{BlockFormat, DeviceBlocks};
use crate::model::frozen::Frozen;
use crate::model::projection::{Base, Bases, ProjectionOps, backward_each, project_each};
use crate::model::rope::RopeOps;

/// What the node takes besides its tensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttendSpec {
    /// The q, k and v adapters' scale and dropout.
    pub adapters: [Adapter; 3],
    /// The sizes: `q: [b, t, h, hd]`, `k` and `v: [b, t, kv, hd]`.
    pub dims: Dims,
}

/// Attention's output `[N, H·hd]` for the normed `x: [N, d]` through the
/// adapted q, k and v projections of `bases` (RoPE's tables `cos`, `sin`:
/// `[T, hd]`), as one node; `None` when the bases are not all dense or all
/// blocks. `joined`, the three bases' rows joined in blocks, takes their
/// place where there is one: one launch for the three products.
pub fn attend(
    x: Tensor<2>,
    bases: [&Frozen; 3],
    joined: Option<&DeviceBlocks>,
    pairs: [&LoraPair; 3],
    spec: AttendSpec,
    (cos, sin): (Tensor<2>, Tensor<2>),
) -> Option<Tensor<2>> {
    let [aq, bq, ak, bk, av, bv] = [
        &pairs[0].a,
        &pairs[0].b,
        &pairs[1].a,
        &pairs[1].b,
        &pairs[2].a,
        &pairs[2].b,
    ]
    .map(|f| f.clone().into_dispatch());
    let (x, cos, sin) = (x.into_dispatch(), cos.into_dispatch(), sin.into_dispatch());
    let out = match (bases, joined) {
        (_, Some(w)) => {
            let (words, params) = (w.words.clone(), w.params.clone());
            let (words, params) = (words.into_dispatch(), params.into_dispatch());
            Dispatch::attend_joined(
                x, words, params, w.format, aq, bq, ak, bk, av, bv, cos, sin, spec,
            )
        }
        ([Frozen::Dense(q), Frozen::Dense(k), Frozen::Dense(v)], None) => {
            let [wq, wk, wv] = [q, k, v].map(|w| w.clone().into_dispatch());
            Dispatch::attend_dense(x, wq, wk, wv, aq, bq, ak, bk, av, bv, cos, sin, spec)
        }
        ([Frozen::Blocks(q), Frozen::Blocks(k), Frozen::Blocks(v)], None) => {
            let [wq, wk, wv] = [q, k, v].map(|b| b.words.clone().into_dispatch());
            let [pq, pk, pv] = [q, k, v].map(|b| b.params.clone().into_dispatch());
            let formats = [q, k, v].map(|b: &DeviceBlocks| b.format);
            Dispatch::attend_blocks(
                x, wq, pq, wk, pk, wv, pv, formats, aq, bq, ak, bk, av, bv, cos, sin, spec,
            )
        }
        _ => return None,
    };
    Some(Tensor::from_dispatch(out)) // [N, H·hd]
}

/// The node as backend operations: only autodiff's differs from the
/// separate nodes' forward passes in a row. Each takes x, the three bases,
/// the three adapters' `A` and `B` (q, k, v), and RoPE's tables.
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "webgpu", feature = "gpu")),
    Fusion: cfg(any(feature = "webgpu", feature = "gpu")),
    Autodiff
)]
pub trait AttendOps: ProjectionOps + RopeOps + AttentionOps {
    /// [`attend`] over dense `[d, d_out]` bases.
    #[fusion(default)]
    #[allow(clippy::too_many_arguments)]
    fn attend_dense(
        x: FloatTensor<Self>,
        wq: FloatTensor<Self>,
        wk: FloatTensor<Self>,
        wv: FloatTensor<Self>,
        aq: FloatTensor<Self>,
        bq: FloatTensor<Self>,
        ak: FloatTensor<Self>,
        bk: FloatTensor<Self>,
        av: FloatTensor<Self>,
        bv: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        spec: AttendSpec,
    ) -> FloatTensor<Self> {
        let bases = Bases::Each([wq, wk, wv].map(Base::Dense));
        let factors = [aq, bq, ak, bk, av, bv];
        forward::<Self>(x, &bases, factors, (cos, sin), &spec).0
    }

    /// [`attend`] over `[d_out, d]` bases in blocks (`words`, `params`).
    #[fusion(default)]
    #[allow(clippy::too_many_arguments)]
    fn attend_blocks(
        x: FloatTensor<Self>,
        wq: IntTensor<Self>,
        pq: FloatTensor<Self>,
        wk: IntTensor<Self>,
        pk: FloatTensor<Self>,
        wv: IntTensor<Self>,
        pv: FloatTensor<Self>,
        formats: [BlockFormat; 3],
        aq: FloatTensor<Self>,
        bq: FloatTensor<Self>,
        ak: FloatTensor<Self>,
        bk: FloatTensor<Self>,
        av: FloatTensor<Self>,
        bv: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        spec: AttendSpec,
    ) -> FloatTensor<Self> {
        let bases = Bases::Each([
            Base::Blocks(wq, pq, formats[0]),
            Base::Blocks(wk, pk, formats[1]),
            Base::Blocks(wv, pv, formats[2]),
        ]);
        let factors = [aq, bq, ak, bk, av, bv];
        forward::<Self>(x, &bases, factors, (cos, sin), &spec).0
    }

    /// [`attend`] over the bases' rows joined in blocks `[(H + 2·KV)·hd,
    /// d]` (`words`, `params`): q's, then k's, then v's.
    #[fusion(default)]
    #[allow(clippy::too_many_arguments)]
    fn attend_joined(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
        aq: FloatTensor<Self>,
        bq: FloatTensor<Self>,
        ak: FloatTensor<Self>,
        bk: FloatTensor<Self>,
        av: FloatTensor<Self>,
        bv: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        spec: AttendSpec,
    ) -> FloatTensor<Self> {
        let bases = joined(words, params, format, &spec.dims);
        let factors = [aq, bq, ak, bk, av, bv];
        forward::<Self>(x, &bases, factors, (cos, sin), &spec).0
    }
}

/// q, k and v's bases joined in blocks, their rows in turn.
fn joined<B: Backend>(
    words: IntTensor<B>,
    params: FloatTensor<B>,
    format: BlockFormat,
    dims: &Dims,
) -> Bases<B, 3> {
    let (q, kv) = (dims.h * dims.hd, dims.kv * dims.hd);
    let rows = words.shape()[0];
    assert_eq!(rows, q + 2 * kv, "q, k and v's rows joined");
    Bases::Joined(words, params, format, [q, kv, kv])
}

impl AttendOps for Flex {}

#[cfg(any(feature = "webgpu", feature = "gpu"))]
impl AttendOps for burn_cubecl::CubeBackend {}

/// What the backward pass keeps: each adapter's saved values, attention's
/// inputs (q and k rotated) and its `o` and `lse`.
#[derive(Clone, Debug)]
struct State<B: Backend> {
    saved: [Saved<B>; 3],
    /// `[b, t, h, hd]`.
    q: FloatTensor<B>,
    /// `[b, t, kv, hd]`.
    k: FloatTensor<B>,
    /// `[b, t, kv, hd]`.
    v: FloatTensor<B>,
    /// `[b, t, h, hd]`.
    o: FloatTensor<B>,
    lse: FloatTensor<B>,
}

fn scale(dims: &Dims) -> f32 {
    1.0 / (dims.hd as f32).sqrt()
}

/// The forward pass on the inner backend: the output `[N, H·hd]` and what
/// the backward pass keeps.
fn forward<B: Backend + AttendOps>(
    x: FloatTensor<B>,
    bases: &Bases<B, 3>,
    factors: [FloatTensor<B>; 6],
    (cos, sin): (FloatTensor<B>, FloatTensor<B>),
    spec: &AttendSpec,
) -> (FloatTensor<B>, State<B>) {
    let Dims { b, h, kv, t, hd } = spec.dims;
    let ([q, k, v], saved) = project_each(&x, bases, factors, spec.adapters);
    // [N, H·hd] and [N, KV·hd], in one launch.
    let (q, k) = B::rope_pair(q, k, cos, sin, false);
    let q = B::float_reshape(q, Shape::new([b, t, h, hd]));
    let k = B::float_reshape(k, Shape::new([b, t, kv, hd]));
    let v = B::float_reshape(v, Shape::new([b, t, kv, hd]));
    let (o, lse) = B::attention_forward(q.clone(), k.clone(), v.clone(), scale(&spec.dims));
    let out = B::float_reshape(o.clone(), Shape::new([b * t, h * hd]));
    (
        out,
        State {
            saved,
            q,
            k,
            v,
            o,
            lse,
        },
    )
}

#[derive(Debug)]
struct AttendBackward;

impl<B: Backend + AttendOps> Backward<B, 7> for AttendBackward {
    /// The forward pass's values, the bases, RoPE's tables and the spec.
    type State = (
        State<B>,
        Bases<B, 3>,
        (FloatTensor<B>, FloatTensor<B>),
        AttendSpec,
    );

    fn backward(self, ops: Ops<Self::State, 7>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node); // [N, H·hd]
        // x, then A and B of q, k and v.
        let ids = ops.parents.map(|n| n.map(|n| n.id));
        let (state, bases, (cos, sin), spec) = ops.state;
        let Dims { b, h, kv, t, hd } = spec.dims;
        let n = b * t;
        let g = B::float_reshape(g, Shape::new([b, t, h, hd]));
        let (dq, dk, dv, _) = B::attention_backward(
            state.q,
            state.k,
            state.v,
            state.o,
            state.lse,
            g,
            scale(&spec.dims),
        );
        let dq = B::float_reshape(dq, Shape::new([n, h * hd]));
        let dk = B::float_reshape(dk, Shape::new([n, kv * hd]));
        // RoPE's transpose on both, in one launch.
        let (dq, dk) = B::rope_pair(dq, dk, cos, sin, true);
        let dv = B::float_reshape(dv, Shape::new([n, kv * hd]));
        let dx = backward_each([dq, dk, dv], state.saved, bases, &ids, grads);
        if let (Some(node), Some(dx)) = (ids[0], dx) {
            grads.register::<B>(node, dx);
        }
    }
}

/// A tensor of autodiff over `B`.
type Tracked<B, C> = FloatTensor<Autodiff<B, C>>;

/// The node over `bases` (the inner backend's), the six factors and RoPE's
/// tables.
fn node<B: Backend + AttendOps, C: CheckpointStrategy>(
    x: Tracked<B, C>,
    bases: Bases<B, 3>,
    factors: [Tracked<B, C>; 6],
    (cos, sin): (Tracked<B, C>, Tracked<B, C>),
    spec: AttendSpec,
) -> Tracked<B, C> {
    let tables = (Autodiff::<B, C>::inner(cos), Autodiff::<B, C>::inner(sin));
    let (x, x_node) = x.into_parts();
    let [f0, f1, f2, f3, f4, f5] = factors.map(|f| f.into_parts());
    let nodes = [x_node, f0.1, f1.1, f2.1, f3.1, f4.1, f5.1];
    let inner = [f0.0, f1.0, f2.0, f3.0, f4.0, f5.0];
    match AttendBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, state) = forward::<B>(x, &bases, inner, tables.clone(), &spec);
            prep.finish((state, bases, tables, spec), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward::<B>(x, &bases, inner, tables, &spec).0),
    }
}

impl<B: Backend + AttendOps, C: CheckpointStrategy> AttendOps for Autodiff<B, C> {
    fn attend_dense(
        x: FloatTensor<Self>,
        wq: FloatTensor<Self>,
        wk: FloatTensor<Self>,
        wv: FloatTensor<Self>,
        aq: FloatTensor<Self>,
        bq: FloatTensor<Self>,
        ak: FloatTensor<Self>,
        bk: FloatTensor<Self>,
        av: FloatTensor<Self>,
        bv: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        spec: AttendSpec,
    ) -> FloatTensor<Self> {
        let bases = Bases::Each([wq, wk, wv].map(|w| Base::Dense(Self::inner(w))));
        node::<B, C>(x, bases, [aq, bq, ak, bk, av, bv], (cos, sin), spec)
    }

    fn attend_blocks(
        x: FloatTensor<Self>,
        wq: IntTensor<Self>,
        pq: FloatTensor<Self>,
        wk: IntTensor<Self>,
        pk: FloatTensor<Self>,
        wv: IntTensor<Self>,
        pv: FloatTensor<Self>,
        formats: [BlockFormat; 3],
        aq: FloatTensor<Self>,
        bq: FloatTensor<Self>,
        ak: FloatTensor<Self>,
        bk: FloatTensor<Self>,
        av: FloatTensor<Self>,
        bv: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        spec: AttendSpec,
    ) -> FloatTensor<Self> {
        let base = |w, p, f| Base::Blocks(Self::int_inner(w), Self::inner(p), f);
        let bases = Bases::Each([
            base(wq, pq, formats[0]),
            base(wk, pk, formats[1]),
            base(wv, pv, formats[2]),
        ]);
        node::<B, C>(x, bases, [aq, bq, ak, bk, av, bv], (cos, sin), spec)
    }

    fn attend_joined(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
        aq: FloatTensor<Self>,
        bq: FloatTensor<Self>,
        ak: FloatTensor<Self>,
        bk: FloatTensor<Self>,
        av: FloatTensor<Self>,
        bv: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        spec: AttendSpec,
    ) -> FloatTensor<Self> {
        let (words, params) = (Self::int_inner(words), Self::inner(params));
        let bases = joined(words, params, format, &spec.dims);
        node::<B, C>(x, bases, [aq, bq, ak, bk, av, bv], (cos, sin), spec)
    }
}
