//! The adapter gradients of one optimizer step, with every block's
//! activations kept for the backward pass or recomputed one block at a time.
//!
//! Kept ([`Activations::Keep`]): one autodiff graph over the whole model,
//! one `backward()`. Its peak holds every intermediate of every block at
//! once — about 2.3 GB for the 135M default model at batch 4 × 256.
//!
//! Recomputed ([`Activations::Recompute`], gradient checkpointing at block
//! granularity, as transformers' `gradient_checkpointing_enable()`): a
//! forward pass without a graph keeps only each block's input `[N, d]`; the
//! loss is differentiated with respect to the last block's output; then,
//! from the last block to the first, the block is run again in a graph of
//! its own from its saved input, and differentiated from its output with
//! `dL/dy` as the output's gradient ([`seeded`]), which gives that block's
//! adapter gradients and `dL/dx` for the block below.
//! One block's intermediates live at a time, for one more forward pass of
//! compute.
//!
//! LoRA dropout on the CPU draws its masks from the device's generator,
//! reseeded before every block from the step's seed, the micro-batch and the
//! block; on a GPU each mask is a hash keyed by the same and the target
//! (`model::adapted`). Either way the recomputed block sees the masks the
//! first pass saw, and both ways give the same gradients.

use burn::tensor::{Device, Tensor};

use crate::lora::LoraAdapters;
use crate::model::adapted::mix;
use crate::model::{Llama, Mode};
use crate::train::Batch;
use crate::train::seed::seeded;

/// What the backward pass does for each block's activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activations {
    /// Keep them all from the forward pass: fastest, most memory.
    Keep,
    /// Keep each block's input only and run the block again.
    Recompute,
}

/// The dropout seed of a step (from the run's seed and the step number).
pub fn step_seed(run_seed: u64, step: usize) -> u64 {
    mix(mix(run_seed) ^ step as u64)
}

/// Seeds the CPU's generator for block `layer` of micro-batch `micro`
/// (when there is dropout to draw). A GPU draws no masks: they are a hash of
/// a key from the span's seed (`Span::with_dropout_seed`), and seeding a
/// GPU stream would wait for it.
fn seed_block(adapters: &LoraAdapters, device: &Device, seed: u64, micro: usize, layer: usize) {
    if adapters.config.dropout > 0.0 && crate::model::is_cpu(device) {
        device.seed(mix(mix(seed ^ micro as u64) ^ layer as u64));
    }
}

/// Gradients of `sum(NLL) / trained` with respect to every adapter factor
/// (in [`LoraAdapters::named_tensors`] order), summed over `micro`, and the
/// NLL sum `[1]`. `trained` is the trained-token count of all of `micro`;
/// `seed` is the step's dropout seed ([`step_seed`]).
pub fn gradients(
    model: &Llama,
    adapters: &LoraAdapters,
    micro: &[Batch],
    trained: usize,
    seed: u64,
    activations: Activations,
) -> (Tensor<1>, Vec<Tensor<2>>) {
    let device = &model.device;
    let mut grads: Vec<Option<Tensor<2>>> = vec![None; adapters.named_tensors().len()];
    let mut loss_sum = Tensor::<1>::zeros([1], device);
    for (m, batch) in micro.iter().enumerate() {
        if batch.trained_positions.is_empty() {
            continue;
        }
        let tracked = adapters.map(|t| t.autodiff().require_grad());
        let ids = batch.ids_tensor(device);
        let [b, t] = ids.dims();
        let span = model.span(b, t, 0).with_dropout_seed(mix(seed ^ m as u64));
        let loss = |hidden: Tensor<2>| {
            model.nll_sum(
                model.final_norm(hidden, &span),
                &batch.trained_positions,
                &batch.targets,
            ) // [1]
        };
        let mut add = |g: &burn::tensor::Gradients| {
            for (slot, (_, t)) in grads.iter_mut().zip(tracked.named_tensors()) {
                if let Some(grad) = t.grad(g) {
                    *slot = Some(match slot.take() {
                        Some(acc) => acc + grad,
                        None => grad,
                    });
                }
            }
        };
        let layers = model.weights.layers.len();
        let mut x = model.embed(ids); // [N, d]
        match activations {
            Activations::Keep => {
                for i in 0..layers {
                    seed_block(adapters, device, seed, m, i);
                    x = model.block(i, x, &span, None, Some(&tracked), Mode::Train);
                }
                let nll = loss(x);
                add(&nll.clone().div_scalar(trained as f64).backward());
                loss_sum = loss_sum + nll.inner();
            }
            Activations::Recompute => {
                let mut inputs = Vec::with_capacity(layers);
                for i in 0..layers {
                    seed_block(adapters, device, seed, m, i);
                    inputs.push(x.clone());
                    x = model.block(i, x, &span, None, Some(adapters), Mode::Train);
                }
                let top = x.autodiff().require_grad(); // [N, d]
                let nll = loss(top.clone());
                let g = nll.clone().div_scalar(trained as f64).backward();
                let mut upstream = top.grad(&g).expect("the loss depends on the last block"); // dL/dy [N, d]
                loss_sum = loss_sum + nll.inner();
                for i in (0..layers).rev() {
                    let input = inputs.pop().expect("one input per block");
                    // Block 0's input is the embedding: no gradient needed.
                    let input = if i > 0 {
                        input.autodiff().require_grad()
                    } else {
                        input
                    }; // [N, d]
                    seed_block(adapters, device, seed, m, i);
                    let y = model.block(i, input.clone(), &span, None, Some(&tracked), Mode::Train);
                    let g = seeded(y, upstream.clone()).backward(); // d/dy = upstream
                    add(&g);
                    if i > 0 {
                        upstream = input
                            .grad(&g)
                            .expect("a block's output depends on its input");
                    }
                }
            }
        }
    }
    let grads = grads
        .into_iter()
        .zip(adapters.named_tensors())
        .map(|(g, (_, t))| g.unwrap_or_else(|| t.zeros_like()))
        .collect();
    (loss_sum, grads)
}
