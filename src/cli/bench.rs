//! `tabtune bench`: LoRA training throughput and peak memory on a model, on
//! synthetic batches where every token is trained. `scripts/bench.sh` runs
//! it beside PyTorch+PEFT on the same model and settings and prints the ratio.

use std::time::Instant;

use clap::Args;
use rand::{Rng, SeedableRng, rngs::StdRng};

use tabtune::Result;
use tabtune::data::Example;
use tabtune::lora::{LoraAdapters, LoraConfig, Target};
use tabtune::readback::block_on;
use tabtune::train::{Batch, TrainConfig, Trainer};

use super::settings::{SettingsArgs, Shape};
use super::{device, files};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A .gguf file or HF directory (default: SmolLM2-135M-Instruct from the
    /// cache that scripts/fetch-model.sh fills).
    #[arg(long)]
    model: Option<String>,
    /// The batch, example length (every example is this long), rank and targets.
    #[command(flatten)]
    settings: SettingsArgs<Shape>,
    /// Timed steps (after the warm-up steps).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps first (on a GPU: shader compilation and autotuning).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run(a: BenchArgs) -> Result<()> {
    let s = a.settings.settings()?;
    let device = device();
    let model = a.model.unwrap_or_else(files::default_model_path);
    let model = files::load_model(&model, &device)?.model;
    let lora = LoraConfig {
        rank: s.rank,
        alpha: 2.0 * s.rank as f64,
        dropout: 0.0,
        targets: Target::parse_list(&s.targets)?,
        use_rslora: false,
    };
    let (batch, seq_len) = (s.batch, s.seq_len);
    let adapters = LoraAdapters::init(lora, &model.config, 0, &device)?;
    let mut rng = StdRng::seed_from_u64(0);
    let example = |rng: &mut StdRng| Example {
        ids: (0..seq_len)
            .map(|_| rng.random_range(0..model.config.vocab_size as u32))
            .collect(),
        trained: vec![true; seq_len],
    };
    let data: Vec<Example> = (0..batch).map(|_| example(&mut rng)).collect();
    let config = TrainConfig {
        steps: a.steps + a.warmup,
        batch_size: batch,
        seq_len,
        ..s.train(batch)?
    };
    let mut trainer = Trainer::new(model, adapters, data.clone(), config)?;
    let refs: Vec<&Example> = data.iter().collect();
    let micro = [Batch::new(&refs, seq_len)];
    // On a GPU the allocator's reserved bytes after each step (it keeps the
    // pages it used for reuse, so this is about the step's peak).
    let mut gpu_reserved = 0u64;
    let mut note_gpu = || {
        if let Some(u) = device.memory_pool_usage() {
            gpu_reserved = gpu_reserved.max(u.bytes_reserved);
        }
    };
    for _ in 0..a.warmup {
        block_on(trainer.step_batches(&micro))?;
        note_gpu();
    }
    let start = Instant::now();
    for _ in 0..a.steps {
        block_on(trainer.step_batches(&micro))?;
        note_gpu();
    }
    let secs = start.elapsed().as_secs_f64();
    let tokens = (a.steps * batch * seq_len) as f64;
    println!("{:.1} tokens/s", tokens / secs);
    println!("{:.3} s/step", secs / a.steps as f64);
    if let Some(peak) = peak_rss() {
        println!("peak memory {:.0} MiB", peak as f64 / (1 << 20) as f64);
    }
    if gpu_reserved > 0 {
        println!(
            "GPU memory reserved {:.0} MiB",
            gpu_reserved as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
