//! An adapted projection on a GPU, `y + s·dropout(x)·A·B`, as one autodiff
//! node over rank-r products of ours.
//!
//! Composed of burn's ops, each adapted projection costs a GPU a string of
//! kernel launches: a random tensor and a mask for dropout, `x·A`, the
//! scale, `·B`, the sum, and in the backward pass the transposed products,
//! the scale again, the mask again and the sums. A launch costs the browser
//! tens of microseconds whatever its size, and a step of the default model
//! has 210 adapted projections, run twice when blocks are recomputed. Here
//! the forward pass is two launches of `shaders/lora_product.wgsl` and the
//! backward four, one per gradient:
//!
//! - forward: `u = s·(m ⊙ x)·A` `[N, r]`, `out = y + u·B` `[N, d_out]`;
//! - backward, for `g = dL/d out`: `dy = g`; `du = g·Bᵀ` `[N, r]`;
//!   `dB = uᵀ·g` `[r, d_out]`; `dA = s·(m ⊙ x)ᵀ·du` `[d_in, r]`;
//!   `dx = s·m ⊙ (du·Aᵀ)` `[N, d_in]`.
//!
//! `m` is dropout's keep mask scaled by `1/(1 − p)`. It is never stored: a
//! hash of each value's index and a key decides it ([`Dropout`]), so the
//! forward and backward products (and a recomputed block) draw the same
//! mask from the same key. The CPU keeps its own op (`crate::cpu::lora`,
//! products split over the cores with dropout applied before it); the
//! operations here run there too, as the kernel's Rust twin [`product`], for
//! the tests.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension,
};
use burn::tensor::{Shape, Tensor, TensorData};

/// splitmix64's finaliser: a well-mixed `u64` from `x`.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The dropout key of `target` (its index) in `layer`, from a span's seed.
pub fn dropout_key(seed: u64, layer: usize, target: usize) -> u32 {
    let h = mix(mix(seed ^ layer as u64) ^ target as u64);
    (h ^ (h >> 32)) as u32
}

/// LoRA dropout as a hash: value `e` (row-major index) of the adapter's
/// input is kept when `pcg(pcg(e) ^ key) >= threshold`, `threshold = p·2³²`
/// (`shaders/lora_product.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dropout {
    /// `p·2³²`, rounded.
    pub threshold: u32,
    /// Which mask: one per step, micro-batch, layer and target.
    pub key: u32,
}

impl Dropout {
    /// Dropout with probability `p` (in `[0, 1)`) and mask `key`.
    pub fn new(p: f64, key: u32) -> Self {
        assert!((0.0..1.0).contains(&p), "dropout {p} is not in [0, 1)");
        Self {
            threshold: (p * 4_294_967_296.0).round().min(u32::MAX as f64) as u32,
            key,
        }
    }

    /// The probability of dropping a value: `threshold / 2³²`.
    pub fn p(&self) -> f64 {
        self.threshold as f64 / 4_294_967_296.0
    }

    /// Whether value `e` of the input is kept.
    pub fn kept(&self, e: u32) -> bool {
        pcg(pcg(e) ^ self.key) >= self.threshold
    }
}

/// PCG-RXS-M-XS as a hash (Jarzynski and Olano, "Hash Functions for GPU
/// Rendering", JCGT 2020), in the kernel's u32 arithmetic.
pub fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// Where a product's dropout mask applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mask {
    /// No mask.
    None,
    /// On `P`'s terms, by `P`'s stored index (`P` is `x` or `xᵀ`).
    Input(Dropout),
    /// On the output's values, by their index (the output is `dx`).
    Output(Dropout),
}

/// One product `c = alpha·P·Q (+ acc)`, `P` and `Q` each a stored
/// row-major matrix or its transpose.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Product {
    /// Read `P` as the transpose of the stored matrix.
    pub p_t: bool,
    /// Read `Q` as the transpose of the stored matrix.
    pub q_t: bool,
    /// The factor on the sum.
    pub alpha: f32,
    /// The dropout mask, if any.
    pub mask: Mask,
}

impl Product {
    /// `alpha·P·Q` with no transposes and no mask.
    pub fn plain(alpha: f32) -> Self {
        Self {
            p_t: false,
            q_t: false,
            alpha,
            mask: Mask::None,
        }
    }

    /// The kernel's `info`: `M, K, J`, `P`'s strides `(m, j)`, `Q`'s
    /// strides `(j, k)`, mask kind (0 none, 1 input, 2 output), threshold,
    /// key, alpha's bits, whether `acc` is added. Panics when the stored
    /// shapes do not chain or an index passes u32.
    pub fn info(&self, p: [usize; 2], q: [usize; 2], acc: bool) -> [u32; 12] {
        let (m, j, p_m, p_j) = if self.p_t {
            (p[1], p[0], 1, p[1])
        } else {
            (p[0], p[1], p[1], 1)
        };
        let (qj, k, q_j, q_k) = if self.q_t {
            (q[1], q[0], 1, q[1])
        } else {
            (q[0], q[1], q[1], 1)
        };
        assert_eq!(
            j, qj,
            "P {p:?} (transposed {}) and Q {q:?} (transposed {}) do not chain",
            self.p_t, self.q_t
        );
        let u = |v: usize| u32::try_from(v).expect("a product indexed in u32");
        for size in [m * k, m * j, j * k] {
            u(size);
        }
        let (kind, d) = match self.mask {
            Mask::None => (0, None),
            Mask::Input(d) => (1, Some(d)),
            Mask::Output(d) => (2, Some(d)),
        };
        let (threshold, key) = d.map_or((0, 0), |d| (d.threshold, d.key));
        [
            u(m),
            u(k),
            u(j),
            u(p_m),
            u(p_j),
            u(q_j),
            u(q_k),
            kind,
            threshold,
            key,
            self.alpha.to_bits(),
            acc as u32,
        ]
    }
}

/// The output shape `[M, K]` of `spec` on stored shapes `p` and `q`.
pub(crate) fn product_shape(p: &Shape, q: &Shape, spec: &Product) -> Shape {
    let m = if spec.p_t { p[1] } else { p[0] };
    let k = if spec.q_t { q[0] } else { q[1] };
    Shape::new([m, k])
}

/// The kernel's Rust twin: `c` for row-major `p`, `q` (and `acc`) and the
/// kernel's `info` ([`Product::info`]), summing in the kernel's order.
pub fn product(p: &[f32], q: &[f32], acc: Option<&[f32]>, info: &[u32; 12]) -> Vec<f32> {
    let [
        m,
        k,
        j,
        p_m,
        p_j,
        q_j,
        q_k,
        kind,
        threshold,
        key,
        alpha,
        with_acc,
    ] = *info;
    let d = Dropout { threshold, key };
    let alpha = f32::from_bits(alpha);
    (0..m * k)
        .map(|i| {
            let (row, col) = (i / k, i % k);
            let mut sum = 0f32;
            for t in 0..j {
                let pi = row * p_m + t * p_j; // u32, as in the kernel
                if kind == 1 && !d.kept(pi) {
                    continue;
                }
                sum += p[pi as usize] * q[(t * q_j + col * q_k) as usize];
            }
            let mut out = alpha * sum;
            if kind == 2 && !d.kept(i) {
                out = 0.0;
            }
            if with_acc == 1 {
                out += acc.expect("acc with ACC")[i as usize];
            }
            out
        })
        .collect()
}

/// The adapter's side of a projection: its scale `s` and dropout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adapter {
    /// `s = alpha / r` (or `/ sqrt(r)`).
    pub scale: f32,
    /// Dropout while training, `None` otherwise.
    pub dropout: Option<Dropout>,
}

impl Adapter {
    /// `s` times dropout's `1/(1 − p)`.
    fn factor(&self) -> f32 {
        self.scale / (1.0 - self.dropout.map_or(0.0, |d| d.p())) as f32
    }

    fn input_mask(&self) -> Mask {
        self.dropout.map_or(Mask::None, Mask::Input)
    }

    /// `u = s·(m ⊙ x)·A`.
    fn down(&self) -> Product {
        Product {
            alpha: self.factor(),
            mask: self.input_mask(),
            ..Product::plain(1.0)
        }
    }
}

/// `y + s·dropout(x)·A·B` for `y: [N, d_out]`, `x: [N, d_in]`, `a: [d_in,
/// r]`, `b: [r, d_out]`, giving `[N, d_out]`, as one autodiff node.
pub fn adapted(
    y: Tensor<2>,
    x: Tensor<2>,
    a: Tensor<2>,
    b: Tensor<2>,
    adapter: Adapter,
) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::adapted(
        y.into_dispatch(),
        x.into_dispatch(),
        a.into_dispatch(),
        b.into_dispatch(),
        adapter,
    ))
}

/// One product per `spec` on tensors: `alpha·P·Q (+ acc)`, for values that
/// need no gradient (autodiff's graph stops here; the page's kernel check).
pub(crate) fn lora_product(
    p: Tensor<2>,
    q: Tensor<2>,
    acc: Option<Tensor<2>>,
    spec: Product,
) -> Tensor<2> {
    Tensor::from_dispatch(match acc {
        Some(acc) => Dispatch::lora_product_add(
            p.into_dispatch(),
            q.into_dispatch(),
            acc.into_dispatch(),
            spec,
        ),
        None => Dispatch::lora_product(p.into_dispatch(), q.into_dispatch(), spec),
    })
}

/// The rank-r products as backend operations (the kernel on a GPU, its twin
/// on the CPU), and the adapted projection over them with autodiff's own
/// backward.
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "webgpu", feature = "gpu")),
    Fusion: cfg(any(feature = "webgpu", feature = "gpu")),
    Autodiff
)]
pub trait AdaptedOps: Backend {
    /// `alpha·P·Q` per `spec` (no gradient).
    #[fusion(dtype = p, shape = product_shape(p, q, spec))]
    fn lora_product(p: FloatTensor<Self>, q: FloatTensor<Self>, spec: Product)
    -> FloatTensor<Self>;

    /// `acc + alpha·P·Q` per `spec` (no gradient).
    #[fusion(dtype = p, shape = product_shape(p, q, spec))]
    fn lora_product_add(
        p: FloatTensor<Self>,
        q: FloatTensor<Self>,
        acc: FloatTensor<Self>,
        spec: Product,
    ) -> FloatTensor<Self>;

    /// See [`adapted`].
    #[fusion(default)]
    fn adapted(
        y: FloatTensor<Self>,
        x: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        adapter: Adapter,
    ) -> FloatTensor<Self> {
        let u = Self::lora_product(x, a, adapter.down()); // [N, r]
        Self::lora_product_add(u, b, y, Product::plain(1.0)) // [N, d_out]
    }
}

/// A flex tensor's values and shape.
fn flex_values(t: FlexTensor) -> (Vec<f32>, [usize; 2]) {
    let shape = t.shape().dims::<2>();
    let v = t
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("f32 values");
    (v, shape)
}

fn flex_product(
    p: FlexTensor,
    q: FlexTensor,
    acc: Option<FlexTensor>,
    spec: Product,
) -> FlexTensor {
    let out = product_shape(&p.shape(), &q.shape(), &spec);
    let (p, ps) = flex_values(p);
    let (q, qs) = flex_values(q);
    let acc = acc.map(|a| flex_values(a).0);
    let info = spec.info(ps, qs, acc.is_some());
    FlexTensor::from_data(TensorData::new(product(&p, &q, acc.as_deref(), &info), out))
}

impl AdaptedOps for Flex {
    fn lora_product(p: FlexTensor, q: FlexTensor, spec: Product) -> FlexTensor {
        flex_product(p, q, None, spec)
    }

    fn lora_product_add(
        p: FlexTensor,
        q: FlexTensor,
        acc: FlexTensor,
        spec: Product,
    ) -> FlexTensor {
        flex_product(p, q, Some(acc), spec)
    }
}

/// What the backward pass needs: the inputs (shared, not copied), `u` and
/// the adapter.
#[derive(Clone, Debug)]
struct Saved<B: Backend> {
    x: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    u: FloatTensor<B>,
    adapter: Adapter,
}

impl<B: Backend + AdaptedOps, C: CheckpointStrategy> AdaptedOps for Autodiff<B, C> {
    fn lora_product(
        p: FloatTensor<Self>,
        q: FloatTensor<Self>,
        spec: Product,
    ) -> FloatTensor<Self> {
        // Only ever called on values that need no gradient.
        Self::from_inner(B::lora_product(Self::inner(p), Self::inner(q), spec))
    }

    fn lora_product_add(
        p: FloatTensor<Self>,
        q: FloatTensor<Self>,
        acc: FloatTensor<Self>,
        spec: Product,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::lora_product_add(
            Self::inner(p),
            Self::inner(q),
            Self::inner(acc),
            spec,
        ))
    }

    fn adapted(
        y: FloatTensor<Self>,
        x: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        adapter: Adapter,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AdaptedBackward;

        impl<B: Backend + AdaptedOps> Backward<B, 4> for AdaptedBackward {
            type State = Saved<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 4>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let g = grads.consume::<B>(&ops.node); // [N, d_out]
                let Saved {
                    x,
                    a,
                    b,
                    u,
                    adapter,
                } = ops.state;
                let [y_node, x_node, a_node, b_node] = ops.parents;
                let (s, dropout) = (adapter.factor(), adapter.dropout);
                let du = (x_node.is_some() || a_node.is_some()).then(|| {
                    // g·Bᵀ: [N, d_out]·[d_out, r]
                    let spec = Product {
                        q_t: true,
                        ..Product::plain(1.0)
                    };
                    B::lora_product(g.clone(), b, spec) // [N, r]
                });
                if let Some(node) = b_node {
                    // uᵀ·g: [r, N]·[N, d_out]
                    let spec = Product {
                        p_t: true,
                        ..Product::plain(1.0)
                    };
                    grads.register::<B>(node.id, B::lora_product(u, g.clone(), spec));
                }
                if let (Some(node), Some(du)) = (a_node, &du) {
                    // s·(m ⊙ x)ᵀ·du: [d_in, N]·[N, r]
                    let spec = Product {
                        p_t: true,
                        alpha: s,
                        mask: dropout.map_or(Mask::None, Mask::Input),
                        ..Product::plain(1.0)
                    };
                    grads.register::<B>(node.id, B::lora_product(x, du.clone(), spec));
                }
                if let (Some(node), Some(du)) = (x_node, du) {
                    // s·m ⊙ (du·Aᵀ): [N, r]·[r, d_in]
                    let spec = Product {
                        q_t: true,
                        alpha: s,
                        mask: dropout.map_or(Mask::None, Mask::Output),
                        ..Product::plain(1.0)
                    };
                    grads.register::<B>(node.id, B::lora_product(du, a, spec));
                }
                if let Some(node) = y_node {
                    grads.register::<B>(node.id, g);
                }
            }
        }

        let (y, y_node) = y.into_parts();
        let (x, x_node) = x.into_parts();
        let (a, a_node) = a.into_parts();
        let (b, b_node) = b.into_parts();
        match AdaptedBackward
            .prepare::<C>([y_node, x_node, a_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let u = B::lora_product(x.clone(), a.clone(), adapter.down()); // [N, r]
                let out = B::lora_product_add(u.clone(), b.clone(), y, Product::plain(1.0));
                prep.finish(
                    Saved {
                        x,
                        a,
                        b,
                        u,
                        adapter,
                    },
                    out,
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(B::adapted(y, x, a, b, adapter)),
        }
    }
}
