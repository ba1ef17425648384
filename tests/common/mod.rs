//! Helpers shared by the integration tests: fixture paths, reference
//! tensors, comparisons, and the tiny models.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng, rngs::StdRng};
use safetensors::{Dtype, tensor::TensorView};

use burn::tensor::{Device, Tensor};
use tabtune::data::Example;
use tabtune::io::peft::{self, PeftFiles};
use tabtune::io::safetensors::SafetensorsFile;
use tabtune::lora::{LoraAdapters, LoraConfig, Target};
use tabtune::model::load::{HfFiles, Loaded, load_gguf, load_hf};
use tabtune::readback::block_on;
use tabtune::tokenizer::{Message, TextTokenizer};
use tabtune::train::{StepReport, Trainer};

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

pub fn device() -> Device {
    Device::flex()
}

/// Reference tensors written by scripts/make_fixtures.py.
pub struct Reference {
    bytes: Vec<u8>,
    name: String,
}

impl Reference {
    pub fn open(rel: &str) -> Self {
        Self {
            bytes: read(rel),
            name: rel.to_string(),
        }
    }
    fn file(&self) -> SafetensorsFile<'_> {
        SafetensorsFile::parse(&self.name, &self.bytes).expect("reference parses")
    }
    pub fn f32(&self, key: &str) -> (Vec<usize>, Vec<f32>) {
        self.file()
            .get_f32(key)
            .expect("reads")
            .unwrap_or_else(|| panic!("{key} missing"))
    }
    pub fn i64(&self, key: &str) -> (Vec<usize>, Vec<i64>) {
        self.file()
            .get_i64(key)
            .expect("reads")
            .unwrap_or_else(|| panic!("{key} missing"))
    }
    pub fn names(&self) -> Vec<String> {
        self.file().names()
    }
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec()
        .expect("f32 data")
}

/// Largest |a - b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        // A NaN difference must not vanish in the max (f32::max drops it).
        .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m })
}

/// The largest magnitude in `v` (at least 1e-12): what a relative
/// tolerance is relative to.
pub fn scale(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, x| a.max(x.abs())).max(1e-12)
}

/// `got` equals `want` within 1e-5 of `want`'s largest value.
pub fn assert_relative(what: &str, got: &[f32], want: &[f32]) {
    assert_close(what, got, want, 1e-5 * scale(want));
}

/// The NLL sum by `loss` (hidden states, trained rows, targets) on
/// `small_data`'s batch at length 32 with a graph through `lora`, and every
/// factor's gradient in `named_tensors` order.
pub fn loss_and_grads(
    m: &tabtune::model::Llama,
    lora: &LoraAdapters,
    loss: impl Fn(Tensor<2>, &[i64], &[i64]) -> Tensor<1>,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let tracked = lora.map(|t| t.autodiff().require_grad());
    let data = small_data();
    let refs: Vec<&Example> = data.iter().collect();
    let batch = tabtune::train::Batch::new(&refs, 32);
    let hidden = m.hidden(
        batch.ids_tensor(&device()),
        Some(&tracked),
        tabtune::model::Mode::Train,
    );
    let nll = loss(hidden, &batch.trained_positions, &batch.targets);
    let grads = nll.clone().backward();
    let factors = tracked
        .named_tensors()
        .into_iter()
        .map(|(_, t)| to_vec(t.grad(&grads).expect("a gradient")))
        .collect();
    (to_vec(nll.inner()), factors)
}

/// The NLL sum of `small_data` through every block with `span` made from the
/// batch's `[b, t]` (the GPU's way on the CPU with `Span::with_gpu_ops`),
/// and every factor's gradient.
pub fn nll_and_grads(
    m: &tabtune::model::Llama,
    lora: &LoraAdapters,
    span: impl Fn(usize, usize) -> tabtune::model::Span,
    mode: tabtune::model::Mode,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let data = small_data();
    let refs: Vec<_> = data.iter().collect();
    let batch = tabtune::train::Batch::new(&refs, 32);
    let tracked = lora.map(|t| t.autodiff().require_grad());
    let ids = batch.ids_tensor(&device());
    let [b, t] = ids.dims();
    let span = span(b, t);
    let mut x = m.embed(ids);
    for i in 0..m.weights.layers.len() {
        x = m.block(i, x, &span, None, Some(&tracked), mode);
    }
    let nll = m.nll_sum(
        m.final_norm(x, &span),
        &batch.trained_positions,
        &batch.targets,
    );
    let g = nll.clone().backward();
    let grads = tracked
        .named_tensors()
        .into_iter()
        .map(|(_, t)| to_vec(t.grad(&g).expect("a gradient")))
        .collect();
    (to_vec(nll.inner()), grads)
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let d = max_abs_diff(got, want);
    assert!(d <= tol, "{what}: max abs diff {d} > {tol}");
}

pub fn tiny_hf(dir: &str) -> Loaded {
    let config = read(&format!("{dir}/config.json"));
    let weights = read(&format!("{dir}/model.safetensors"));
    load_hf(
        dir,
        &HfFiles {
            config: &config,
            weights: &weights,
            tokenizer: None,
            tokenizer_config: None,
            chat_template: None,
        },
        &device(),
    )
    .expect("tiny model loads")
}

pub fn tiny_gguf() -> Loaded {
    load_gguf(
        "tiny_llama.gguf",
        &read("tiny_llama/tiny_llama.gguf"),
        &device(),
    )
    .expect("tiny gguf loads")
}

/// The default model file, fetched by scripts/fetch-model.sh.
pub fn default_model() -> PathBuf {
    let cache = std::env::var("TABTUNE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/tabtune")
        });
    let p = cache.join("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-model.sh (the README's test command does)",
        p.display()
    );
    p
}

/// Gemma 3 270M (Q4_K_M GGUF), fetched by `scripts/fetch-model.sh gemma3`.
pub fn gemma_model() -> PathBuf {
    let cache = std::env::var("TABTUNE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/tabtune")
        });
    let p = cache.join("models/gemma3/gemma-3-270m-q4_k_m.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-model.sh gemma3 (the README's test command does)",
        p.display()
    );
    p
}

/// Four short examples whose first 4 tokens are context, the rest trained.
pub fn small_data() -> Vec<Example> {
    (0..4)
        .map(|k| Example {
            ids: (0..12)
                .map(|i| ((i * 5 + k * 11) % 93 + 3) as u32)
                .collect(),
            trained: (0..12).map(|i| i >= 4).collect(),
        })
        .collect()
}

/// LoRA on every target, alpha = 2r, no dropout.
pub fn lora_config(rank: usize) -> LoraConfig {
    LoraConfig {
        rank,
        alpha: 2.0 * rank as f64,
        dropout: 0.0,
        targets: Target::ALL.to_vec(),
        use_rslora: false,
    }
}

/// One training step, read.
pub fn step(t: &mut Trainer) -> StepReport {
    block_on(t.step()).expect("steps")
}

/// The adapter's PEFT files, read.
pub fn export(adapters: &LoraAdapters, base_model: &str) -> PeftFiles {
    block_on(peft::export(adapters, base_model).read()).expect("exports")
}

/// `tok` gives transformers' ids for every string in
/// smollm2/tokenizer_cases.json (decoding back to the string), and renders
/// every chat as transformers' `apply_chat_template` did.
/// A tokenizer fixture case `{text, ids}`: its text and the ids transformers gave.
pub fn text_and_ids(case: &serde_json::Value) -> (&str, Vec<u32>) {
    let text = case["text"].as_str().expect("text");
    let ids = case["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect();
    (text, ids)
}

pub fn assert_tokenizer_matches_transformers(tok: &TextTokenizer) {
    let cases: serde_json::Value =
        serde_json::from_slice(&read("smollm2/tokenizer_cases.json")).expect("json");
    for case in cases["cases"].as_array().expect("cases") {
        let (text, want) = text_and_ids(case);
        assert_eq!(
            tok.encode(text, true).expect("encodes"),
            want,
            "ids of {text:?}"
        );
        assert_eq!(
            tok.decode(&want, false).expect("decodes"),
            text,
            "round trip of {text:?}"
        );
    }
    for chat in cases["chats"].as_array().expect("chats") {
        let msgs: Vec<Message> =
            serde_json::from_value(chat["messages"].clone()).expect("messages");
        assert_eq!(
            tok.apply_chat_template(&msgs, false).expect("renders"),
            chat["text"].as_str().expect("text")
        );
        assert_eq!(
            tok.apply_chat_template(&msgs[..1], true).expect("renders"),
            chat["with_generation_prompt"].as_str().expect("text")
        );
    }
}

/// SmolLM2's tokenizer with its chat template, as transformers saved them
/// (tests/fixtures/smollm2/hf_tokenizer).
pub fn smollm2_tokenizer() -> TextTokenizer {
    TextTokenizer::from_hf(
        "hf_tokenizer",
        &read("smollm2/hf_tokenizer/tokenizer.json"),
        Some(&read("smollm2/hf_tokenizer/tokenizer_config.json")),
        Some(&read("smollm2/hf_tokenizer/chat_template.jinja")),
    )
    .expect("tokenizer loads")
}

/// Every file in the folder `dir` as `(name, bytes)`, by name: what the
/// page gets when a person chooses a model's files.
pub fn folder_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("lists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("reads"))
        })
        .collect();
    files.sort();
    files
}

/// A fresh folder `{tag}-{pid}` in the temp dir holding the tiny model of
/// [`write_tiny_model`].
pub fn tiny_model_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_tiny_model(&dir);
    dir
}

/// Writes a tiny random Llama (SmolLM2's vocabulary size) with SmolLM2's
/// tokenizer.json, tokenizer_config.json and chat_template.jinja into `dir`.
pub fn write_tiny_model(dir: &Path) {
    let (v, d, ff, layers, heads, kv, hd) =
        (49152usize, 32usize, 64usize, 2usize, 4usize, 2usize, 8usize);
    let config = serde_json::json!({
        "model_type": "llama", "vocab_size": v, "hidden_size": d, "intermediate_size": ff,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "head_dim": hd, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256,
        "tie_word_embeddings": true, "hidden_act": "silu"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("writes");
    let mut rng = StdRng::seed_from_u64(0);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, ones: bool| {
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = (0..n)
            .map(|_| {
                if ones {
                    1.0
                } else {
                    rng.random_range(-0.1..0.1)
                }
            })
            .collect();
        tensors.push((
            name,
            shape,
            vals.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    };
    add("model.embed_tokens.weight".into(), vec![v, d], false);
    add("model.norm.weight".into(), vec![d], true);
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        add(format!("{p}.input_layernorm.weight"), vec![d], true);
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![d],
            true,
        );
        add(
            format!("{p}.self_attn.q_proj.weight"),
            vec![heads * hd, d],
            false,
        );
        add(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv * hd, d],
            false,
        );
        add(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv * hd, d],
            false,
        );
        add(
            format!("{p}.self_attn.o_proj.weight"),
            vec![d, heads * hd],
            false,
        );
        add(format!("{p}.mlp.gate_proj.weight"), vec![ff, d], false);
        add(format!("{p}.mlp.up_proj.weight"), vec![ff, d], false);
        add(format!("{p}.mlp.down_proj.weight"), vec![d, ff], false);
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("view"),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None::<HashMap<String, String>>).expect("serializes");
    std::fs::write(dir.join("model.safetensors"), bytes).expect("writes");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(fixture(&format!("smollm2/hf_tokenizer/{f}")), dir.join(f)).expect("copies");
    }
}

/// The storage type of each packed projection of `m`, then, with
/// `embedding`, of its embedding; panics, naming it, on one of these that
/// is not kept in host blocks.
pub fn packed_types(
    m: &tabtune::model::Llama,
    embedding: bool,
) -> Vec<tabtune::io::dequant::GgmlType> {
    use tabtune::model::embedding::Embedding;
    use tabtune::model::frozen::Frozen;
    let mut types: Vec<_> = m
        .weights
        .layers
        .iter()
        .flat_map(|l| &l.proj)
        .map(|w| match w {
            Frozen::Packed(p) => p.ggml_type(),
            other => panic!("a projection is not kept packed: {other:?}"),
        })
        .collect();
    if embedding {
        match &m.weights.embed {
            Embedding::Packed(e) => types.push(e.ggml_type()),
            other => panic!("the embedding is not kept packed: {other:?}"),
        }
    }
    types
}

/// Panics (naming `what`) unless `source` is WGSL that naga parses and
/// validates, whose first entry point is `entry` with workgroups of
/// `size`. naga's uniformity analysis is not Chrome's: the browser suite
/// compiles every kernel for real.
pub fn assert_valid_wgsl(what: &str, source: &str, entry: &str, size: u32) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(source)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    let first = &module.entry_points[0];
    assert_eq!(first.name, entry, "{what}");
    assert_eq!(first.workgroup_size, [size, 1, 1], "{what}");
}

/// A CPU session with the model folder `dir` loaded (named "tiny") and the
/// data file `name` read from `data` for a sequence length of 64: the page
/// after a person chose the files.
pub fn tiny_session(
    dir: &Path,
    name: &str,
    data: impl std::io::BufRead,
) -> tabtune::train::Session {
    let files = folder_files(dir);
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let mut s = tabtune::train::Session::new(device(), "cpu");
    s.load(tabtune::model::files::load_files("tiny", &files, &device()).expect("loads"))
        .expect("has a tokenizer");
    s.prepare_data(
        name,
        data,
        &tabtune::data::ReadOptions::default(),
        64,
        usize::MAX,
    )
    .expect("reads");
    s
}
