//! The MLP's first half on a GPU as one autodiff node: the gate and up
//! projections (each its frozen base and its adapter) and SwiGLU, from the
//! normed input `x: [N, d]` to `silu(gate) ⊙ up` `[N, F]`.
//!
//! As separate nodes (`model::projection` twice, `model::swiglu`) `x` got
//! two gradients, which autodiff added: a launch a block, each step. Here
//! the up adapter's launch adds the gate's part of `x`'s gradient to its
//! own and the base's (`shaders/lora_rows.wgsl`'s `res` and `acc`), so `x`
//! gets one. The other launches, and the values kept for the backward pass,
//! are the separate nodes'.
//!
//! Taken by `Llama::mlp` on a GPU when both projections are adapted and
//! their bases are both dense or both blocks; otherwise the separate nodes.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension,
};
use burn::tensor::{Slice, Tensor};

use crate::lora::LoraPair;
use crate::model::adapted::{Adapter, Saved};
use crate::model::blocks::{BlockFormat, BlockOps, DeviceBlocks};
use crate::model::frozen::Frozen;
use crate::model::projection::{Base, Bases, ProjectionOps, backward_each, project_each};
use crate::model::swiglu::SwigluOps;

/// `silu(x·Wg + …) ⊙ (x·Wu + …)` `[N, F]` for the normed `x: [N, d]`
/// through the adapted gate and up projections of `bases` (`adapters` in
/// that order), as one node; `None` when the bases are not both dense or
/// both blocks. `joined`, the two bases' rows joined in blocks, takes their
/// place where there is one: one launch for both products.
pub fn gate_up(
    x: Tensor<2>,
    bases: [&Frozen; 2],
    joined: Option<&DeviceBlocks>,
    pairs: [&LoraPair; 2],
    adapters: [Adapter; 2],
) -> Option<Tensor<2>> {
    let [ag, bg, au, bu] =
        [&pairs[0].a, &pairs[0].b, &pairs[1].a, &pairs[1].b].map(|f| f.clone().into_dispatch());
    let x = x.into_dispatch();
    let out = match (bases, joined) {
        (_, Some(w)) => {
            let (words, params) = (w.words.clone(), w.params.clone());
            let (words, params) = (words.into_dispatch(), params.into_dispatch());
            Dispatch::gate_up_joined(x, words, params, w.format, ag, bg, au, bu, adapters)
        }
        ([Frozen::Dense(g), Frozen::Dense(u)], None) => {
            let [wg, wu] = [g, u].map(|w| w.clone().into_dispatch());
            Dispatch::gate_up_dense(x, wg, wu, ag, bg, au, bu, adapters)
        }
        ([Frozen::Blocks(g), Frozen::Blocks(u)], None) => {
            let [wg, wu] = [g, u].map(|b| b.words.clone().into_dispatch());
            let [pg, pu] = [g, u].map(|b| b.params.clone().into_dispatch());
            let formats = [g, u].map(|b: &DeviceBlocks| b.format);
            Dispatch::gate_up_blocks(x, wg, pg, wu, pu, formats, ag, bg, au, bu, adapters)
        }
        _ => return None,
    };
    Some(Tensor::from_dispatch(out)) // [N, F]
}

/// The node as backend operations: only autodiff's differs from the
/// separate nodes' forward passes in a row. Each takes x, the two bases and
/// the two adapters' `A` and `B` (gate, up).
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "webgpu", feature = "gpu")),
    Fusion: cfg(any(feature = "webgpu", feature = "gpu")),
    Autodiff
)]
pub trait GateUpOps: ProjectionOps + SwigluOps {
    /// [`gate_up`] over dense `[d, F]` bases.
    #[fusion(default)]
    #[allow(clippy::too_many_arguments)]
    fn gate_up_dense(
        x: FloatTensor<Self>,
        wg: FloatTensor<Self>,
        wu: FloatTensor<Self>,
        ag: FloatTensor<Self>,
        bg: FloatTensor<Self>,
        au: FloatTensor<Self>,
        bu: FloatTensor<Self>,
        adapters: [Adapter; 2],
    ) -> FloatTensor<Self> {
        let bases = Bases::Each([wg, wu].map(Base::Dense));
        forward::<Self>(x, &bases, [ag, bg, au, bu], adapters).0
    }

    /// [`gate_up`] over `[F, d]` bases in blocks (`words`, `params`).
    #[fusion(default)]
    #[allow(clippy::too_many_arguments)]
    fn gate_up_blocks(
        x: FloatTensor<Self>,
        wg: IntTensor<Self>,
        pg: FloatTensor<Self>,
        wu: IntTensor<Self>,
        pu: FloatTensor<Self>,
        formats: [BlockFormat; 2],
        ag: FloatTensor<Self>,
        bg: FloatTensor<Self>,
        au: FloatTensor<Self>,
        bu: FloatTensor<Self>,
        adapters: [Adapter; 2],
    ) -> FloatTensor<Self> {
        let bases = Bases::Each([
            Base::Blocks(wg, pg, formats[0]),
            Base::Blocks(wu, pu, formats[1]),
        ]);
        forward::<Self>(x, &bases, [ag, bg, au, bu], adapters).0
    }

    /// [`gate_up`] over the bases' rows joined in blocks `[2·F, d]`
    /// (`words`, `params`): gate's, then up's.
    #[fusion(default)]
    #[allow(clippy::too_many_arguments)]
    fn gate_up_joined(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
        ag: FloatTensor<Self>,
        bg: FloatTensor<Self>,
        au: FloatTensor<Self>,
        bu: FloatTensor<Self>,
        adapters: [Adapter; 2],
    ) -> FloatTensor<Self> {
        let bases = joined(words, params, format);
        forward::<Self>(x, &bases, [ag, bg, au, bu], adapters).0
    }
}

/// Gate's and up's bases joined in blocks `[2·F, d]`, gate's rows first.
fn joined<B: Backend + BlockOps>(
    words: IntTensor<B>,
    params: FloatTensor<B>,
    format: BlockFormat,
) -> Bases<B, 2> {
    let rows = words.shape()[0];
    assert!(
        rows.is_multiple_of(2),
        "gate's and up's rows joined: {rows}"
    );
    Bases::Joined(words, params, format, [rows / 2, rows / 2])
}

impl GateUpOps for Flex {}

#[cfg(any(feature = "webgpu", feature = "gpu"))]
impl GateUpOps for burn_cubecl::CubeBackend {}

/// What the backward pass keeps: each adapter's saved values and SwiGLU's
/// inputs `[N, F]`.
#[derive(Clone, Debug)]
struct State<B: Backend> {
    saved: [Saved<B>; 2],
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
}

/// The forward pass on the inner backend: the output `[N, F]` and what the
/// backward pass keeps.
fn forward<B: Backend + GateUpOps>(
    x: FloatTensor<B>,
    bases: &Bases<B, 2>,
    factors: [FloatTensor<B>; 4],
    adapters: [Adapter; 2],
) -> (FloatTensor<B>, State<B>) {
    let ([gate, up], saved) = project_each(&x, bases, factors, adapters); // [N, F] each
    let h = B::swiglu(gate.clone(), up.clone()); // [N, F]
    (h, State { saved, gate, up })
}

#[derive(Debug)]
struct GateUpBackward;

impl<B: Backend + GateUpOps> Backward<B, 5> for GateUpBackward {
    /// The forward pass's values and the bases.
    type State = (State<B>, Bases<B, 2>);

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dh = grads.consume::<B>(&ops.node); // [N, F]
        // x, then A and B of gate and up.
        let ids = ops.parents.map(|n| n.map(|n| n.id));
        let (state, bases) = ops.state;
        let n = state.gate.shape().dims::<2>()[0];
        let both = B::swiglu_backward(state.gate, state.up, dh); // [2·N, F]: dgate, dup
        let half =
            |rows: std::ops::Range<usize>| B::float_slice(both.clone(), &[Slice::from(rows)]);
        // The base's part and the gate's, added in the adapter's launch.
        let dx = backward_each(
            [half(0..n), half(n..2 * n)],
            state.saved,
            bases,
            &ids,
            grads,
        );
        if let (Some(node), Some(dx)) = (ids[0], dx) {
            grads.register::<B>(node, dx);
        }
    }
}

/// The node over `bases` (the inner backend's) and the four factors.
fn node<B: Backend + GateUpOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    bases: Bases<B, 2>,
    factors: [FloatTensor<Autodiff<B, C>>; 4],
    adapters: [Adapter; 2],
) -> FloatTensor<Autodiff<B, C>> {
    let (x, x_node) = x.into_parts();
    let [f0, f1, f2, f3] = factors.map(|f| f.into_parts());
    let nodes = [x_node, f0.1, f1.1, f2.1, f3.1];
    let inner = [f0.0, f1.0, f2.0, f3.0];
    match GateUpBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, state) = forward::<B>(x, &bases, inner, adapters);
            prep.finish((state, bases), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward::<B>(x, &bases, inner, adapters).0),
    }
}

impl<B: Backend + GateUpOps, C: CheckpointStrategy> GateUpOps for Autodiff<B, C> {
    fn gate_up_dense(
        x: FloatTensor<Self>,
        wg: FloatTensor<Self>,
        wu: FloatTensor<Self>,
        ag: FloatTensor<Self>,
        bg: FloatTensor<Self>,
        au: FloatTensor<Self>,
        bu: FloatTensor<Self>,
        adapters: [Adapter; 2],
    ) -> FloatTensor<Self> {
        let bases = Bases::Each([wg, wu].map(|w| Base::Dense(Self::inner(w))));
        node::<B, C>(x, bases, [ag, bg, au, bu], adapters)
    }

    fn gate_up_blocks(
        x: FloatTensor<Self>,
        wg: IntTensor<Self>,
        pg: FloatTensor<Self>,
        wu: IntTensor<Self>,
        pu: FloatTensor<Self>,
        formats: [BlockFormat; 2],
        ag: FloatTensor<Self>,
        bg: FloatTensor<Self>,
        au: FloatTensor<Self>,
        bu: FloatTensor<Self>,
        adapters: [Adapter; 2],
    ) -> FloatTensor<Self> {
        let base = |w, p, f| Base::Blocks(Self::int_inner(w), Self::inner(p), f);
        let bases = Bases::Each([base(wg, pg, formats[0]), base(wu, pu, formats[1])]);
        node::<B, C>(x, bases, [ag, bg, au, bu], adapters)
    }

    fn gate_up_joined(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
        ag: FloatTensor<Self>,
        bg: FloatTensor<Self>,
        au: FloatTensor<Self>,
        bu: FloatTensor<Self>,
        adapters: [Adapter; 2],
    ) -> FloatTensor<Self> {
        let bases = joined(Self::int_inner(words), Self::inner(params), format);
        node::<B, C>(x, bases, [ag, bg, au, bu], adapters)
    }
}
