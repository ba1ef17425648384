//! The Llama forward pass (transformers' `modeling_llama.py`): pre-norm
//! blocks of RMSNorm → grouped-query attention with rotate-half RoPE →
//! residual, RMSNorm → SwiGLU MLP → residual; final RMSNorm; LM head tied to
//! the embedding or not. LoRA adapters, when given, are added to each
//! targeted projection as `s·dropout(x)·A·B`.
//!
//! The other families ([`Arch`](crate::model::config::Arch)) add their
//! parts where transformers' `modeling_qwen2.py`, `modeling_qwen3.py` and
//! `modeling_gemma3.py` do: q/k/v biases after the projections; q/k head
//! norms before RoPE; Gemma's √d embedding scale, norms after attention and
//! the MLP, GeGLU, attention scale, and sliding-window layers with their own
//! RoPE tables. Our GPU nodes that fuse attention assume Llama's plain
//! attention; a layer with any of these parts runs the unfused way.
//!
//! Activations are kept 2-D `[N = B·T, d]` outside attention, so every
//! projection is one matmul against a `[d_in, d_out]` weight.

use burn::tensor::activation::gelu_approximate;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Distribution, Int, Shape, Tensor, TensorData};

use crate::cpu::lora::lora_delta;
use crate::lora::{LoraAdapters, LoraPair, Target};
use crate::model::adapted::{Adapter, Dropout, adapted, dropout_key};
use crate::model::attend::{AttendSpec, attend};
use crate::model::attention::{Dims, causal_attention};
use crate::model::blocks::{DeviceBlocks, FEW_ROWS};
use crate::model::config::{Activation, LlamaConfig};
use crate::model::frozen::Frozen;
use crate::model::gate_up::gate_up;
use crate::model::norm;
use crate::model::projection;
use crate::model::rope::rope;
use crate::model::swiglu::swiglu;
use crate::model::weights::LlamaWeights;

/// A loaded model: configuration plus frozen weights on a device.
#[derive(Clone, Debug)]
pub struct Llama {
    /// Hyper-parameters read from the checkpoint.
    pub config: LlamaConfig,
    /// Frozen weights.
    pub weights: LlamaWeights,
    /// Where the weights live.
    pub device: Device,
}

/// Keys and values of past positions, per layer `[B, KV, T_past, hd]`
/// (before the grouped-query expansion), for incremental decoding.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<(Tensor<4>, Tensor<4>)>,
}

impl KvCache {
    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends layer `i`'s new keys and values `[B, KV, T, hd]` to its
    /// cached ones and returns them all `[B, KV, T_past + T, hd]`.
    fn extend(&mut self, i: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = match self.layers.get(i) {
            Some((pk, pv)) => (
                Tensor::cat(vec![pk.clone(), k], 2),
                Tensor::cat(vec![pv.clone(), v], 2),
            ),
            None => (k, v),
        };
        if self.layers.len() > i {
            self.layers[i] = (k.clone(), v.clone());
        } else {
            self.layers.push((k.clone(), v.clone()));
        }
        (k, v)
    }
}

/// What every block of one forward pass shares (see [`Llama::span`]).
#[derive(Clone, Debug)]
pub struct Span {
    b: usize,
    t: usize,
    start: usize,
    /// RoPE `cos` and signed `sin` (see [`rope_tables`]): `[T, head_dim]`.
    cos: Tensor<2>,
    sin: Tensor<2>,
    /// The sliding layers' tables, where their RoPE base differs.
    local: Option<(Tensor<2>, Tensor<2>)>,
    /// On a GPU: adapters, RoPE and causal attention run as nodes of our
    /// kernels (`model::adapted`, `model::rope`, `model::attention`) on the
    /// projections' own layout `[B·T, heads·hd]`.
    gpu: bool,
    /// Where LoRA dropout's masks come from on a GPU (see
    /// [`Span::with_dropout_seed`]).
    dropout_seed: u64,
    /// `[B, H, T, start + T]`, true where masked; `None` for plain causal.
    mask: Option<Tensor<4, Bool>>,
    /// The same for sliding layers, when some key lies outside the window.
    window_mask: Option<Tensor<4, Bool>>,
}

impl Span {
    /// The span with LoRA dropout's masks on a GPU drawn from `seed` (one
    /// per step and micro-batch; each layer and target derives its own key
    /// from it, so a recomputed block draws its first pass's masks). The
    /// CPU draws its masks from the device's generator instead.
    pub fn with_dropout_seed(mut self, seed: u64) -> Self {
        self.dropout_seed = seed;
        self
    }

    /// The span run the GPU's way on any device: adapters, RoPE and
    /// attention as our nodes (the tests compare the two ways on the CPU).
    pub fn with_gpu_ops(mut self) -> Self {
        self.gpu = true;
        self
    }

    /// The RoPE tables of a layer that slides or not.
    fn tables(&self, sliding: bool) -> (Tensor<2>, Tensor<2>) {
        match (&self.local, sliding) {
            (Some((cos, sin)), true) => (cos.clone(), sin.clone()),
            _ => (self.cos.clone(), self.sin.clone()),
        }
    }
}

/// How a forward pass treats the adapters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Dropout off.
    Eval,
    /// Dropout on (when the adapter config has any).
    Train,
}

/// `cos` and signed `sin` tables `[T, head_dim]` for positions
/// `start..start+T`, as transformers' `LlamaRotaryEmbedding` (`emb =
/// cat(freqs, freqs)`), with rotate-half's minus folded into the first half
/// of `sin` (see [`apply_rope`]).
fn rope_tables(
    theta: f64,
    hd: usize,
    start: usize,
    len: usize,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let half = hd / 2;
    let mut cos = Vec::with_capacity(len * hd);
    let mut sin = Vec::with_capacity(len * hd);
    for pos in start..start + len {
        let row: Vec<f64> = (0..half)
            .map(|i| pos as f64 / theta.powf(2.0 * i as f64 / hd as f64))
            .collect();
        for sign in [-1.0, 1.0] {
            cos.extend(row.iter().map(|f| f.cos() as f32));
            sin.extend(row.iter().map(|f| (sign * f.sin()) as f32));
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [len, hd]), device),
        Tensor::from_data(TensorData::new(sin, [len, hd]), device),
    )
}

/// Applies RoPE to `x: [B, H, T, hd]` with a span's tables `[T, hd]`:
/// `x·cos + rotate_half(x)·sin`, `rotate_half([x1, x2]) = [-x2, x1]`. The
/// minus is already in the first half of `sin` (the same products, exactly),
/// so only the halves are swapped, by slicing and joining. This is the
/// CPU's way; a GPU runs [`rope`] on the projections as they lie.
fn apply_rope(x: Tensor<4>, (cos, sin): &(Tensor<2>, Tensor<2>)) -> Tensor<4> {
    let [b, h, t, hd] = x.dims();
    let half = hd / 2;
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, half..hd]);
    let swapped = Tensor::cat(vec![x2, x1], 3); // [x2, x1]
    let cos = cos.clone().unsqueeze::<4>(); // [1, 1, T, hd]
    let sin = sin.clone().unsqueeze::<4>();
    x * cos + swapped * sin
}

/// RMSNorm over the last dim of `x: [N, d]` with weight `[d]`: our node
/// ([`norm::rms_norm`]) when `ours` (on a GPU), else burn's ops.
fn rms_norm(x: Tensor<2>, weight: &Tensor<1>, eps: f64, ours: bool) -> Tensor<2> {
    if ours {
        return norm::rms_norm(x, weight.clone(), eps);
    }
    let variance = x.clone().square().mean_dim(1); // [N, 1]
    let normed = x * variance.add_scalar(eps).sqrt().recip();
    normed * weight.clone().unsqueeze::<2>()
}

/// RMSNorm over each head of `x: [N, n·hd]` with weight `[hd]` (Qwen3's
/// and Gemma's q/k norms).
fn head_norm(x: Tensor<2>, weight: &Tensor<1>, eps: f64, ours: bool) -> Tensor<2> {
    let [rows, width] = x.dims();
    let hd = weight.dims()[0];
    let heads = x.reshape([rows * width / hd, hd]); // [N·n, hd]
    rms_norm(heads, weight, eps, ours).reshape([rows, width]) // [N, n·hd]
}

/// `x + b` for `x: [N, n]` and a bias `b: [n]`.
fn add_bias(x: Tensor<2>, bias: &Tensor<1>) -> Tensor<2> {
    x + bias.clone().unsqueeze::<2>()
}

impl Llama {
    /// The projection `x·W (+ s·dropout(x)·A·B)` of layer `layer`.
    fn project(
        &self,
        x: &Tensor<2>,
        layer: usize,
        target: Target,
        span: &Span,
        lora: Option<&LoraAdapters>,
        mode: Mode,
    ) -> Tensor<2> {
        self.project_onto(None, x, layer, target, span, lora, mode)
    }

    /// The base of `target` in layer `layer`, its adapter's factors, and
    /// the adapter's scale and dropout (the GPU's: a hash of each value's
    /// index and a key of the seed, the layer and the target), when it is
    /// adapted.
    fn adapted<'a>(
        &'a self,
        layer: usize,
        target: Target,
        span: &Span,
        lora: Option<&'a LoraAdapters>,
        mode: Mode,
    ) -> Option<(&'a Frozen, &'a LoraPair, Adapter)> {
        let w = &self.weights.layers[layer].proj[target.index()];
        let adapters = lora?;
        let pair = adapters.get(layer, target)?;
        let p = adapters.config.dropout;
        let dropout = (mode == Mode::Train && p > 0.0)
            .then(|| Dropout::new(p, dropout_key(span.dropout_seed, layer, target.index())));
        let scale = adapters.config.scale() as f32;
        Some((w, pair, Adapter { scale, dropout }))
    }

    /// Attention's output `[N, H·hd]` for the normed `xn: [N, d]` of layer
    /// `layer` as one node (`model::attend`), on a GPU when q, k and v are
    /// all adapted and their bases alike; `None` otherwise.
    fn attend(
        &self,
        xn: &Tensor<2>,
        layer: usize,
        span: &Span,
        lora: Option<&LoraAdapters>,
        mode: Mode,
    ) -> Option<Tensor<2>> {
        let c = &self.config;
        let part = |t| self.adapted(layer, t, span, lora, mode);
        let [(wq, pq, aq), (wk, pk, ak), (wv, pv, av)] =
            [part(Target::Q)?, part(Target::K)?, part(Target::V)?];
        let dims = Dims {
            b: span.b,
            h: c.num_heads,
            kv: c.num_kv_heads,
            t: span.t,
            hd: c.head_dim,
        };
        let spec = AttendSpec {
            adapters: [aq, ak, av],
            dims,
        };
        let tables = span.tables(c.window(layer).is_some());
        let joined = joined_for(&self.weights.layers[layer].qkv, xn);
        attend(xn.clone(), [wq, wk, wv], joined, [pq, pk, pv], spec, tables)
    }

    /// `silu(gate) ⊙ up` `[N, F]` for the normed `xn: [N, d]` of layer
    /// `layer` as one node (`model::gate_up`), on a GPU when both are
    /// adapted and their bases alike; `None` otherwise.
    fn gate_up(
        &self,
        xn: &Tensor<2>,
        layer: usize,
        span: &Span,
        lora: Option<&LoraAdapters>,
        mode: Mode,
    ) -> Option<Tensor<2>> {
        let part = |t| self.adapted(layer, t, span, lora, mode);
        let [(wg, pg, ag), (wu, pu, au)] = [part(Target::Gate)?, part(Target::Up)?];
        let joined = joined_for(&self.weights.layers[layer].gate_up, xn);
        gate_up(xn.clone(), [wg, wu], joined, [pg, pu], [ag, au])
    }

    /// `res + x·W (+ s·dropout(x)·A·B)`: the projection added to the
    /// residual stream `res`, on a GPU in the adapter's launch.
    #[allow(clippy::too_many_arguments)]
    fn project_onto(
        &self,
        res: Option<Tensor<2>>,
        x: &Tensor<2>,
        layer: usize,
        target: Target,
        span: &Span,
        lora: Option<&LoraAdapters>,
        mode: Mode,
    ) -> Tensor<2> {
        let plus = |y: Tensor<2>, res: Option<Tensor<2>>| match res {
            Some(res) => res + y,
            None => y,
        };
        let w = &self.weights.layers[layer].proj[target.index()];
        let Some((_, pair, adapter)) = self.adapted(layer, target, span, lora, mode) else {
            return plus(w.apply(x.clone()), res); // [N, d_out]
        };
        let (scale, p) = (adapter.scale, lora.map_or(0.0, |l| l.config.dropout));
        if span.gpu {
            // The base, the adapter and the residual as one node, where it
            // takes the base.
            if let Some(out) = projection::project(x.clone(), w, pair, adapter, res.clone()) {
                return out; // [N, d_out]
            }
            let y = w.apply(x.clone());
            let out = adapted(y, x.clone(), pair.a.clone(), pair.b.clone(), adapter);
            return plus(out, res);
        }
        let y = w.apply(x.clone()); // [N, d_out]
        let LoraPair { a, b } = pair;
        let x = if mode == Mode::Train && p > 0.0 {
            // The backward pass keeps the bool mask, not an f32 one.
            let keep = Tensor::<2>::random(x.dims(), Distribution::Bernoulli(1.0 - p), &x.device());
            let scale = 1.0f32 / (1.0 - p) as f32;
            x.clone()
                .mask_fill(keep.equal_elem(0.0), 0.0)
                .mul_scalar(scale)
        } else {
            x.clone()
        };
        plus(y + lora_delta(x, a.clone(), b.clone(), scale), res) // [N, d_out]
    }

    /// Runs the blocks on `ids: [B, T]` and returns the final-normed hidden
    /// states `[B·T, d]`.
    pub fn hidden(
        &self,
        ids: Tensor<2, Int>,
        lora: Option<&LoraAdapters>,
        mode: Mode,
    ) -> Tensor<2> {
        self.hidden_cached(ids, None, lora, mode)
    }

    /// As [`Llama::hidden`], continuing from (and extending) `cache` when given.
    pub fn hidden_cached(
        &self,
        ids: Tensor<2, Int>,
        cache: Option<&mut KvCache>,
        lora: Option<&LoraAdapters>,
        mode: Mode,
    ) -> Tensor<2> {
        let [b, t] = ids.dims();
        let start = cache.as_ref().map_or(0, |c| c.len());
        let span = self.span(b, t, start);
        self.hidden_in(ids, &span, cache, lora, mode)
    }

    /// As [`Llama::hidden_cached`] with `span` given (it must be this
    /// model's span for `ids` after `cache`'s positions; the tests run the
    /// GPU's way on the CPU with [`Span::with_gpu_ops`]).
    pub fn hidden_in(
        &self,
        ids: Tensor<2, Int>,
        span: &Span,
        mut cache: Option<&mut KvCache>,
        lora: Option<&LoraAdapters>,
        mode: Mode,
    ) -> Tensor<2> {
        let mut x = self.embed(ids); // [B·T, d]
        for i in 0..self.weights.layers.len() {
            x = self.block(i, x, span, cache.as_deref_mut(), lora, mode);
        }
        self.final_norm(x, span)
    }

    /// What every block of one forward shares: `b` sequences of `t` new
    /// positions after `start` cached ones, and their RoPE tables.
    pub fn span(&self, b: usize, t: usize, start: usize) -> Span {
        let c = &self.config;
        // New positions attend to all cached ones and causally among themselves.
        let mask = (start > 0 && t > 1).then(|| {
            let total = start + t;
            let m: Vec<bool> = (0..t)
                .flat_map(|i| (0..total).map(move |j| j > start + i))
                .collect();
            Tensor::<2, Bool>::from_data(TensorData::new(m, [t, total]), &self.device)
                .unsqueeze::<4>()
                .expand([b, c.num_heads, t, total])
        });
        let (cos, sin) = rope_tables(c.rope_theta, c.head_dim, start, t, &self.device);
        let sliding = c.sliding_window.as_ref();
        let local = sliding
            .filter(|w| w.rope_theta != c.rope_theta)
            .map(|w| rope_tables(w.rope_theta, c.head_dim, start, t, &self.device));
        // Sliding layers: a key is masked also when it lies `size` or more
        // positions before the query.
        let window_mask = sliding.map(|w| w.size).filter(|&w| start + t > w).map(|w| {
            let total = start + t;
            let m: Vec<bool> = (0..t)
                .flat_map(|i| (0..total).map(move |j| j > start + i || start + i - j >= w))
                .collect();
            Tensor::<2, Bool>::from_data(TensorData::new(m, [t, total]), &self.device)
                .unsqueeze::<4>()
                .expand([b, c.num_heads, t, total])
        });
        Span {
            b,
            t,
            start,
            cos,
            sin,
            local,
            gpu: !crate::model::is_cpu(&self.device),
            dropout_seed: 0,
            mask,
            window_mask,
        }
    }

    /// The token embeddings of `ids: [B, T]`, `[B·T, d]` (times √d for
    /// Gemma).
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<2> {
        let x = self.weights.embed.lookup(ids);
        match self.config.arch.embed_scale(self.config.hidden_size) {
            Some(scale) => x.mul_scalar(scale),
            None => x,
        }
    }

    /// The final RMSNorm of the last block's output `[N, d]` (the GPU's
    /// way when `span`'s).
    pub fn final_norm(&self, x: Tensor<2>, span: &Span) -> Tensor<2> {
        rms_norm(x, &self.weights.norm, self.config.rms_norm_eps, span.gpu)
    }

    /// Block `i` on its input `x: [B·T, d]`, giving its output `[B·T, d]`;
    /// extends `cache` with this block's keys and values when given.
    pub fn block(
        &self,
        i: usize,
        x: Tensor<2>,
        span: &Span,
        cache: Option<&mut KvCache>,
        lora: Option<&LoraAdapters>,
        mode: Mode,
    ) -> Tensor<2> {
        let c = &self.config;
        let lw = &self.weights.layers[i];
        let (b, t) = (span.b, span.t);
        let (h, kv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let (eps, gpu) = (c.rms_norm_eps, span.gpu);
        let window = c.window(i);
        let tables = span.tables(window.is_some());
        // Whether some key lies outside this layer's window.
        let windowed = window.is_some_and(|w| span.start + t > w);
        // Whether our attention kernels (1/√hd, plain causal) do this layer's.
        let plain = c.default_attn_scale() && !windowed;
        // Attention block.
        let xn = rms_norm(x.clone(), &lw.attn_norm, eps, gpu); // [N, d]
        // On a GPU: the projections, RoPE and attention as one node.
        let dims = Dims::of(&Shape::new([b, t, h, hd]), &Shape::new([b, t, kv, hd]));
        let one_node = gpu
            && plain
            && lw.qkv_bias.is_none()
            && lw.qk_norm.is_none()
            && cache.is_none()
            && span.start == 0
            && dims.supported();
        if let Some(att) = one_node
            .then(|| self.attend(&xn, i, span, lora, mode))
            .flatten()
        {
            return self.mlp(i, x, att, span, lora, mode);
        }
        let q = self.project(&xn, i, Target::Q, span, lora, mode); // [N, H·hd]
        let k = self.project(&xn, i, Target::K, span, lora, mode); // [N, KV·hd]
        let v = self.project(&xn, i, Target::V, span, lora, mode); // [N, KV·hd]
        let (q, k, v) = match &lw.qkv_bias {
            Some([bq, bk, bv]) => (add_bias(q, bq), add_bias(k, bk), add_bias(v, bv)),
            None => (q, k, v),
        };
        let (q, k) = match &lw.qk_norm {
            Some([nq, nk]) => (head_norm(q, nq, eps, gpu), head_norm(k, nk, eps, gpu)),
            None => (q, k),
        };
        let att = if gpu {
            // Our nodes on the projections as they lie.
            let (cos, sin) = tables;
            let q = rope(q, cos.clone(), sin.clone()); // [N, H·hd]
            let k = rope(k, cos, sin); // [N, KV·hd]
            let bthd = |y: Tensor<2>, n: usize| y.reshape([b, t, n, hd]); // [B, T, n, hd]
            let (q, k, v) = (bthd(q, h), bthd(k, kv), bthd(v, kv));
            if span.start == 0 && dims.supported() && plain {
                // Each group's keys and values read where they lie.
                if let Some(cache) = cache {
                    cache.extend(i, k.clone().swap_dims(1, 2), v.clone().swap_dims(1, 2));
                }
                causal_attention(q, k, v).reshape([b * t, h * hd]) // [N, H·hd]
            } else {
                let heads = |y: Tensor<4>| y.swap_dims(1, 2); // [B, n, T, hd]
                self.attention(heads(q), heads(k), heads(v), i, span, cache)
            }
        } else {
            let heads = |y: Tensor<2>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2); // [B, n, T, hd]
            let q = apply_rope(heads(q, h), &tables);
            let k = apply_rope(heads(k, kv), &tables);
            self.attention(q, k, heads(v, kv), i, span, cache)
        };
        self.mlp(i, x, att, span, lora, mode)
    }

    /// The rest of block `i` after attention's output `att: [N, H·hd]`: the
    /// output projection onto the residual stream `x: [N, d]`, then the MLP.
    fn mlp(
        &self,
        i: usize,
        x: Tensor<2>,
        att: Tensor<2>,
        span: &Span,
        lora: Option<&LoraAdapters>,
        mode: Mode,
    ) -> Tensor<2> {
        let c = &self.config;
        let lw = &self.weights.layers[i];
        let (eps, gpu) = (c.rms_norm_eps, span.gpu);
        // `res + out`, with Gemma's norm of `out` first.
        let join = |res: Tensor<2>, out: &Tensor<2>, target: Target, post: usize| {
            match &lw.post_norms {
                Some(norms) => {
                    let y = self.project(out, i, target, span, lora, mode); // [N, d]
                    res + rms_norm(y, &norms[post], eps, gpu)
                }
                None => self.project_onto(Some(res), out, i, target, span, lora, mode),
            }
        };
        let x = join(x, &att, Target::O, 0); // [N, d]
        let xn = rms_norm(x.clone(), &lw.ffn_norm, eps, gpu);
        let silu = c.hidden_act == Activation::Silu;
        let h = match (gpu && silu)
            .then(|| self.gate_up(&xn, i, span, lora, mode))
            .flatten()
        {
            // Both projections and SwiGLU as one node.
            Some(h) => h,
            None => {
                let gate = self.project(&xn, i, Target::Gate, span, lora, mode); // [N, F]
                let up = self.project(&xn, i, Target::Up, span, lora, mode); // [N, F]
                match c.hidden_act {
                    Activation::Silu => swiglu(gate, up),
                    Activation::GeluTanh => gelu_approximate(gate) * up,
                }
            }
        }; // [N, F]
        join(x, &h, Target::Down, 1)
    }

    /// burn's attention of block `i` for `q: [B, H, T, hd]` and `k, v: [B,
    /// KV, T, hd]` after `span.start` cached positions (extending `cache`
    /// when given), giving `[B·T, H·hd]`.
    fn attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        i: usize,
        span: &Span,
        cache: Option<&mut KvCache>,
    ) -> Tensor<2> {
        let [b, h, t, hd] = q.dims();
        let kv = k.dims()[1];
        let groups = h / kv;
        let (k, v) = match cache {
            Some(cache) => cache.extend(i, k, v), // [B, KV, T_past + T, hd]
            None => (k, v),
        };
        let tk = k.dims()[2];
        let (k, v) = if groups > 1 {
            // [B, KV, T, hd] -> [B, KV, G, T, hd] -> [B, H, T, hd]
            let rep = |y: Tensor<4>| {
                y.unsqueeze_dim::<5>(2)
                    .expand([b, kv, groups, tk, hd])
                    .reshape([b, h, tk, hd])
            };
            (rep(k), rep(v))
        } else {
            (k, v)
        };
        let c = &self.config;
        // A sliding layer with keys outside its window takes the window's
        // mask, which holds the causal one.
        let windowed = c.window(i).is_some() && span.window_mask.is_some();
        let (mask, is_causal) = match windowed {
            true => (span.window_mask.clone(), false),
            false => (span.mask.clone(), span.start == 0),
        };
        let options = AttentionModuleOptions {
            scale: (!c.default_attn_scale()).then_some(c.attn_scale),
            softcap: None,
            is_causal,
        };
        attention(q, k, v, mask, None, options) // [B, H, T, hd]
            .swap_dims(1, 2)
            .reshape([b * t, h * hd])
    }

    /// Logits `[N, vocab]` for hidden states `[N, d]`.
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        match &self.weights.lm_head {
            Some(w) => hidden.matmul(w.clone()),
            None => self.weights.embed.logits(hidden),
        }
    }

    /// Logits `[B, T, vocab]` for `ids: [B, T]`.
    pub fn forward(&self, ids: Tensor<2, Int>, lora: Option<&LoraAdapters>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let hidden = self.hidden(ids, lora, Mode::Eval);
        self.logits(hidden).reshape([b, t, self.config.vocab_size])
    }
}

/// Joined bases' blocks for the grouped nodes' input `xn: [N, d]`: one
/// product for all their rows, except for a few rows (decoding), which each
/// base's own few-rows product takes ([`FEW_ROWS`]).
fn joined_for<'a>(joined: &'a Option<DeviceBlocks>, xn: &Tensor<2>) -> Option<&'a DeviceBlocks> {
    joined.as_ref().filter(|_| xn.dims()[0] > FEW_ROWS)
}
