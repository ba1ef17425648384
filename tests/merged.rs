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
    let n = block_on(merged_gguf::write(
        &m.model, lora, None, &m.origin, ty, &mut out,
    ))
    .expect("writes");
    assert_eq!(n as usize, out.len());
    assert_eq!(
        merged_gguf::file_len(&m.model, None, &m.origin, ty).expect("len"),
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
fn a_merged_gguf_of_a_directory_base_without_a_vocabulary_is_refused_with_what_to_do() {
    let m = tiny_hf("tiny_qwen2");
    let mut out = Vec::new();
    let err = block_on(merged_gguf::write(
        &m.model,
        None,
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

fn tabtune(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tabtune"))
        .args(args)
        .output()
        .expect("runs")
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tabtune-merged-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn the_cli_writes_both_merged_forms_and_checks_each_leaving_no_partial_file() {
    let dir = scratch("cli");
    let model = common::fixture("tiny_llama/tiny_llama.gguf");
    let adapter = common::fixture("tiny_llama/adapter");
    let (hf, gguf) = (dir.join("hf"), dir.join("merged.gguf"));
    let out = tabtune(&[
        "export",
        "--model",
        model.to_str().expect("utf-8"),
        "--adapter",
        adapter.to_str().expect("utf-8"),
        "--merged",
        hf.to_str().expect("utf-8"),
        "--dtype",
        "f32",
        "--merged-gguf",
        gguf.to_str().expect("utf-8"),
        "--gguf-type",
        "f16",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("self-check passed"))
        .collect();
    assert_eq!(passed.len(), 2, "{stdout}");
    assert!(passed[0].contains("model.safetensors"), "{stdout}");
    assert!(passed[1].contains("merged.gguf"), "{stdout}");
    let mut names: Vec<String> = std::fs::read_dir(&hf)
        .expect("listed")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["README.md", "config.json", "model.safetensors"]);
    assert!(!dir.join("merged.gguf.partial").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cli_refuses_to_write_over_its_inputs_or_a_gguf_from_a_directory_before_writing_anything() {
    let dir = scratch("refusals");
    let gguf_model = common::fixture("tiny_llama/tiny_llama.gguf");
    let hf_model = common::fixture("tiny_qwen2");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let adapter = |m: &str| path(&common::fixture(&format!("{m}/adapter")));
    let hf_out = path(&dir.join("hf"));
    let cases: [(Vec<String>, &str); 3] = [
        (
            vec![
                "--model".into(),
                path(&gguf_model),
                "--adapter".into(),
                adapter("tiny_llama"),
                "--merged-gguf".into(),
                path(&gguf_model),
            ],
            "is the base model this export reads",
        ),
        (
            vec![
                "--model".into(),
                path(&gguf_model),
                "--adapter".into(),
                adapter("tiny_llama"),
                "--merged".into(),
                adapter("tiny_llama"),
            ],
            "is the adapter this export reads",
        ),
        (
            vec![
                "--model".into(),
                path(&hf_model),
                "--adapter".into(),
                adapter("tiny_qwen2"),
                "--merged".into(),
                hf_out.clone(),
                "--merged-gguf".into(),
                path(&dir.join("m.gguf")),
            ],
            "convert_hf_to_gguf.py",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["export".to_string()];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = tabtune(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{all:?}: {err}"
        );
    }
    assert!(
        !dir.join("hf").exists(),
        "nothing was written before the refusal"
    );
    assert!(gguf_model.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tiny random Llama with SmolLM2's `tokenizer.json` (transformers'),
/// read from its directory as the CLI reads one.
fn tiny_with_vocabulary(tag: &str) -> Loaded {
    let dir = common::tiny_model_dir(tag);
    let read = |f: &str| std::fs::read(dir.join(f)).expect("reads");
    let (config, weights, tok, tok_config, template) = (
        read("config.json"),
        read("model.safetensors"),
        read("tokenizer.json"),
        read("tokenizer_config.json"),
        read("chat_template.jinja"),
    );
    let m = load_hf(
        dir.to_str().expect("utf-8"),
        &HfFiles {
            config: &config,
            weights: &weights,
            tokenizer: Some(&tok),
            tokenizer_config: Some(&tok_config),
            chat_template: Some(&template),
        },
        &device(),
    )
    .expect("loads");
    let _ = std::fs::remove_dir_all(&dir);
    m
}

#[test]
fn a_directory_base_with_a_byte_level_vocabulary_merges_to_a_gguf_that_reads_back_with_its_tokenizer()
 {
    let m = tiny_with_vocabulary("merged-hf-gguf");
    let lora = random_adapter(&m, false);
    let mut bytes = Vec::new();
    block_on(merged_gguf::write(
        &m.model,
        Some(&lora),
        m.tokenizer.as_ref(),
        &m.origin,
        FileType::F32,
        &mut bytes,
    ))
    .expect("writes");
    let g = load_gguf("merged.gguf", &bytes, &device()).expect("loads");
    let c = compared(&m, Some(&lora), &g, Stored::F32);
    assert!(c.passed, "{}", c.message());
    // The GGUF's vocabulary, rebuilt by tabtune as from any GGUF, tokenizes
    // as transformers' tokenizer.json does, and renders chats the same.
    let (ours, theirs) = (
        g.tokenizer.expect("a vocabulary"),
        m.tokenizer.expect("one"),
    );
    for text in [
        "Hello, world! 12345",
        "  two  spaces\nand a line",
        "émoji 🦀 <|im_start|>",
    ] {
        assert_eq!(
            ours.encode(text, true).ok(),
            theirs.encode(text, true).ok(),
            "{text}"
        );
    }
    let chat = [tabtune::tokenizer::Message {
        role: "user".into(),
        content: "Hi there".into(),
    }];
    assert_eq!(
        ours.apply_chat_template(&chat, true).ok(),
        theirs.apply_chat_template(&chat, true).ok()
    );
    assert_eq!((ours.eos_id, ours.bos_id), (theirs.eos_id, theirs.bos_id));
}

#[test]
fn the_vocabulary_written_for_a_directory_base_is_the_one_llama_cpp_s_converter_wrote_for_smollm2()
{
    // SmolLM2's GGUF (llama.cpp's converter) against what tabtune writes from
    // the tokenizer.json it rebuilds from that GGUF: the same vocabulary keys.
    let path = common::default_model();
    let bytes = std::fs::read(&path).expect("reads");
    let m = load_gguf("SmolLM2.gguf", &bytes, &device()).expect("loads");
    let base = Gguf::parse("SmolLM2.gguf", &bytes).expect("parses");
    let tok = m.tokenizer.as_ref().expect("a vocabulary");
    let json = tok.to_json().expect("tokenizer.json");
    let ours =
        tabtune::merge::gguf_meta::from_hf(&m.model.config, Some(tok), Some(json.as_bytes()), "x")
            .expect("written");
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.chat_template",
    ] {
        let (a, b) = (ours.get(key), base.metadata.get(key));
        let same = match (a, b) {
            // The converter writes token types as i32, ids as u32: compare the numbers.
            (Some(MetaValue::Array(x)), Some(MetaValue::Array(y))) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|(p, q)| p == q || (p.as_u64().is_some() && p.as_u64() == q.as_u64()))
            }
            (Some(x), Some(y)) => x == y || (x.as_u64().is_some() && x.as_u64() == y.as_u64()),
            _ => false,
        };
        assert!(
            same,
            "{key}: ours {:?}, the converter's {:?}",
            a.map(short),
            b.map(short)
        );
    }
    // Every hyper-parameter key the converter wrote, with its value.
    for (k, v) in base
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("llama."))
    {
        let ours = ours.get(k).unwrap_or_else(|| panic!("{k} is not written"));
        let same = match (ours.as_f64(), v.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs(),
            _ => ours == v,
        };
        assert!(same, "{k}: ours {ours:?}, the converter's {v:?}");
    }
}

fn short(v: &MetaValue) -> String {
    let s = format!("{v:?}");
    s.chars().take(120).collect()
}
