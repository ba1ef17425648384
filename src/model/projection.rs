//! An adapted projection with its frozen base in the same autodiff node, on
//! a GPU: `out = x·W + s·dropout(x)·A·B`.
//!
//! As two nodes (burn's product for `x·W`, then [`adapted`]) `x` gets two
//! gradients, `dY·Wᵀ` and the adapter's, and autodiff adds them: one more
//! launch per projection (seven a block, each pass). Here the backward pass
//! computes `dY·Wᵀ` itself and `shaders/lora_rows.wgsl` adds the adapter's
//! `dx` to it as it writes it, so `x` gets one gradient. The forward pass is
//! the base's product and [`adapted`]'s one launch, as before. Where the
//! projection's output is added to the residual stream (attention's `o`,
//! the MLP's `down`), that launch adds it too, and the stream's gradient is
//! the output's.
//!
//! The base is a dense f32 `[d_in, d_out]` weight or blocks `[d_out, d_in]`
//! multiplied where they lie (`model::blocks`), as `Frozen::apply` takes
//! them; a CPU-packed base keeps the two nodes.
//!
//! [`adapted`]: crate::model::adapted::adapted

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;

use crate::lora::LoraPair;
use crate::model::adapted::{
    AdaptedOps, Adapter, Saved, backward_into, backward_parts, forward_saved,
};
use crate::model::blocks::{BlockFormat, BlockOps, DeviceBlocks};
use crate::model::frozen::Frozen;

/// `x·W + s·dropout(x)·A·B (+ res)` for `x: [N, d_in]` as one node, for a
/// dense or blocks base, `res: [N, d_out]` the residual stream it is added
/// to (in the adapter's launch); `None` for a base the node does not take
/// (CPU-packed).
pub fn project(
    x: Tensor<2>,
    w: &Frozen,
    pair: &LoraPair,
    adapter: Adapter,
    res: Option<Tensor<2>>,
) -> Option<Tensor<2>> {
    let (a, b) = (
        pair.a.clone().into_dispatch(),
        pair.b.clone().into_dispatch(),
    );
    let x = x.into_dispatch();
    let res = res.map(|r| r.into_dispatch());
    let out = match w {
        Frozen::Dense(w) => {
            let w = w.clone().into_dispatch();
            match res {
                Some(res) => Dispatch::project_dense_res(x, w, a, b, res, adapter),
                None => Dispatch::project_dense(x, w, a, b, adapter),
            }
        }
        Frozen::Blocks(DeviceBlocks {
            format,
            words,
            params,
            ..
        }) => {
            let (words, params) = (
                words.clone().into_dispatch(),
                params.clone().into_dispatch(),
            );
            match res {
                Some(res) => {
                    Dispatch::project_blocks_res(x, words, params, *format, a, b, res, adapter)
                }
                None => Dispatch::project_blocks(x, words, params, *format, a, b, adapter),
            }
        }
        Frozen::Packed(_) => return None,
    };
    Some(Tensor::from_dispatch(out)) // [N, d_out]
}

/// The adapted projection over its base as backend operations: only
/// autodiff's differs from the base's product followed by the adapter's
/// launch.
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
        forward_saved::<Self>(y, x, a, b, adapter, None).0
    }

    /// `res + x·W + s·dropout(x)·A·B`, `W: [d_in, d_out]` dense.
    #[fusion(default)]
    fn project_dense_res(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        res: FloatTensor<Self>,
        adapter: Adapter,
    ) -> FloatTensor<Self> {
        let y = Self::float_matmul(x.clone(), w);
        forward_saved::<Self>(y, x, a, b, adapter, Some(res)).0
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
        forward_saved::<Self>(y, x, a, b, adapter, None).0
    }

    /// `res + x·Wᵀ + s·dropout(x)·A·B`, `W: [d_out, d_in]` in blocks.
    #[fusion(default)]
    #[allow(clippy::too_many_arguments)]
    fn project_blocks_res(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        res: FloatTensor<Self>,
        adapter: Adapter,
    ) -> FloatTensor<Self> {
        let y = Self::blocks_matmul(x.clone(), words, params, format);
        forward_saved::<Self>(y, x, a, b, adapter, Some(res)).0
    }
}

impl ProjectionOps for Flex {}

#[cfg(any(feature = "webgpu", feature = "gpu"))]
impl ProjectionOps for burn_cubecl::CubeBackend {}

/// A frozen base as a node keeps it (shared, not copied).
#[derive(Clone, Debug)]
pub(crate) enum Base<B: Backend> {
    /// `[d_in, d_out]` f32.
    Dense(FloatTensor<B>),
    /// `[d_out, d_in]` in blocks.
    Blocks(IntTensor<B>, FloatTensor<B>, BlockFormat),
}

impl<B: Backend + BlockOps> Base<B> {
    /// `x·W`: `[N, d_in]` to `[N, d_out]`.
    pub(crate) fn forward(&self, x: FloatTensor<B>) -> FloatTensor<B> {
        match self {
            Base::Dense(w) => B::float_matmul(x, w.clone()),
            Base::Blocks(words, params, format) => {
                B::blocks_matmul(x, words.clone(), params.clone(), *format)
            }
        }
    }

    /// `dY·Wᵀ`: `[N, d_out]` to `[N, d_in]`.
    pub(crate) fn input_grad(&self, g: FloatTensor<B>) -> FloatTensor<B> {
        match self {
            Base::Dense(w) => B::float_matmul(g, B::float_transpose(w.clone())),
            Base::Blocks(words, params, format) => {
                B::blocks_matmul_grad(g, words.clone(), params.clone(), *format)
            }
        }
    }
}

/// A grouped node's frozen bases (`model::attend`, `model::gate_up`).
#[derive(Clone, Debug)]
pub(crate) enum Bases<B: Backend, const K: usize> {
    /// Each projection's own.
    Each([Base<B>; K]),
    /// Their rows joined in blocks `[Σ rows, d_in]` (`words`, `params`),
    /// each projection's `rows` in turn: one launch for all their products
    /// (`shaders/matmul_blocks.wgsl` in parts).
    Joined(IntTensor<B>, FloatTensor<B>, BlockFormat, [usize; K]),
}

impl<B: Backend + BlockOps, const K: usize> Bases<B, K> {
    /// Joined bases' products `x·W` `[N, rows]` each, in one launch;
    /// `None` for bases of their own.
    fn joined_forward(&self, x: &FloatTensor<B>) -> Option<Vec<FloatTensor<B>>> {
        let Bases::Joined(words, params, format, rows) = self else {
            return None;
        };
        let (words, params, x) = (words.clone(), params.clone(), x.clone());
        Some(match rows.as_slice() {
            [first, _] => {
                let (a, b) = B::blocks_matmul_pair(x, words, params, *format, *first);
                vec![a, b]
            }
            [a, b, _] => {
                let split = [*a, *b];
                let (q, k, v) = B::blocks_matmul_triple(x, words, params, *format, split);
                vec![q, k, v]
            }
            _ => unreachable!("two or three joined bases"),
        })
    }
}

/// Projections of one input `x: [N, d]` for a grouped node: the bases'
/// products and each adapter's launch (`factors` the adapters' `A, B` in
/// turn), giving each output and what its backward pass keeps.
pub(crate) fn project_each<B: Backend + ProjectionOps, const K: usize>(
    x: &FloatTensor<B>,
    bases: &Bases<B, K>,
    factors: impl IntoIterator<Item = FloatTensor<B>>,
    adapters: [Adapter; K],
) -> ([FloatTensor<B>; K], [Saved<B>; K]) {
    let mut factors = factors.into_iter();
    let mut joined = bases.joined_forward(x).map(Vec::into_iter);
    let mut each = adapters.into_iter().enumerate().map(|(i, adapter)| {
        let y = match (bases, joined.as_mut()) {
            (Bases::Each(bases), _) => bases[i].forward(x.clone()),
            (_, Some(ys)) => ys.next().expect("one output a base"),
            (Bases::Joined(..), None) => unreachable!("joined bases' outputs"),
        }; // [N, d_out]
        let (a, b) = (factors.next().expect("A"), factors.next().expect("B"));
        forward_saved(y, x.clone(), a, b, adapter, None)
    });
    let mut saved = Vec::with_capacity(K);
    let outs = std::array::from_fn(|_| {
        let (out, s) = each.next().expect("one per base");
        saved.push(s);
        out
    });
    let saved = saved
        .try_into()
        .unwrap_or_else(|_| unreachable!("one per base"));
    (outs, saved)
}

/// The backward pass of a grouped node's projections for their outputs'
/// gradients `gs` (`ids`: `x`'s node, then each adapter's `A` and `B`):
/// registers each factor's gradient, and returns `x`'s when it needs one,
/// each part (the bases' `dY·Wᵀ`, the projections' before it) added in an
/// adapter's launch (`lora_rows`' `acc` and `res`) rather than by autodiff.
/// Joined bases give their `dY·Wᵀ` summed, in one launch.
pub(crate) fn backward_each<B: Backend + ProjectionOps, const K: usize>(
    gs: [FloatTensor<B>; K],
    saved: [Saved<B>; K],
    bases: Bases<B, K>,
    ids: &[Option<NodeId>],
    grads: &mut Gradients,
) -> Option<FloatTensor<B>> {
    assert_eq!(
        ids.len(),
        1 + 2 * K,
        "x and an A and a B for each projection"
    );
    let want_dx = ids[0].is_some();
    // Each base's dY·Wᵀ `[N, d]` in its turn, or joined ones' summed, first.
    let (mut each, mut sum) = match bases {
        Bases::Each(bases) => (Some(bases.into_iter()), None),
        Bases::Joined(words, params, format, _) => (
            None,
            want_dx.then(|| joined_grad::<B>(&gs, words, params, format)),
        ),
    };
    let mut dx = None; // [N, d]
    for (i, (g, saved)) in gs.into_iter().zip(saved).enumerate() {
        let acc = match each.as_mut().map(|bases| bases.next().expect("a base")) {
            Some(base) => want_dx.then(|| base.input_grad(g.clone())),
            None => sum.take(),
        };
        let factors = [ids[1 + 2 * i], ids[2 + 2 * i]];
        dx = backward_parts(g, saved, factors, want_dx, acc, dx, grads);
    }
    dx
}

/// `Σ gs[i]·W_i` `[N, d_in]` for bases joined in blocks, in one launch.
fn joined_grad<B: Backend + BlockOps>(
    gs: &[FloatTensor<B>],
    words: IntTensor<B>,
    params: FloatTensor<B>,
    format: BlockFormat,
) -> FloatTensor<B> {
    match gs {
        [g0, g1] => B::blocks_matmul_grad_pair(g0.clone(), g1.clone(), words, params, format),
        [g0, g1, g2] => {
            let (g0, g1, g2) = (g0.clone(), g1.clone(), g2.clone());
            B::blocks_matmul_grad_triple(g0, g1, g2, words, params, format)
        }
        _ => unreachable!("two or three joined bases"),
    }
}

/// The backward pass of both nodes for `g = dL/d out` `[N, d_out]`: the
/// base's `dY·Wᵀ` (when `x` needs a gradient) and the adapter's parts.
fn backward<B: Backend + ProjectionOps>(
    g: FloatTensor<B>,
    (saved, base): (Saved<B>, Base<B>),
    ids: [Option<NodeId>; 3],
    grads: &mut Gradients,
) {
    let dx_base = ids[0].is_some().then(|| base.input_grad(g.clone())); // [N, d_in]
    backward_into(g, saved, ids, dx_base, grads);
}

#[derive(Debug)]
struct ProjectionBackward;

impl<B: Backend + ProjectionOps> Backward<B, 3> for ProjectionBackward {
    /// The adapter's saved values and the base.
    type State = (Saved<B>, Base<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node); // [N, d_out]
        backward(g, ops.state, ops.parents.map(|n| n.map(|n| n.id)), grads);
    }
}

/// The node with the residual stream as a fourth parent: its gradient is
/// the output's.
#[derive(Debug)]
struct ResidualProjectionBackward;

impl<B: Backend + ProjectionOps> Backward<B, 4> for ResidualProjectionBackward {
    /// The adapter's saved values and the base.
    type State = (Saved<B>, Base<B>);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node); // [N, d_out]
        let [x, a, b, res] = ops.parents.map(|n| n.map(|n| n.id));
        if let Some(res) = res {
            grads.register::<B>(res, g.clone());
        }
        backward(g, ops.state, [x, a, b], grads);
    }
}

/// The node: the base's product, then the adapter's launch (adding `res`);
/// backward, the base's `dY·Wᵀ` and the adapter's `dx` in the adapter's
/// launch, and `res`'s gradient the output's.
fn project_node<B: Backend + ProjectionOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    base: Base<B>,
    a: FloatTensor<Autodiff<B, C>>,
    b: FloatTensor<Autodiff<B, C>>,
    res: Option<FloatTensor<Autodiff<B, C>>>,
    adapter: Adapter,
) -> FloatTensor<Autodiff<B, C>> {
    let (x, x_node) = x.into_parts();
    let (a, a_node) = a.into_parts();
    let (b, b_node) = b.into_parts();
    let run = |res: Option<FloatTensor<B>>| {
        let y = base.forward(x.clone()); // [N, d_out]
        forward_saved(y, x, a, b, adapter, res)
    };
    match res.map(|r| r.into_parts()) {
        None => match ProjectionBackward
            .prepare::<C>([x_node, a_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, saved) = run(None);
                prep.finish((saved, base), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(run(None).0),
        },
        Some((res, res_node)) => match ResidualProjectionBackward
            .prepare::<C>([x_node, a_node, b_node, res_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, saved) = run(Some(res));
                prep.finish((saved, base), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(run(Some(res)).0),
        },
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
        project_node::<B, C>(x, Base::Dense(Self::inner(w)), a, b, None, adapter)
    }

    fn project_dense_res(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        res: FloatTensor<Self>,
        adapter: Adapter,
    ) -> FloatTensor<Self> {
        project_node::<B, C>(x, Base::Dense(Self::inner(w)), a, b, Some(res), adapter)
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
        let base = Base::Blocks(Self::int_inner(words), Self::inner(params), format);
        project_node::<B, C>(x, base, a, b, None, adapter)
    }

    fn project_blocks_res(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        params: FloatTensor<Self>,
        format: BlockFormat,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        res: FloatTensor<Self>,
        adapter: Adapter,
    ) -> FloatTensor<Self> {
        let base = Base::Blocks(Self::int_inner(words), Self::inner(params), format);
        project_node::<B, C>(x, base, a, b, Some(res), adapter)
    }
}
