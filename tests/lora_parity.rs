//! LoRA numerics against PyTorch + PEFT on the tiny Llama
//! (scripts/make_fixtures.py): logits and loss with a PEFT-saved adapter,
//! every lora_A / lora_B gradient, and four AdamW steps (warm-up + cosine,
//! two micro-batches per step, global-norm clipping).
//! Tolerances: logits 1e-4, loss 1e-5, gradients 1e-5 abs, trained factors 1e-4.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{Reference, assert_close, device, read, tiny_hf, to_vec};
use tabtune::data::Example;
use tabtune::io::peft;
use tabtune::lora::LoraAdapters;
use tabtune::readback::block_on;
use tabtune::train::{Activations, Batch, Schedule, TrainConfig, Trainer, gradients};

fn peft_adapter(config: &tabtune::model::LlamaConfig) -> LoraAdapters {
    peft::import(
        "adapter_config.json",
        &read("tiny_llama/adapter/adapter_config.json"),
        "adapter_model.safetensors",
        &read("tiny_llama/adapter/adapter_model.safetensors"),
        config,
        &device(),
    )
    .expect("PEFT adapter imports")
}

fn batch_from(r: &Reference, ids_key: &str, mask_key: &str) -> Batch {
    let (shape, ids) = r.i64(ids_key);
    let (_, mask) = r.i64(mask_key);
    let (b, t) = (shape[0], shape[1]);
    let examples: Vec<Example> = (0..b)
        .map(|i| {
            let row = &mask[i * t..(i + 1) * t];
            // Trailing untrained pad tokens are padding: keep them out.
            let n = if i == 1 { t - 2 } else { t };
            Example {
                ids: ids[i * t..i * t + n].iter().map(|&x| x as u32).collect(),
                trained: row[..n].iter().map(|&x| x != 0).collect(),
            }
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    Batch::new(&refs, t)
}

/// PEFT's key with its `.weight`; the fixture stores grads under `grad.<key>`.
fn peft_key(name: &str) -> String {
    name.to_string()
}

#[test]
fn peft_adapter_logits_and_loss_match_peft() {
    let r = Reference::open("tiny_llama/reference.safetensors");
    let m = tiny_hf("tiny_llama");
    let lora = peft_adapter(&m.model.config);
    let (shape, ids) = r.i64("input_ids");
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [shape[0], shape[1]]), &device());
    let logits = m.model.forward(input, Some(&lora));
    assert_close("logits", &to_vec(logits), &r.f32("logits_lora").1, 1e-4);

    let batch = batch_from(&r, "input_ids", "loss_mask");
    let n = batch.trained_positions.len();
    let (sum, _) = gradients(&m.model, &lora, &[batch], n, 0, Activations::Keep);
    let loss = sum.into_scalar::<f32>() / n as f32;
    let want = r.f32("loss_lora").1[0];
    assert!((loss - want).abs() < 1e-5, "loss {loss} vs {want}");
}

#[test]
fn every_lora_gradient_matches_peft() {
    let r = Reference::open("tiny_llama/reference.safetensors");
    let m = tiny_hf("tiny_llama");
    let lora = peft_adapter(&m.model.config);
    let batch = batch_from(&r, "input_ids", "loss_mask");
    let n = batch.trained_positions.len();
    let names = lora.named_tensors();
    assert_eq!(names.len(), 2 * 7 * 2, "A and B for 7 targets in 2 layers");
    // Kept in one graph, and recomputed block by block.
    for activations in [Activations::Keep, Activations::Recompute] {
        let (_, grads) = gradients(
            &m.model,
            &lora,
            std::slice::from_ref(&batch),
            n,
            0,
            activations,
        );
        for ((name, _), g) in names.iter().zip(grads) {
            // engine layout is the transpose of PEFT's
            let got = to_vec(g.transpose());
            let (_, want) = r.f32(&format!("grad.{}", peft_key(name)));
            assert_close(&format!("{name} ({activations:?})"), &got, &want, 1e-5);
        }
    }
}

#[test]
fn four_training_steps_match_pytorch_adamw() {
    let r = Reference::open("tiny_llama/reference.safetensors");
    let m = tiny_hf("tiny_llama");
    let lora = peft_adapter(&m.model.config);
    let config = TrainConfig {
        lr: 1e-2,
        steps: 4,
        warmup_steps: 1,
        schedule: Schedule::Cosine,
        batch_size: 2,
        grad_accum: 2,
        seq_len: 64,
        max_grad_norm: 1.0,
        weight_decay: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        seed: 0,
        activations: Activations::Recompute,
    };
    // The trainer needs some data to own; these steps use explicit batches.
    let dummy = Example {
        ids: vec![3, 4, 5],
        trained: vec![false, true, true],
    };
    let mut trainer = Trainer::new(m.model.clone(), lora, vec![dummy], config).expect("trainer");
    let want_losses = r.f32("train.losses").1;
    let want_norms = r.f32("train.grad_norms").1;
    for step in 0..4 {
        let micro: Vec<Batch> = (0..2)
            .map(|k| {
                let p = format!("train.step{step}.micro{k}");
                batch_from(&r, &format!("{p}.input_ids"), &format!("{p}.loss_mask"))
            })
            .collect();
        let rep = block_on(trainer.step_batches(&micro)).expect("steps");
        assert!(
            (rep.loss - want_losses[step]).abs() < 1e-5,
            "step {step} loss {} vs {}",
            rep.loss,
            want_losses[step]
        );
        assert!(
            (rep.grad_norm - want_norms[step]).abs() < 1e-4 * want_norms[step].max(1.0),
            "step {step} grad norm {} vs {}",
            rep.grad_norm,
            want_norms[step]
        );
    }
    for (name, t) in trainer.adapters().named_tensors() {
        let (_, want) = r.f32(&format!("trained.{name}"));
        assert_close(&name, &to_vec(t.clone().transpose()), &want, 1e-4);
    }
}
