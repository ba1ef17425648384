//! The GPU's grouped nodes (`src/model/attend.rs`, `src/model/gate_up.rs`)
//! against the separate nodes they replace, on the CPU: the attention half
//! of a block (q, k, v projections, RoPE, attention) and the MLP's first
//! half (gate, up, SwiGLU), each output and every gradient within 1e-5 of
//! the largest value, with dropout on, over dense bases, over Q8_0 blocks
//! and over Q8_0 blocks joined by rows (one product for all), at a rank the
//! row kernel takes and one past it, with and without the input's
//! gradient.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{assert_relative, device, to_vec};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tabtune::io::dequant::GgmlType;
use tabtune::io::quantize::quantize;
use tabtune::lora::LoraPair;
use tabtune::model::adapted::{Adapter, Dropout, MAX_ROWS_RANK};
use tabtune::model::attend::{AttendSpec, attend};
use tabtune::model::attention::{Dims, causal_attention};
use tabtune::model::blocks::{DeviceBlocks, WordBlocks};
use tabtune::model::frozen::Frozen;
use tabtune::model::gate_up::gate_up;
use tabtune::model::packed::PackedWeight;
use tabtune::model::projection::project;
use tabtune::model::rope::rope;
use tabtune::model::swiglu::swiglu;

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn tensor(v: &[f32], shape: [usize; 2]) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &device())
}

/// A leaf that needs its gradient.
fn leaf(v: &[f32], shape: [usize; 2]) -> Tensor<2> {
    tensor(v, shape).autodiff().require_grad()
}

/// A random `[d_out, d_in]` matrix in Q8_0 blocks.
fn packed(d_in: usize, d_out: usize, seed: u64) -> PackedWeight {
    let bytes = quantize(GgmlType::Q8_0, &random(d_in * d_out, seed)).expect("whole blocks");
    PackedWeight::new(GgmlType::Q8_0, d_out, d_in, bytes).expect("whole blocks")
}

/// Projections of `d_in` to each of `d_outs`: their bases (dense, or blocks
/// as the GPU keeps them), factors (leaves) and adapters (each its own
/// dropout key and scale).
struct Parts {
    bases: Vec<Frozen>,
    /// The bases' blocks joined ([`Base::Joined`]; `bases` are then views
    /// of it).
    joined: Option<DeviceBlocks>,
    pairs: Vec<LoraPair>,
    adapters: Vec<Adapter>,
}

/// How the bases are kept.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Base {
    Dense,
    Blocks,
    /// Blocks, joined by rows.
    Joined,
}

fn parts(d_in: usize, d_outs: &[usize], r: usize, base: Base, seed: u64) -> Parts {
    let mut p = Parts {
        bases: Vec::new(),
        joined: None,
        pairs: Vec::new(),
        adapters: Vec::new(),
    };
    for (i, &d_out) in d_outs.iter().enumerate() {
        let s = seed + 10 * i as u64;
        p.bases.push(if base != Base::Dense {
            let w = WordBlocks::from_packed(&packed(d_in, d_out, s));
            Frozen::Blocks(DeviceBlocks::upload(&w, &device()))
        } else {
            Frozen::Dense(tensor(&random(d_in * d_out, s), [d_in, d_out]))
        });
        p.pairs.push(LoraPair {
            a: leaf(&random(d_in * r, s + 1), [d_in, r]),
            b: leaf(&random(r * d_out, s + 2), [r, d_out]),
        });
        p.adapters.push(Adapter {
            scale: 0.5 + i as f32,
            dropout: Some(Dropout::new(0.25, 1000 + i as u32)),
        });
    }
    if base == Base::Joined {
        let blocks: Vec<&DeviceBlocks> = p
            .bases
            .iter()
            .map(|b| match b {
                Frozen::Blocks(b) => b,
                _ => unreachable!("blocks"),
            })
            .collect();
        let (joined, views) = DeviceBlocks::join(&blocks, None).expect("rows a view takes");
        p.bases = views.into_iter().map(Frozen::Blocks).collect();
        p.joined = Some(joined);
    }
    p
}

/// (rank, whether x needs its gradient, how the bases are kept).
fn cases() -> Vec<(usize, bool, Base)> {
    let mut all = Vec::new();
    for r in [4, MAX_ROWS_RANK + 1] {
        for x_grad in [true, false] {
            all.push((r, x_grad, Base::Dense));
        }
    }
    all.push((4, true, Base::Blocks));
    all.push((4, true, Base::Joined));
    all.push((4, false, Base::Joined));
    all.push((MAX_ROWS_RANK + 1, true, Base::Joined));
    all
}

/// `x: [n, d]`, a leaf that needs its gradient or not.
fn input(v: &[f32], shape: [usize; 2], x_grad: bool) -> Tensor<2> {
    if x_grad {
        leaf(v, shape)
    } else {
        tensor(v, shape).autodiff()
    }
}

type Results = (Vec<f32>, Vec<Option<Vec<f32>>>);

/// The output, and the gradients of `x` (when it needs one) and of every
/// factor, for `out` weighted by random values.
fn grads(out: Tensor<2>, x: &Tensor<2>, pairs: &[LoraPair]) -> Results {
    let [n, w] = out.dims();
    let loss = (out.clone() * tensor(&random(n * w, 99), [n, w])).sum();
    let g = loss.backward();
    let mut all = vec![x.grad(&g).map(to_vec)];
    for p in pairs {
        all.push(p.a.grad(&g).map(to_vec));
        all.push(p.b.grad(&g).map(to_vec));
    }
    (to_vec(out.inner()), all)
}

fn assert_same(case: &str, (got, got_grads): &Results, (want, want_grads): &Results) {
    assert_relative(&format!("output, {case}"), got, want);
    for (i, (g, w)) in got_grads.iter().zip(want_grads).enumerate() {
        match (g, w) {
            (Some(g), Some(w)) => assert_relative(&format!("gradient {i}, {case}"), g, w),
            (None, None) => {}
            _ => panic!("gradient {i}, {case}: on one side only"),
        }
    }
}

/// The separate node of projection `i` of `p` on `x`.
fn project_alone(x: &Tensor<2>, p: &Parts, i: usize) -> Tensor<2> {
    project(x.clone(), &p.bases[i], &p.pairs[i], p.adapters[i], None).expect("a GPU base")
}

#[test]
fn the_attention_node_gives_the_separate_nodes_output_and_gradients() {
    // Two query heads to each key head; each projection's rows a whole
    // number of 256 bytes of Q8_0 scales (64 rows), so that they can join.
    let dims = Dims {
        b: 2,
        h: 4,
        kv: 2,
        t: 5,
        hd: 32,
    };
    let (n, d) = (dims.b * dims.t, 32);
    let (cos, sin) = (
        tensor(&random(dims.t * dims.hd, 7), [dims.t, dims.hd]),
        tensor(&random(dims.t * dims.hd, 8), [dims.t, dims.hd]),
    );
    let xv = random(n * d, 3);
    for (r, x_grad, base) in cases() {
        let widths = [dims.h * dims.hd, dims.kv * dims.hd, dims.kv * dims.hd];
        let p = parts(d, &widths, r, base, 30);
        let run = |ours: bool| {
            let x = input(&xv, [n, d], x_grad);
            let out = if ours {
                let spec = AttendSpec {
                    adapters: [p.adapters[0], p.adapters[1], p.adapters[2]],
                    dims,
                };
                let bases = [&p.bases[0], &p.bases[1], &p.bases[2]];
                let pairs = [&p.pairs[0], &p.pairs[1], &p.pairs[2]];
                let tables = (cos.clone(), sin.clone());
                attend(x.clone(), bases, p.joined.as_ref(), pairs, spec, tables)
                    .expect("alike bases")
            } else {
                let (q, k, v) = (
                    project_alone(&x, &p, 0),
                    project_alone(&x, &p, 1),
                    project_alone(&x, &p, 2),
                );
                let q = rope(q, cos.clone(), sin.clone());
                let k = rope(k, cos.clone(), sin.clone());
                let heads = |y: Tensor<2>, h: usize| y.reshape([dims.b, dims.t, h, dims.hd]);
                causal_attention(heads(q, dims.h), heads(k, dims.kv), heads(v, dims.kv))
                    .reshape([n, dims.h * dims.hd])
            };
            grads(out, &x, &p.pairs)
        };
        let got = run(true);
        assert_eq!(got.1[0].is_some(), x_grad, "dx exactly when x needs it");
        let case = format!("rank {r}, x's gradient {x_grad}, {base:?} bases");
        assert_same(&case, &got, &run(false));
    }
}

#[test]
fn the_gate_up_node_gives_the_separate_nodes_output_and_gradients() {
    let (n, d, f) = (9, 32, 64);
    let xv = random(n * d, 5);
    for (r, x_grad, base) in cases() {
        let p = parts(d, &[f, f], r, base, 60);
        let run = |ours: bool| {
            let x = input(&xv, [n, d], x_grad);
            let out = if ours {
                let bases = [&p.bases[0], &p.bases[1]];
                let pairs = [&p.pairs[0], &p.pairs[1]];
                let adapters = [p.adapters[0], p.adapters[1]];
                gate_up(x.clone(), bases, p.joined.as_ref(), pairs, adapters).expect("alike bases")
            } else {
                swiglu(project_alone(&x, &p, 0), project_alone(&x, &p, 1))
            };
            grads(out, &x, &p.pairs)
        };
        let got = run(true);
        assert_eq!(got.1[0].is_some(), x_grad, "dx exactly when x needs it");
        let case = format!("rank {r}, x's gradient {x_grad}, {base:?} bases");
        assert_same(&case, &got, &run(false));
    }
}

#[test]
fn mixed_bases_leave_the_grouped_nodes_to_the_separate_ones() {
    let dense = parts(32, &[32, 32, 32], 4, Base::Dense, 90);
    let blocks = parts(32, &[32, 32, 32], 4, Base::Blocks, 95);
    let host = Frozen::Packed(std::sync::Arc::new(packed(32, 32, 2)));
    let x = tensor(&random(3 * 32, 1), [3, 32]);
    let pairs = [&dense.pairs[0], &dense.pairs[1]];
    let adapters = [dense.adapters[0], dense.adapters[1]];
    for bases in [
        [&dense.bases[0], &host],
        [&dense.bases[0], &blocks.bases[1]],
    ] {
        assert!(gate_up(x.clone(), bases, None, pairs, adapters).is_none());
    }
    let dims = Dims {
        b: 1,
        h: 1,
        kv: 1,
        t: 3,
        hd: 32,
    };
    let spec = AttendSpec {
        adapters: [dense.adapters[0], dense.adapters[1], dense.adapters[2]],
        dims,
    };
    let tables = (
        tensor(&random(96, 3), [3, 32]),
        tensor(&random(96, 4), [3, 32]),
    );
    let bases = [&dense.bases[0], &blocks.bases[1], &dense.bases[2]];
    let pairs = [&dense.pairs[0], &dense.pairs[1], &dense.pairs[2]];
    assert!(attend(x, bases, None, pairs, spec, tables).is_none());
}

#[test]
fn blocks_join_only_when_alike_split_at_whole_256_bytes_and_within_one_buffer() {
    let blocks = |rows: &[usize], ty: GgmlType| -> Vec<DeviceBlocks> {
        rows.iter()
            .enumerate()
            .map(|(i, &r)| {
                let bytes = quantize(ty, &random(r * 64, i as u64)).expect("whole blocks");
                let w = PackedWeight::new(ty, r, 64, bytes).expect("whole blocks");
                DeviceBlocks::upload(&WordBlocks::from_packed(&w), &device())
            })
            .collect()
    };
    let join_within = |parts: &[DeviceBlocks], max: Option<u64>| {
        DeviceBlocks::join(&parts.iter().collect::<Vec<_>>(), max)
    };
    let join = |parts: &[DeviceBlocks]| join_within(parts, None);
    // Q8_0 of 64 columns: 64 bytes of words and 8 of scales a row, so 32
    // rows end 256 bytes of scales on.
    let (joined, views) = join(&blocks(&[64, 32, 32], GgmlType::Q8_0)).expect("aligned");
    assert_eq!(joined.shape(), [128, 64]);
    let parts = blocks(&[64, 32, 32], GgmlType::Q8_0);
    for (view, part) in views.iter().zip(&parts) {
        assert_eq!(
            to_vec(view.to_f32()),
            to_vec(part.to_f32()),
            "a view is its part"
        );
    }
    assert!(
        join(&blocks(&[64, 16, 48], GgmlType::Q8_0)).is_none(),
        "16 rows"
    );
    let mut mixed = blocks(&[64, 32], GgmlType::Q8_0);
    mixed.extend(blocks(&[64], GgmlType::Q4_0));
    assert!(join(&mixed).is_none(), "formats differ");
    let mut wider = blocks(&[64, 32], GgmlType::Q8_0);
    let bytes = quantize(GgmlType::Q8_0, &random(64 * 96, 9)).expect("whole blocks");
    let w = PackedWeight::new(GgmlType::Q8_0, 64, 96, bytes).expect("whole blocks");
    wider.push(DeviceBlocks::upload(
        &WordBlocks::from_packed(&w),
        &device(),
    ));
    assert!(join(&wider).is_none(), "widths differ");
    // 128 rows of 64 bytes of words: 8,192 bytes joined, past a buffer of
    // 8,191 (a GPU's limit), within one of 8,192.
    let parts = blocks(&[64, 32, 32], GgmlType::Q8_0);
    assert!(join_within(&parts, Some(8191)).is_none(), "past the buffer");
    assert!(
        join_within(&parts, Some(8192)).is_some(),
        "within the buffer"
    );
}
