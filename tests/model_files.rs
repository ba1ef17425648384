//! Bad model files get a clear error naming the file and what is wrong.

mod common;

use common::{device, read};
use tabtune::model::load::{HfFiles, load_hf};

fn load(config: &[u8], weights: &[u8]) -> String {
    let files = HfFiles {
        config,
        weights,
        tokenizer: None,
        tokenizer_config: None,
        chat_template: None,
    };
    match load_hf("m", &files, &device()) {
        Ok(_) => panic!("should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_truncated_safetensors_file_is_an_error() {
    let config = read("tiny_llama/config.json");
    let weights = read("tiny_llama/model.safetensors");
    for cut in [0, 7, 100, weights.len() / 2, weights.len() - 1] {
        let e = load(&config, &weights[..cut]);
        assert!(
            e.starts_with("m/model.safetensors: not a valid safetensors file"),
            "{e}"
        );
    }
}

#[test]
fn a_missing_tensor_is_named_with_its_gguf_name() {
    let config = read("tiny_llama/config.json");
    let weights = read("tiny_llama_tied/f16/model.safetensors"); // tied: no lm_head
    let e = load(&config, &weights);
    assert!(
        e.contains("tensor `lm_head.weight` is missing (GGUF name `output.weight`)"),
        "{e}"
    );
}

#[test]
fn a_shape_that_disagrees_with_the_config_is_named() {
    let mut config: serde_json::Value =
        serde_json::from_slice(&read("tiny_llama/config.json")).expect("json");
    config["intermediate_size"] = 48.into();
    let e = load(
        config.to_string().as_bytes(),
        &read("tiny_llama/model.safetensors"),
    );
    assert!(
        e.contains("has shape [64, 32], the config implies [48, 32]"),
        "{e}"
    );
}

#[test]
fn config_json_errors_name_line_column_or_field() {
    let weights = read("tiny_llama/model.safetensors");
    let e = load(b"{\n  \"vocab_size\": 96,\n  oops\n}", &weights);
    assert!(e.starts_with("m/config.json: line 3 column 3"), "{e}");
    let mut c: serde_json::Value =
        serde_json::from_slice(&read("tiny_llama/config.json")).expect("json");
    c["model_type"] = "gpt2".into();
    assert!(
        load(c.to_string().as_bytes(), &weights).contains("model_type `gpt2` is not supported")
    );
    let mut c: serde_json::Value =
        serde_json::from_slice(&read("tiny_llama/config.json")).expect("json");
    c["num_key_value_heads"] = 3.into();
    assert!(
        load(c.to_string().as_bytes(), &weights).contains("not a multiple of num_key_value_heads")
    );
}

#[test]
fn an_unsupported_weight_dtype_is_named() {
    let config = read("tiny_llama/config.json");
    let bytes = vec![0u8; 96 * 32 * 8];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![96, 32], &bytes)
        .expect("view");
    let file =
        safetensors::serialize([("model.embed_tokens.weight", view)], None).expect("serializes");
    let e = load(&config, &file);
    assert!(
        e.contains("model.embed_tokens.weight has dtype I64; tabtune reads F32, F16 and BF16"),
        "{e}"
    );
}

#[test]
fn a_tokenizer_larger_than_the_embedding_is_rejected() {
    let files = HfFiles {
        config: &read("tiny_llama/config.json"),
        weights: &read("tiny_llama/model.safetensors"),
        tokenizer: Some(&read("smollm2/hf_tokenizer/tokenizer.json")),
        tokenizer_config: None,
        chat_template: None,
    };
    let e = load_hf("m", &files, &device())
        .err()
        .expect("fails")
        .to_string();
    assert!(
        e.contains("the tokenizer has 49152 tokens but the model embeds only 96"),
        "{e}"
    );
}
