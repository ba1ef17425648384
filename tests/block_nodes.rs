//! RoPE and RMSNorm as the GPU runs them (`model::rope`, `model::norm`),
//! and the WGSL of those and SwiGLU's kernels: the kernels are valid WGSL;
//! each node (over its twin on the CPU) gives burn's composed ops and their
//! gradients (1e-5 relative). SwiGLU's node is the CPU's own operation too,
//! tested in `tests/cpu_ops.rs`; the kernels themselves are compared with
//! the twins in the browser suite, on WebGPU, and the model run with these
//! nodes is compared with the CPU's way in `tests/adapted.rs`.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{assert_relative, assert_valid_wgsl, device, to_vec};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tabtune::gpu::{RMS_NORM_BACKWARD, RMS_NORM_FORWARD, ROPE, SWIGLU_BACKWARD, SWIGLU_FORWARD};
use tabtune::model::norm::rms_norm;
use tabtune::model::rope::{rope, rotate};
use tabtune::train::seed::seeded;

fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<D> {
    let v = random_values(shape.iter().product(), seed);
    Tensor::from_data(TensorData::new(v, shape), &device())
}

#[test]
fn the_rope_rms_norm_and_swiglu_kernels_are_valid_wgsl_with_workgroups_of_64() {
    for (name, source) in [
        ("rope", ROPE),
        ("rms_norm_forward", RMS_NORM_FORWARD),
        ("rms_norm_backward", RMS_NORM_BACKWARD),
        ("swiglu_forward", SWIGLU_FORWARD),
        ("swiglu_backward", SWIGLU_BACKWARD),
    ] {
        assert_valid_wgsl(name, source, name, 64);
    }
}

/// Rotate-half RoPE composed of burn's ops on `x: [b·t, heads·hd]` laid
/// out as the projections give it: `x·cos + [x2, x1]·sin` per head.
fn rope_reference(x: Tensor<2>, cos: Tensor<2>, sin: Tensor<2>, b: usize) -> Tensor<2> {
    let [rows, width] = x.dims();
    let [t, hd] = cos.dims();
    let (heads, half) = (width / hd, hd / 2);
    let x4 = x.reshape([b, t, heads, hd]);
    let x1 = x4.clone().slice([0..b, 0..t, 0..heads, 0..half]);
    let x2 = x4.clone().slice([0..b, 0..t, 0..heads, half..hd]);
    let swapped = Tensor::cat(vec![x2, x1], 3);
    let table = |y: Tensor<2>| y.reshape([1, t, 1, hd]);
    (x4 * table(cos) + swapped * table(sin)).reshape([rows, width])
}

#[test]
fn the_rope_node_gives_the_composed_ops_and_their_gradient() {
    let (b, t, heads, hd) = (2, 5, 3, 8);
    let (cos, sin) = (random([t, hd], 2), random([t, hd], 3));
    let w = random([b * t, heads * hd], 4);
    let run = |ours: bool| {
        let x = random([b * t, heads * hd], 1).autodiff().require_grad();
        let y = if ours {
            rope(x.clone(), cos.clone(), sin.clone())
        } else {
            rope_reference(x.clone(), cos.clone(), sin.clone(), b)
        };
        let g = (y.clone() * w.clone()).sum().backward();
        (to_vec(y.inner()), to_vec(x.grad(&g).expect("a gradient")))
    };
    let (got, got_dx) = run(true);
    let (want, want_dx) = run(false);
    assert_relative("y", &got, &want);
    assert_relative("dx", &got_dx, &want_dx);
}

#[test]
fn the_rope_twins_inverse_undoes_a_true_rotation() {
    // With real angles (sin's first half negated, as the model's tables),
    // the rotation is orthogonal: its transpose is its inverse.
    let (rows, hd, len) = (6, 8, 3);
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for pos in 0..len {
        for sign in [-1.0f32, 1.0] {
            for i in 0..hd / 2 {
                let angle = (pos * (i + 1)) as f32 * 0.3;
                cos.push(angle.cos());
                sin.push(sign * angle.sin());
            }
        }
    }
    let x = random_values(rows * 2 * hd, 7);
    let y = rotate(&x, &cos, &sin, 2 * hd, hd, false);
    assert!(y.iter().zip(&x).any(|(a, b)| (a - b).abs() > 0.1));
    let back = rotate(&y, &cos, &sin, 2 * hd, hd, true);
    assert_relative("x", &back, &x);
}

/// RMSNorm composed of burn's ops, as the CPU runs it.
fn norm_reference(x: Tensor<2>, w: Tensor<1>, eps: f64) -> Tensor<2> {
    let variance = x.clone().square().mean_dim(1); // [N, 1]
    x * variance.add_scalar(eps).sqrt().recip() * w.unsqueeze::<2>()
}

#[test]
fn the_rms_norm_node_gives_the_composed_ops_and_their_gradient() {
    let (n, d, eps) = (7, 24, 1e-5);
    let weight = random([d], 2);
    let w = random([n, d], 3);
    let run = |ours: bool| {
        let x = random([n, d], 1).autodiff().require_grad();
        let y = if ours {
            rms_norm(x.clone(), weight.clone(), eps)
        } else {
            norm_reference(x.clone(), weight.clone(), eps)
        };
        let g = (y.clone() * w.clone()).sum().backward();
        (to_vec(y.inner()), to_vec(x.grad(&g).expect("a gradient")))
    };
    let (got, got_dx) = run(true);
    let (want, want_dx) = run(false);
    assert_relative("y", &got, &want);
    assert_relative("dx", &got_dx, &want_dx);
}

#[test]
fn a_seeded_root_hands_its_gradient_to_the_block_output_as_the_weighted_sum_does() {
    // What a recomputed block's backward pass starts from (`train::seed`):
    // the gradient `g` of `y = f(x)` pushed into `y`, against the scalar
    // Σ y ⊙ g that the plain way differentiates.
    let x = random([6, 5], 41).autodiff().require_grad();
    let g = random([6, 5], 42);
    let f = |x: Tensor<2>| x.clone().tanh() * x.mul_scalar(3.0); // [6, 5]
    let grads = seeded(f(x.clone()), g.clone()).backward();
    let got = to_vec(x.grad(&grads).expect("x's gradient"));
    let grads = (f(x.clone()) * g.autodiff()).sum().backward();
    let want = to_vec(x.grad(&grads).expect("x's gradient"));
    assert_relative("dL/dx", &got, &want);
}
