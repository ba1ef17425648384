//! The page's engine is a thin driver over `train::Session`; this drives a
//! Session with the page's sequence of calls (load the chosen files, read
//! the data, start, steps, pause, generate while paused, resume, stop,
//! export) and checks it trains exactly as `tabtune train` with the same
//! settings and seed. Only one test here trains: dropout draws from
//! burn-flex's process-wide generator.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::{device, fixture, tiny_model_dir};
use serde_json::Value;
use tabtune::data::{BadLines, ReadOptions};
use tabtune::model::LlamaConfig;
use tabtune::model::config::{Activation, Arch};
use tabtune::model::files::{ModelFiles, load_files};
use tabtune::model::quantized::BaseWeights;
use tabtune::readback::block_on;
use tabtune::train::Activations;
use tabtune::train::judge::Source;
use tabtune::train::memory::{self, GpuLimit, HeapLimit, StepShape};
use tabtune::train::session::When;
use tabtune::train::{Progress, RunSettings, RunStatus, Session};

/// The settings both runs use, as the page's form and the CLI's flags give them.
const SETTINGS: [(&str, &str); 6] = [
    ("steps", "6"),
    ("batch", "2"),
    ("seq-len", "64"),
    ("validation", "0.25"),
    ("eval-every", "4"),
    ("lr", "0.01"),
];

fn session_on(dir: &std::path::Path, data: &std::path::Path) -> (Session, usize) {
    let files = common::folder_files(dir);
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let mut session = Session::new(device(), "cpu");
    let loaded = load_files("tiny", &files, &device()).expect("loads");
    session.load(loaded).expect("has a tokenizer");
    let reader = std::io::BufReader::new(std::fs::File::open(data).expect("opens"));
    let report = session
        .prepare_data(
            "chat.jsonl",
            reader,
            &ReadOptions::default(),
            64,
            usize::MAX,
        )
        .expect("reads");
    (session, report.summary.examples)
}

/// Equal to a millionth: the same computation in another process (the
/// CPU backend's threads may add partial sums in another order).
fn assert_same(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "{what}: {got:?} vs {want:?}"
        );
    }
}

/// The factors of an adapter_model.safetensors, by name.
fn factors(bytes: &[u8]) -> Vec<(String, Vec<f64>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).expect("safetensors");
    let mut out: Vec<(String, Vec<f64>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let vals = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect();
            (name, vals)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn advance(s: &mut Session) -> Progress {
    block_on(s.advance()).expect("advances")
}

#[test]
fn the_pages_call_sequence_trains_exactly_as_tabtune_train() {
    let dir = tiny_model_dir("tabtune-session");
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/samples/chat.jsonl");

    // tabtune train, logging every step and validation loss.
    let log = dir.join("log.jsonl");
    let out = dir.join("cli-adapter");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tabtune"));
    cmd.args(["train", "--model"])
        .arg(&dir)
        .arg("--data")
        .arg(&data);
    cmd.arg("--out").arg(&out).arg("--log").arg(&log);
    for (name, value) in SETTINGS {
        cmd.arg(format!("--{name}")).arg(value);
    }
    let o = cmd.output().expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cli: Vec<Value> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let cli_losses = |kind: &str, key: &str| -> Vec<f64> {
        cli.iter()
            .filter(|v| v["kind"] == kind)
            .map(|v| v[key].as_f64().expect("number"))
            .collect()
    };

    // The page's sequence on a Session.
    let (mut s, examples) = session_on(&dir, &data);
    assert_eq!(examples, 24);
    let settings = RunSettings::from_text(SETTINGS).expect("valid");
    let info = s.start(&settings, BadLines::Skip).expect("starts");
    assert_eq!((info.steps, info.validation_examples), (6, 6));
    let mut steps = Vec::new();
    let mut validations = Vec::new();
    let mut checks = Vec::new();
    let mut record = |p: Progress| match p {
        Progress::Step { report, .. } => steps.push(report.loss),
        Progress::Validation(v) => validations.push((v.when, v.step, v.loss)),
        Progress::Samples(c) => checks.push((c.when, c.step, c.samples.len(), c.source)),
        other => panic!("unexpected {other:?}"),
    };
    record(advance(&mut s)); // validation before
    record(advance(&mut s)); // step 1
    record(advance(&mut s)); // step 2
    s.pause().expect("pauses");
    assert_eq!(s.status(), RunStatus::Paused);
    assert_eq!(advance(&mut s), Progress::Paused { steps: 2 });
    assert_eq!(
        advance(&mut s),
        Progress::Paused { steps: 2 },
        "no step while paused"
    );
    let mut pieces = String::new();
    let base = block_on(s.generate("What is the capital of France?", 4, false, |t| {
        pieces.push_str(t);
        Ok(())
    }))
    .expect("generates");
    assert!(base.starts_with(&pieces));
    block_on(s.generate("What is the capital of France?", 4, true, |_| Ok(()))).expect("tuned");
    s.resume().expect("resumes");
    assert_eq!(s.status(), RunStatus::Running);
    loop {
        match advance(&mut s) {
            Progress::Finished {
                stopped,
                steps: n,
                reason,
                early,
            } => {
                assert_eq!((stopped, n, reason, early), (false, 6, None, None));
                break;
            }
            p => record(p),
        }
    }
    assert_eq!(s.status(), RunStatus::Finished);
    assert!(
        block_on(s.advance()).is_err(),
        "a finished run does not go on"
    );

    // Same losses, same validation losses at the same steps, same adapter.
    let cli_steps: Vec<f32> = cli_losses("step", "loss")
        .iter()
        .map(|&x| x as f32)
        .collect();
    let as_f64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    assert_same("step losses", &as_f64(&steps), &as_f64(&cli_steps));
    let whens: Vec<(When, usize)> = validations.iter().map(|v| (v.0, v.1)).collect();
    assert_eq!(
        whens,
        [(When::Before, 0), (When::During, 4), (When::After, 6)]
    );
    assert_eq!(
        checks,
        [(When::After, 6, 5, Source::HeldOut)],
        "after training, the stop check asks 5 held-out prompts"
    );
    let cli_checks: Vec<&Value> = cli.iter().filter(|v| v["kind"] == "samples").collect();
    assert_eq!(cli_checks.len(), 1, "the CLI's log has the stop check");
    assert_eq!(cli_checks[0]["when"], "after");
    let losses: Vec<f64> = validations.iter().map(|v| v.2).collect();
    assert_same(
        "validation losses",
        &losses,
        &cli_losses("validation", "loss"),
    );
    let adapter = block_on(s.export("tiny")).expect("exports");
    let cli_weights = std::fs::read(out.join("adapter_model.safetensors")).expect("cli adapter");
    let (ours, theirs) = (factors(&adapter.peft.safetensors), factors(&cli_weights));
    assert_eq!(ours.len(), theirs.len());
    for ((name, a), (other, b)) in ours.iter().zip(&theirs) {
        assert_eq!(name, other);
        assert_same(name, a, b);
    }
    assert!(
        adapter.card.contains("| steps | 6 of 6 |"),
        "{}",
        adapter.card
    );
    assert!(
        adapter.card.contains("`chat.jsonl` (18 examples)"),
        "{}",
        adapter.card
    );

    // A second run on the same session, stopped after two steps: the
    // validation loss after is measured, and the card says how far it got.
    s.start(&settings, BadLines::Skip).expect("starts again");
    advance(&mut s);
    advance(&mut s);
    advance(&mut s);
    s.stop().expect("stops");
    assert_eq!(s.status(), RunStatus::Stopping);
    assert!(
        matches!(advance(&mut s), Progress::Validation(v) if v.when == When::After && v.step == 2)
    );
    assert!(
        matches!(advance(&mut s), Progress::Samples(c) if c.when == When::After && c.step == 2),
        "the stop check follows the validation after"
    );
    assert_eq!(
        advance(&mut s),
        Progress::Finished {
            stopped: true,
            steps: 2,
            reason: None,
            early: None,
        }
    );
    assert_eq!(s.status(), RunStatus::Stopped);
    let card = block_on(s.export("tiny")).expect("exports").card;
    assert!(card.contains("| steps | 2 of 6 |"), "{card}");
    assert!(
        card.contains("validation loss (6 held-out examples)"),
        "{card}"
    );

    // Stopped just when a validation during training is due: the loss is
    // measured once, as the loss after.
    s.start(&settings, BadLines::Skip)
        .expect("starts a third time");
    for _ in 0..5 {
        advance(&mut s); // before, steps 1 to 4
    }
    s.stop().expect("stops");
    assert!(
        matches!(advance(&mut s), Progress::Validation(v) if v.when == When::After && v.step == 4)
    );
    assert!(matches!(
        advance(&mut s),
        Progress::Samples(c) if c.when == When::After
    ));
    assert!(matches!(
        advance(&mut s),
        Progress::Finished {
            stopped: true,
            steps: 4,
            reason: None,
            early: None,
        }
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_lines_stop_a_run_only_when_the_choice_is_to_stop() {
    let dir = tiny_model_dir("tabtune-session-bad");
    let (mut s, _) = session_on(&dir, &fixture("data/chat.jsonl"));
    let reader =
        std::io::BufReader::new(std::fs::File::open(fixture("data/bad.jsonl")).expect("opens"));
    let report = s
        .prepare_data("bad.jsonl", reader, &ReadOptions::default(), 64, usize::MAX)
        .expect("reads");
    let choices: HashMap<String, bool> = report
        .bad_lines
        .iter()
        .map(|c| (format!("{:?}", c.policy), c.blocked))
        .collect();
    assert!(choices["Stop"], "stop holds a file with bad lines");
    assert!(!choices["Skip"], "leaving them out does not");
    let settings = RunSettings::from_text([("steps", "1")]).expect("valid");
    let err = s.start(&settings, BadLines::Stop).expect_err("stops");
    assert!(
        err.to_string().contains("bad.jsonl:2: 5 bad lines"),
        "{err}"
    );
    assert_eq!(s.status(), RunStatus::Idle);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_model_files_rule_names_what_is_missing() {
    let hf = ModelFiles::choose(&[
        "tokenizer.json",
        "x/config.json",
        "model.safetensors",
        "notes.txt",
    ])
    .expect("a model");
    assert_eq!(
        hf,
        ModelFiles::Hf {
            files: vec![
                "config.json".into(),
                "model.safetensors".into(),
                "tokenizer.json".into()
            ]
        }
    );
    let gguf = ModelFiles::choose(&["a.GGUF", "config.json"]).expect("a model");
    assert_eq!(
        gguf,
        ModelFiles::Gguf {
            file: "a.GGUF".into()
        }
    );
    let err = |names: &[&str]| ModelFiles::choose(names).expect_err("refused").to_string();
    assert!(err(&["config.json"]).contains("Missing model.safetensors, tokenizer.json"));
    assert!(err(&["a.gguf", "b.gguf"]).contains("one .gguf file, not 2"));
    assert!(err(&[]).contains("none chosen"));
}

/// A memory limit the test controls: 64 MiB already in use.
fn in_use() -> usize {
    64 << 20
}

#[test]
fn a_run_or_model_too_big_for_the_engines_memory_is_refused_with_what_to_lower() {
    let dir = tiny_model_dir("tabtune-session-memory");
    let (mut s, _) = session_on(&dir, &fixture("data/chat.jsonl"));
    let settings = RunSettings::from_text([("steps", "1"), ("batch", "4")]).expect("valid");
    // With 64 MiB in use: 26 MiB more holds one short example of the tiny
    // model (about 19 MiB, most of it the 49,152-word head and logits) but
    // not a batch of 4; 256 MiB more holds that.
    s.limit_memory(HeapLimit {
        total: 90 << 20,
        live: in_use,
    });
    let err = s.start(&settings, BadLines::Skip).expect_err("too big");
    let msg = err.to_string();
    assert!(
        msg.contains("setting `batch`")
            && msg.contains("the engine has 26 MiB left of its 90 MiB")
            && msg.contains("lower Batch or Sequence length"),
        "{msg}"
    );
    assert_eq!(s.status(), RunStatus::Idle, "nothing started");
    let keep = RunSettings::from_text([("steps", "1"), ("keep-activations", "true")]).expect("ok");
    let msg = s
        .start(&keep, BadLines::Skip)
        .expect_err("too big")
        .to_string();
    assert!(msg.contains("or turn Keep activations off"), "{msg}");
    // With nothing left, no batch would do: the model itself is too large.
    s.limit_memory(HeapLimit {
        total: 64 << 20,
        live: in_use,
    });
    let msg = s
        .start(&settings, BadLines::Skip)
        .expect_err("nothing left")
        .to_string();
    assert!(msg.contains("this model is too large for it"), "{msg}");
    let err = s
        .check_load("big.gguf", 16 << 20, true, BaseWeights::Stored)
        .expect_err("32 MiB to load, none left");
    assert!(
        err.to_string()
            .contains("big.gguf: loading this model needs about 32 MiB"),
        "{err}"
    );
    s.limit_memory(HeapLimit {
        total: 320 << 20,
        live: in_use,
    });
    s.check_load("big.gguf", 16 << 20, true, BaseWeights::Stored)
        .expect("fits");
    s.start(&settings, BadLines::Skip).expect("fits now");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_load_guard_counts_a_safetensors_model_quantized_at_load_as_packed() {
    let limit = HeapLimit {
        total: 256 << 20,
        live: || 0,
    };
    // 100 MiB of safetensors: up to 300 MiB as f32, 200 MiB quantized.
    let stored = memory::check_load("model.safetensors", 100 << 20, false, false, &limit)
        .expect_err("f32 weights do not fit")
        .to_string();
    assert!(
        stored.contains("needs about 300 MiB") && stored.contains("quantize it at load"),
        "{stored}"
    );
    memory::check_load("model.safetensors", 100 << 20, false, true, &limit)
        .expect("fits quantized");
}

#[test]
fn a_gpu_run_needing_a_buffer_larger_than_the_device_allows_is_refused_with_what_to_lower() {
    let dir = tiny_model_dir("tabtune-session-gpu-buffers");
    let (mut s, _) = session_on(&dir, &fixture("data/chat.jsonl"));
    let settings = RunSettings::from_text([("steps", "1"), ("batch", "4")]).expect("valid");
    // The tiny model's largest buffer in a step is a chunk of 128 rows of
    // its 49,152-word logits: 24 MiB.
    s.limit_gpu_buffers(GpuLimit {
        max_buffer: 20 << 20,
    });
    let msg = s
        .start(&settings, BadLines::Skip)
        .expect_err("a 24 MiB buffer on a GPU of 20 MiB buffers")
        .to_string();
    assert!(
        msg.contains("setting `backend`")
            && msg.contains("needs one GPU buffer of 24 MiB for a chunk of logits")
            && msg.contains("this GPU's buffers hold at most 20 MiB")
            && msg.contains("use the CPU engine"),
        "{msg}"
    );
    assert_eq!(s.status(), RunStatus::Idle, "nothing started");
    s.limit_gpu_buffers(GpuLimit {
        max_buffer: 32 << 20,
    });
    s.start(&settings, BadLines::Skip).expect("fits now");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_gpu_buffer_guard_names_the_attention_scores_of_long_sequences() {
    // SmolLM2-135M's shapes.
    let c = LlamaConfig {
        arch: Arch::Llama,
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_layers: 30,
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        rms_norm_eps: 1e-5,
        rope_theta: 1e5,
        max_position_embeddings: 8192,
        tie_word_embeddings: true,
        hidden_act: Activation::Silu,
        attn_scale: 0.125,
        sliding_window: None,
    };
    let shape = |batch, seq_len| StepShape {
        batch,
        seq_len,
        trained: batch * seq_len,
        activations: Activations::Recompute,
    };
    // At batch 4 × 256 the tied head in f32 is the largest: 108 MiB.
    assert_eq!(
        memory::largest_step_buffer(&c, &shape(4, 256)),
        (49152 * 576 * 4, "the LM head in f32")
    );
    // At 4 × 2048 the scores are 4·9·2048²·4 bytes = 576 MiB.
    let limit = GpuLimit {
        max_buffer: 256 << 20,
    };
    let msg = memory::check_gpu_step(&c, &shape(4, 2048), &limit)
        .expect_err("576 MiB of scores")
        .to_string();
    assert!(
        msg.contains("setting `batch`")
            && msg.contains(
                "4 examples × 2048 tokens needs one GPU buffer of 576 MiB for the attention scores"
            )
            && msg.contains("lower Sequence length or Batch"),
        "{msg}"
    );
    memory::check_gpu_step(&c, &shape(1, 2048), &limit).expect("144 MiB fits");
}

#[test]
fn a_base_weight_larger_than_one_gpu_buffer_is_refused_before_it_loads_naming_it() {
    // Llama-3.2-1B's embedding in f32: 128,256 × 2,048 × 4 bytes = 1002 MiB,
    // on a GPU whose buffers hold 512 MiB.
    let msg = memory::check_gpu_weight(
        "model.safetensors",
        "model.embed_tokens.weight",
        128_256 * 2048 * 4,
        512 << 20,
    )
    .expect_err("too big for one buffer")
    .to_string();
    assert!(
        msg.starts_with(
            "model.safetensors: tensor `model.embed_tokens.weight` needs one GPU buffer of 1002 MiB"
        ) && msg.contains("hold at most 512 MiB")
            && msg.contains("quantize the base at load"),
        "{msg}"
    );
    // As Q8_0 words (a quarter of that) it fits.
    memory::check_gpu_weight("m", "e", 128_256 * 2048, 512 << 20).expect("fits");
}
