//! An adapted projection on a GPU, `y + s·dropout(x)·A·B`, as one autodiff
//! node over rank-r products of ours.
//!
//! Composed of burn's ops, each adapted projection costs a GPU a string of
//! kernel launches: a random tensor and a mask for dropout, `x·A`, the
//! scale, `·B`, the sum, and in the backward pass the transposed products,
//! the scale again, the mask again and the sums. A launch costs the browser
//! tens of microseconds whatever its size, and a step of the default model
//! has 210 adapted projections, run twice when blocks are recomputed. Here
//! the forward pass is one launch and the backward two:
//!
//! - forward, one launch of `shaders/lora_rows.wgsl` (a workgroup per row):
//!   `u = s·(m ⊙ x)·A` `[N, r]` and `out = y + u·B` `[N, d_out]`, with `u`
//!   kept for the backward pass;
//! - backward, for `g = dL/d out`: `dy = g`; one launch of `lora_rows.wgsl`
//!   for `du = g·Bᵀ` `[N, r]` and `dx = s·m ⊙ (du·Aᵀ)` `[N, d_in]`; one of
//!   `shaders/lora_pair.wgsl` for `dB = uᵀ·g` `[r, d_out]` and `dA = s·(m
//!   ⊙ x)ᵀ·du` `[d_in, r]` (sums over the rows, one invocation per value).
//!
//! Past rank [`MAX_ROWS_RANK`] the row kernel's products are each a launch
//! of `shaders/lora_product.wgsl` (two forward; backward two of it and the
//! pair), and so is `du` when `x` needs no gradient (the first block's
//! inputs).
//!
//! `m` is dropout's keep mask scaled by `1/(1 − p)`. It is never stored: a
//! hash of each value's index and a key decides it ([`Dropout`]), so the
//! forward and backward products (and a recomputed block) draw the same
//! mask from the same key. The CPU keeps its own op (`crate::cpu::lora`,
//! products split over the cores with dropout applied before it); the
//! operations here run there too, as the kernel's Rust twin [`product`], for
//! the tests; [`rows`] and [`pair`] are the other kernels' twins.

use burn::backend::autodiff::NodeId;
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

use crate::cpu::owned_values;

#[cfg(any(feature = "webgpu", feature = "gpu"))]
use burn::backend::fusion::custom::TensorSpec;

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

/// The most rank `shaders/lora_rows.wgsl` takes (a row of `u` lives in
/// workgroup memory); past it the node runs its products one by one.
pub const MAX_ROWS_RANK: usize = 256;

/// The shapes of [`rows`]'s outputs `c` `[M, K]` and `u` `[M, R]` on
/// stored shapes `p`, `f1`, `f2`.
pub(crate) fn rows_shapes(
    p: &Shape,
    f1: &Shape,
    f2: &Shape,
    first: &Product,
    second: &Product,
) -> (Shape, Shape) {
    let u = product_shape(p, f1, first);
    (product_shape(&u, f2, second), u)
}

/// What burn's fusion backend is told of [`AdaptedOps::lora_rows`]'s outputs.
#[cfg(any(feature = "webgpu", feature = "gpu"))]
fn rows_meta(
    p: &TensorSpec,
    f1: &TensorSpec,
    f2: &TensorSpec,
    first: &Product,
    second: &Product,
) -> (TensorSpec, TensorSpec) {
    let (c, u) = rows_shapes(&p.shape, &f1.shape, &f2.shape, first, second);
    (TensorSpec::new(c, p.dtype), TensorSpec::new(u, p.dtype))
}

/// What burn's fusion backend is told of [`AdaptedOps::pair`]'s outputs.
#[cfg(any(feature = "webgpu", feature = "gpu"))]
fn pair_meta(
    p1: &TensorSpec,
    q1: &TensorSpec,
    p2: &TensorSpec,
    q2: &TensorSpec,
    first: &Product,
    second: &Product,
) -> (TensorSpec, TensorSpec) {
    (
        TensorSpec::new(product_shape(&p1.shape, &q1.shape, first), p1.dtype),
        TensorSpec::new(product_shape(&p2.shape, &q2.shape, second), p2.dtype),
    )
}

/// `shaders/lora_rows.wgsl`'s `info`: stage 1's ([`Product::info`] of `p`
/// and `f1`) then stage 2's (of `u` and `f2`, with `acc`), then whether
/// `res` is added. Panics on a mask the kernel
/// does not take (stage 1 masks its input, stage 2 its output), on `u`
/// read transposed, or on a rank past [`MAX_ROWS_RANK`].
pub fn rows_info(
    p: [usize; 2],
    f1: [usize; 2],
    f2: [usize; 2],
    first: &Product,
    second: &Product,
    acc: bool,
    res: bool,
) -> [u32; 25] {
    assert!(
        !matches!(first.mask, Mask::Output(_)) && !matches!(second.mask, Mask::Input(_)),
        "lora_rows masks stage 1's input and stage 2's output only"
    );
    // Stage 2 reads u from workgroup memory, a row at a time.
    assert!(!second.p_t, "lora_rows' stage 2 reads u untransposed");
    let one = first.info(p, f1, false);
    let (m, r) = (one[0] as usize, one[1] as usize);
    assert!(
        r <= MAX_ROWS_RANK,
        "rank {r} is past lora_rows' {MAX_ROWS_RANK}"
    );
    let two = second.info([m, r], f2, acc);
    let mut info = [0u32; 25];
    info[..12].copy_from_slice(&one);
    info[12..24].copy_from_slice(&two);
    info[24] = u32::from(res);
    info
}

/// `shaders/lora_rows.wgsl`'s Rust twin: `c`'s values then `u`'s, the two
/// stages as [`product`] computes them (the kernel sums stage 1 as a tree),
/// `res` added to `c` after `acc`.
pub fn rows(
    p: &[f32],
    f1: &[f32],
    f2: &[f32],
    (acc, res): (Option<&[f32]>, Option<&[f32]>),
    info: &[u32; 25],
) -> Vec<f32> {
    let one: [u32; 12] = info[..12].try_into().expect("12 words");
    let two: [u32; 12] = info[12..24].try_into().expect("12 words");
    let u = product(p, f1, None, &one);
    let mut c = product(&u, f2, acc, &two);
    assert_eq!(
        info[24] == 1,
        res.is_some(),
        "info says whether res is added"
    );
    if let Some(res) = res {
        assert_eq!(res.len(), c.len(), "res is c's shape");
        c.iter_mut().zip(res).for_each(|(c, r)| *c += r);
    }
    c.extend(u);
    c
}

/// `shaders/lora_pair.wgsl`'s `info`: each product's [`Product::info`] on
/// its stored shapes (no `acc`).
pub fn pair_info(
    first: (&Product, [usize; 2], [usize; 2]),
    second: (&Product, [usize; 2], [usize; 2]),
) -> [u32; 24] {
    let mut info = [0u32; 24];
    info[..12].copy_from_slice(&first.0.info(first.1, first.2, false));
    info[12..].copy_from_slice(&second.0.info(second.1, second.2, false));
    u32::try_from(info[0] as usize * info[1] as usize + info[12] as usize * info[13] as usize)
        .expect("a pair indexed in u32");
    info
}

/// `shaders/lora_pair.wgsl`'s Rust twin: `c1`'s values then `c2`'s, each
/// as [`product`] computes it.
pub fn pair(p1: &[f32], q1: &[f32], p2: &[f32], q2: &[f32], info: &[u32; 24]) -> Vec<f32> {
    let one: [u32; 12] = info[..12].try_into().expect("12 words");
    let two: [u32; 12] = info[12..].try_into().expect("12 words");
    let mut c = product(p1, q1, None, &one);
    c.extend(product(p2, q2, None, &two));
    c
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

/// `shaders/lora_pair.wgsl`'s two products on tensors, `(c1, c2)`, for
/// values that need no gradient (the page's kernel check).
pub(crate) fn lora_pair(
    p1: Tensor<2>,
    q1: Tensor<2>,
    p2: Tensor<2>,
    q2: Tensor<2>,
    first: Product,
    second: Product,
) -> (Tensor<2>, Tensor<2>) {
    let (c1, c2) = Dispatch::lora_pair(
        p1.into_dispatch(),
        q1.into_dispatch(),
        p2.into_dispatch(),
        q2.into_dispatch(),
        first,
        second,
    );
    (Tensor::from_dispatch(c1), Tensor::from_dispatch(c2))
}

/// Both stages of `shaders/lora_rows.wgsl` on tensors, `(c (+ acc) (+
/// res), u)`, for values that need no gradient (the page's kernel check);
/// `res` only with `acc`.
pub(crate) fn lora_rows(
    p: Tensor<2>,
    f1: Tensor<2>,
    f2: Tensor<2>,
    (acc, res): (Option<Tensor<2>>, Option<Tensor<2>>),
    first: Product,
    second: Product,
) -> (Tensor<2>, Tensor<2>) {
    let (p, f1, f2) = (p.into_dispatch(), f1.into_dispatch(), f2.into_dispatch());
    let (c, u) = match (acc, res) {
        (Some(acc), Some(res)) => Dispatch::lora_rows_res(
            p,
            f1,
            f2,
            acc.into_dispatch(),
            res.into_dispatch(),
            first,
            second,
        ),
        (Some(acc), None) => Dispatch::lora_rows_add(p, f1, f2, acc.into_dispatch(), first, second),
        (None, None) => Dispatch::lora_rows(p, f1, f2, first, second),
        (None, Some(_)) => panic!("lora_rows adds res only with acc"),
    };
    (Tensor::from_dispatch(c), Tensor::from_dispatch(u))
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

    /// `(c, u)`: `u = first(P·F1)`, `c = second(u·F2)` (no gradient).
    #[fusion(meta = rows_meta)]
    fn lora_rows(
        p: FloatTensor<Self>,
        f1: FloatTensor<Self>,
        f2: FloatTensor<Self>,
        first: Product,
        second: Product,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `(acc + c, u)`, as [`AdaptedOps::lora_rows`] (no gradient).
    #[fusion(meta = |p, f1, f2, _acc, first, second| rows_meta(p, f1, f2, first, second))]
    fn lora_rows_add(
        p: FloatTensor<Self>,
        f1: FloatTensor<Self>,
        f2: FloatTensor<Self>,
        acc: FloatTensor<Self>,
        first: Product,
        second: Product,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `(acc + c + res, u)`, as [`AdaptedOps::lora_rows`] (no gradient):
    /// forward, a projection added to the residual stream `res`; backward,
    /// `dx` added to the base's part `acc` and other projections' `res`.
    #[fusion(meta = |p, f1, f2, _acc, _res, first, second| rows_meta(p, f1, f2, first, second))]
    fn lora_rows_res(
        p: FloatTensor<Self>,
        f1: FloatTensor<Self>,
        f2: FloatTensor<Self>,
        acc: FloatTensor<Self>,
        res: FloatTensor<Self>,
        first: Product,
        second: Product,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `(c1, c2)`: `c1 = first(P1·Q1)`, `c2 = second(P2·Q2)` (no gradient).
    #[fusion(meta = pair_meta)]
    fn lora_pair(
        p1: FloatTensor<Self>,
        q1: FloatTensor<Self>,
        p2: FloatTensor<Self>,
        q2: FloatTensor<Self>,
        first: Product,
        second: Product,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// See [`adapted`].
    #[fusion(default)]
    fn adapted(
        y: FloatTensor<Self>,
        x: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        adapter: Adapter,
    ) -> FloatTensor<Self> {
        if a.shape().dims::<2>()[1] <= MAX_ROWS_RANK {
            // One launch: y + u·B (and u).
            return Self::lora_rows_add(x, a, b, y, adapter.down(), Product::plain(1.0)).0;
        }
        let u = Self::lora_product(x, a, adapter.down()); // [N, r]
        Self::lora_product_add(u, b, y, Product::plain(1.0)) // [N, d_out]
    }
}

/// A flex tensor's values and shape.
fn flex_values(t: FlexTensor) -> (Vec<f32>, [usize; 2]) {
    let shape = t.shape().dims::<2>();
    (owned_values(t), shape)
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

/// A flat `[first | second]` twin output as two flex tensors.
fn flex_split(flat: Vec<f32>, shapes: (Shape, Shape)) -> (FlexTensor, FlexTensor) {
    let (one, two) = shapes;
    let mut first = flat;
    let second = first.split_off(one.num_elements());
    (
        FlexTensor::from_data(TensorData::new(first, one)),
        FlexTensor::from_data(TensorData::new(second, two)),
    )
}

fn flex_rows(
    p: FlexTensor,
    f1: FlexTensor,
    f2: FlexTensor,
    (acc, res): (Option<FlexTensor>, Option<FlexTensor>),
    first: Product,
    second: Product,
) -> (FlexTensor, FlexTensor) {
    let shapes = rows_shapes(&p.shape(), &f1.shape(), &f2.shape(), &first, &second);
    let (p, ps) = flex_values(p);
    let (f1, s1) = flex_values(f1);
    let (f2, s2) = flex_values(f2);
    let acc = acc.map(|a| flex_values(a).0);
    let res = res.map(|r| flex_values(r).0);
    let info = rows_info(ps, s1, s2, &first, &second, acc.is_some(), res.is_some());
    let c_u = rows(&p, &f1, &f2, (acc.as_deref(), res.as_deref()), &info);
    flex_split(c_u, shapes)
}

impl AdaptedOps for Flex {
    fn lora_product(p: FlexTensor, q: FlexTensor, spec: Product) -> FlexTensor {
        flex_product(p, q, None, spec)
    }

    fn lora_pair(
        p1: FlexTensor,
        q1: FlexTensor,
        p2: FlexTensor,
        q2: FlexTensor,
        first: Product,
        second: Product,
    ) -> (FlexTensor, FlexTensor) {
        let shapes = (
            product_shape(&p1.shape(), &q1.shape(), &first),
            product_shape(&p2.shape(), &q2.shape(), &second),
        );
        let ((p1, ps1), (q1, qs1)) = (flex_values(p1), flex_values(q1));
        let ((p2, ps2), (q2, qs2)) = (flex_values(p2), flex_values(q2));
        let info = pair_info((&first, ps1, qs1), (&second, ps2, qs2));
        flex_split(pair(&p1, &q1, &p2, &q2, &info), shapes)
    }

    fn lora_rows(
        p: FlexTensor,
        f1: FlexTensor,
        f2: FlexTensor,
        first: Product,
        second: Product,
    ) -> (FlexTensor, FlexTensor) {
        flex_rows(p, f1, f2, (None, None), first, second)
    }

    fn lora_rows_add(
        p: FlexTensor,
        f1: FlexTensor,
        f2: FlexTensor,
        acc: FlexTensor,
        first: Product,
        second: Product,
    ) -> (FlexTensor, FlexTensor) {
        flex_rows(p, f1, f2, (Some(acc), None), first, second)
    }

    fn lora_rows_res(
        p: FlexTensor,
        f1: FlexTensor,
        f2: FlexTensor,
        acc: FlexTensor,
        res: FlexTensor,
        first: Product,
        second: Product,
    ) -> (FlexTensor, FlexTensor) {
        flex_rows(p, f1, f2, (Some(acc), Some(res)), first, second)
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
pub(crate) struct Saved<B: Backend> {
    x: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    u: FloatTensor<B>,
    adapter: Adapter,
}

/// `y + s·(m ⊙ x)·A·B (+ res)` `[N, d_out]` on the inner backend, and what
/// its backward pass needs.
pub(crate) fn forward_saved<B: Backend + AdaptedOps>(
    y: FloatTensor<B>,
    x: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    adapter: Adapter,
    res: Option<FloatTensor<B>>,
) -> (FloatTensor<B>, Saved<B>) {
    let (down, up) = (adapter.down(), Product::plain(1.0));
    let (out, u) = if a.shape().dims::<2>()[1] <= MAX_ROWS_RANK {
        // One launch: y + u·B (+ res), and u.
        let (x, a, b) = (x.clone(), a.clone(), b.clone());
        match res {
            Some(res) => B::lora_rows_res(x, a, b, y, res, down, up),
            None => B::lora_rows_add(x, a, b, y, down, up),
        }
    } else {
        let u = B::lora_product(x.clone(), a.clone(), down); // [N, r]
        let out = B::lora_product_add(u.clone(), b.clone(), y, up);
        let out = match res {
            Some(res) => B::float_add(out, res),
            None => out,
        };
        (out, u)
    };
    let saved = Saved {
        x,
        a,
        b,
        u,
        adapter,
    };
    (out, saved)
}

/// The adapter's backward pass for the output's gradient `g` `[N, d_out]`:
/// registers `dA`, `dB` and `dx` with the nodes of `x`, `A` and `B` that
/// need them, `dx` added to `dx_acc` (`[N, d_in]`, the base's part of `x`'s
/// gradient, when the caller has it) in the same launch.
pub(crate) fn backward_into<B: Backend + AdaptedOps>(
    g: FloatTensor<B>,
    saved: Saved<B>,
    [x_node, a_node, b_node]: [Option<NodeId>; 3],
    dx_acc: Option<FloatTensor<B>>,
    grads: &mut Gradients,
) {
    debug_assert!(
        x_node.is_some() || dx_acc.is_none(),
        "x's gradient given a base part while x needs none"
    );
    let dx = backward_parts(
        g,
        saved,
        [a_node, b_node],
        x_node.is_some(),
        dx_acc,
        None,
        grads,
    );
    if let (Some(node), Some(dx)) = (x_node, dx) {
        grads.register::<B>(node, dx);
    }
}

/// [`backward_into`] for a node that gathers `x`'s gradient itself:
/// registers `dA` and `dB` with the nodes that need them and, when
/// `want_dx`, returns `dx` `[N, d_in]` plus `dx_acc` and `dx_res` (parts
/// of `x`'s gradient the caller has: the base's, another projection's),
/// added in the adapter's launch where the rank allows.
pub(crate) fn backward_parts<B: Backend + AdaptedOps>(
    g: FloatTensor<B>,
    saved: Saved<B>,
    [a_node, b_node]: [Option<NodeId>; 2],
    want_dx: bool,
    dx_acc: Option<FloatTensor<B>>,
    dx_res: Option<FloatTensor<B>>,
    grads: &mut Gradients,
) -> Option<FloatTensor<B>> {
    debug_assert!(
        want_dx || (dx_acc.is_none() && dx_res.is_none()),
        "parts of x's gradient given while x needs none"
    );
    // The kernel takes `res` only with `acc`.
    let (dx_acc, dx_res) = match (dx_acc, dx_res) {
        (None, Some(res)) => (Some(res), None),
        parts => parts,
    };
    let x_node = want_dx.then_some(());
    let Saved {
        x,
        a,
        b,
        u,
        adapter,
    } = saved;
    let (s, dropout) = (adapter.factor(), adapter.dropout);
    // g·Bᵀ: [N, d_out]·[d_out, r]
    let g_bt = Product {
        q_t: true,
        ..Product::plain(1.0)
    };
    // s·m ⊙ (du·Aᵀ): [N, r]·[r, d_in]
    let du_at = Product {
        q_t: true,
        alpha: s,
        mask: dropout.map_or(Mask::None, Mask::Output),
        ..Product::plain(1.0)
    };
    let (du, dx) = if x_node.is_some() && a.shape().dims::<2>()[1] <= MAX_ROWS_RANK {
        // One launch for both.
        let (g2, b2, a2) = (g.clone(), b.clone(), a.clone());
        let (dx, du) = match (dx_acc, dx_res) {
            (Some(acc), Some(res)) => B::lora_rows_res(g2, b2, a2, acc, res, g_bt, du_at),
            (Some(acc), None) => B::lora_rows_add(g2, b2, a2, acc, g_bt, du_at),
            (None, _) => B::lora_rows(g2, b2, a2, g_bt, du_at),
        };
        (Some(du), Some(dx))
    } else {
        let du = (x_node.is_some() || a_node.is_some())
            .then(|| B::lora_product(g.clone(), b.clone(), g_bt)); // [N, r]
        let dx = x_node.is_some().then(|| {
            let du = du.clone().expect("du");
            let dx = match dx_acc {
                Some(acc) => B::lora_product_add(du, a.clone(), acc, du_at),
                None => B::lora_product(du, a.clone(), du_at),
            };
            match dx_res {
                Some(res) => B::float_add(dx, res),
                None => dx,
            }
        });
        (du, dx)
    };
    // uᵀ·g: [r, N]·[N, d_out]
    let ut_g = Product {
        p_t: true,
        ..Product::plain(1.0)
    };
    // s·(m ⊙ x)ᵀ·du: [d_in, N]·[N, r]
    let xt_du = Product {
        p_t: true,
        alpha: s,
        mask: dropout.map_or(Mask::None, Mask::Input),
        ..Product::plain(1.0)
    };
    match (a_node, b_node, du) {
        (Some(a_node), Some(b_node), Some(du)) => {
            // One launch for both.
            let (db, da) = B::lora_pair(u, g, x, du, ut_g, xt_du);
            grads.register::<B>(b_node, db);
            grads.register::<B>(a_node, da);
        }
        (a_node, b_node, du) => {
            if let Some(node) = b_node {
                grads.register::<B>(node, B::lora_product(u, g, ut_g));
            }
            if let (Some(node), Some(du)) = (a_node, du) {
                grads.register::<B>(node, B::lora_product(x, du, xt_du));
            }
        }
    }
    dx
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

    fn lora_pair(
        p1: FloatTensor<Self>,
        q1: FloatTensor<Self>,
        p2: FloatTensor<Self>,
        q2: FloatTensor<Self>,
        first: Product,
        second: Product,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (c1, c2) = B::lora_pair(
            Self::inner(p1),
            Self::inner(q1),
            Self::inner(p2),
            Self::inner(q2),
            first,
            second,
        );
        (Self::from_inner(c1), Self::from_inner(c2))
    }

    fn lora_rows(
        p: FloatTensor<Self>,
        f1: FloatTensor<Self>,
        f2: FloatTensor<Self>,
        first: Product,
        second: Product,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (c, u) = B::lora_rows(
            Self::inner(p),
            Self::inner(f1),
            Self::inner(f2),
            first,
            second,
        );
        (Self::from_inner(c), Self::from_inner(u))
    }

    fn lora_rows_add(
        p: FloatTensor<Self>,
        f1: FloatTensor<Self>,
        f2: FloatTensor<Self>,
        acc: FloatTensor<Self>,
        first: Product,
        second: Product,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (c, u) = B::lora_rows_add(
            Self::inner(p),
            Self::inner(f1),
            Self::inner(f2),
            Self::inner(acc),
            first,
            second,
        );
        (Self::from_inner(c), Self::from_inner(u))
    }

    fn lora_rows_res(
        p: FloatTensor<Self>,
        f1: FloatTensor<Self>,
        f2: FloatTensor<Self>,
        acc: FloatTensor<Self>,
        res: FloatTensor<Self>,
        first: Product,
        second: Product,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (c, u) = B::lora_rows_res(
            Self::inner(p),
            Self::inner(f1),
            Self::inner(f2),
            Self::inner(acc),
            Self::inner(res),
            first,
            second,
        );
        (Self::from_inner(c), Self::from_inner(u))
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
                let [y_node, x_node, a_node, b_node] = ops.parents;
                let ids = [x_node, a_node, b_node].map(|n| n.map(|n| n.id));
                backward_into(g.clone(), ops.state, ids, None, grads);
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
                let (out, saved) = forward_saved(y, x, a, b, adapter, None);
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::adapted(y, x, a, b, adapter)),
        }
    }
}
