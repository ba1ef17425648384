//! Mutation fuzzing of every reader of user bytes: the data formats, GGUF,
//! safetensors, config.json, PEFT adapters and whole model loads. Each
//! target starts from real files and applies seeded mutations (bit flips,
//! huge or zero integers written over length fields, truncation, spliced
//! copies). No input may panic, none may ask for an allocation over
//! 256 MiB (a length field trusted before checking it against the file),
//! and none may take longer than TABTUNE_FUZZ_HANG_SECS (default 30; the
//! inputs are small files that take milliseconds).
//!
//! Bounded for CI: TABTUNE_FUZZ_ITERS mutations per seed file (default 1000),
//! seeded by TABTUNE_FUZZ_SEED (default 1). A failing input is written to
//! the temp dir and its path printed, to replay it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{device, read};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tabtune::data::{Format, ReadOptions};
use tabtune::io::gguf::Gguf;
use tabtune::io::safetensors::SafetensorsFile;
use tabtune::model::LlamaConfig;
use tabtune::model::load::{HfFiles, load_gguf, load_hf};
use tabtune::tokenizer::{Message, TextTokenizer};

/// Refuses any single allocation over the limit while a fuzz input is
/// being parsed: it says so on stderr and the process aborts (an allocator
/// cannot unwind), failing the test. The input is in `current_input`.
struct Capped;

const LIMIT: usize = 256 << 20;
static WATCHING: AtomicBool = AtomicBool::new(false);
const OVER_MESSAGE: &[u8] =
    b"\nfuzz: an input asked for more than 256 MiB at once; each target's current input is saved as tabtune-fuzz-current-TARGET.bin in the temp dir\n";

fn refuse() -> *mut u8 {
    WATCHING.store(false, Ordering::Relaxed);
    // No allocation here: write the fixed message straight to stderr.
    unsafe { libc::write(2, OVER_MESSAGE.as_ptr().cast(), OVER_MESSAGE.len()) };
    std::ptr::null_mut()
}

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT && WATCHING.load(Ordering::Relaxed) {
            return refuse();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > LIMIT && WATCHING.load(Ordering::Relaxed) {
            return refuse();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn current_input(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "tabtune-fuzz-current-{}.bin",
        name.replace('/', "_")
    ))
}

#[global_allocator]
static ALLOC: Capped = Capped;

fn iters() -> usize {
    std::env::var("TABTUNE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn seed() -> u64 {
    std::env::var("TABTUNE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// One seeded mutation of `base`.
fn mutate(base: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..b.len());
        match rng.random_range(0..6) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => b[at] = rng.random(),
            2 => {
                // A length or count field: huge, zero, or just past the end.
                let v: u64 = match rng.random_range(0..4) {
                    0 => u64::MAX,
                    1 => 0,
                    2 => 1 << rng.random_range(20..63),
                    _ => b.len() as u64 + rng.random_range(0..64),
                };
                let end = (at + 8).min(b.len());
                b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
            3 => b.truncate(at),
            4 => {
                let from = rng.random_range(0..b.len());
                let len = rng.random_range(0..=64.min(b.len() - from));
                let chunk = b[from..from + len].to_vec();
                b.splice(at..at, chunk);
            }
            _ => {
                let end = rng.random_range(at..=b.len().min(at + 16));
                b.drain(at..end);
            }
        }
    }
    b
}

fn hang_limit() -> Duration {
    let secs = std::env::var("TABTUNE_FUZZ_HANG_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// Watches the input being run from another thread: one that runs past
/// [`hang_limit`] is a hang, reported with its saved input, and the process
/// aborts (a hung call cannot be interrupted), failing the test.
struct Watchdog<'a> {
    name: &'a str,
    started: Mutex<Option<Instant>>,
    done: AtomicBool,
}

impl Watchdog<'_> {
    fn watch(&self) {
        let limit = hang_limit();
        while !self.done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            let started = *self.started.lock().unwrap_or_else(|e| e.into_inner());
            if started.is_some_and(|t| t.elapsed() > limit) {
                // Straight to stderr: the test harness's capture of
                // `eprintln!` would be lost with the abort.
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!(
                        "\nfuzz: {}: an input ran for over {limit:?}; it is saved as {}\n",
                        self.name,
                        current_input(self.name).display()
                    )
                    .as_bytes(),
                );
                std::process::abort();
            }
        }
    }

    fn running(&self, yes: bool) {
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = yes.then(Instant::now);
    }
}

/// Runs `target` on `iters()` mutations of `base`; fails on a panic (the
/// input is saved and named), an oversized allocation (see [`Capped`]) or
/// a hang (see [`Watchdog`]).
fn fuzz(name: &str, base: &[u8], target: impl Fn(&[u8])) {
    let dog = Watchdog {
        name,
        started: Mutex::new(None),
        done: AtomicBool::new(false),
    };
    std::thread::scope(|s| {
        s.spawn(|| dog.watch());
        // Stops the watchdog however the run ends, a failing one included.
        struct Stop<'a, 'b>(&'a Watchdog<'b>);
        impl Drop for Stop<'_, '_> {
            fn drop(&mut self) {
                self.0.done.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&dog);
        run_inputs(name, base, &target, &dog);
    });
}

fn run_inputs(name: &str, base: &[u8], target: &dyn Fn(&[u8]), dog: &Watchdog) {
    let mut rng = StdRng::seed_from_u64(seed() ^ name.len() as u64 ^ base.len() as u64);
    dog.running(true);
    target(base); // the unmutated file must be fine too
    dog.running(false);
    for i in 0..iters() {
        let input = mutate(base, &mut rng);
        std::fs::write(current_input(name), &input).expect("save the input");
        dog.running(true);
        WATCHING.store(true, Ordering::Relaxed);
        let result = catch_unwind(AssertUnwindSafe(|| target(&input)));
        WATCHING.store(false, Ordering::Relaxed);
        dog.running(false);
        if result.is_err() {
            let path = std::env::temp_dir()
                .join(format!("tabtune-fuzz-{}-{i}.bin", name.replace('/', "_")));
            std::fs::write(&path, &input).expect("save the input");
            panic!(
                "{name}: mutation {i} panicked; input saved to {}",
                path.display()
            );
        }
    }
}

#[test]
fn data_readers_survive_mutated_files_of_every_format() {
    let files = [
        ("chat.jsonl", "data/chat.jsonl"),
        ("mixed.jsonl", "data/mixed.jsonl"),
        ("messages.json", "data/formats/messages.json"),
        ("alpaca.json", "data/formats/alpaca.json"),
        ("sharegpt.jsonl", "data/formats/sharegpt.jsonl"),
        ("multi_turn.jsonl", "data/formats/multi_turn.jsonl"),
        ("qa.csv", "data/formats/qa.csv"),
        ("qa.tsv", "data/formats/qa.tsv"),
        ("notes.md", "data/formats/notes.md"),
    ];
    for (name, rel) in files {
        let base = read(rel);
        fuzz(name, &base, |bytes| {
            // As detected, and forced through every reader.
            let _ = tabtune::data::read(name, bytes, &ReadOptions::default());
            for format in [Format::Jsonl, Format::JsonArray, Format::Csv, Format::Text] {
                let options = ReadOptions {
                    format: Some(format),
                    ..ReadOptions::default()
                };
                let _ = tabtune::data::read(name, bytes, &options);
            }
        });
    }
}

#[test]
fn tokenizers_and_chat_templates_built_from_mutated_files_survive() {
    // A tokenizer.json (tiny Qwen2's), its config, and a chat template
    // (SmolLM2's), each mutated while the others stay as they are; every
    // tokenizer that builds encodes, and every template renders a chat or
    // is refused (its work and output are bounded).
    let tokenizer = read("tiny_qwen2/tokenizer.json");
    let config = read("tiny_qwen2/tokenizer_config.json");
    let template = read("smollm2/hf_tokenizer/chat_template.jinja");
    let messages = [
        Message {
            role: "user".into(),
            content: "What is the capital of France?".into(),
        },
        Message {
            role: "assistant".into(),
            content: "Paris.".into(),
        },
    ];
    let use_it = |t: TextTokenizer| {
        let _ = t.encode("What is the capital of France?", true);
        let _ = t.apply_chat_template(&messages, true);
    };
    fuzz("tokenizer.json", &tokenizer, |bytes| {
        if let Ok(t) = TextTokenizer::from_hf("t", bytes, Some(&config), Some(&template)) {
            use_it(t);
        }
    });
    fuzz("tokenizer_config.json", &config, |bytes| {
        if let Ok(t) = TextTokenizer::from_hf("t", &tokenizer, Some(bytes), None) {
            use_it(t);
        }
    });
    fuzz("chat_template.jinja", &template, |bytes| {
        if let Ok(t) = TextTokenizer::from_hf("t", &tokenizer, Some(&config), Some(bytes)) {
            use_it(t);
        }
    });
}

#[test]
fn gguf_parsing_and_loading_survive_mutated_files() {
    for rel in ["quant_types.gguf", "tiny_llama/tiny_llama.gguf"] {
        let base = read(rel);
        fuzz(rel, &base, |bytes| {
            if let Ok(g) = Gguf::parse(rel, bytes) {
                let _ = LlamaConfig::from_gguf(&g);
            }
        });
    }
    let base = read("tiny_llama/tiny_llama.gguf");
    fuzz("load_gguf", &base, |bytes| {
        let _ = load_gguf("tiny_llama.gguf", bytes, &device());
    });
}

#[test]
fn safetensors_config_and_hf_loading_survive_mutated_files() {
    let weights = read("tiny_llama/model.safetensors");
    let config = read("tiny_llama/config.json");
    fuzz("safetensors", &weights, |bytes| {
        if let Ok(f) = SafetensorsFile::parse("model.safetensors", bytes) {
            for name in f.names() {
                let _ = f.get_f32(&name);
            }
        }
    });
    fuzz("config.json", &config, |bytes| {
        let _ = LlamaConfig::from_hf_json("config.json", bytes);
    });
    fuzz("load_hf", &weights, |bytes| {
        let files = HfFiles {
            config: &config,
            weights: bytes,
            tokenizer: None,
            tokenizer_config: None,
            chat_template: None,
        };
        let _ = load_hf("tiny", &files, &device());
    });
}

#[test]
fn peft_adapter_import_survives_mutated_files() {
    let cfg = read("tiny_llama/adapter/adapter_config.json");
    let st = read("tiny_llama/adapter/adapter_model.safetensors");
    let model =
        LlamaConfig::from_hf_json("config.json", &read("tiny_llama/config.json")).expect("config");
    fuzz("adapter_config.json", &cfg, |bytes| {
        let _ = tabtune::io::peft::import("c.json", bytes, "a.st", &st, &model, &device());
    });
    fuzz("adapter_model.safetensors", &st, |bytes| {
        let _ = tabtune::io::peft::import("c.json", &cfg, "a.st", bytes, &model, &device());
    });
}

#[test]
#[should_panic(expected = "panicked; input saved")]
fn the_harness_reports_a_panicking_target() {
    fuzz("self-test", b"abc", |b| {
        assert_eq!(b, b"abc", "a mutated input")
    });
}

/// Run only by `the_harness_stops_an_unbounded_allocation`, in a child process.
#[test]
#[ignore]
fn harness_allocation_probe() {
    fuzz("self-test-alloc", b"abc", |b| {
        let v: Vec<u8> = Vec::with_capacity(LIMIT + b.len() + 1);
        std::hint::black_box(&v);
    });
}

/// Runs the ignored test `probe` in a child process (the harness aborts
/// it), with `TABTUNE_FUZZ_HANG_SECS` set to 1; its stderr, once it has
/// been stopped.
fn stopped_probe(probe: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", probe, "--ignored", "--test-threads=1"])
        .env("TABTUNE_FUZZ_HANG_SECS", "1")
        .output()
        .expect("runs");
    assert!(!out.status.success(), "{probe} should have been stopped");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_harness_stops_an_unbounded_allocation() {
    let err = stopped_probe("harness_allocation_probe");
    assert!(err.contains("asked for more than 256 MiB at once"), "{err}");
}

/// Run only by `the_harness_stops_a_hanging_input`, in a child process.
#[test]
#[ignore]
fn harness_hang_probe() {
    fuzz("self-test-hang", b"abc", |_| {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

#[test]
fn the_harness_stops_a_hanging_input() {
    let err = stopped_probe("harness_hang_probe");
    assert!(
        err.contains("self-test-hang: an input ran for over 1s"),
        "{err}"
    );
}

#[test]
fn most_mutations_still_reach_past_the_header() {
    // A fuzzer that only ever fails the magic check tests nothing.
    let base = read("tiny_llama/tiny_llama.gguf");
    let mut rng = StdRng::seed_from_u64(seed());
    let parsed = (0..iters())
        .filter(|_| Gguf::parse("t.gguf", &mutate(&base, &mut rng)).is_ok())
        .count();
    assert!(parsed * 4 >= iters(), "{parsed} of {} parsed", iters());
}
