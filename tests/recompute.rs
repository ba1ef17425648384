//! Recomputing each block in the backward pass (`src/train/backward.rs`)
//! against keeping every activation in one graph: the same loss and the same
//! gradient for every adapter factor, with LoRA dropout on (so the
//! recomputed blocks must redraw the very masks of the first pass) and over
//! two micro-batches. Tolerance: 1e-5 relative to the largest value. The
//! PEFT gradients themselves are checked both ways in `lora_parity.rs`.

mod common;

use common::{assert_close, device, lora_config, scale, small_data, tiny_hf, to_vec};
use tabtune::data::Example;
use tabtune::lora::LoraAdapters;
use tabtune::train::{Activations, Batch, gradients};

/// The loss sum and the flattened gradients, for `seed`'s dropout masks.
fn run(activations: Activations, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let m = tiny_hf("tiny_llama").model;
    let mut config = lora_config(4);
    config.dropout = 0.3;
    let lora = LoraAdapters::init(config, &m.config, 5, &device()).expect("init");
    let lora = lora.map(|t| t.clone() + t.ones_like().mul_scalar(0.01));
    let data = small_data();
    let micro: Vec<Batch> = data
        .chunks(2)
        .map(|c| Batch::new(&c.iter().collect::<Vec<&Example>>(), 32))
        .collect();
    let trained = micro.iter().map(|b| b.trained_positions.len()).sum();
    let (sum, grads) = gradients(&m, &lora, &micro, trained, seed, activations);
    let grads = grads.into_iter().flat_map(to_vec).collect();
    (to_vec(sum), grads)
}

// One test: the device's generator is global to the process, and a second
// test running beside this one would draw from it between the two passes.
#[test]
fn recomputed_blocks_give_the_kept_graphs_loss_and_gradients_under_dropout() {
    let (loss, grads) = run(Activations::Recompute, 7);
    let (want_loss, want_grads) = run(Activations::Keep, 7);
    assert_close("loss", &loss, &want_loss, 1e-5 * scale(&want_loss));
    assert_close("gradients", &grads, &want_grads, 1e-5 * scale(&want_grads));
    // And the masks are real: another step's seed gives other gradients.
    let (_, other) = run(Activations::Recompute, 8);
    assert!(
        common::max_abs_diff(&grads, &other) > 1e-3 * scale(&grads),
        "dropout is on, so another seed gives other gradients"
    );
}
