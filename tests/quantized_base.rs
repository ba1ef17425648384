//! A base quantized at load (`--base-weights q8_0|q4_0`, `src/io/quantize.rs`,
//! `src/model/quantized.rs`): ggml's blocks byte for byte as the `gguf`
//! Python package writes them (tests/fixtures/quant_types.gguf holds its
//! Q8_0 and Q4_0 of the same Gaussian values as its F32 tensor); the round
//! trip's error; the tiny f32 safetensors model kept packed, training like
//! the same quantized values expanded to f32 (1e-5 relative), and its loss
//! near the f32 model's (bounds below, from the measured error); tensors a
//! GGUF already stores in blocks kept as they are.

mod common;

use common::{
    assert_relative, default_model, device, lora_config, loss_and_grads, packed_types, read, to_vec,
};
use tabtune::io::dequant::{GgmlType, dequantize};
use tabtune::io::gguf::Gguf;
use tabtune::io::quantize::quantize;
use tabtune::lora::LoraAdapters;
use tabtune::model::Llama;
use tabtune::model::LlamaConfig;
use tabtune::model::load::{HfFiles, load_gguf_with, load_hf_with};
use tabtune::model::quantized::{BaseWeights, Quantizing};
use tabtune::model::weights::{GgufSource, WeightSource};

fn fixture_tensor(name: &str) -> (Vec<f32>, Vec<u8>) {
    let bytes = read("quant_types.gguf");
    let g = Gguf::parse("quant_types.gguf", &bytes).expect("parses");
    let f32s = g.tensor_f32(g.tensor("F32").expect("F32")).expect("reads");
    let info = g.tensor(name).expect("in the fixture");
    (f32s, g.tensor_bytes(info).to_vec())
}

#[test]
fn q8_0_and_q4_0_blocks_are_the_gguf_packages_byte_for_byte() {
    for (ty, name) in [(GgmlType::Q8_0, "Q8_0"), (GgmlType::Q4_0, "Q4_0")] {
        let (x, want) = fixture_tensor(name);
        let got = quantize(ty, &x).expect("quantizes");
        assert_eq!(got.len(), want.len(), "{name} length");
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ, 0,
            "{name}: {differ} bytes differ from gguf.quants.quantize"
        );
    }
}

/// √(Σ(x̂ − x)² / Σx²).
fn relative_rms_error(ty: GgmlType, x: &[f32]) -> f64 {
    let q = quantize(ty, x).expect("quantizes");
    let back = dequantize(ty, &q, x.len()).expect("dequantizes");
    let err: f64 = x
        .iter()
        .zip(&back)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let norm: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum();
    (err / norm).sqrt()
}

#[test]
fn the_round_trips_error_is_what_ggml_blocks_of_32_give() {
    let (x, _) = fixture_tensor("F32");
    // Measured on these 1,024 Gaussian values: Q8_0 0.0052, Q4_0 0.085.
    let q8 = relative_rms_error(GgmlType::Q8_0, &x);
    let q4 = relative_rms_error(GgmlType::Q4_0, &x);
    assert!(q8 > 0.003 && q8 < 0.007, "Q8_0 relative RMS error {q8}");
    assert!(q4 > 0.05 && q4 < 0.12, "Q4_0 relative RMS error {q4}");
    // Each value within half a step (Q8_0: amax/127), or for Q4_0 one step
    // (amax/8: the end opposite the block's largest value reaches only
    // 7 steps), plus the f16 rounding of the scale.
    for (ty, step) in [(GgmlType::Q8_0, 0.5 / 127.0), (GgmlType::Q4_0, 1.0 / 8.0)] {
        let back = dequantize(ty, &quantize(ty, &x).expect("q"), x.len()).expect("dq");
        for (b, (xs, ys)) in x.chunks(32).zip(back.chunks(32)).enumerate() {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let bound = amax * step * 1.01 + amax * 1e-3;
            for (a, y) in xs.iter().zip(ys) {
                assert!(
                    (a - y).abs() <= bound,
                    "{ty:?} block {b}: {a} came back {y}"
                );
            }
        }
    }
    assert!(
        quantize(GgmlType::Q8_0, &x[..31]).is_err(),
        "31 values are not a block"
    );
    assert!(quantize(GgmlType::Q4_1, &x).is_err(), "only Q8_0 and Q4_0");
}

fn tiny(base: BaseWeights) -> Llama {
    tiny_from("tiny_llama", base)
}

fn tiny_from(dir: &str, base: BaseWeights) -> Llama {
    let (config, weights) = (
        read(&format!("{dir}/config.json")),
        read(&format!("{dir}/model.safetensors")),
    );
    let files = HfFiles {
        config: &config,
        weights: &weights,
        tokenizer: None,
        tokenizer_config: None,
        chat_template: None,
    };
    load_hf_with(dir, &files, base, &device())
        .expect("loads")
        .model
}

/// The NLL sum and every factor's gradient on `small_data`'s batch.
fn nll_and_grads(m: &Llama) -> (f32, Vec<Vec<f32>>) {
    let lora = LoraAdapters::init(lora_config(4), &m.config, 3, &device()).expect("init");
    let lora = lora.map(|t| t.clone() + t.ones_like().mul_scalar(0.01));
    let (nll, grads) = loss_and_grads(m, &lora, |h, r, t| m.nll_sum(h, r, t));
    (nll[0], grads)
}

#[test]
fn a_safetensors_model_quantized_at_load_stays_packed_and_trains_on_those_values() {
    let f32_model = tiny(BaseWeights::Stored);
    let (f32_nll, _) = nll_and_grads(&f32_model);
    for (base, ty, bound) in [
        // Measured: 0.03% (Q8_0) and 1.0% (Q4_0) from the f32 model's loss.
        (BaseWeights::Q8_0, GgmlType::Q8_0, 0.002),
        (BaseWeights::Q4_0, GgmlType::Q4_0, 0.05),
    ] {
        let m = tiny(base);
        assert!(
            packed_types(&m, true).iter().all(|&t| t == ty),
            "{base:?}: all {ty:?}"
        );
        assert!(
            m.weights.byte_len() < f32_model.weights.byte_len(),
            "{base:?} holds less than f32"
        );
        // The packed base against its own values expanded to f32.
        let dense = Llama {
            weights: m.weights.to_dense(&m.device),
            ..m.clone()
        };
        let (nll, grads) = nll_and_grads(&m);
        let (want_nll, want_grads) = nll_and_grads(&dense);
        assert_relative(&format!("{base:?} nll"), &[nll], &[want_nll]);
        for (g, w) in grads.iter().zip(&want_grads) {
            assert_relative(&format!("{base:?} gradient"), g, w);
        }
        let off = ((nll - f32_nll) / f32_nll).abs();
        assert!(
            off > 0.0 && off < bound,
            "{base:?}: loss {nll} against f32 {f32_nll}"
        );
    }
}

#[test]
fn quantizing_changes_every_projection_by_the_stated_error() {
    let f32_model = tiny(BaseWeights::Stored);
    let q8 = tiny(BaseWeights::Q8_0);
    for (a, b) in f32_model.weights.layers.iter().zip(&q8.weights.layers) {
        for (wa, wb) in a.proj.iter().zip(&b.proj) {
            let (x, y) = (
                to_vec(wa.to_dense(&device())),
                to_vec(wb.to_dense(&device())),
            );
            let err: f64 = x
                .iter()
                .zip(&y)
                .map(|(p, q)| f64::from(p - q).powi(2))
                .sum();
            let norm: f64 = x.iter().map(|p| f64::from(*p).powi(2)).sum();
            let rel = (err / norm).sqrt();
            // Measured 0.0050-0.0055 on the tiny model's 14 projections.
            assert!(rel > 0.0 && rel < 0.01, "Q8_0 relative RMS error {rel}");
        }
    }
}

#[test]
fn a_gguf_s_blocks_stay_as_they_are_and_only_its_float_tensors_are_quantized() {
    let bytes = std::fs::read(default_model()).expect("reads the default model");
    let m = load_gguf_with("default.gguf", &bytes, BaseWeights::Q4_0, &device())
        .expect("loads")
        .model;
    let types = packed_types(&m, true);
    // The projections stay Q4_1 and the embedding Q8_0: nothing requantized.
    assert!(
        types[..types.len() - 1]
            .iter()
            .all(|&t| t == GgmlType::Q4_1)
    );
    assert_eq!(types.last(), Some(&GgmlType::Q8_0));
    // The tiny GGUF's f32 blocks become Q4_0.
    let tiny = load_gguf_with(
        "tiny_llama.gguf",
        &read("tiny_llama/tiny_llama.gguf"),
        BaseWeights::Q4_0,
        &device(),
    )
    .expect("loads")
    .model;
    let types = packed_types(&tiny, true);
    assert!(
        types[..types.len() - 1]
            .iter()
            .all(|&t| t == GgmlType::Q4_0)
    );
}

#[test]
fn an_unknown_base_weights_choice_is_refused_by_name() {
    for ok in ["stored", "q8_0", "Q4_0"] {
        BaseWeights::parse(ok).expect(ok);
    }
    assert!(BaseWeights::parse("").is_err(), "empty is not a choice");
    let err = BaseWeights::parse("q5_k")
        .expect_err("not offered")
        .to_string();
    assert!(
        err.contains("base-weights") && err.contains("q5_k"),
        "{err}"
    );
}

#[test]
fn the_same_weights_quantized_from_gguf_or_safetensors_train_alike() {
    // tiny_llama.gguf holds the safetensors' f32 weights, its q/k rows in
    // llama.cpp's order: quantized per row after unpermuting, both give the
    // same blocks, so the same loss and gradients.
    for base in [BaseWeights::Q8_0, BaseWeights::Q4_0] {
        let from_gguf = load_gguf_with(
            "tiny_llama.gguf",
            &read("tiny_llama/tiny_llama.gguf"),
            base,
            &device(),
        )
        .expect("loads")
        .model;
        let (nll, grads) = nll_and_grads(&from_gguf);
        let (want_nll, want_grads) = nll_and_grads(&tiny(base));
        assert_relative(&format!("{base:?} nll"), &[nll], &[want_nll]);
        for (g, w) in grads.iter().zip(&want_grads) {
            assert_relative(&format!("{base:?} gradient"), g, w);
        }
    }
}

#[test]
fn a_matrix_read_as_f32_gets_the_packed_values() {
    let bytes = read("tiny_llama/tiny_llama.gguf");
    let gguf = Gguf::parse("tiny_llama.gguf", &bytes).expect("parses");
    let config = LlamaConfig::from_gguf(&gguf).expect("config");
    let inner = GgufSource {
        gguf: &gguf,
        config: &config,
    };
    let q = Quantizing {
        inner: &inner,
        ty: GgmlType::Q4_0,
        tied_head: false,
    };
    for name in [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
    ] {
        // The type is known before the tensor is read (a GPU skips float ones).
        assert_eq!(inner.packed_type(name).expect("reads"), Some(GgmlType::F32));
        assert_eq!(q.packed_type(name).expect("reads"), Some(GgmlType::Q4_0));
        let packed = q.get_packed(name).expect("reads").expect("present");
        assert_eq!(packed.ggml_type(), GgmlType::Q4_0, "{name}");
        let (shape, dense) = q.get(name).expect("reads").expect("present");
        assert_eq!(shape, packed.shape().to_vec(), "{name}");
        assert_eq!(dense, packed.to_f32(), "{name}: the same values");
        let (_, original) = inner.get(name).expect("reads").expect("present");
        assert_ne!(dense, original, "{name} is quantized");
    }
    // Norms pass through untouched.
    let norm = "model.layers.0.input_layernorm.weight";
    assert_eq!(q.get(norm).expect("reads"), inner.get(norm).expect("reads"));
    assert_eq!(q.packed_type(norm).expect("reads"), Some(GgmlType::F32));
}

#[test]
fn a_tied_embedding_is_kept_at_8_bits_when_the_rest_goes_to_4() {
    let m = tiny_from("tiny_llama_tied/f16", BaseWeights::Q4_0);
    let types = packed_types(&m, true);
    assert!(
        types[..types.len() - 1]
            .iter()
            .all(|&t| t == GgmlType::Q4_0)
    );
    assert_eq!(types.last(), Some(&GgmlType::Q8_0), "the tied head");
}
