//! KV-cached decoding agrees with recomputing the whole sequence.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{assert_close, device, tiny_hf, to_vec};
use tabtune::generate::{Decoder, GenerateConfig};
use tabtune::lora::LoraAdapters;
use tabtune::model::Llama;
use tabtune::model::{KvCache, Mode};
use tabtune::readback::block_on;

fn ids(v: &[i64]) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), &device())
}

#[test]
fn appending_chunks_to_the_cache_matches_one_full_pass() {
    let m = tiny_hf("tiny_llama").model;
    let seq: Vec<i64> = vec![5, 17, 33, 2, 90, 41, 8, 64, 12];
    let d = m.config.hidden_size;
    let full = to_vec(m.hidden(ids(&seq), None, Mode::Eval)); // [9, d]
    let mut cache = KvCache::default();
    let a = to_vec(m.hidden_cached(ids(&seq[..5]), Some(&mut cache), None, Mode::Eval));
    let b = to_vec(m.hidden_cached(ids(&seq[5..8]), Some(&mut cache), None, Mode::Eval)); // masked chunk
    let c = to_vec(m.hidden_cached(ids(&seq[8..]), Some(&mut cache), None, Mode::Eval)); // one token
    assert_eq!(cache.len(), 9);
    assert_close("prefill", &a, &full[..5 * d], 1e-5);
    assert_close("chunk of 3", &b, &full[5 * d..8 * d], 1e-5);
    assert_close("single token", &c, &full[8 * d..], 1e-5);
}

#[test]
fn appending_chunks_the_gpus_way_matches_one_full_pass_the_cpus_way() {
    // RoPE, RMSNorm and attention as the GPU's nodes (over their twins
    // here): the prefill through our attention, filling the cache; the
    // later chunks through burn's attention with the rotated cached keys.
    let m = tiny_hf("tiny_llama").model;
    let seq: Vec<i64> = vec![5, 17, 33, 2, 90, 41, 8, 64, 12];
    let d = m.config.hidden_size;
    let full = to_vec(m.hidden(ids(&seq), None, Mode::Eval)); // [9, d]
    let mut cache = KvCache::default();
    let mut chunk = |part: &[i64]| {
        let span = m.span(1, part.len(), cache.len()).with_gpu_ops();
        to_vec(m.hidden_in(ids(part), &span, Some(&mut cache), None, Mode::Eval))
    };
    let a = chunk(&seq[..5]);
    let b = chunk(&seq[5..8]); // masked chunk
    let c = chunk(&seq[8..]); // one token
    assert_eq!(cache.len(), 9);
    assert_close("prefill", &a, &full[..5 * d], 1e-5);
    assert_close("chunk of 3", &b, &full[5 * d..8 * d], 1e-5);
    assert_close("single token", &c, &full[8 * d..], 1e-5);
}

/// The decode loop, blocked on.
fn generate(
    m: &Llama,
    adapters: Option<&LoraAdapters>,
    prompt: &[u32],
    stop: &[u32],
    cfg: &GenerateConfig,
    mut on_token: impl FnMut(u32) -> bool,
) -> tabtune::Result<Vec<u32>> {
    block_on(tabtune::generate::generate(
        m,
        adapters,
        prompt,
        stop,
        cfg,
        |id| Ok(on_token(id)),
    ))
}

#[test]
fn greedy_generation_equals_argmax_of_full_recomputation() {
    let m = tiny_hf("tiny_llama").model;
    let prompt = [7u32, 3, 55, 21];
    let got = generate(
        &m,
        None,
        &prompt,
        &[],
        &GenerateConfig {
            max_tokens: 8,
            ..GenerateConfig::default()
        },
        |_| true,
    )
    .expect("generates");
    let mut seq: Vec<i64> = prompt.iter().map(|&x| x as i64).collect();
    let v = m.config.vocab_size;
    for _ in 0..8 {
        let logits = to_vec(m.forward(ids(&seq), None));
        let last = &logits[logits.len() - v..];
        let next = last
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
            .0;
        seq.push(next as i64);
    }
    let want: Vec<u32> = seq[prompt.len()..].iter().map(|&x| x as u32).collect();
    assert_eq!(got, want);
}

#[test]
fn generation_stops_at_a_stop_token_and_when_asked() {
    let m = tiny_hf("tiny_llama").model;
    let cfg = GenerateConfig {
        max_tokens: 8,
        ..GenerateConfig::default()
    };
    let free = generate(&m, None, &[7, 3], &[], &cfg, |_| true).expect("generates");
    let stopped = generate(&m, None, &[7, 3], &[free[2]], &cfg, |_| true).expect("generates");
    assert_eq!(
        stopped,
        free[..free.iter().position(|&t| t == free[2]).expect("present")].to_vec()
    );
    let mut n = 0;
    let early = generate(&m, None, &[7, 3], &[], &cfg, |_| {
        n += 1;
        n < 3
    })
    .expect("generates");
    assert_eq!(early.len(), 3);
}

#[test]
fn driving_the_decoder_by_hand_gives_the_tokens_of_generate() {
    let m = tiny_hf("tiny_llama").model;
    for temperature in [0.0, 0.8] {
        let cfg = GenerateConfig {
            max_tokens: 6,
            temperature,
            seed: 9,
        };
        let blocking = generate(&m, None, &[7, 3, 55], &[], &cfg, |_| true).expect("generates");
        let mut d = Decoder::new(&m, None, &[7, 3, 55], &[], cfg.clone());
        while let Some(p) = d.step() {
            let id = block_on(p.read()).expect("reads");
            if !d.accept(id) {
                break;
            }
        }
        assert_eq!(
            d.produced(),
            blocking.as_slice(),
            "temperature {temperature}"
        );
        assert_eq!(blocking.len(), 6);
    }
}

#[test]
fn sampling_is_seeded() {
    let m = tiny_hf("tiny_llama").model;
    let run = |seed| {
        let cfg = GenerateConfig {
            max_tokens: 12,
            temperature: 1.5,
            seed,
        };
        generate(&m, None, &[7, 3], &[], &cfg, |_| true).expect("generates")
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}
