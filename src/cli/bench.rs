//! `tabtune bench`: LoRA training throughput and peak memory on a model, on
//! synthetic batches where every token is trained. `scripts/bench.sh` runs
//! it beside PyTorch+PEFT on the same model and settings and prints the ratio.

use std::time::Instant;

use clap::Args;
use rand::{Rng, SeedableRng, rngs::StdRng};

use tabtune::Result;
use tabtune::data::Example;
use tabtune::lora::{LoraAdapters, LoraConfig, Target};
use tabtune::train::{Batch, TrainConfig, Trainer};

use super::{device, files};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A .gguf file or HF directory (default: SmolLM2-135M-Instruct from the
    /// cache that scripts/fetch-model.sh fills).
    #[arg(long)]
    model: Option<String>,
    /// Examples per step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per example.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Timed steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Projections to adapt.
    #[arg(long, default_value = "all")]
    targets: String,
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run(a: BenchArgs) -> Result<()> {
    let device = device();
    let model = a.model.unwrap_or_else(files::default_model_path);
    let loaded = files::load_model(&model, &device)?;
    let model = loaded.loaded.model;
    let lora = LoraConfig {
        rank: a.rank,
        alpha: 2.0 * a.rank as f64,
        dropout: 0.0,
        targets: Target::parse_list(&a.targets)?,
        use_rslora: false,
    };
    let adapters = LoraAdapters::init(lora, &model.config, 0, &device)?;
    let mut rng = StdRng::seed_from_u64(0);
    let example = |rng: &mut StdRng| Example {
        ids: (0..a.seq_len)
            .map(|_| rng.random_range(0..model.config.vocab_size as u32))
            .collect(),
        trained: vec![true; a.seq_len],
    };
    let data: Vec<Example> = (0..a.batch).map(|_| example(&mut rng)).collect();
    let config = TrainConfig {
        steps: a.steps + 1,
        batch_size: a.batch,
        seq_len: a.seq_len,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(model, adapters, data.clone(), config)?;
    let refs: Vec<&Example> = data.iter().collect();
    let batch = Batch::new(&refs, a.seq_len);
    trainer.step_batches(std::slice::from_ref(&batch))?; // warm-up
    let start = Instant::now();
    for _ in 0..a.steps {
        trainer.step_batches(std::slice::from_ref(&batch))?;
    }
    let secs = start.elapsed().as_secs_f64();
    let tokens = (a.steps * a.batch * a.seq_len) as f64;
    println!("{:.1} tokens/s", tokens / secs);
    println!("{:.3} s/step", secs / a.steps as f64);
    if let Some(peak) = peak_rss() {
        println!("peak memory {:.0} MiB", peak as f64 / (1 << 20) as f64);
    }
    Ok(())
}
