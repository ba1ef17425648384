//! Qwen2, Qwen3 and Gemma 3 against transformers and PEFT on tiny random
//! models of each family (fixtures from scripts/make_fixtures.py, f32; norm
//! weights and biases random so that each part matters): logits from the
//! HF files and from the GGUF llama.cpp's converter writes, the masked
//! loss, and with a PEFT-saved adapter the logits, loss and every LoRA
//! gradient. Tolerances as for Llama: logits 1e-4, loss 1e-5, gradients
//! 1e-5 abs.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{Reference, assert_close, device, nll_and_grads, read, tiny_hf, to_vec};
use tabtune::data::Example;
use tabtune::io::peft;
use tabtune::lora::LoraAdapters;
use tabtune::model::config::Arch;
use tabtune::model::load::{HfFiles, Loaded, load_gguf, load_hf};
use tabtune::model::{KvCache, Mode};
use tabtune::readback::block_on;
use tabtune::train::{Activations, Batch, evaluate, gradients};

const ARCHS: [(&str, Arch); 3] = [
    ("qwen2", Arch::Qwen2),
    ("qwen3", Arch::Qwen3),
    ("gemma3", Arch::Gemma3),
];

fn reference(arch: &str) -> Reference {
    Reference::open(&format!("tiny_{arch}/reference.safetensors"))
}

fn from_gguf(arch: &str) -> Loaded {
    let file = format!("tiny_{arch}.gguf");
    load_gguf(&file, &read(&format!("tiny_{arch}/{file}")), &device()).expect("tiny gguf loads")
}

fn logits(m: &Loaded, r: &Reference, lora: Option<&LoraAdapters>) -> Vec<f32> {
    let (shape, ids) = r.i64("input_ids");
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [shape[0], shape[1]]), &device());
    to_vec(m.model.forward(input, lora))
}

/// The fixture's batch: row 1 is right-padded by 2 (untrained) tokens.
fn examples(r: &Reference) -> Vec<Example> {
    let (shape, ids) = r.i64("input_ids");
    let (_, mask) = r.i64("loss_mask");
    let (b, t) = (shape[0], shape[1]);
    (0..b)
        .map(|i| {
            let n = if i == 1 { t - 2 } else { t };
            Example {
                ids: ids[i * t..i * t + n].iter().map(|&x| x as u32).collect(),
                trained: mask[i * t..i * t + n].iter().map(|&x| x != 0).collect(),
            }
        })
        .collect()
}

fn peft_adapter(arch: &str, m: &Loaded) -> LoraAdapters {
    let dir = format!("tiny_{arch}/adapter");
    peft::import(
        "adapter_config.json",
        &read(&format!("{dir}/adapter_config.json")),
        "adapter_model.safetensors",
        &read(&format!("{dir}/adapter_model.safetensors")),
        &m.model.config,
        &device(),
    )
    .expect("PEFT adapter imports")
}

#[test]
fn each_family_reads_its_config_and_its_logits_and_loss_match_transformers() {
    for (arch, family) in ARCHS {
        let r = reference(arch);
        let m = tiny_hf(&format!("tiny_{arch}"));
        assert_eq!(m.model.config.arch, family);
        assert_close(arch, &logits(&m, &r, None), &r.f32("logits_base").1, 1e-4);
        let read = evaluate(&m.model, None, &examples(&r), 2, 64).expect("evaluates");
        let (loss, _) = block_on(read.read()).expect("reads");
        let want = r.f32("loss_base").1[0] as f64;
        assert!((loss - want).abs() < 1e-5, "{arch}: loss {loss} vs {want}");
    }
    let gemma = tiny_hf("tiny_gemma3").model.config;
    let window = gemma.sliding_window.expect("Gemma 3 slides");
    assert_eq!(window.size, 5);
    assert_eq!(window.layers, [true, true, true, true, true, false]);
    assert_eq!((gemma.rope_theta, window.rope_theta), (5e4, 1e4));
    assert!(gemma.tie_word_embeddings);
    assert_eq!(tiny_hf("tiny_qwen3").model.config.head_dim, 16);
}

#[test]
fn each_familys_gguf_gives_the_same_config_and_logits() {
    for (arch, _) in ARCHS {
        let r = reference(arch);
        let gguf = from_gguf(arch);
        let hf = tiny_hf(&format!("tiny_{arch}"));
        let mut config = gguf.model.config.clone();
        // GGUF stores epsilon as f32.
        assert_eq!(
            config.rms_norm_eps as f32,
            hf.model.config.rms_norm_eps as f32
        );
        config.rms_norm_eps = hf.model.config.rms_norm_eps;
        assert_eq!(config, hf.model.config, "{arch}: the same config from GGUF");
        assert_close(
            arch,
            &logits(&gguf, &r, None),
            &r.f32("logits_base").1,
            1e-4,
        );
    }
}

#[test]
fn gemma_attention_is_scaled_by_its_query_pre_attn_scalar() {
    let r = reference("gemma3");
    let mut config: serde_json::Value =
        serde_json::from_slice(&read("tiny_gemma3/config.json")).expect("json");
    config["query_pre_attn_scalar"] = 20.into();
    let config = config.to_string();
    let weights = read("tiny_gemma3/model.safetensors");
    let files = HfFiles {
        config: config.as_bytes(),
        weights: &weights,
        tokenizer: None,
        tokenizer_config: None,
        chat_template: None,
    };
    let m = load_hf("tiny_gemma3", &files, &device()).expect("loads");
    assert_close(
        "scaled",
        &logits(&m, &r, None),
        &r.f32("logits_scaled").1,
        1e-4,
    );
}

#[test]
fn each_familys_peft_adapter_gives_peft_logits_loss_and_gradients() {
    for (arch, _) in ARCHS {
        let r = reference(arch);
        let m = tiny_hf(&format!("tiny_{arch}"));
        let lora = peft_adapter(arch, &m);
        assert_close(
            &format!("{arch} logits"),
            &logits(&m, &r, Some(&lora)),
            &r.f32("logits_lora").1,
            1e-4,
        );
        let data = examples(&r);
        let refs: Vec<&Example> = data.iter().collect();
        let batch = Batch::new(&refs, 12);
        let n = batch.trained_positions.len();
        for activations in [Activations::Keep, Activations::Recompute] {
            let (sum, grads) = gradients(
                &m.model,
                &lora,
                std::slice::from_ref(&batch),
                n,
                0,
                activations,
            );
            let loss = sum.into_scalar::<f32>() / n as f32;
            let want = r.f32("loss_lora").1[0];
            assert!((loss - want).abs() < 1e-5, "{arch}: loss {loss} vs {want}");
            for ((name, _), g) in lora.named_tensors().iter().zip(grads) {
                // The engine's layout is the transpose of PEFT's.
                let (_, want) = r.f32(&format!("grad.{name}"));
                let what = format!("{arch} {name} ({activations:?})");
                assert_close(&what, &to_vec(g.transpose()), &want, 1e-5);
            }
        }
    }
}

#[test]
fn each_family_run_the_gpus_way_gives_the_cpus_loss_and_gradients() {
    for (arch, _) in ARCHS {
        let m = tiny_hf(&format!("tiny_{arch}"));
        let lora = peft_adapter(arch, &m);
        let model = &m.model;
        let cpu = nll_and_grads(model, &lora, |b, t| model.span(b, t, 0), Mode::Eval);
        let gpu = nll_and_grads(
            model,
            &lora,
            |b, t| model.span(b, t, 0).with_gpu_ops(),
            Mode::Eval,
        );
        assert_close(&format!("{arch} nll"), &gpu.0, &cpu.0, 1e-4);
        // Our nodes sum in another order: 1e-5 of the gradient's largest value.
        for (k, (g, c)) in gpu.1.iter().zip(&cpu.1).enumerate() {
            let tol = 1e-5 * common::scale(c).max(1.0);
            assert_close(&format!("{arch} gradient {k}"), g, c, tol);
        }
    }
}

#[test]
fn decoding_with_a_cache_past_gemmas_window_gives_the_full_passes_logits() {
    // 12 positions, a window of 5: the last ones see only part of the cache.
    let r = reference("gemma3");
    let m = tiny_hf("tiny_gemma3");
    let (shape, ids) = r.i64("input_ids");
    let t = shape[1];
    let row: Vec<i64> = ids[..t].to_vec();
    let full = m.model.forward(
        Tensor::<2, Int>::from_data(TensorData::new(row.clone(), [1, t]), &device()),
        None,
    );
    let full = to_vec(full);
    let vocab = m.model.config.vocab_size;
    let mut cache = KvCache::default();
    let prefix = 3;
    let ids = |s: &[i64]| {
        Tensor::<2, Int>::from_data(TensorData::new(s.to_vec(), [1, s.len()]), &device())
    };
    let h = m
        .model
        .hidden_cached(ids(&row[..prefix]), Some(&mut cache), None, Mode::Eval);
    let first = to_vec(m.model.logits(h));
    assert_close("prefix", &first, &full[..prefix * vocab], 1e-4);
    // Then two at a time (a mask inside the new ones), then one at a time.
    let mut at = prefix;
    while at < t {
        let n = if at < 7 { 2 } else { 1 };
        let h = m
            .model
            .hidden_cached(ids(&row[at..at + n]), Some(&mut cache), None, Mode::Eval);
        let got = to_vec(m.model.logits(h));
        assert_close(
            &format!("positions {at}..{}", at + n),
            &got,
            &full[at * vocab..(at + n) * vocab],
            1e-4,
        );
        at += n;
    }
}
