//! The chunked LM-head loss (`src/model/loss.rs`) against the plain one:
//! `log_softmax` over the whole `[M, vocab]` logits under autodiff. Same NLL
//! sum and same gradient for every adapter factor, for chunks that split the
//! rows unevenly, one chunk, and the default, with an untied LM head and a
//! tied one. Tolerance: 1e-5 relative to the largest value.

mod common;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use common::{
    assert_close, device, lora_config, loss_and_grads, scale, small_data, tiny_hf, to_vec,
};
use tabtune::data::Example;
use tabtune::lora::LoraAdapters;
use tabtune::model::loss::LOSS_CHUNK_ROWS;
use tabtune::model::{Llama, Mode};
use tabtune::train::Batch;

/// What the chunked loss replaces: all rows' logits at once, in the graph.
fn whole(m: &Llama, hidden: Tensor<2>, rows: &[i64], targets: &[i64]) -> Tensor<1> {
    let n = rows.len();
    let rows = Tensor::<1, Int>::from_data(TensorData::new(rows.to_vec(), [n]), &device());
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets.to_vec(), [n, 1]), &device());
    let logp = log_softmax(m.logits(hidden.select(0, rows)), 1); // [M, V]
    logp.gather(1, targets).sum().neg()
}

fn chunked_matches_whole(model_dir: &str) {
    let m = tiny_hf(model_dir).model;
    let lora = LoraAdapters::init(lora_config(4), &m.config, 3, &device()).expect("init");
    // Non-zero B, so every factor gets a gradient through the others.
    let lora = lora.map(|t| t.clone() + t.ones_like().mul_scalar(0.01));
    let (want_nll, want) = loss_and_grads(&m, &lora, |h, r, t| whole(&m, h, r, t));
    let rows = small_data().iter().map(|e| e.trained.len()).sum::<usize>();
    for chunk in [7, rows, LOSS_CHUNK_ROWS] {
        let (nll, got) = loss_and_grads(&m, &lora, |h, r, t| m.nll_sum_chunked(h, r, t, chunk));
        assert_close(
            &format!("{model_dir} NLL, chunks of {chunk}"),
            &nll,
            &want_nll,
            1e-5 * scale(&want_nll),
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_close(
                &format!("{model_dir} factor {i} gradient, chunks of {chunk}"),
                g,
                w,
                1e-5 * scale(w),
            );
        }
    }
}

#[test]
fn the_chunked_loss_and_its_gradients_equal_the_whole_logits_with_an_untied_head() {
    chunked_matches_whole("tiny_llama");
}

#[test]
fn the_chunked_loss_and_its_gradients_equal_the_whole_logits_with_a_tied_head() {
    chunked_matches_whole("tiny_llama_tied/f16");
}

#[test]
fn the_chunked_loss_without_a_graph_is_the_plain_nll() {
    let m = tiny_hf("tiny_llama").model;
    let data = small_data();
    let refs: Vec<&Example> = data.iter().collect();
    let batch = Batch::new(&refs, 32);
    let hidden = m.hidden(batch.ids_tensor(&device()), None, Mode::Eval);
    let (r, t) = (&batch.trained_positions, &batch.targets);
    let got = to_vec(m.nll_sum_chunked(hidden.clone(), r, t, 5));
    let want = to_vec(whole(&m, hidden, r, t));
    assert_close("NLL", &got, &want, 1e-5 * scale(&want));
}
