//! The flat optimizer (every factor in one vector, one AdamW update and one
//! global-norm clip) against burn's own AdamW run factor by factor, the path
//! the trainer took before. PyTorch's AdamW is checked in `lora_parity.rs`.

use burn::optim::{AdamWConfig as BurnAdamW, AdamWState, Optimizer};
use burn::tensor::{Device, Distribution, Tensor};
use tabtune::train::flat::{AdamWConfig, FlatAdamW, Layout};

/// Large enough that where ε enters the update shows.
const EPS: f32 = 1e-3;

const SHAPES: [[usize; 2]; 5] = [[24, 4], [4, 40], [40, 4], [4, 24], [3, 5]];

fn device() -> Device {
    Device::flex()
}

fn random(shape: [usize; 2], scale: f64) -> Tensor<2> {
    Tensor::random(shape, Distribution::Normal(0.0, scale), &device())
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32")
}

fn config(max_grad_norm: f64) -> AdamWConfig {
    AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: EPS,
        weight_decay: 0.01,
        max_grad_norm,
    }
}

/// Three steps both ways from the same factors and gradients; the largest
/// difference of any parameter relative to the largest parameter.
fn compare(max_grad_norm: f64) -> f32 {
    let params: Vec<Tensor<2>> = SHAPES.iter().map(|&s| random(s, 0.5)).collect();
    // Norms ~0.2, ~23 and ~2300: against a max of 1 the first step is not
    // clipped and the others are, each by its own coefficient.
    let grads: Vec<Vec<Tensor<2>>> = [0.01, 1.0, 100.0]
        .iter()
        .map(|&scale| SHAPES.iter().map(|&s| random(s, scale)).collect())
        .collect();
    let layout = Layout::new(SHAPES.to_vec());
    let mut flat = layout.join(params.clone());
    let mut optim = FlatAdamW::new(config(max_grad_norm));

    let burn = BurnAdamW::new()
        .with_weight_decay(0.01)
        .with_epsilon(EPS)
        .build();
    let mut each = params;
    let mut states: Vec<Option<AdamWState<2>>> = vec![None; SHAPES.len()];
    for (step, g) in grads.into_iter().enumerate() {
        let lr = 1e-2 * (step + 1) as f64;
        // The reference clip: the global norm in f64 on the host.
        let norm = g
            .iter()
            .flat_map(|t| values(t.clone()))
            .map(|x| (x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let coef = if max_grad_norm > 0.0 {
            (max_grad_norm / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        let grad = layout.join(g.clone());
        let flat_norm: f32 = FlatAdamW::norm(&grad).into_scalar();
        flat = optim.step(lr, flat, grad, flat_norm);
        assert!(
            ((flat_norm as f64 - norm) / norm).abs() < 1e-6,
            "norm {flat_norm} vs {norm}"
        );
        each = each
            .into_iter()
            .zip(g)
            .zip(states.iter_mut())
            .map(|((p, g), s)| {
                let (p, next) = burn.step(lr, p, g.mul_scalar(coef), s.take());
                *s = next;
                p
            })
            .collect();
    }
    let got: Vec<f32> = layout.split(&flat).into_iter().flat_map(values).collect();
    let want: Vec<f32> = each.into_iter().flat_map(values).collect();
    assert_eq!(got.len(), want.len());
    let top = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    got.iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / top)
        .fold(0f32, f32::max)
}

#[test]
fn flat_adamw_equals_burns_adamw_factor_by_factor() {
    // Same element-wise ops in the same order: equal to rounding.
    let diff = compare(0.0);
    assert!(diff <= 1e-7, "relative difference {diff}");
}

#[test]
fn the_global_norm_clip_scales_every_factor_by_one_coefficient() {
    // The coefficient comes from all factors at once (a per-factor clip,
    // or none, would give other updates).
    let diff = compare(1.0);
    assert!(diff <= 1e-6, "relative difference {diff}");
}

#[test]
fn split_returns_each_factor_joined() {
    let factors: Vec<Tensor<2>> = SHAPES.iter().map(|&s| random(s, 1.0)).collect();
    let layout = Layout::new(SHAPES.to_vec());
    assert_eq!(
        layout.len(),
        SHAPES.iter().map(|[r, c]| r * c).sum::<usize>()
    );
    let back = layout.split(&layout.join(factors.clone()));
    for (a, b) in factors.into_iter().zip(back) {
        assert_eq!(a.dims(), b.dims());
        assert_eq!(values(a), values(b));
    }
}
