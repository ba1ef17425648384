//! A fixed seed gives identical losses run to run, dropout included.
//! Alone in its test binary: burn-flex's random generator is process-wide,
//! so a test running beside it could draw from the same stream.

mod common;

use common::{device, lora_config, small_data, tiny_hf};
use tabtune::lora::{LoraAdapters, LoraConfig};
use tabtune::train::{TrainConfig, Trainer};

#[test]
fn the_same_seed_gives_identical_losses_run_to_run() {
    let m = tiny_hf("tiny_llama").model;
    let run = |seed: u64| {
        let lora = LoraAdapters::init(
            LoraConfig {
                dropout: 0.1,
                ..lora_config(4)
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
        let mut t = Trainer::new(m.clone(), lora, small_data(), cfg).expect("trainer");
        (0..4)
            .map(|_| common::step(&mut t).loss)
            .collect::<Vec<f32>>()
    };
    // One test only: tests in one binary run in parallel and would share the generator.
    assert_eq!(run(5), run(5), "same seed, same losses");
    assert_ne!(run(5), run(6), "another seed, other losses");
}
