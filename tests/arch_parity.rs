//! Qwen2, Qwen3 and Gemma 3 against transformers and PEFT on tiny random
//! models of each family (fixtures from scripts/make_fixtures.py, f32; norm
//! weights and biases random so that each part matters): logits from the
//! HF files and from their GGUF as llama.cpp's converter lays it out (its
//! names, Gemma's `1 + w` norms, no q/k permutation; written by gguf-py,
//! with the GGUF defaults for what it leaves out), the masked
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

/// `config.json` of the tiny Gemma with `edit` applied.
fn gemma_json(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut c: serde_json::Value =
        serde_json::from_slice(&read("tiny_gemma3/config.json")).expect("json");
    edit(&mut c);
    c.to_string().into_bytes()
}

#[test]
fn sliding_windows_follow_transformers_null_and_absent_alike() {
    use tabtune::model::LlamaConfig;
    let parse = |b: &[u8]| LlamaConfig::from_hf_json("config.json", b);
    // Gemma without a window cannot run: refused, named.
    let e = parse(&gemma_json(|c| {
        c["sliding_window"] = serde_json::Value::Null
    }))
    .expect_err("refused")
    .to_string();
    assert!(e.contains("sliding_window is null"), "{e}");
    // Without either RoPE base for its sliding layers, Gemma's default is 10,000.
    let c = parse(&gemma_json(|c| {
        c.as_object_mut().expect("object").remove("rope_parameters");
        c["rope_theta"] = 5e4.into();
    }))
    .expect("parses");
    let w = c.sliding_window.expect("slides");
    assert_eq!((c.rope_theta, w.rope_theta), (5e4, 1e4));
    // Qwen: `use_sliding_window` with a null window slides nowhere; with one,
    // the layers from `max_window_layers` on.
    let mut q: serde_json::Value =
        serde_json::from_slice(&read("tiny_qwen2/config.json")).expect("json");
    q["use_sliding_window"] = true.into();
    q["sliding_window"] = serde_json::Value::Null;
    q.as_object_mut().expect("object").remove("layer_types");
    assert_eq!(
        parse(q.to_string().as_bytes())
            .expect("parses")
            .sliding_window,
        None
    );
    q["sliding_window"] = 8.into();
    q["max_window_layers"] = 1.into();
    let w = parse(q.to_string().as_bytes())
        .expect("parses")
        .sliding_window
        .expect("slides");
    assert_eq!((w.size, w.layers), (8, vec![false, true]));
}

#[test]
fn a_gguf_with_rope_scaling_frequency_factors_or_partial_rope_is_refused() {
    use tabtune::io::dequant::GgmlType;
    use tabtune::io::gguf::{Gguf, MetaValue};
    use tabtune::io::gguf_write::GgufWriter;
    use tabtune::model::LlamaConfig;
    // The tiny Qwen2 GGUF's metadata, plus one key or tensor.
    let bytes = read("tiny_qwen2/tiny_qwen2.gguf");
    let base = Gguf::parse("tiny_qwen2.gguf", &bytes).expect("parses");
    let with = |key: Option<(&str, MetaValue)>, freqs: bool| {
        let mut w = GgufWriter::new("x.gguf");
        for (k, v) in &base.metadata {
            w.meta(k, v.clone()).expect("meta");
        }
        if let Some((k, v)) = key {
            w.meta(k, v).expect("meta");
        }
        if freqs {
            let ones: Vec<u8> = (0..4).flat_map(|_| 1f32.to_le_bytes()).collect();
            w.tensor("rope_freqs.weight", &[4], GgmlType::F32, ones)
                .expect("tensor");
        }
        let file = w.to_bytes();
        let g = Gguf::parse("x.gguf", &file).expect("parses");
        LlamaConfig::from_gguf(&g).err().map(|e| e.to_string())
    };
    assert_eq!(with(None, false), None, "the file as it is loads");
    let e = with(
        Some(("qwen2.rope.scaling.type", MetaValue::Str("yarn".into()))),
        false,
    );
    assert!(
        e.expect("refused")
            .contains("RoPE scaling `yarn` is not supported")
    );
    let e = with(None, true);
    assert!(e.expect("refused").contains("rope_freqs.weight"));
    let e = with(
        Some(("qwen2.rope.dimension_count", MetaValue::U32(4))),
        false,
    );
    assert!(
        e.expect("refused")
            .contains("RoPE on 4 of each head's 8 dimensions")
    );
}

#[test]
fn each_familys_peft_export_has_the_keys_and_shapes_peft_wrote() {
    use tabtune::io::safetensors::SafetensorsFile;
    for (arch, _) in ARCHS {
        let m = tiny_hf(&format!("tiny_{arch}"));
        let lora = peft_adapter(arch, &m);
        let ours = common::export(&lora, "tiny");
        let theirs = read(&format!("tiny_{arch}/adapter/adapter_model.safetensors"));
        let shapes = |file: &SafetensorsFile| -> Vec<(String, Vec<usize>)> {
            let mut v: Vec<_> = file
                .names()
                .into_iter()
                .map(|n| {
                    let (shape, _) = file.get_f32(&n).expect("reads").expect("present");
                    (n, shape)
                })
                .collect();
            v.sort();
            v
        };
        let ours = SafetensorsFile::parse("ours", &ours.safetensors).expect("parses");
        let theirs = SafetensorsFile::parse("peft", &theirs).expect("parses");
        assert_eq!(shapes(&ours), shapes(&theirs), "{arch}");
    }
}
