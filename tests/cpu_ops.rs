//! The CPU's one-pass operations (`src/cpu/`) against their reference
//! twins, the composed burn ops they replace on flex: SwiGLU's output and
//! both input gradients, LoRA's delta and the gradients of its input and
//! both factors, and the chunk loss's per-row NLL and logit gradient. Inputs span large positive and negative values (both sides of
//! the logistic's two formulas, an overflowing `exp` without the max) and
//! sizes that split into several tasks. Tolerance: 1e-6 relative to the
//! largest value for outputs, 1e-5 for gradients.

mod common;

use burn::tensor::{Distribution, Tensor, TensorData};
use common::{assert_close, device, scale, to_vec};
use tabtune::cpu::{lora, xent};
use tabtune::model::swiglu;

/// `[rows, cols]` uniform in `±range`, on the CPU (so each op takes its
/// own path, not the twin's).
fn random(rows: usize, cols: usize, range: f64) -> Tensor<2> {
    assert!(
        tabtune::model::is_cpu(&device()),
        "the tests run on the CPU backend"
    );
    Tensor::random(
        [rows, cols],
        Distribution::Uniform(-range, range),
        &device(),
    )
}

/// `f` on a pool of three threads, so work is split into several bands
/// whatever the machine's core count.
fn on_three_threads<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .expect("a thread pool")
        .install(f)
}

/// SwiGLU's output and the gradients of `Σ w ⊙ swiglu(g, u)` for a fixed
/// random `w`, through `f`.
fn swiglu_run(
    f: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<2>,
    g: &Tensor<2>,
    u: &Tensor<2>,
    w: &Tensor<2>,
) -> [Vec<f32>; 3] {
    let g = g.clone().autodiff().require_grad();
    let u = u.clone().autodiff().require_grad();
    let y = f(g.clone(), u.clone());
    let grads = (y.clone() * w.clone().autodiff()).sum().backward();
    [
        to_vec(y.inner()),
        to_vec(g.grad(&grads).expect("gate gradient")),
        to_vec(u.grad(&grads).expect("up gradient")),
    ]
}

#[test]
fn swiglu_and_its_two_gradients_equal_silu_times_up_composed_from_burn_ops() {
    // 70 x 300 = 21,000 elements: more than one task's chunk.
    for (rows, cols, range) in [(70, 300, 4.0), (3, 5, 30.0), (1, 1, 0.5)] {
        let (g, u, w) = (
            random(rows, cols, range),
            random(rows, cols, 2.0),
            random(rows, cols, 1.0),
        );
        let got = on_three_threads(|| swiglu_run(swiglu::swiglu, &g, &u, &w));
        let want = swiglu_run(swiglu::reference, &g, &u, &w);
        for (i, (what, tol)) in [("output", 1e-6), ("d gate", 1e-5), ("d up", 1e-5)]
            .iter()
            .enumerate()
        {
            assert_close(
                &format!("[{rows}, {cols}] ±{range}: {what}"),
                &got[i],
                &want[i],
                tol * scale(&want[i]),
            );
        }
    }
}

#[test]
fn swiglu_outside_a_graph_equals_the_composed_ops() {
    let (g, u) = (random(9, 40, 6.0), random(9, 40, 6.0));
    let got = to_vec(swiglu::swiglu(g.clone(), u.clone()));
    let want = to_vec(swiglu::reference(g, u));
    assert_close("untracked output", &got, &want, 1e-6 * scale(&want));
}

#[test]
fn the_chunk_loss_and_its_logit_gradient_equal_log_softmax_gather_and_scatter() {
    // Rows of 5,000 logits up to ±60 (exp would overflow without the max);
    // the targets include the first and last token.
    for (rows, vocab, range) in [(6, 5000, 60.0), (1, 3, 1.0), (33, 700, 8.0)] {
        let logits = random(rows, vocab, range);
        let targets: Vec<i64> = (0..rows as i64)
            .map(|r| match r % 3 {
                0 => 0,
                1 => vocab as i64 - 1,
                _ => (r * 7919) % vocab as i64,
            })
            .collect();
        let (nll, grad) = xent::nll_and_grad(logits.clone(), &targets);
        let (want_nll, want_grad) = xent::reference(logits, &targets);
        let (nll, want_nll) = (to_vec(nll), to_vec(want_nll));
        let (grad, want_grad) = (to_vec(grad), to_vec(want_grad));
        assert_close(
            &format!("[{rows}, {vocab}] NLL"),
            &nll,
            &want_nll,
            1e-6 * scale(&want_nll),
        );
        assert_close(
            &format!("[{rows}, {vocab}] gradient"),
            &grad,
            &want_grad,
            1e-5 * scale(&want_grad),
        );
        // Each gradient row sums to zero: softmax sums to one, minus one.
        for (r, row) in grad.chunks(vocab).enumerate() {
            let s: f64 = row.iter().map(|&x| x as f64).sum();
            assert!(s.abs() < 1e-5, "row {r} of the gradient sums to {s}");
        }
    }
}

#[test]
fn the_chunk_loss_reads_a_transposed_view_of_the_logits_correctly() {
    let logits = random(50, 4, 5.0).transpose(); // [4, 50], not contiguous
    let targets = [0, 49, 7, 23];
    let (nll, grad) = xent::nll_and_grad(logits.clone(), &targets);
    let (want_nll, want_grad) = xent::reference(logits, &targets);
    let want_nll = to_vec(want_nll);
    assert_close("NLL", &to_vec(nll), &want_nll, 1e-6 * scale(&want_nll));
    let want_grad = to_vec(want_grad);
    assert_close(
        "gradient",
        &to_vec(grad),
        &want_grad,
        1e-5 * scale(&want_grad),
    );
}

#[test]
fn swiglu_matches_at_known_values() {
    // silu(g)·u by hand: g = 2, u = 3 → 2·σ(2)·3; g = −30 → ~0.
    let d = device();
    let g = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, -30.0], [1, 2]), &d);
    let u = Tensor::<2>::from_data(TensorData::new(vec![3.0f32, 5.0], [1, 2]), &d);
    let y = to_vec(swiglu::swiglu(g, u));
    let s2 = 1.0 / (1.0 + (-2.0f64).exp());
    assert!((y[0] as f64 - 2.0 * s2 * 3.0).abs() < 1e-6, "{}", y[0]);
    assert!(y[1].abs() < 1e-10, "{}", y[1]);
}

/// LoRA's delta and the gradients of `Σ w ⊙ delta` with respect to `x`, `A`
/// and `B` (those that are tracked), through `f`.
fn lora_run(
    f: impl Fn(Tensor<2>, Tensor<2>, Tensor<2>, f32) -> Tensor<2>,
    [x, a, b, w]: [&Tensor<2>; 4],
    track_x: bool,
) -> Vec<Vec<f32>> {
    let x = if track_x {
        x.clone().autodiff().require_grad()
    } else {
        x.clone().autodiff()
    };
    let a = a.clone().autodiff().require_grad();
    let b = b.clone().autodiff().require_grad();
    let y = f(x.clone(), a.clone(), b.clone(), 2.5);
    let grads = (y.clone() * w.clone().autodiff()).sum().backward();
    let mut out = vec![to_vec(y.inner())];
    if track_x {
        out.push(to_vec(x.grad(&grads).expect("x gradient")));
    } else {
        assert!(x.grad(&grads).is_none(), "no gradient for an untracked x");
    }
    out.push(to_vec(a.grad(&grads).expect("A gradient")));
    out.push(to_vec(b.grad(&grads).expect("B gradient")));
    out
}

#[test]
fn the_lora_delta_and_the_gradients_of_x_a_and_b_equal_burns_matmuls() {
    // N = 70 rows split over the threads; a rank of 1 and a single row too.
    for (n, d_in, r, d_out) in [(70, 33, 4, 50), (1, 5, 1, 3), (300, 64, 8, 16)] {
        let (x, a) = (random(n, d_in, 2.0), random(d_in, r, 1.0));
        let (b, w) = (random(r, d_out, 1.0), random(n, d_out, 1.0));
        for track_x in [true, false] {
            let got = on_three_threads(|| lora_run(lora::lora_delta, [&x, &a, &b, &w], track_x));
            let want = lora_run(lora::reference, [&x, &a, &b, &w], track_x);
            let names: &[&str] = if track_x {
                &["delta", "dx", "dA", "dB"]
            } else {
                &["delta", "dA", "dB"]
            };
            for ((what, g), w) in names.iter().zip(&got).zip(&want) {
                let tol = if *what == "delta" { 1e-6 } else { 1e-5 };
                assert_close(
                    &format!("[{n}, {d_in}] r={r} -> {d_out}, x tracked {track_x}: {what}"),
                    g,
                    w,
                    tol * scale(w),
                );
            }
        }
    }
}

#[test]
fn the_ops_read_inputs_that_are_slices_at_an_offset() {
    let big = random(40, 64, 2.0);
    let x = big.clone().slice(5..25); // rows 5..25: contiguous, at an offset
    let u = big.slice(20..40);
    let want = to_vec(swiglu::reference(x.clone(), u.clone()));
    let got = to_vec(swiglu::swiglu(x.clone(), u));
    assert_close("SwiGLU", &got, &want, 1e-6 * scale(&want));
    let (a, b) = (random(64, 4, 1.0), random(4, 9, 1.0));
    let want = to_vec(lora::reference(x.clone(), a.clone(), b.clone(), 2.0));
    let got = to_vec(lora::lora_delta(x.clone(), a, b, 2.0));
    assert_close("LoRA", &got, &want, 1e-6 * scale(&want));
    let targets: Vec<i64> = (0..20).map(|r| (r * 3) % 64).collect();
    let (want, _) = xent::reference(x.clone(), &targets);
    let (got, _) = xent::nll_and_grad(x, &targets);
    let want = to_vec(want);
    assert_close("NLL", &to_vec(got), &want, 1e-6 * scale(&want));
}

#[test]
fn the_lora_delta_of_a_transposed_input_equals_burns_matmuls() {
    let x = random(12, 40, 1.0).transpose(); // [40, 12], not contiguous
    let (a, b) = (random(12, 3, 1.0), random(3, 7, 1.0));
    let got = to_vec(lora::lora_delta(x.clone(), a.clone(), b.clone(), 0.5));
    let want = to_vec(lora::reference(x, a, b, 0.5));
    assert_close("delta", &got, &want, 1e-6 * scale(&want));
}
