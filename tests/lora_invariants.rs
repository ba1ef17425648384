//! LoRA invariants, as in burn's `module/lora.rs` tests and PEFT's
//! `test_custom_models.py`.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{assert_close, device, lora_config, small_data, tiny_hf, to_vec};
use tabtune::data::Example;
use tabtune::io::peft;
use tabtune::lora::{LoraAdapters, LoraConfig, Target};
use tabtune::model::Llama;
use tabtune::model::frozen::Frozen;
use tabtune::readback::block_on;
use tabtune::train::{Batch, TrainConfig, Trainer};

fn input() -> Tensor<2, Int> {
    let ids: Vec<i64> = (0..16).map(|i| (i * 7 + 3) % 96).collect();
    Tensor::from_data(TensorData::new(ids, [2, 8]), &device())
}

fn trained(model: &Llama, steps: usize) -> LoraAdapters {
    let lora = LoraAdapters::init(lora_config(4), &model.config, 1, &device()).expect("init");
    let cfg = TrainConfig {
        lr: 1e-2,
        steps,
        batch_size: 2,
        seq_len: 32,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(model.clone(), lora, small_data(), cfg).expect("trainer");
    for _ in 0..steps {
        common::step(&mut t);
    }
    t.adapters().clone()
}

#[test]
fn a_fresh_adapter_leaves_the_output_unchanged() {
    let m = tiny_hf("tiny_llama").model;
    let lora = LoraAdapters::init(lora_config(8), &m.config, 7, &device()).expect("init");
    let base = to_vec(m.forward(input(), None));
    let with = to_vec(m.forward(input(), Some(&lora)));
    assert_eq!(base, with, "B = 0 at init, so outputs are identical");
    // And A really is random (not zero), B really is zero.
    let a = to_vec(lora.get(0, Target::Q).expect("q adapted").a.clone());
    assert!(a.iter().any(|&v| v != 0.0));
    let bound = 1.0 / (m.config.hidden_size as f32).sqrt();
    assert!(
        a.iter().all(|v| v.abs() <= bound),
        "A ~ U(-1/sqrt(d_in), 1/sqrt(d_in))"
    );
}

#[test]
fn training_changes_only_a_and_b_never_the_frozen_weights() {
    let m = tiny_hf("tiny_llama").model;
    let before: Vec<Vec<f32>> = m
        .weights
        .layers
        .iter()
        .flat_map(|l| l.proj.iter().map(|w| to_vec(w.to_dense(&device()))))
        .collect();
    let embed_before = to_vec(m.weights.embed.to_dense(&device()));
    let init = LoraAdapters::init(lora_config(4), &m.config, 1, &device()).expect("init");
    let after = trained(&m, 3);
    let after_w: Vec<Vec<f32>> = m
        .weights
        .layers
        .iter()
        .flat_map(|l| l.proj.iter().map(|w| to_vec(w.to_dense(&device()))))
        .collect();
    assert_eq!(before, after_w, "projection weights untouched");
    assert_eq!(
        embed_before,
        to_vec(m.weights.embed.to_dense(&device())),
        "embedding untouched"
    );
    for ((name, a0), (_, a1)) in init.named_tensors().iter().zip(after.named_tensors()) {
        assert_ne!(
            to_vec((*a0).clone()),
            to_vec(a1.clone()),
            "{name} was trained"
        );
    }
}

#[test]
fn frozen_weights_get_no_gradient() {
    let m = tiny_hf("tiny_llama").model;
    let lora = LoraAdapters::init(lora_config(4), &m.config, 1, &device()).expect("init");
    let tracked = lora.map(|t| t.autodiff().require_grad());
    let d = small_data();
    let refs: Vec<&Example> = d.iter().collect();
    let batch = Batch::new(&refs, 32);
    let hidden = m.hidden(
        batch.ids_tensor(&device()),
        Some(&tracked),
        tabtune::model::Mode::Train,
    );
    let grads = m
        .nll_sum(hidden, &batch.trained_positions, &batch.targets)
        .backward();
    for l in &m.weights.layers {
        for w in &l.proj {
            let Frozen::Dense(w) = w else {
                panic!("a safetensors model loads dense");
            };
            assert!(
                !w.is_autodiff(),
                "frozen weights are plain tensors, outside the graph"
            );
            assert!(w.grad(&grads).is_none());
        }
    }
    assert!(
        tracked
            .get(0, Target::Q)
            .expect("q")
            .b
            .grad(&grads)
            .is_some(),
        "adapters do get gradients"
    );
}

#[test]
fn merged_weights_equal_the_unmerged_adapter() {
    let m = tiny_hf("tiny_llama").model;
    let lora = trained(&m, 2);
    let unmerged = to_vec(m.forward(input(), Some(&lora)));
    let mut merged = m.clone();
    let s = lora.config.scale();
    for (i, layer) in merged.weights.layers.iter_mut().enumerate() {
        for t in Target::ALL {
            let p = lora.get(i, t).expect("all targets adapted");
            let w = layer.proj[t.index()].to_dense(&device());
            layer.proj[t.index()] =
                Frozen::Dense(w + p.a.clone().matmul(p.b.clone()).mul_scalar(s));
        }
    }
    assert_close(
        "merged vs unmerged",
        &to_vec(merged.forward(input(), None)),
        &unmerged,
        1e-5,
    );
}

#[test]
fn an_exported_adapter_loads_back_with_the_same_logits() {
    let m = tiny_hf("tiny_llama").model;
    let lora = trained(&m, 2);
    let files = common::export(&lora, "tiny_llama");
    let back = peft::import(
        "c",
        files.config_json.as_bytes(),
        "w",
        &files.safetensors,
        &m.config,
        &device(),
    )
    .expect("imports");
    assert_eq!(back.config, lora.config);
    for ((name, a), (_, b)) in lora.named_tensors().iter().zip(back.named_tensors()) {
        assert_eq!(
            to_vec((*a).clone()),
            to_vec(b.clone()),
            "{name} round-trips bit for bit"
        );
    }
    // Same factors; the imported ones are strided views, so sums may associate differently.
    assert_close(
        "logits",
        &to_vec(m.forward(input(), Some(&back))),
        &to_vec(m.forward(input(), Some(&lora))),
        1e-6,
    );
}

#[test]
fn rslora_scales_by_alpha_over_sqrt_r() {
    let c = LoraConfig {
        rank: 16,
        alpha: 8.0,
        use_rslora: true,
        ..LoraConfig::default()
    };
    assert_eq!(c.scale(), 2.0);
    let c = LoraConfig {
        rank: 16,
        alpha: 8.0,
        use_rslora: false,
        ..LoraConfig::default()
    };
    assert_eq!(c.scale(), 0.5);
}

#[test]
fn embeddings_and_the_lm_head_cannot_be_targeted() {
    for bad in ["embed_tokens", "lm_head", "q,lm_head"] {
        let e = Target::parse_list(bad).expect_err("rejected").to_string();
        assert!(e.contains("never adapted"), "{e}");
    }
    assert_eq!(
        Target::parse_list("q,v").expect("ok"),
        vec![Target::Q, Target::V]
    );
}

#[test]
fn loss_falls_when_overfitting_a_few_examples() {
    let m = tiny_hf("tiny_llama").model;
    let lora = LoraAdapters::init(lora_config(8), &m.config, 3, &device()).expect("init");
    let cfg = TrainConfig {
        lr: 3e-2,
        steps: 30,
        batch_size: 4,
        seq_len: 32,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(m, lora, small_data(), cfg).expect("trainer");
    let first = common::step(&mut t).loss;
    let mut last = first;
    for _ in 1..30 {
        last = common::step(&mut t).loss;
    }
    assert!(last < 0.5 * first, "loss fell from {first} to {last}");
}

#[test]
fn evaluation_counts_every_trained_position() {
    let m = tiny_hf("tiny_llama").model;
    let lora = trained(&m, 1);
    let d = small_data();
    let read = tabtune::train::evaluate(&m, Some(&lora), &d, 3, 32).expect("evaluates");
    let (loss, tokens) = block_on(read.read()).expect("reads");
    assert!(loss.is_finite() && loss > 0.0);
    assert_eq!(tokens, 4 * 8, "8 trained positions per example");
}
