//! The adapter as a GGUF LoRA (`io::gguf_lora`): the keys, names, shapes and
//! values llama.cpp's `convert_lora_to_gguf.py` writes for the same PEFT
//! adapter, q/k rows in the base GGUF's own order (found from the base file,
//! not from our permutation), and the CLI's `export --gguf`. That llama.cpp
//! itself loads it and agrees with our losses is `tests/llama_cpp/check.mjs`.

mod common;

use std::process::Command;

use burn::tensor::{Distribution, Tensor};
use common::{device, fixture, lora_config, read, tiny_gguf};
use tabtune::io::gguf::{Gguf, MetaValue};
use tabtune::io::gguf_lora::{self, GgufLoraBase};
use tabtune::io::safetensors::SafetensorsFile;
use tabtune::lora::{LoraAdapters, LoraConfig, Target};
use tabtune::model::load::Loaded;
use tabtune::readback::block_on;

/// An adapter on every target with every factor random (B is zero at init).
fn random_adapter(loaded: &Loaded, config: LoraConfig) -> LoraAdapters {
    let lora = LoraAdapters::init(config, &loaded.model.config, 5, &device()).expect("init");
    lora.map(|t| Tensor::random(t.dims(), Distribution::Normal(0.0, 1.0), &device()))
}

fn gguf_of(lora: &LoraAdapters, loaded: &Loaded) -> Vec<u8> {
    let base = GgufLoraBase::new(loaded.model.config.clone(), "some/dir/tiny/");
    block_on(gguf_lora::export(lora, &base).read()).expect("exports")
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// For each row of the base GGUF's `name` (GGUF order), the row of the same
/// weight in the HF checkpoint that equals it.
fn gguf_rows_from_hf(base: &Gguf, name: &str, hf: &[f32], cols: usize) -> Vec<usize> {
    let info = base.tensor(name).expect("base tensor");
    let gguf = base.tensor_f32(info).expect("reads");
    let row = |w: &[f32], r: usize| w[r * cols..(r + 1) * cols].to_vec();
    (0..gguf.len() / cols)
        .map(|g| {
            let want = row(&gguf, g);
            (0..hf.len() / cols)
                .find(|&h| row(hf, h) == want)
                .unwrap_or_else(|| panic!("{name} row {g} is no HF row"))
        })
        .collect()
}

#[test]
fn the_gguf_adapter_holds_the_peft_factors_under_llama_cpp_names_with_q_k_rows_in_the_base_files_order()
 {
    let loaded = tiny_gguf();
    let cfg = loaded.model.config.clone();
    let lora = random_adapter(&loaded, lora_config(4));
    let peft_files = common::export(&lora, "tiny");
    let peft = SafetensorsFile::parse("peft", &peft_files.safetensors).expect("peft parses");
    let bytes = gguf_of(&lora, &loaded);
    let g = Gguf::parse("adapter.gguf", &bytes).expect("parses");

    // The keys llama.cpp's loader reads, with the types it reads them as.
    let meta = |k: &str| g.meta(k).expect("key").clone();
    assert_eq!(meta("general.architecture"), MetaValue::Str("llama".into()));
    assert_eq!(meta("general.type"), MetaValue::Str("adapter".into()));
    assert_eq!(meta("adapter.type"), MetaValue::Str("lora".into()));
    assert_eq!(meta("adapter.lora.alpha"), MetaValue::F32(8.0));
    assert_eq!(meta("general.quantization_version"), MetaValue::U32(2));
    // The base's path is not written into the file, only its last part.
    assert_eq!(meta("general.name"), MetaValue::Str("tiny LoRA".into()));
    assert_eq!(g.tensors.len(), 2 * 7 * cfg.num_layers);

    let base_bytes = read("tiny_llama/tiny_llama.gguf");
    let base = Gguf::parse("tiny_llama.gguf", &base_bytes).expect("base parses");
    let hf_bytes = read("tiny_llama/model.safetensors");
    let hf = SafetensorsFile::parse("model.safetensors", &hf_bytes).expect("hf parses");
    let r = 4;
    for i in 0..cfg.num_layers {
        for t in Target::ALL {
            let stem = format!("blk.{i}.{}.weight", t.gguf_name());
            let peft_key = |f: &str| {
                format!(
                    "base_model.model.model.layers.{i}.{}.{f}.weight",
                    t.hf_path()
                )
            };
            let (_, want_a) = peft
                .get_f32(&peft_key("lora_A"))
                .expect("reads")
                .expect("A");
            let (_, want_b) = peft
                .get_f32(&peft_key("lora_B"))
                .expect("reads")
                .expect("B");
            let a = g.tensor(&format!("{stem}.lora_a")).expect("lora_a");
            let b = g.tensor(&format!("{stem}.lora_b")).expect("lora_b");
            // llama.cpp's checks: a.ne[0] = base.ne[0], b.ne[1] = base.ne[1], a.ne[1] = b.ne[0].
            let w = base.tensor(&stem).expect("base tensor");
            assert_eq!(a.dims, vec![w.dims[0], r as u64], "{stem} lora_a");
            assert_eq!(b.dims, vec![r as u64, w.dims[1]], "{stem} lora_b");
            assert_eq!(f32s(g.tensor_bytes(a)), want_a, "{stem} lora_a values");
            let got_b = f32s(g.tensor_bytes(b));
            let want_b = match t {
                Target::Q | Target::K => {
                    let name = format!("model.layers.{i}.{}.weight", t.hf_path());
                    let (_, w_hf) = hf.get_f32(&name).expect("reads").expect("hf weight");
                    let rows = gguf_rows_from_hf(&base, &stem, &w_hf, cfg.hidden_size);
                    assert!(
                        rows.iter().enumerate().any(|(g, &h)| g != h),
                        "{stem} is permuted in the base"
                    );
                    rows.iter()
                        .flat_map(|&h| want_b[h * r..(h + 1) * r].to_vec())
                        .collect()
                }
                _ => want_b,
            };
            assert_eq!(got_b, want_b, "{stem} lora_b values");
        }
    }
}

#[test]
fn rslora_is_written_as_the_alpha_that_gives_its_scale_under_llama_cpps_alpha_over_r() {
    let loaded = tiny_gguf();
    let config = LoraConfig {
        use_rslora: true,
        ..lora_config(4)
    };
    let lora = random_adapter(&loaded, config);
    let bytes = gguf_of(&lora, &loaded);
    let g = Gguf::parse("adapter.gguf", &bytes).expect("parses");
    let alpha = g.meta_f64("adapter.lora.alpha").expect("alpha");
    // PEFT's rsLoRA scale alpha/sqrt(r) = 8/2; llama.cpp scales by alpha/r.
    assert!((alpha / 4.0 - 8.0 / 2.0).abs() < 1e-6, "{alpha}");
}

#[test]
fn the_cli_exports_a_peft_adapter_as_a_gguf_lora_with_an_ollama_modelfile_and_a_readme() {
    let out = std::env::temp_dir().join(format!("tabtune-export-{}", std::process::id()));
    let model = fixture("tiny_llama/tiny_llama.gguf");
    let adapter = fixture("tiny_llama/adapter");
    let o = Command::new(env!("CARGO_BIN_EXE_tabtune"))
        .args(["export", "--model"])
        .arg(&model)
        .arg("--adapter")
        .arg(&adapter)
        .arg("--gguf")
        .arg(&out)
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The file as written, read back as llama.cpp reads it, gives the same logits.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.starts_with("self-check passed: adapter.gguf read back"),
        "{stdout}"
    );
    let bytes = std::fs::read(out.join("adapter.gguf")).expect("adapter.gguf");
    let g = Gguf::parse("adapter.gguf", &bytes).expect("parses");
    // The fixture adapter (PEFT-saved) targets all seven projections of both blocks.
    let names: Vec<&str> = g.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 28, "{names:?}");
    assert_eq!(
        names[..2],
        ["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"]
    );
    assert_eq!(names[27], "blk.1.ffn_down.weight.lora_b");
    let modelfile = std::fs::read_to_string(out.join("Modelfile")).expect("Modelfile");
    assert!(
        modelfile.contains("\nFROM ./tiny_llama.gguf\nADAPTER ./adapter.gguf\n"),
        "{modelfile}"
    );
    let readme = std::fs::read_to_string(out.join("README.md")).expect("README.md");
    assert!(
        readme.contains("llama-cli -m tiny_llama.gguf --lora adapter.gguf"),
        "{readme}"
    );
    std::fs::remove_dir_all(&out).ok();

    // Into the adapter's own directory: refused (its README.md is the model card).
    let o = Command::new(env!("CARGO_BIN_EXE_tabtune"))
        .args(["export", "--model"])
        .arg(&model)
        .arg("--adapter")
        .arg(&adapter)
        .arg("--gguf")
        .arg(&adapter)
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is the adapter's own directory"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Nothing asked for: a clear message, not a silent success.
    let o = Command::new(env!("CARGO_BIN_EXE_tabtune"))
        .args(["export", "--model"])
        .arg(&model)
        .arg("--adapter")
        .arg(&adapter)
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--gguf DIR"));
}

#[test]
fn a_base_without_a_gguf_file_gets_a_modelfile_naming_base_gguf_and_how_to_make_it() {
    let files = gguf_lora::bundle(vec![1, 2, 3], None);
    let text = |i: usize| String::from_utf8(files[i].1.clone()).expect("utf-8");
    assert_eq!(
        files.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["adapter.gguf", "Modelfile", "README.md"]
    );
    assert!(
        text(1).contains("\nFROM ./BASE.gguf\nADAPTER ./adapter.gguf\n"),
        "{}",
        text(1)
    );
    assert!(text(2).contains("convert_hf_to_gguf.py"), "{}", text(2));
    assert!(
        text(2).contains("llama-cli -m BASE.gguf --lora adapter.gguf"),
        "{}",
        text(2)
    );
}

#[test]
fn the_export_of_a_peft_adapter_equals_gguf_pys_file_byte_for_byte() {
    // tiny_llama/adapter.gguf: the same adapter written by gguf-py's
    // GGUFWriter (make_fixtures.py lora_golden), keys and tensors in our order.
    let loaded = common::tiny_gguf();
    let lora = tabtune::io::peft::import(
        "adapter_config.json",
        &read("tiny_llama/adapter/adapter_config.json"),
        "adapter_model.safetensors",
        &read("tiny_llama/adapter/adapter_model.safetensors"),
        &loaded.model.config,
        &device(),
    )
    .expect("imports");
    let base = GgufLoraBase::new(loaded.model.config.clone(), "tiny_llama");
    let ours = block_on(gguf_lora::export(&lora, &base).read()).expect("exports");
    let golden = read("tiny_llama/adapter.gguf");
    assert_eq!(ours.len(), golden.len(), "file sizes");
    let first = ours.iter().zip(&golden).position(|(a, b)| a != b);
    assert_eq!(first, None, "first differing byte");
}
