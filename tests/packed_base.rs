//! The packed frozen base (`src/model/packed.rs`, `src/model/frozen.rs`)
//! against the same weights expanded to f32: same logits, same loss, same
//! gradient for every adapter factor, same training steps. On the tiny GGUF
//! (f32 blocks) and on the default model, whose projections are Q4_1 (its
//! q/k rows reordered block-row by block-row) and whose Q8_0 embedding is
//! also its tied LM head. Tolerance: 1e-5 relative to
//! the largest value; the weights are bit-identical, only the order of the
//! matmul's sums may differ.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{
    assert_relative, default_model, device, lora_config, loss_and_grads, packed_types, small_data,
    tiny_gguf, to_vec,
};
use tabtune::io::dequant::GgmlType;
use tabtune::lora::LoraAdapters;
use tabtune::model::Llama;
use tabtune::model::embedding::Embedding;
use tabtune::model::load::load_gguf;
use tabtune::train::{TrainConfig, Trainer};

/// `m` with every projection expanded to f32.
fn dense(m: &Llama) -> Llama {
    Llama {
        weights: m.weights.to_dense(&m.device),
        ..m.clone()
    }
}

/// Logits, the NLL sum and every factor's gradient on one batch.
fn outputs(m: &Llama, lora: &LoraAdapters) -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
    let ids: Vec<i64> = (0..16).map(|i| (i * 7 + 3) % 96).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 8]), &device());
    let logits = to_vec(m.forward(ids, Some(lora)));
    let (nll, factors) = loss_and_grads(m, lora, |h, r, t| m.nll_sum(h, r, t));
    (logits, nll, factors)
}

fn packed_matches_dense(m: &Llama) {
    let lora = LoraAdapters::init(lora_config(4), &m.config, 3, &device()).expect("init");
    // Non-zero B, so every factor's gradient passes through the base.
    let lora = lora.map(|t| t.clone() + t.ones_like().mul_scalar(0.01));
    let (logits, nll, grads) = outputs(m, &lora);
    let (want_logits, want_nll, want_grads) = outputs(&dense(m), &lora);
    assert_relative("logits", &logits, &want_logits);
    assert_relative("nll", &nll, &want_nll);
    let names = lora.named_tensors();
    for ((got, want), (name, _)) in grads.iter().zip(&want_grads).zip(names) {
        assert_relative(&format!("gradient of {name}"), got, want);
    }
}

#[test]
fn the_packed_tiny_base_gives_the_dense_logits_loss_and_gradients() {
    let m = tiny_gguf().model;
    assert!(packed_types(&m, false).iter().all(|&t| t == GgmlType::F32));
    packed_matches_dense(&m);
}

#[test]
fn the_default_models_q4_1_base_stays_packed_and_matches_its_f32_expansion() {
    let bytes = std::fs::read(default_model()).expect("reads the default model");
    let m = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", &bytes, &device())
        .expect("loads")
        .model;
    assert!(packed_types(&m, false).iter().all(|&t| t == GgmlType::Q4_1));
    assert!(
        matches!(&m.weights.embed, Embedding::Packed(e) if e.ggml_type() == GgmlType::Q8_0),
        "the embedding stays Q8_0"
    );
    for w in m.weights.layers.iter().flat_map(|l| &l.proj) {
        let [rows, cols] = w.to_dense(&device()).dims();
        // Q4_1: 20 bytes per 32 weights, against 128 in f32.
        assert_eq!(w.byte_len(), rows * cols / 32 * 20);
    }
    let (packed, f32s) = (m.weights.byte_len(), dense(&m).weights.byte_len());
    // 96 MB against 538 MB.
    assert!(
        packed * 5 < f32s,
        "packed {packed} bytes against {f32s} in f32"
    );
    packed_matches_dense(&m);
}

#[test]
fn training_on_the_packed_base_takes_the_dense_bases_steps() {
    let m = tiny_gguf().model;
    let run = |model: Llama| {
        let lora = LoraAdapters::init(lora_config(4), &model.config, 1, &device()).expect("init");
        let cfg = TrainConfig {
            lr: 1e-2,
            steps: 3,
            batch_size: 2,
            seq_len: 32,
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(model, lora, small_data(), cfg).expect("trainer");
        let losses: Vec<f32> = (0..3).map(|_| common::step(&mut t).loss).collect();
        let factors: Vec<f32> = t
            .adapters()
            .named_tensors()
            .into_iter()
            .flat_map(|(_, f)| to_vec(f.clone()))
            .collect();
        (losses, factors)
    };
    let (losses, factors) = run(m.clone());
    let (want_losses, want_factors) = run(dense(&m));
    assert_relative("losses", &losses, &want_losses);
    assert_relative("trained factors", &factors, &want_factors);
}
