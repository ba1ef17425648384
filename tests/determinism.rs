//! A fixed seed gives identical losses run to run, dropout included.
//! Alone in its test binary: burn-flex's random generator is process-wide,
//! so a test running beside it could draw from the same stream.

mod common;

use common::{device, tiny_hf};
use tabtune::data::Example;
use tabtune::lora::{LoraAdapters, LoraConfig, Target};
use tabtune::train::{TrainConfig, Trainer};

fn data() -> Vec<Example> {
    (0..4)
        .map(|k| Example {
            ids: (0..12)
                .map(|i| ((i * 5 + k * 11) % 93 + 3) as u32)
                .collect(),
            trained: (0..12).map(|i| i >= 4).collect(),
        })
        .collect()
}

fn config(rank: usize) -> LoraConfig {
    LoraConfig {
        rank,
        alpha: 2.0 * rank as f64,
        dropout: 0.0,
        targets: Target::ALL.to_vec(),
        use_rslora: false,
    }
}

#[test]
fn the_same_seed_gives_identical_losses_run_to_run() {
    let m = tiny_hf("tiny_llama").model;
    let run = |seed: u64| {
        let lora = LoraAdapters::init(
            LoraConfig {
                dropout: 0.1,
                ..config(4)
            },
            &m.config,
            seed,
            &device(),
        )
        .expect("init");
        let cfg = TrainConfig {
            lr: 1e-2,
            steps: 4,
            batch_size: 2,
            seq_len: 32,
            seed,
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(m.clone(), lora, data(), cfg).expect("trainer");
        (0..4)
            .map(|_| t.step().expect("step").loss)
            .collect::<Vec<f32>>()
    };
    // One test only: tests in one binary run in parallel and would share the generator.
    assert_eq!(run(5), run(5), "same seed, same losses");
    assert_ne!(run(5), run(6), "another seed, other losses");
}
