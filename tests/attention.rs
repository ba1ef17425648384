//! Causal attention on a GPU (`model::attention`): the three kernels in
//! `shaders/` are valid WGSL; the autodiff node over the twins gives burn's
//! attention (with the keys and values repeated per group) and its
//! gradients for `q`, `k` and `v` (1e-5 relative), with grouped heads, one
//! head per key head, and one position. The kernels themselves are compared
//! with the twins in the browser suite, on WebGPU; the model run with this
//! node is compared with the CPU's way in `tests/adapted.rs`.

mod common;

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData};
use common::{assert_relative, assert_valid_wgsl, device, to_vec};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tabtune::gpu::{ATTENTION_BACKWARD_DKV, ATTENTION_BACKWARD_DQ, ATTENTION_FORWARD};
use tabtune::model::attention::causal_attention;

fn random(shape: [usize; 4], seed: u64) -> Tensor<4> {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    Tensor::from_data(TensorData::new(v, shape), &device())
}

/// burn's attention on `[b, t, heads, hd]` tensors (which it takes as `[b,
/// heads, t, hd]`), the keys and values repeated for each query head.
fn reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [b, t, h, hd] = q.dims();
    let kv = k.dims()[2];
    let rep = |y: Tensor<4>| {
        y.swap_dims(1, 2)
            .unsqueeze_dim::<5>(2)
            .expand([b, kv, h / kv, t, hd])
            .reshape([b, h, t, hd])
    };
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: true,
    };
    attention(q.swap_dims(1, 2), rep(k), rep(v), None, None, options).swap_dims(1, 2)
}

#[test]
fn the_attention_kernels_are_valid_wgsl_with_workgroups_of_64() {
    for (name, source) in [
        ("attention_forward", ATTENTION_FORWARD),
        ("attention_backward_dq", ATTENTION_BACKWARD_DQ),
        ("attention_backward_dkv", ATTENTION_BACKWARD_DKV),
    ] {
        assert_valid_wgsl(name, source, name, 64);
    }
}

/// Our node (over the twins on the CPU) against burn's attention: the
/// output and the gradients of `q`, `k` and `v`.
fn compare_with_burn(b: usize, h: usize, kv: usize, t: usize, hd: usize) {
    let w = random([b, t, h, hd], 4);
    let run = |ours: bool| {
        let q = random([b, t, h, hd], 1).autodiff().require_grad();
        let k = random([b, t, kv, hd], 2).autodiff().require_grad();
        let v = random([b, t, kv, hd], 3).autodiff().require_grad();
        let o = if ours {
            causal_attention(q.clone(), k.clone(), v.clone())
        } else {
            reference(q.clone(), k.clone(), v.clone())
        };
        let g = (o.clone() * w.clone()).sum().backward();
        let grad = |x: &Tensor<4>| to_vec(x.grad(&g).expect("a gradient"));
        (to_vec(o.inner()), [grad(&q), grad(&k), grad(&v)])
    };
    let (got, got_grads) = run(true);
    let (want, want_grads) = run(false);
    let what = format!("{h} heads over {kv}, {t} positions");
    assert_relative(&format!("o, {what}"), &got, &want);
    for (name, (g, w)) in ["dq", "dk", "dv"]
        .iter()
        .zip(got_grads.iter().zip(&want_grads))
    {
        assert_relative(&format!("{name}, {what}"), g, w);
    }
}

#[test]
fn the_node_gives_burns_attention_and_its_gradients_with_grouped_heads() {
    // 70 positions (past one of the kernels' tiles of 64 keys: the twins
    // have no tiles, so the page's kernel check covers the tiling).
    compare_with_burn(2, 6, 2, 70, 16);
}

#[test]
fn one_query_head_per_key_head_and_one_position_work_too() {
    compare_with_burn(1, 3, 3, 5, 8);
    compare_with_burn(1, 4, 1, 1, 8);
}
