//! The check before a download (`io::self_check`): written adapter files,
//! read back as PEFT and llama.cpp read them, give the live adapter's
//! logits; a changed value or a cut file fails it, saying what differs.

mod common;

use burn::tensor::{Distribution, Tensor};
use common::{device, tiny_gguf, tiny_hf};
use tabtune::io::bundle::adapter_zip;
use tabtune::io::gguf_lora::{self, GgufLoraBase};
use tabtune::io::self_check::{TOLERANCE, Written, check};
use tabtune::lora::{LoraAdapters, LoraConfig};
use tabtune::model::load::Loaded;
use tabtune::readback::block_on;

/// Random factors on every target (B is zero at init), rsLoRA or not.
fn random_adapter(m: &Loaded, rslora: bool) -> LoraAdapters {
    let config = LoraConfig {
        use_rslora: rslora,
        ..common::lora_config(4)
    };
    let lora = LoraAdapters::init(config, &m.model.config, 3, &device()).expect("init");
    lora.map(|t| Tensor::random(t.dims(), Distribution::Normal(0.0, 0.5), &device()))
}

fn gguf_of(m: &Loaded, lora: &LoraAdapters) -> Vec<u8> {
    let base = GgufLoraBase::new(m.model.config.clone(), "tiny");
    block_on(gguf_lora::export(lora, &base).read()).expect("exports")
}

#[test]
fn peft_files_and_gguf_loras_read_back_to_the_live_logits_for_each_family() {
    // Llama (q/k rows permuted in the GGUF) from its GGUF, the others from HF files.
    let models = [
        tiny_gguf(),
        tiny_hf("tiny_qwen2"),
        tiny_hf("tiny_qwen3"),
        tiny_hf("tiny_gemma3"),
    ];
    for m in &models {
        for rslora in [false, true] {
            let lora = random_adapter(m, rslora);
            let peft = common::export(&lora, "tiny");
            let written = [
                Written::Peft {
                    config: peft.config_json.as_bytes(),
                    weights: &peft.safetensors,
                },
                Written::Zip(&adapter_zip(&peft, "card").expect("zips")),
                Written::Gguf(&gguf_of(m, &lora)),
            ];
            for w in written {
                let c = block_on(check(&m.model, None, &lora, w));
                let what = format!("{:?} rslora {rslora}: {}", m.model.config.arch, c.message());
                assert!(c.passed && c.error.is_none(), "{what}");
                assert!(c.tokens >= 8 && c.max_logit > 0.0, "{what}");
            }
        }
    }
}

#[test]
fn a_changed_factor_fails_the_check_and_says_by_how_much() {
    let m = tiny_gguf();
    let lora = random_adapter(&m, false);
    let mut gguf = gguf_of(&m, &lora);
    // The last factor's last value (lora_b of the last layer's down_proj), made large.
    let end = gguf.len();
    gguf[end - 4..].copy_from_slice(&100.0f32.to_le_bytes());
    let c = block_on(check(&m.model, None, &lora, Written::Gguf(&gguf)));
    assert!(!c.passed, "{}", c.message());
    assert!(c.max_abs_diff > TOLERANCE * c.max_logit, "{}", c.message());
    assert!(
        c.message()
            .starts_with("self-check FAILED: adapter.gguf read back gives logits up to"),
        "{}",
        c.message()
    );
}

#[test]
fn a_cut_file_fails_the_check_naming_why_it_does_not_read_back() {
    let m = tiny_hf("tiny_qwen3");
    let lora = random_adapter(&m, false);
    let peft = common::export(&lora, "tiny");
    let cut = &peft.safetensors[..peft.safetensors.len() / 2];
    let c = block_on(check(
        &m.model,
        None,
        &lora,
        Written::Peft {
            config: peft.config_json.as_bytes(),
            weights: cut,
        },
    ));
    assert!(!c.passed);
    assert!(
        c.message()
            .starts_with("self-check FAILED: adapter_model.safetensors does not read back: "),
        "{}",
        c.message()
    );
    let c = block_on(check(&m.model, None, &lora, Written::Zip(b"PK not a zip")));
    assert!(
        !c.passed && c.message().contains("does not read back"),
        "{}",
        c.message()
    );
}
