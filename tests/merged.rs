//! The merged export (`merge`): the base with the adapter merged in,
//! written as a Hugging Face directory or a GGUF, read back by tabtune's own
//! loaders as a model with no adapter, gives the live model's logits with
//! its adapter, for every family, from GGUF and HF bases. PyTorch, PEFT,
//! transformers and gguf-py check the same files in `scripts/merged_check.py`;
//! llama.cpp runs them in `tests/llama_cpp/check.mjs`.

mod common;

use burn::tensor::{Distribution, Tensor};
use common::{device, read, tiny_gguf, tiny_hf};
use tabtune::io::dequant::GgmlType;
use tabtune::io::gguf::{Gguf, MetaValue};
use tabtune::io::self_check::{SelfCheck, Stored, compare_merged, merged_tolerance, probe_ids};
use tabtune::lora::{LoraAdapters, LoraConfig};
use tabtune::merge::gguf::{self as merged_gguf, FileType};
use tabtune::merge::hf::{self as merged_hf, Dtype, InMemory};
use tabtune::merge::plan;
use tabtune::model::load::{HfFiles, Loaded, load_gguf, load_hf};
use tabtune::readback::block_on;

/// Random factors on every target (B is zero at init), rsLoRA or not, of
/// standard deviation 0.5.
fn random_adapter(m: &Loaded, rslora: bool) -> LoraAdapters {
    adapter_of_size(m, rslora, 0.5)
}

/// Random factors of standard deviation `std`.
fn adapter_of_size(m: &Loaded, rslora: bool, std: f64) -> LoraAdapters {
    let config = LoraConfig {
        use_rslora: rslora,
        ..common::lora_config(4)
    };
    let lora = LoraAdapters::init(config, &m.model.config, 3, &device()).expect("init");
    lora.map(|t| Tensor::random(t.dims(), Distribution::Normal(0.0, std), &device()))
}

fn from_gguf(arch: &str) -> Loaded {
    let file = format!("tiny_{arch}.gguf");
    load_gguf(&file, &read(&format!("tiny_{arch}/{file}")), &device()).expect("tiny gguf loads")
}

/// Every family from its GGUF and from its HF files (Llama's HF files are
/// the GGUF's source).
fn models() -> Vec<(String, Loaded)> {
    let mut out = vec![("llama gguf".to_string(), tiny_gguf())];
    for arch in ["qwen2", "qwen3", "gemma3"] {
        out.push((format!("{arch} gguf"), from_gguf(arch)));
        out.push((format!("{arch} hf"), tiny_hf(&format!("tiny_{arch}"))));
    }
    out
}

fn hf_files(m: &Loaded, lora: Option<&LoraAdapters>, dtype: Dtype) -> InMemory {
    let mut files = InMemory::default();
    block_on(merged_hf::write(
        &m.model,
        lora,
        m.tokenizer.as_ref(),
        &m.origin,
        "tiny",
        dtype,
        &mut files,
    ))
    .expect("writes the directory");
    files
}

fn load_dir(files: &InMemory) -> Loaded {
    let get = |n: &str| files.files.get(n).map(Vec::as_slice);
    load_hf(
        "merged",
        &HfFiles {
            config: get("config.json").expect("config.json"),
            weights: get("model.safetensors").expect("model.safetensors"),
            tokenizer: get("tokenizer.json"),
            tokenizer_config: get("tokenizer_config.json"),
            chat_template: get("chat_template.jinja"),
        },
        &device(),
    )
    .expect("the merged directory loads")
}

fn gguf_bytes(m: &Loaded, lora: Option<&LoraAdapters>, ty: FileType) -> Vec<u8> {
    let mut out = Vec::new();
    let n = block_on(merged_gguf::write(&m.model, lora, &m.origin, ty, &mut out)).expect("writes");
    assert_eq!(n as usize, out.len());
    assert_eq!(
        merged_gguf::file_len(&m.model, &m.origin, ty).expect("len"),
        n,
        "the length known before writing is the length written"
    );
    out
}

fn compared(m: &Loaded, lora: Option<&LoraAdapters>, merged: &Loaded, stored: Stored) -> SelfCheck {
    let ids = probe_ids(None, m.model.config.vocab_size);
    let c = compare_merged(
        &m.model,
        lora,
        &merged.model,
        &ids,
        "merged",
        merged_tolerance(stored),
    );
    block_on(c.read()).expect("compares")
}

#[test]
fn merged_f32_files_read_back_to_the_live_logits_with_the_adapter_for_each_family() {
    for (what, m) in models() {
        for rslora in [false, true] {
            let lora = random_adapter(&m, rslora);
            let dir = load_dir(&hf_files(&m, Some(&lora), Dtype::F32));
            let c = compared(&m, Some(&lora), &dir, Stored::F32);
            assert!(
                c.passed,
                "{what} rslora {rslora}, directory: {}",
                c.message()
            );
            if what.ends_with("gguf") {
                let bytes = gguf_bytes(&m, Some(&lora), FileType::F32);
                let g = load_gguf("merged.gguf", &bytes, &device()).expect("the merged GGUF loads");
                let c = compared(&m, Some(&lora), &g, Stored::F32);
                assert!(c.passed, "{what} rslora {rslora}, GGUF: {}", c.message());
            }
        }
    }
}

#[test]
fn a_merge_that_left_the_adapter_out_fails_the_f32_check() {
    for (what, m) in models() {
        let lora = random_adapter(&m, false);
        let without = load_dir(&hf_files(&m, None, Dtype::F32));
        // The base merged with nothing is the base ...
        let c = compared(&m, None, &without, Stored::F32);
        assert!(c.passed, "{what}: {}", c.message());
        // ... and is told apart from the base with its adapter.
        let c = compared(&m, Some(&lora), &without, Stored::F32);
        assert!(!c.passed, "{what}: {}", c.message());
    }
}

#[test]
fn merged_16_and_8_bit_files_pass_their_tolerance_and_store_each_tensor_as_llama_cpp_expects() {
    for (what, m) in models().into_iter().filter(|(w, _)| w.ends_with("gguf")) {
        // A trained adapter's size: its rounding is then the base's, whose
        // tolerances were measured on real models.
        let lora = adapter_of_size(&m, false, 0.05);
        for (ty, stored, matrix) in [
            (FileType::F16, Stored::F16, GgmlType::F16),
            (FileType::Q8_0, Stored::Q8_0, GgmlType::Q8_0),
        ] {
            let bytes = gguf_bytes(&m, Some(&lora), ty);
            let g = Gguf::parse("merged.gguf", &bytes).expect("parses");
            for t in &g.tensors {
                let cols = t.dims[0] as usize;
                let want = match (t.dims.len(), matrix) {
                    (1, _) => GgmlType::F32,
                    (_, GgmlType::Q8_0) if !cols.is_multiple_of(32) => GgmlType::F16,
                    (_, m) => m,
                };
                assert_eq!(t.ggml_type, want, "{what} {ty:?}: {}", t.name);
            }
            assert_eq!(
                g.meta("general.file_type").expect("file type"),
                &MetaValue::U32(ty.ftype()),
                "{what}"
            );
            let merged = load_gguf("merged.gguf", &bytes, &device()).expect("loads");
            let c = compared(&m, Some(&lora), &merged, stored);
            assert!(c.passed, "{what} {ty:?}: {}", c.message());
        }
        for dtype in [Dtype::F16, Dtype::Bf16] {
            let dir = load_dir(&hf_files(&m, Some(&lora), dtype));
            let stored = if dtype == Dtype::F16 {
                Stored::F16
            } else {
                Stored::Bf16
            };
            let c = compared(&m, Some(&lora), &dir, stored);
            assert!(c.passed, "{what} {dtype:?} directory: {}", c.message());
        }
    }
}

#[test]
fn the_merged_gguf_keeps_the_base_metadata_and_names_every_tensor_as_the_base_does() {
    for (what, m) in models().into_iter().filter(|(w, _)| w.ends_with("gguf")) {
        let arch = m.model.config.arch;
        let file = format!("tiny_{}.gguf", arch.gguf_name());
        let base_bytes = match arch.gguf_name() {
            "llama" => read("tiny_llama/tiny_llama.gguf"),
            a => read(&format!("tiny_{a}/tiny_{a}.gguf")),
        };
        let base = Gguf::parse(&file, &base_bytes).expect("base");
        let bytes = gguf_bytes(&m, None, FileType::F32);
        let merged = Gguf::parse("merged.gguf", &bytes).expect("merged");
        for (k, v) in &base.metadata {
            if !matches!(
                k.as_str(),
                "general.file_type" | "general.name" | "general.quantization_version"
            ) {
                assert_eq!(merged.metadata.get(k), Some(v), "{what}: {k}");
            }
        }
        let mut names: Vec<_> = merged.tensors.iter().map(|t| t.name.clone()).collect();
        let mut want: Vec<_> = base.tensors.iter().map(|t| t.name.clone()).collect();
        names.sort();
        want.sort();
        assert_eq!(names, want, "{what}");
        for t in &merged.tensors {
            let b = base.tensor(&t.name).expect("in the base");
            assert_eq!(t.dims, b.dims, "{what}: {}", t.name);
            // Nothing merged: an f32 base's tensors come back as they were (q/k permuted back).
            if b.ggml_type == GgmlType::F32 {
                assert_eq!(
                    merged.tensor_bytes(t),
                    base.tensor_bytes(b),
                    "{what}: {}",
                    t.name
                );
            }
        }
        assert_eq!(plan(&m.model.config).len(), merged.tensors.len(), "{what}");
    }
}

#[test]
fn a_merged_gguf_of_a_model_read_from_a_directory_is_refused_with_what_to_do() {
    let m = tiny_hf("tiny_qwen2");
    let mut out = Vec::new();
    let err = block_on(merged_gguf::write(
        &m.model,
        None,
        &m.origin,
        FileType::F16,
        &mut out,
    ))
    .expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("convert_hf_to_gguf.py"), "{msg}");
    assert!(out.is_empty(), "nothing written before the refusal");
}

#[test]
fn a_directory_base_keeps_its_own_config_with_the_new_dtype() {
    let m = tiny_hf("tiny_gemma3");
    let files = hf_files(&m, None, Dtype::Bf16);
    let mut theirs: serde_json::Value =
        serde_json::from_slice(&read("tiny_gemma3/config.json")).expect("json");
    let ours: serde_json::Value =
        serde_json::from_slice(&files.files["config.json"]).expect("json");
    theirs["dtype"] = "bfloat16".into();
    assert_eq!(ours, theirs);
    let names: Vec<_> = files.files.keys().cloned().collect();
    assert_eq!(names, ["README.md", "config.json", "model.safetensors"]);
}
