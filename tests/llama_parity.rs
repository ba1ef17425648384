//! The forward pass matches Hugging Face transformers on the same weights
//! (fixtures from scripts/make_fixtures.py; f32, max abs diff 1e-4 on
//! logits of magnitude ~1-5).

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{Reference, assert_close, device, tiny_gguf, tiny_hf, to_vec};
use tabtune::data::Example;
use tabtune::readback::block_on;
use tabtune::train::evaluate;

const LOGIT_TOL: f32 = 1e-4;

fn ids(r: &Reference) -> (Vec<i64>, [usize; 2]) {
    let (shape, ids) = r.i64("input_ids");
    (ids, [shape[0], shape[1]])
}

#[test]
fn safetensors_model_logits_match_transformers() {
    let r = Reference::open("tiny_llama/reference.safetensors");
    let m = tiny_hf("tiny_llama");
    let (ids, shape) = ids(&r);
    let logits = m.model.forward(
        Tensor::<2, Int>::from_data(TensorData::new(ids, shape), &device()),
        None,
    );
    assert_close(
        "logits",
        &to_vec(logits),
        &r.f32("logits_base").1,
        LOGIT_TOL,
    );
}

#[test]
fn gguf_model_with_permuted_qk_rows_gives_the_same_logits() {
    let r = Reference::open("tiny_llama/reference.safetensors");
    let m = tiny_gguf();
    let mut from_gguf = m.model.config.clone();
    let from_json = tiny_hf("tiny_llama").model.config;
    // GGUF stores epsilon as f32.
    assert_eq!(from_gguf.rms_norm_eps as f32, from_json.rms_norm_eps as f32);
    from_gguf.rms_norm_eps = from_json.rms_norm_eps;
    assert_eq!(from_gguf, from_json, "same config from GGUF metadata");
    let (ids, shape) = ids(&r);
    let logits = m.model.forward(
        Tensor::<2, Int>::from_data(TensorData::new(ids, shape), &device()),
        None,
    );
    assert_close(
        "logits",
        &to_vec(logits),
        &r.f32("logits_base").1,
        LOGIT_TOL,
    );
}

#[test]
fn tied_embedding_models_in_f16_and_bf16_match_transformers() {
    let r = Reference::open("tiny_llama_tied/reference.safetensors");
    let (ids, shape) = ids(&r);
    for tag in ["f16", "bf16"] {
        let m = tiny_hf(&format!("tiny_llama_tied/{tag}"));
        assert!(m.model.config.tie_word_embeddings);
        assert!(m.model.weights.lm_head.is_none());
        let input = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), shape), &device());
        let logits = m.model.forward(input, None);
        assert_close(
            tag,
            &to_vec(logits),
            &r.f32(&format!("logits_{tag}")).1,
            LOGIT_TOL,
        );
    }
}

#[test]
fn masked_loss_matches_transformers() {
    let r = Reference::open("tiny_llama/reference.safetensors");
    let m = tiny_hf("tiny_llama");
    let (ids, [b, t]) = ids(&r);
    let (_, mask) = r.i64("loss_mask");
    let examples: Vec<Example> = (0..b)
        .map(|i| {
            // Row 1 is right-padded in the fixture: drop the pad tokens.
            let n = if i == 1 { t - 2 } else { t };
            Example {
                ids: ids[i * t..i * t + n].iter().map(|&x| x as u32).collect(),
                trained: mask[i * t..i * t + n].iter().map(|&x| x != 0).collect(),
            }
        })
        .collect();
    let read = evaluate(&m.model, None, &examples, 2, 64).expect("evaluates");
    let (loss, tokens) = block_on(read.read()).expect("reads");
    let want = r.f32("loss_base").1[0] as f64;
    assert!((loss - want).abs() < 1e-5, "loss {loss} vs {want}");
    assert_eq!(
        tokens,
        mask.iter()
            .enumerate()
            .filter(|(i, m)| i % t != 0 && **m != 0)
            .count()
    );
}
