//! A seeded train/validation split, so the loss on examples the adapter
//! never trained on shows whether it learned or memorised.

use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

use crate::data::render::Example;

/// Fewest validation examples worth measuring; smaller sets are not split.
pub const MIN_VALIDATION: usize = 5;

/// Splits off `round(fraction · n)` examples, chosen by `seed`, for
/// validation. Returns `(train, validation)`; validation is empty when
/// `fraction` is 0 or the share would be under [`MIN_VALIDATION`] examples
/// (a tiny set trains on everything). Order within each part is kept.
pub fn split(examples: Vec<Example>, fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let held = held_out(examples.len(), fraction, seed);
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    for (ex, h) in examples.into_iter().zip(held) {
        if h {
            validation.push(ex);
        } else {
            train.push(ex);
        }
    }
    (train, validation)
}

/// [`split`] of `n` examples as indices, `(train, validation)`, each in
/// ascending order: the examples stay where they are.
pub fn split_indices(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let held = held_out(n, fraction, seed);
    (0..n).partition(|&i| !held[i])
}

/// Whether each of `n` examples is held out.
fn held_out(n: usize, fraction: f64, seed: u64) -> Vec<bool> {
    let take = (fraction * n as f64).round() as usize;
    let mut held = vec![false; n];
    if take < MIN_VALIDATION || take >= n {
        return held;
    }
    let mut order: Vec<usize> = (0..n).collect();
    // A stream of its own, so the split does not move with the data order.
    order.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x5eed_0005_7117));
    for &i in &order[..take] {
        held[i] = true;
    }
    held
}
