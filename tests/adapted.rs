//! The GPU's adapted projection (`model::adapted`): `shaders/lora_product.wgsl`
//! `lora_rows.wgsl` and `lora_pair.wgsl` are valid WGSL; the products' twin reads transposes
//! through strides and applies dropout's hash mask where it says, and the
//! rows' twin is both products with `u` after `c`, the pair's both products
//! one after the other; dropout drops `p` of the values, a
//! different set per key; the autodiff node gives the values and gradients
//! of the composed burn ops with the same mask (1e-5 relative), at a rank
//! the row kernel takes and one past it, and so does the node of a dense
//! base, its adapter and the residual stream (`model::projection`); and the
//! model run the GPU's way on the CPU gives the CPU way's loss and every
//! factor's gradient (dropout off: the two ways draw different masks). The
//! kernel itself is compared with the twin in the browser suite, on WebGPU.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{
    assert_relative, assert_valid_wgsl, device, lora_config, nll_and_grads, tiny_hf, to_vec,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tabtune::gpu::{LORA_ENTRY, LORA_PAIR, LORA_PRODUCT, LORA_ROWS, LORA_WORKGROUP};
use tabtune::lora::{LoraAdapters, LoraPair};
use tabtune::model::adapted::{
    Adapter, Dropout, MAX_ROWS_RANK, Mask, Product, adapted, pair, pair_info, product, rows,
    rows_info,
};
use tabtune::model::frozen::Frozen;
use tabtune::model::projection::project;
use tabtune::model::{Llama, Mode};

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn tensor(v: &[f32], shape: [usize; 2]) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &device())
}

/// `[rows, cols]` row-major `v` transposed.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| v[r * cols + c]))
        .collect()
}

/// `P·Q` for row-major `p: [m, j]`, `q: [j, k]`.
fn naive(p: &[f32], q: &[f32], m: usize, j: usize, k: usize) -> Vec<f32> {
    (0..m * k)
        .map(|i| (0..j).map(|t| p[i / k * j + t] * q[t * k + i % k]).sum())
        .collect()
}

#[test]
fn the_lora_product_kernel_is_valid_wgsl_with_its_declared_workgroup() {
    assert_valid_wgsl("lora_product", LORA_PRODUCT, LORA_ENTRY, LORA_WORKGROUP);
}

#[test]
fn the_lora_rows_and_lora_pair_kernels_are_valid_wgsl_with_workgroups_of_64() {
    for (name, source) in [("lora_rows", LORA_ROWS), ("lora_pair", LORA_PAIR)] {
        assert_valid_wgsl(name, source, name, 64);
    }
}

#[test]
fn the_pair_twin_is_both_products_one_after_the_other() {
    let (n, d_in, r, d_out) = (6, 5, 3, 4);
    let (u, g, x, du) = (
        random(n * r, 1),
        random(n * d_out, 2),
        random(n * d_in, 3),
        random(n * r, 4),
    );
    let d = Dropout::new(0.3, 7);
    let first = Product {
        p_t: true,
        ..Product::plain(1.0)
    };
    let second = Product {
        p_t: true,
        alpha: 1.5,
        mask: Mask::Input(d),
        ..Product::plain(1.0)
    };
    let info = pair_info((&first, [n, r], [n, d_out]), (&second, [n, d_in], [n, r]));
    let got = pair(&u, &g, &x, &du, &info);
    let masked: Vec<f32> = (0..n * d_in)
        .map(|e| if d.kept(e as u32) { x[e] } else { 0.0 })
        .collect();
    let db = naive(&transpose(&u, n, r), &g, r, n, d_out);
    let da: Vec<f32> = naive(&transpose(&masked, n, d_in), &du, d_in, n, r)
        .iter()
        .map(|v| 1.5 * v)
        .collect();
    assert_relative("dB", &got[..r * d_out], &db);
    assert_relative("dA", &got[r * d_out..], &da);
}

#[test]
fn the_rows_twin_is_both_products_with_u_after_c_and_the_residual_added() {
    let (n, d_in, r, d_out) = (5, 7, 3, 4);
    let (x, a, b, y) = (
        random(n * d_in, 1),
        random(d_in * r, 2),
        random(r * d_out, 3),
        random(n * d_out, 4),
    );
    let res = random(n * d_out, 5);
    let d = Dropout::new(0.3, 99);
    let first = Product {
        alpha: 2.0,
        mask: Mask::Input(d),
        ..Product::plain(1.0)
    };
    let info = rows_info(
        [n, d_in],
        [d_in, r],
        [r, d_out],
        &first,
        &Product::plain(1.0),
        true,
        true,
    );
    let got = rows(&x, &a, &b, (Some(&y), Some(&res)), &info);
    let masked: Vec<f32> = (0..n * d_in)
        .map(|e| if d.kept(e as u32) { x[e] } else { 0.0 })
        .collect();
    let u: Vec<f32> = naive(&masked, &a, n, d_in, r)
        .iter()
        .map(|v| 2.0 * v)
        .collect();
    let c: Vec<f32> = naive(&u, &b, n, r, d_out)
        .iter()
        .zip(&y)
        .zip(&res)
        .map(|((v, y), res)| v + y + res)
        .collect();
    assert_relative("c", &got[..n * d_out], &c);
    assert_relative("u", &got[n * d_out..], &u);
}

#[test]
fn the_twin_reads_either_side_transposed_and_adds_acc() {
    let (m, j, k) = (5, 7, 3);
    let p = random(m * j, 1); // [m, j]
    let q = random(j * k, 2); // [j, k]
    let acc = random(m * k, 3);
    let want = naive(&p, &q, m, j, k);
    let pt = transpose(&p, m, j); // stored [j, m]
    let qt = transpose(&q, j, k); // stored [k, j]
    for (p_t, q_t) in [(false, false), (true, false), (false, true), (true, true)] {
        let spec = Product {
            p_t,
            q_t,
            ..Product::plain(0.5)
        };
        let (ps, pv) = if p_t { ([j, m], &pt) } else { ([m, j], &p) };
        let (qs, qv) = if q_t { ([k, j], &qt) } else { ([j, k], &q) };
        let got = product(pv, qv, Some(&acc), &spec.info(ps, qs, true));
        let want: Vec<f32> = want.iter().zip(&acc).map(|(w, a)| a + 0.5 * w).collect();
        assert_relative(&format!("p_t {p_t}, q_t {q_t}"), &got, &want);
    }
}

#[test]
fn the_twin_drops_the_inputs_terms_by_their_stored_index_and_outputs_by_theirs() {
    let (m, j, k) = (6, 40, 4);
    let d = Dropout::new(0.3, 77);
    let p = random(m * j, 4);
    let q = random(j * k, 5);
    let masked: Vec<f32> = p
        .iter()
        .enumerate()
        .map(|(e, v)| if d.kept(e as u32) { *v } else { 0.0 })
        .collect();
    let spec = Product {
        mask: Mask::Input(d),
        ..Product::plain(1.0)
    };
    let got = product(&p, &q, None, &spec.info([m, j], [j, k], false));
    assert_relative("mask on P", &got, &naive(&masked, &q, m, j, k));
    // Pᵀ stored [j, m]: the mask follows the stored index.
    let pt = transpose(&p, m, j); // stored [j, m], read transposed as [m, j]
    let spec_t = Product {
        p_t: true,
        mask: Mask::Input(d),
        ..Product::plain(1.0)
    };
    let masked_t: Vec<f32> = pt
        .iter()
        .enumerate()
        .map(|(e, v)| if d.kept(e as u32) { *v } else { 0.0 })
        .collect();
    let got = product(&pt, &q, None, &spec_t.info([j, m], [j, k], false));
    assert_relative(
        "mask on stored Pᵀ",
        &got,
        &naive(&transpose(&masked_t, j, m), &q, m, j, k),
    );
    let spec_out = Product {
        mask: Mask::Output(d),
        ..Product::plain(1.0)
    };
    let got = product(&p, &q, None, &spec_out.info([m, j], [j, k], false));
    let want: Vec<f32> = naive(&p, &q, m, j, k)
        .into_iter()
        .enumerate()
        .map(|(e, v)| if d.kept(e as u32) { v } else { 0.0 })
        .collect();
    assert_relative("mask on the output", &got, &want);
}

#[test]
fn hash_dropout_drops_p_of_the_values_and_each_key_its_own() {
    let n = 1 << 20;
    let a = Dropout::new(0.05, 1);
    let b = Dropout::new(0.05, 2);
    let dropped_a: Vec<bool> = (0..n).map(|e| !a.kept(e)).collect();
    let share = dropped_a.iter().filter(|&&x| x).count() as f64 / n as f64;
    // 4.5 standard deviations of a binomial share at p = 0.05.
    assert!((share - 0.05).abs() < 0.001, "dropped {share}");
    let both = (0..n)
        .filter(|&e| dropped_a[e as usize] && !b.kept(e))
        .count() as f64
        / n as f64;
    // Independent masks drop the same value with probability p².
    assert!((both - 0.0025).abs() < 0.0003, "both dropped {both}");
    // Neighbouring values are not correlated: runs of drops are as rare as chance.
    let pairs = (0..n - 1)
        .filter(|&e| dropped_a[e as usize] && dropped_a[e as usize + 1])
        .count() as f64
        / n as f64;
    assert!((pairs - 0.0025).abs() < 0.0003, "adjacent pairs {pairs}");
    assert_eq!(Dropout::new(0.0, 9).threshold, 0);
    assert!((0..1000).all(|e| Dropout::new(0.0, 9).kept(e)));
}

#[test]
fn the_adapted_node_gives_the_composed_ops_values_and_gradients() {
    // The rank the row kernel takes, and one past it (the node's products
    // one by one).
    for r in [4, MAX_ROWS_RANK + 1] {
        adapted_node_against_composed_ops(r);
    }
}

fn adapted_node_against_composed_ops(r: usize) {
    let (n, d_in, d_out) = (9, 24, 16);
    let d = Dropout::new(0.25, 1234);
    let scale = 1.5f32;
    let (yv, xv, av, bv, wv) = (
        random(n * d_out, 10),
        random(n * d_in, 11),
        random(d_in * r, 12),
        random(r * d_out, 13),
        random(n * d_out, 14),
    );
    let keep: Vec<f32> = (0..n * d_in)
        .map(|e| if d.kept(e as u32) { 1.0 / 0.75 } else { 0.0 })
        .collect();
    let leaf = |v: &[f32], s| tensor(v, s).autodiff().require_grad();
    let run = |ours: bool| {
        let (y, x, a, b) = (
            leaf(&yv, [n, d_out]),
            leaf(&xv, [n, d_in]),
            leaf(&av, [d_in, r]),
            leaf(&bv, [r, d_out]),
        );
        let out = if ours {
            let adapter = Adapter {
                scale,
                dropout: Some(d),
            };
            adapted(y.clone(), x.clone(), a.clone(), b.clone(), adapter)
        } else {
            let xm = x.clone() * tensor(&keep, [n, d_in]);
            y.clone() + xm.matmul(a.clone()).mul_scalar(scale).matmul(b.clone())
        };
        let loss = (out.clone() * tensor(&wv, [n, d_out])).sum();
        let g = loss.backward();
        let grad = |t: &Tensor<2>| to_vec(t.grad(&g).expect("a gradient"));
        (
            to_vec(out.inner()),
            [grad(&y), grad(&x), grad(&a), grad(&b)],
        )
    };
    let (got, got_grads) = run(true);
    let (want, want_grads) = run(false);
    assert_relative(&format!("out, rank {r}"), &got, &want);
    for (name, (g, w)) in ["dy", "dx", "dA", "dB"]
        .iter()
        .zip(got_grads.iter().zip(&want_grads))
    {
        assert_relative(&format!("{name}, rank {r}"), g, w);
    }
    // Dropout was on: some of x's gradient is exactly zero.
    assert!(got_grads[1].contains(&0.0));
}

#[test]
fn the_projection_node_gives_the_base_product_the_adapter_and_the_residual_composed() {
    // The rank the row kernel takes and one past it; with and without the
    // residual; with x's gradient and without (the first block's input).
    for r in [4, MAX_ROWS_RANK + 1] {
        for (residual, x_grad) in [(false, true), (true, true), (true, false)] {
            projection_node_against_composed_ops(r, residual, x_grad);
        }
    }
}

fn projection_node_against_composed_ops(r: usize, residual: bool, x_grad: bool) {
    let (n, d_in, d_out) = (9, 24, 16);
    let d = Dropout::new(0.25, 4321);
    let scale = 1.5f32;
    let (xv, wv, av, bv, rv, lv) = (
        random(n * d_in, 20),
        random(d_in * d_out, 21),
        random(d_in * r, 22),
        random(r * d_out, 23),
        random(n * d_out, 24),
        random(n * d_out, 25),
    );
    let keep: Vec<f32> = (0..n * d_in)
        .map(|e| if d.kept(e as u32) { 1.0 / 0.75 } else { 0.0 })
        .collect();
    let leaf = |v: &[f32], s| tensor(v, s).autodiff().require_grad();
    let w = tensor(&wv, [d_in, d_out]);
    let run = |ours: bool| {
        let x = if x_grad {
            leaf(&xv, [n, d_in])
        } else {
            tensor(&xv, [n, d_in]).autodiff()
        };
        let (a, b, res) = (
            leaf(&av, [d_in, r]),
            leaf(&bv, [r, d_out]),
            leaf(&rv, [n, d_out]),
        );
        let res_in = residual.then(|| res.clone());
        let out = if ours {
            let adapter = Adapter {
                scale,
                dropout: Some(d),
            };
            let pair = LoraPair {
                a: a.clone(),
                b: b.clone(),
            };
            project(x.clone(), &Frozen::Dense(w.clone()), &pair, adapter, res_in)
                .expect("a dense base")
        } else {
            let xm = x.clone() * tensor(&keep, [n, d_in]);
            let y = x.clone().matmul(w.clone());
            let out = y + xm.matmul(a.clone()).mul_scalar(scale).matmul(b.clone());
            match res_in {
                Some(res) => res + out,
                None => out,
            }
        };
        let loss = (out.clone() * tensor(&lv, [n, d_out])).sum();
        let g = loss.backward();
        let grad = |t: &Tensor<2>| t.grad(&g).map(to_vec);
        (
            to_vec(out.inner()),
            [grad(&x), grad(&a), grad(&b), grad(&res)],
        )
    };
    let (got, got_grads) = run(true);
    let (want, want_grads) = run(false);
    let case = format!("rank {r}, residual {residual}, x's gradient {x_grad}");
    assert_relative(&format!("out, {case}"), &got, &want);
    for (name, (g, w)) in ["dx", "dA", "dB", "dres"]
        .iter()
        .zip(got_grads.iter().zip(&want_grads))
    {
        match (g, w) {
            (Some(g), Some(w)) => assert_relative(&format!("{name}, {case}"), g, w),
            (None, None) => {}
            _ => panic!("{name}, {case}: a gradient on one side only"),
        }
    }
    assert_eq!(got_grads[0].is_some(), x_grad, "dx exactly when x needs it");
    assert_eq!(
        got_grads[3].is_some(),
        residual,
        "dres exactly with a residual"
    );
}

/// The tiny model's adapters with `dropout`, their zero-initialised `B`
/// given values (seeded by `salt`) so every path carries gradient.
fn tiny_with_adapters(dropout: f64, salt: u64) -> (Llama, LoraAdapters) {
    let m = tiny_hf("tiny_llama").model;
    let mut config = lora_config(4);
    config.dropout = dropout;
    let lora = LoraAdapters::init(config, &m.config, 7, &device()).expect("adapters");
    let lora = lora.map(|t| {
        let [rows, cols] = t.dims();
        let noise = random(rows * cols, rows as u64 * salt + cols as u64);
        t.clone() + tensor(&noise, [rows, cols]).mul_scalar(0.1)
    });
    (m, lora)
}

#[test]
fn the_model_run_the_gpu_way_gives_the_cpu_ways_loss_and_gradients() {
    let (m, lora) = tiny_with_adapters(0.0, 31);
    let gpu_way = |b, t| m.span(b, t, 0).with_gpu_ops();
    let (loss, grads) = nll_and_grads(&m, &lora, gpu_way, Mode::Train);
    let (want_loss, want_grads) = nll_and_grads(&m, &lora, |b, t| m.span(b, t, 0), Mode::Train);
    assert_relative("NLL", &loss, &want_loss);
    for (k, (g, w)) in grads.iter().zip(&want_grads).enumerate() {
        assert_relative(&format!("factor {k}"), g, w);
    }
}

#[test]
fn the_gpu_ways_dropout_draws_the_same_masks_from_the_same_seed_and_others_from_another() {
    // What a recomputed block relies on: the span's seed alone decides the masks.
    let (m, lora) = tiny_with_adapters(0.3, 17);
    let run = |seed: u64, mode: Mode| {
        let span = |b, t| m.span(b, t, 0).with_gpu_ops().with_dropout_seed(seed);
        nll_and_grads(&m, &lora, span, mode)
    };
    let first = run(1, Mode::Train);
    assert_eq!(
        first,
        run(1, Mode::Train),
        "the same seed, the same masks, bit for bit"
    );
    let other = run(2, Mode::Train);
    assert_ne!(first.0, other.0, "another seed draws other masks");
    assert_ne!(first.0, run(1, Mode::Eval).0, "dropout was on");
}
