//! Our GPU kernels against their Rust twins on a live device. `cargo test`
//! has no GPU, so the page's WebGPU engine runs this on request
//! (`Engine::selfTestKernels`; the browser suite asks for it on
//! SwiftShader) and reports, per kernel and case, how many values differ
//! from the twin's and by how much.
//!
//! `dequantize_blocks`: Q8_0 at `[4200, 4096]` (17.2 M values, more than
//! 65,535 workgroups of 256, so the grid is 2-D), Q4_0 and Q4_1 at
//! `[300, 1024]`, Q4_0 at `[70000, 96]`, and a few rows of the Q4_1 matrix
//! picked out of order (the embedding's lookup); the twin's values exactly
//! (Q4_1's `d·q + m` may be fused into one rounding on a GPU).
//! `matmul_blocks_few`: random rows of `x` times each matrix (three; and
//! for `[70000, 96]`, a 2-D grid with lanes of one pass and of two, the
//! most rows and one), against the twin's f64 sums (the kernel sums in f32,
//! in another order). Blocks are random: Q8_0 and Q4_0 quantized from
//! random values, Q4_1 random bytes with a finite scale and minimum.
//! `matmul_blocks`: `x·Wᵀ` and `dY·W` for each format, with edges inside
//! a tile on every side, and for Q4_1 a weight of joined rows in three
//! parts and in two (each part's `x·W_iᵀ`, the sum of `dY_i·W_i`; parts'
//! edges inside a tile), against the twin's f64 sums; and a weight as the
//! GPU keeps it once joined (a view of joined rows, bound at an offset)
//! expanded, and multiplied by 8 rows and by 70, against its part's twins.
//! `lora_product`: each of an adapted projection's six products at the
//! default model's shapes (`x·A` and `xᵀ·du` with dropout on the input,
//! `u·B` added to `y`, `g·Bᵀ`, `uᵀ·g`, `du·Aᵀ` with dropout on the output),
//! and one over more than 65,535 workgroups (a 2-D grid, with `acc` and
//! dropout), against the twin
//! (which sums in the kernel's order; a GPU may fuse a multiply-add).
//! `lora_pair`: the backward pass's `dB` and `dA` (dropout on `x`) at the
//! default model's shapes, and a pair over a 2-D grid, each product on its
//! own scale. `lora_rows`: an adapted projection forward (`y + u·B + res`
//! and `u`, dropout on `x`) and backward (`dx` added to the base's part
//! and `du`, dropout on `dx`) at the default model's
//! shapes, and over more than 65,535 rows (a 2-D grid), `c` and `u` each
//! on its own scale.
//! `attention_forward`, `attention_backward_dq` and `_dkv`: the default
//! model's heads (9 over 3, 64 values) at 130 positions (three tiles of
//! keys), 96 values per head (two per invocation, one pass partial), and
//! 216,000 query rows over 72,000 key rows (2-D grids for all three), each
//! output (`o`, `lse`, `dq`, `dk`, `dv`, `D`) against the twins' on its own
//! scale (the twins sum in another order, and take softmax's maximum once
//! rather than tile by tile).
//! `rope`, `rms_norm_forward` and `_backward`, `swiglu_forward` and
//! `_backward`: the default model's shapes at batch 4 × 256 (`q`'s 9 heads
//! of 64, `q` and `k` rotated in one launch both ways (and 4.48 M values
//! of two tensors over a 2-D grid), rows of 576,
//! `[1024, 1536]`), and each over a 2-D grid (`[70000, 64]` values or rows,
//! `[3000, 1536]`), against the twins on each output's own scale (the row
//! kernels sum in another order).
//! `join`: 14 parts of the default model's factor sizes, one empty, one of
//! 7 values and one of 70,001, joined in three runs: the parts exactly.

use burn::tensor::{Device, Int, Tensor, TensorData, Transaction};
use half::f16;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::dequant::GgmlType;
use crate::io::quantize::quantize;
use crate::model::adapted::{
    Dropout, Mask, Product, lora_pair, lora_product, lora_rows, pair, pair_info, product, rows,
    rows_info,
};
use crate::model::attention::{self, Dims, attention_backward, attention_forward};
use crate::model::blocks::{
    BlockFormat, DeviceBlocks, FEW_ROWS, WordBlocks, dequantize_words, matmul_words, product_few,
};
use crate::model::norm::{self, rms_norm_backward, rms_norm_forward};
use crate::model::packed::PackedWeight;
use crate::model::rope::{self, rope_pair, rope_rotate};
use crate::model::swiglu;
use crate::readback::Readback;
use crate::train::join::join_in_runs;

/// One kernel case against its twin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelCheck {
    /// The kernel (its `shaders/` file's stem) and what it computed.
    pub case: String,
    /// Values compared (the twin's count; a kernel that gave another count
    /// differs in all of them).
    pub values: usize,
    /// Values whose bits differ from the twin's.
    pub differing: usize,
    /// Values the kernel gave that are NaN or infinite.
    pub non_finite: usize,
    /// The largest difference over the largest value (`f32::MAX` when a
    /// difference is not a number).
    pub max_relative: f32,
}

/// Random blocks of `ty` for a `[rows, cols]` matrix.
fn random_blocks(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> PackedWeight {
    let mut rng = StdRng::seed_from_u64(seed);
    let bytes = match ty {
        GgmlType::Q4_1 => (0..rows * cols / 32)
            .flat_map(|_| {
                let d = f16::from_f32(rng.random_range(0.001f32..0.2)).to_le_bytes();
                let m = f16::from_f32(rng.random_range(-1.0f32..1.0)).to_le_bytes();
                let qs: Vec<u8> = (0..16).map(|_| rng.random::<u8>()).collect();
                d.into_iter().chain(m).chain(qs)
            })
            .collect(),
        _ => {
            let x: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            quantize(ty, &x).expect("whole blocks")
        }
    };
    PackedWeight::new(ty, rows, cols, bytes).expect("whole blocks")
}

/// `got` against `want`.
fn compare(case: String, got: &[f32], want: &[f32]) -> KernelCheck {
    let scale = want
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let same_len = got.len() == want.len();
    let differing = if same_len {
        got.iter()
            .zip(want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count()
    } else {
        want.len().max(got.len())
    };
    // A NaN difference must not vanish in a max (f32::max ignores NaN).
    let max = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, |m, d| if d.is_nan() || d > m { d } else { m });
    let max_relative = if same_len && max.is_finite() {
        max / scale
    } else {
        f32::MAX
    };
    KernelCheck {
        case,
        values: want.len(),
        differing,
        non_finite: got.iter().filter(|v| !v.is_finite()).count(),
        max_relative,
    }
}

async fn read(t: Tensor<2>) -> Result<Vec<f32>> {
    Readback::new(Transaction::default().register(t), |data| {
        data.into_iter()
            .next()
            .ok_or_else(|| Error::Backend("empty readback".into()))?
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(Error::backend)
    })
    .read()
    .await
}

/// `len` random values in `[-1, 1)`.
fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// `lora_product` on `device` against [`product`], for each of an adapted
/// projection's products and a 2-D grid.
async fn check_lora_products(device: &Device) -> Result<Vec<KernelCheck>> {
    let (n, d_in, r, d_out) = (300, 576, 8, 1536);
    let dropout = Dropout::new(0.1, 0x5eed);
    let spec = |p_t, q_t, alpha, mask| Product {
        p_t,
        q_t,
        alpha,
        mask,
    };
    // (what, P's stored shape, Q's, spec, whether acc is added)
    let cases = [
        (
            "x·A, dropout on x",
            [n, d_in],
            [d_in, r],
            spec(false, false, 2.5, Mask::Input(dropout)),
            false,
        ),
        (
            "y + u·B",
            [n, r],
            [r, d_out],
            spec(false, false, 1.0, Mask::None),
            true,
        ),
        (
            "g·Bᵀ",
            [n, d_out],
            [r, d_out],
            spec(false, true, 1.0, Mask::None),
            false,
        ),
        (
            "uᵀ·g",
            [n, r],
            [n, d_out],
            spec(true, false, 1.0, Mask::None),
            false,
        ),
        (
            "xᵀ·du, dropout on x",
            [n, d_in],
            [n, r],
            spec(true, false, 2.5, Mask::Input(dropout)),
            false,
        ),
        (
            "du·Aᵀ, dropout on the output",
            [n, r],
            [d_in, r],
            spec(false, true, 2.5, Mask::Output(dropout)),
            false,
        ),
        // 4.48 M values: more than 65,535 workgroups of 64.
        (
            "[70000, 8]·[8, 64] + acc, dropout on P",
            [70_000, r],
            [r, 64],
            spec(false, false, 1.0, Mask::Input(dropout)),
            true,
        ),
    ];
    let mut checks = Vec::new();
    for (seed, (what, ps, qs, spec, with_acc)) in cases.into_iter().enumerate() {
        let seed = 200 + 3 * seed as u64;
        let p = random_values(ps[0] * ps[1], seed);
        let q = random_values(qs[0] * qs[1], seed + 1);
        let out = crate::model::adapted::product_shape(
            &burn::tensor::Shape::new(ps),
            &burn::tensor::Shape::new(qs),
            &spec,
        );
        let acc = with_acc.then(|| random_values(out.num_elements(), seed + 2));
        let want = product(&p, &q, acc.as_deref(), &spec.info(ps, qs, with_acc));
        let tensor = |v: &[f32], shape: [usize; 2]| {
            Tensor::<2>::from_data(TensorData::new(v.to_vec(), shape), device)
        };
        let acc = acc.map(|a| tensor(&a, out.dims::<2>()));
        let got = read(lora_product(tensor(&p, ps), tensor(&q, qs), acc, spec)).await?;
        checks.push(compare(
            format!("lora_product {what} {ps:?}·{qs:?}"),
            &got,
            &want,
        ));
    }
    // lora_pair: (what, P1, Q1, P2, Q2 stored shapes, the two products)
    let pair_cases = [
        (
            "backward: uᵀ·g, s·(m ⊙ x)ᵀ·du",
            [[n, r], [n, d_out], [n, d_in], [n, r]],
            spec(true, false, 1.0, Mask::None),
            spec(true, false, 2.5, Mask::Input(dropout)),
        ),
        // 4.48 M values and then some: a 2-D grid across both products.
        (
            "[70000, 8]·[8, 64], then uᵀ·g",
            [[70_000, r], [r, 64], [n, r], [n, d_out]],
            spec(false, false, 1.0, Mask::Output(dropout)),
            spec(true, false, 0.5, Mask::None),
        ),
    ];
    for (seed, (what, shapes, first, second)) in pair_cases.into_iter().enumerate() {
        let seed = 280 + 4 * seed as u64;
        let v: Vec<Vec<f32>> = shapes
            .iter()
            .zip(seed..)
            .map(|(s, seed)| random_values(s[0] * s[1], seed))
            .collect();
        let info = pair_info(
            (&first, shapes[0], shapes[1]),
            (&second, shapes[2], shapes[3]),
        );
        let want = pair(&v[0], &v[1], &v[2], &v[3], &info);
        let t = |i: usize| Tensor::<2>::from_data(TensorData::new(v[i].clone(), shapes[i]), device);
        let (c1, c2) = lora_pair(t(0), t(1), t(2), t(3), first, second);
        let got = [read(c1).await?, read(c2).await?].concat();
        let one = info[0] as usize * info[1] as usize;
        let parts = [("c1", one), ("c2", want.len() - one)];
        checks.extend(compare_parts("lora_pair", what, &got, &want, &parts));
    }
    // lora_rows: (what, P, F1, F2 stored shapes, stage 1, stage 2, (acc, res))
    let rows_cases = [
        (
            "forward: y + s·(m ⊙ x)·A·B + res",
            [n, d_in],
            [d_in, r],
            [r, d_out],
            spec(false, false, 2.5, Mask::Input(dropout)),
            Product::plain(1.0),
            (true, true),
        ),
        (
            "backward: g·Bᵀ, dY·Wᵀ + s·m ⊙ du·Aᵀ",
            [n, d_out],
            [r, d_out],
            [d_in, r],
            spec(false, true, 1.0, Mask::None),
            spec(false, true, 2.5, Mask::Output(dropout)),
            (true, false),
        ),
        // More rows than 65,535 workgroups (a 2-D grid).
        (
            "[70000, 16]·[16, 8]·[8, 64] + acc, dropout both",
            [70_000, 16],
            [16, r],
            [r, 64],
            spec(false, false, 1.5, Mask::Input(dropout)),
            spec(false, false, 0.5, Mask::Output(dropout)),
            (true, false),
        ),
    ];
    for (seed, (what, ps, s1, s2, first, second, (with_acc, with_res))) in
        rows_cases.into_iter().enumerate()
    {
        let seed = 250 + 5 * seed as u64;
        let p = random_values(ps[0] * ps[1], seed);
        let f1 = random_values(s1[0] * s1[1], seed + 1);
        let f2 = random_values(s2[0] * s2[1], seed + 2);
        let info = rows_info(ps, s1, s2, &first, &second, with_acc, with_res);
        let (m, r, k) = (info[0] as usize, info[1] as usize, info[13] as usize);
        let acc = with_acc.then(|| random_values(m * k, seed + 3));
        let res = with_res.then(|| random_values(m * k, seed + 4));
        let want = rows(&p, &f1, &f2, (acc.as_deref(), res.as_deref()), &info);
        let tensor = |v: &[f32], shape: [usize; 2]| {
            Tensor::<2>::from_data(TensorData::new(v.to_vec(), shape), device)
        };
        let acc = acc.map(|a| tensor(&a, [m, k]));
        let res = res.map(|a| tensor(&a, [m, k]));
        let (c, u) = lora_rows(
            tensor(&p, ps),
            tensor(&f1, s1),
            tensor(&f2, s2),
            (acc, res),
            first,
            second,
        );
        let got = [read(c).await?, read(u).await?].concat();
        let parts = [("c", m * k), ("u", m * r)];
        checks.extend(compare_parts("lora_rows", what, &got, &want, &parts));
    }
    Ok(checks)
}

/// [`compare`] for each named part of a flat output, each against its
/// own largest value (a kernel that gave another length differs in all).
fn compare_parts(
    kernel: &str,
    what: &str,
    got: &[f32],
    want: &[f32],
    parts: &[(&str, usize)],
) -> Vec<KernelCheck> {
    let mut start = 0;
    parts
        .iter()
        .map(|(name, len)| {
            let case = format!("{kernel} {name} {what}");
            let end = start + len;
            let check = match got.get(start..end) {
                Some(g) if got.len() == want.len() => compare(case, g, &want[start..end]),
                _ => compare(case, got, &want[start..end]),
            };
            start = end;
            check
        })
        .collect()
}

async fn read_flat(t: Tensor<1>) -> Result<Vec<f32>> {
    read(t.unsqueeze::<2>()).await
}

/// The attention kernels on `device` against the twins.
async fn check_attention(device: &Device) -> Result<Vec<KernelCheck>> {
    let mut checks = Vec::new();
    for (seed, (b, h, kv, t, hd)) in [(1, 9, 3, 130, 64), (2, 4, 4, 20, 96), (3000, 9, 3, 8, 8)]
        .into_iter()
        .enumerate()
    {
        let d = Dims { b, h, kv, t, hd };
        let seed = 300 + 4 * seed as u64;
        let q = random_values(d.q_len(), seed);
        let k = random_values(d.k_len(), seed + 1);
        let v = random_values(d.k_len(), seed + 2);
        let d_o = random_values(d.q_len(), seed + 3);
        let scale = 1.0 / (hd as f32).sqrt();
        let tensor = |x: &[f32], heads: usize| {
            Tensor::<4>::from_data(TensorData::new(x.to_vec(), [b, t, heads, hd]), device)
        };
        let what = format!("q [{b}, {t}, {h}, {hd}], k and v [{b}, {t}, {kv}, {hd}]");
        let (o, lse) = attention_forward(tensor(&q, h), tensor(&k, kv), tensor(&v, kv), scale);
        // Read back in the twin's flat order.
        let fwd = [
            read_flat(o.reshape([-1])).await?,
            read_flat(lse.reshape([-1])).await?,
        ]
        .concat();
        let want = attention::forward(&q, &k, &v, d, scale);
        let parts = [("o", d.q_len()), ("lse", d.rows())];
        checks.extend(compare_parts(
            "attention_forward",
            &what,
            &fwd,
            &want,
            &parts,
        ));
        // The backward pass from the device's forward output, so only it differs.
        let (o, lse) = fwd.split_at(d.q_len());
        let o = tensor(o, h);
        let lse = Tensor::<3>::from_data(TensorData::new(lse.to_vec(), [b, t, h]), device);
        let (dq, dk, dv, big_d) = attention_backward(
            tensor(&q, h),
            tensor(&k, kv),
            tensor(&v, kv),
            (o, lse),
            tensor(&d_o, h),
            scale,
        );
        let mut got = Vec::with_capacity(d.q_len() + 2 * d.k_len() + d.rows());
        for part in [dq, dk, dv] {
            got.extend(read_flat(part.reshape([-1])).await?);
        }
        got.extend(read_flat(big_d.reshape([-1])).await?);
        let want = attention::backward(&q, &k, &v, &fwd, &d_o, d, scale);
        let parts = [
            ("dq", d.q_len()),
            ("dk", d.k_len()),
            ("dv", d.k_len()),
            ("D", d.rows()),
        ];
        checks.extend(compare_parts(
            "attention_backward",
            &what,
            &got,
            &want,
            &parts,
        ));
    }
    Ok(checks)
}

/// The join of 14 parts (two runs of six and one of two, one part empty,
/// lengths that fill no whole workgroup) on `device` against the parts.
async fn check_join(device: &Device) -> Result<KernelCheck> {
    let lens = [
        576, 576, 576, 192, 0, 192, 576, 576, 1536, 1536, 1536, 576, 7, 70_001,
    ];
    let parts: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| random_values(n, 700 + i as u64))
        .collect();
    let want = parts.concat();
    let tensors = parts
        .iter()
        .map(|p| Tensor::<1>::from_data(TensorData::new(p.clone(), [p.len()]), device))
        .collect();
    let got = read_flat(join_in_runs(tensors, want.len(), device)).await?;
    Ok(compare(
        format!("join of {} parts {lens:?}", lens.len()),
        &got,
        &want,
    ))
}

/// RoPE, RMSNorm and SwiGLU's kernels on `device` against the twins.
async fn check_block_nodes(device: &Device) -> Result<Vec<KernelCheck>> {
    let tensor = |v: &[f32], shape: [usize; 2]| {
        Tensor::<2>::from_data(TensorData::new(v.to_vec(), shape), device)
    };
    let mut checks = Vec::new();
    // (rows, width, positions, head size, inverse): q at batch 4 × 256,
    // then 4.48 M values (a 2-D grid).
    for (seed, (rows, width, len, hd, inverse)) in [
        (1024, 576, 256, 64, false),
        (1024, 576, 256, 64, true),
        (70_000, 64, 7, 16, true),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 400 + 3 * seed as u64;
        let x = random_values(rows * width, seed);
        let cos = random_values(len * hd, seed + 1);
        let sin = random_values(len * hd, seed + 2);
        let got = read(rope_rotate(
            tensor(&x, [rows, width]),
            tensor(&cos, [len, hd]),
            tensor(&sin, [len, hd]),
            inverse,
        ))
        .await?;
        let want = rope::rotate(&x, &cos, &sin, width, hd, inverse);
        let way = if inverse { "inverse" } else { "forward" };
        checks.push(compare(
            format!("rope {way} [{rows}, {width}], [{len}, {hd}] tables"),
            &got,
            &want,
        ));
    }
    // q and k of the default model at batch 4 × 256 in one launch, forward
    // and inverse; then 4.48 M values over a 2-D grid, the second tensor's
    // first values in the first one's last workgroup.
    for (seed, (rows, w1, w2, len, hd, inverse)) in [
        (430, (1024, 576, 192, 256, 64, false)),
        (440, (1024, 576, 192, 256, 64, true)),
        (450, (70_001, 40, 24, 7, 8, true)),
    ] {
        let (q, k) = (
            random_values(rows * w1, seed),
            random_values(rows * w2, seed + 1),
        );
        let cos = random_values(len * hd, seed + 2);
        let sin = random_values(len * hd, seed + 3);
        let (gq, gk) = rope_pair(
            tensor(&q, [rows, w1]),
            tensor(&k, [rows, w2]),
            tensor(&cos, [len, hd]),
            tensor(&sin, [len, hd]),
            inverse,
        );
        let got = [read(gq).await?, read(gk).await?].concat();
        let want = [
            rope::rotate(&q, &cos, &sin, w1, hd, inverse),
            rope::rotate(&k, &cos, &sin, w2, hd, inverse),
        ]
        .concat();
        let way = if inverse { "inverse" } else { "forward" };
        let what = format!("{way} [{rows}, {w1}] and [{rows}, {w2}] in one launch");
        let parts = [("q", rows * w1), ("k", rows * w2)];
        checks.extend(compare_parts("rope", &what, &got, &want, &parts));
    }
    // Rows of the default model, then more than 65,535 rows (a 2-D grid).
    for (seed, (rows, d)) in [(1024, 576), (70_000, 8)].into_iter().enumerate() {
        let seed = 500 + 3 * seed as u64;
        let (eps, what) = (1e-5, format!("[{rows}, {d}]"));
        let x = random_values(rows * d, seed);
        let w = random_values(d, seed + 1);
        let g = random_values(rows * d, seed + 2);
        let weight = Tensor::<1>::from_data(TensorData::new(w.clone(), [d]), device);
        let got = read(rms_norm_forward(tensor(&x, [rows, d]), weight.clone(), eps)).await?;
        let want = norm::forward(&x, &w, eps);
        checks.push(compare(format!("rms_norm_forward {what}"), &got, &want));
        let got = read(rms_norm_backward(
            tensor(&x, [rows, d]),
            weight,
            tensor(&g, [rows, d]),
            eps,
        ))
        .await?;
        let want = norm::backward(&x, &w, &g, eps);
        checks.push(compare(format!("rms_norm_backward {what}"), &got, &want));
    }
    // The default model's MLP at batch 4 × 256, then 4.6 M values (a 2-D
    // grid) backward.
    for (seed, (rows, f, forward)) in [(1024, 1536, true), (1024, 1536, false), (3000, 1536, false)]
        .into_iter()
        .enumerate()
    {
        let seed = 600 + 3 * seed as u64;
        let shape = [rows, f];
        // Gates in [-8, 8): both of the sigmoid's sides, far into each.
        let g: Vec<f32> = random_values(rows * f, seed)
            .iter()
            .map(|v| 8.0 * v)
            .collect();
        let u = random_values(rows * f, seed + 1);
        let what = format!("{shape:?}");
        if forward {
            let got = read(swiglu::swiglu(tensor(&g, shape), tensor(&u, shape))).await?;
            checks.push(compare(
                format!("swiglu_forward {what}"),
                &got,
                &swiglu::forward(&g, &u),
            ));
        } else {
            let dy = random_values(rows * f, seed + 2);
            let got = read(swiglu::swiglu_backward(
                tensor(&g, shape),
                tensor(&u, shape),
                tensor(&dy, shape),
            ))
            .await?;
            let want = swiglu::backward(&g, &u, &dy);
            let parts = [("dgate", rows * f), ("dup", rows * f)];
            checks.extend(compare_parts("swiglu_backward", &what, &got, &want, &parts));
        }
    }
    Ok(checks)
}

/// `matmul_blocks` both ways (`x·Wᵀ` and `dY·W`) for each format, against
/// the twin's f64 sums.
async fn check_block_products(device: &Device) -> Result<Vec<KernelCheck>> {
    // (type, rows, cols, rows of a): SmolLM2's `k` at batch 1 × 128, then
    // edges inside a tile on every side: 70 rows of a, 300 rows of W (12
    // past a step of 16 along K for `dY·W`), 1,056 columns (32 past a tile).
    let cases = [
        (GgmlType::Q8_0, 192, 576, 128),
        (GgmlType::Q4_0, 300, 1024, 70),
        (GgmlType::Q4_1, 300, 1056, 70),
    ];
    let mut checks = Vec::new();
    for (seed, (ty, rows, cols, m)) in cases.into_iter().enumerate() {
        let host = WordBlocks::from_packed(&random_blocks(ty, rows, cols, 200 + seed as u64));
        let on_device = DeviceBlocks::upload(&host, device);
        let format = format!("{:?}", host.format);
        for transpose in [true, false] {
            let inner = if transpose { cols } else { rows };
            let a = random_values(m * inner, 300 + 2 * seed as u64 + u64::from(transpose));
            let at = Tensor::<2>::from_data(TensorData::new(a.clone(), [m, inner]), device);
            let (got, case) = if transpose {
                let case = format!("matmul_blocks {format} [{m}, {cols}]·[{rows}, {cols}]ᵀ");
                (read(on_device.matmul_t(at)).await?, case)
            } else {
                let case = format!("matmul_blocks {format} [{m}, {rows}]·[{rows}, {cols}]");
                (read(on_device.matmul_grad(at)).await?, case)
            };
            let want = matmul_words(host.format, &host.words, &host.params, cols, &a, transpose);
            checks.push(compare(case, &got, &want));
        }
        if ty == GgmlType::Q4_1 {
            checks.extend(check_parts(&host, &on_device, m, device).await?);
        }
    }
    Ok(checks)
}

/// `matmul_blocks` over a weight of joined rows: each part's `x·W_iᵀ`, and
/// the sum of `dY_i·W_i`, in three parts and in two, with parts' edges
/// inside a tile, against the twin's product of the whole.
async fn check_parts(
    host: &WordBlocks,
    on_device: &DeviceBlocks,
    m: usize,
    device: &Device,
) -> Result<Vec<KernelCheck>> {
    let (rows, cols) = (host.rows, host.cols);
    let twin = |a: &[f32], transpose| {
        matmul_words(host.format, &host.words, &host.params, cols, a, transpose)
    };
    let tensor = |v: &[f32], shape: [usize; 2]| {
        Tensor::<2>::from_data(TensorData::new(v.to_vec(), shape), device)
    };
    let mut checks = Vec::new();
    for split in [vec![100, 136, rows - 236], vec![150, rows - 150]] {
        let what = format!("{:?} [{m}, {cols}]·[{split:?}, {cols}]ᵀ", host.format);
        let x = random_values(m * cols, 400 + split.len() as u64);
        let want = twin(&x, true); // [m, rows]
        // Each part's columns of the whole, in turn.
        let mut want_parts = Vec::with_capacity(want.len());
        let mut start = 0;
        for &p in &split {
            for row in want.chunks(rows) {
                want_parts.extend_from_slice(&row[start..start + p]);
            }
            start += p;
        }
        let mut got = Vec::new();
        for y in on_device.matmul_t_parts(tensor(&x, [m, cols]), &split) {
            got.extend(read(y).await?);
        }
        let names: Vec<String> = (0..split.len()).map(|i| format!("part {i}")).collect();
        let parts: Vec<(&str, usize)> = names
            .iter()
            .zip(&split)
            .map(|(n, &p)| (n.as_str(), m * p))
            .collect();
        checks.extend(compare_parts(
            "matmul_blocks",
            &what,
            &got,
            &want_parts,
            &parts,
        ));
        // dY in parts: the whole `[m, rows]`'s columns of each.
        let dy = random_values(m * rows, 500 + split.len() as u64);
        let mut gs = Vec::new();
        let mut start = 0;
        for &p in &split {
            let part: Vec<f32> = dy
                .chunks(rows)
                .flat_map(|row| row[start..start + p].to_vec())
                .collect();
            gs.push(tensor(&part, [m, p]));
            start += p;
        }
        let got = read(on_device.matmul_grad_parts(gs)).await?;
        let case = format!(
            "matmul_blocks {:?} Σ [{m}, {split:?}]·[{split:?}, {cols}]",
            host.format
        );
        checks.push(compare(case, &got, &twin(&dy, false)));
    }
    Ok(checks)
}

/// A projection's weight as the GPU keeps it once joined: a view of the
/// joined blocks from a row past the first (its binding at an offset),
/// expanded and multiplied by a few rows and by many, against the twins of
/// the part it was made from.
async fn check_joined_view(device: &Device) -> Result<Vec<KernelCheck>> {
    let (first, rows, cols) = (64, 96, 1056);
    let [a, b] = [(first, 600), (rows, 601)]
        .map(|(r, seed)| WordBlocks::from_packed(&random_blocks(GgmlType::Q4_1, r, cols, seed)));
    let parts = [&a, &b].map(|w| DeviceBlocks::upload(w, device));
    let max = crate::gpu::max_buffer(device);
    let (_joined, views) = DeviceBlocks::join(&[&parts[0], &parts[1]], max).ok_or_else(|| {
        Error::Backend("Q4_1 parts of 64 and 96 rows of 1,056 values did not join".into())
    })?;
    drop(parts);
    let view = &views[1];
    let what = format!("Q4_1 [{rows}, {cols}] viewed at row {first} of joined rows");
    let want = b.to_f32(); // [rows, cols]
    let mut checks = vec![compare(
        format!("dequantize_blocks {what}"),
        &read(view.to_f32()).await?,
        &want,
    )];
    for (n, kernel) in [(8, "matmul_blocks_few"), (70, "matmul_blocks")] {
        let x = random_values(n * cols, 602 + n as u64);
        let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, cols]), device);
        let got = read(view.matmul_t(xt)).await?;
        let twin = matmul_words(b.format, &b.words, &b.params, cols, &x, true);
        checks.push(compare(
            format!("{kernel} [{n}, {cols}]·Wᵀ, W {what}"),
            &got,
            &twin,
        ));
    }
    Ok(checks)
}

/// Runs our kernels (through [`DeviceBlocks`] and the adapter's products)
/// on `device` for every case and compares each with its twin.
pub async fn check_kernels(device: &Device) -> Result<Vec<KernelCheck>> {
    // (type, rows, cols, rows of x for the few-rows product)
    let cases = [
        (GgmlType::Q8_0, 4200, 4096, 3),
        (GgmlType::Q4_0, 300, 1024, 3),
        (GgmlType::Q4_1, 300, 1024, 3),
        // More rows than 65,535 workgroups (a 2-D grid for the few-rows
        // product), 96 columns (lanes with one pass and with two), and the
        // most rows of x.
        (GgmlType::Q4_0, 70_000, 96, FEW_ROWS),
        (GgmlType::Q4_0, 70_000, 96, 1),
    ];
    let mut checks = Vec::new();
    for (seed, (ty, rows, cols, n)) in cases.into_iter().enumerate() {
        let host = WordBlocks::from_packed(&random_blocks(ty, rows, cols, seed as u64));
        let on_device = DeviceBlocks::upload(&host, device);
        let got = read(on_device.to_f32()).await?;
        let want = host.to_f32(); // [rows, cols]
        let format = format!("{:?}", host.format);
        checks.push(compare(
            format!("dequantize_blocks {format} [{rows}, {cols}]"),
            &got,
            &want,
        ));
        drop(got);
        // A few rows of x (decoding), against `matmul_words_few`'s product
        // (its expansion is `want`, already made).
        let mut rng = StdRng::seed_from_u64(100 + seed as u64);
        let x: Vec<f32> = (0..n * cols)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, cols]), device);
        let got = read(on_device.matmul_t(xt)).await?;
        let want = product_few(&want, cols, &x, n);
        checks.push(compare(
            format!("matmul_blocks_few {format} [{n}, {cols}]·[{rows}, {cols}]ᵀ"),
            &got,
            &want,
        ));
        if host.format == BlockFormat::Q4_1 {
            // Rows out of order, one twice: the embedding's lookup.
            let picked = [3usize, 0, rows - 1, 3];
            let ids = Tensor::<1, Int>::from_data(
                TensorData::new(picked.iter().map(|&r| r as i64).collect(), [picked.len()]),
                device,
            );
            let got = read(on_device.rows(ids)).await?;
            let (wpr, ppr) = (
                cols / host.format.per_word(),
                cols / 32 * host.format.params(),
            );
            let words: Vec<u32> = picked
                .iter()
                .flat_map(|&r| host.words[r * wpr..(r + 1) * wpr].to_vec())
                .collect();
            let params: Vec<f32> = picked
                .iter()
                .flat_map(|&r| host.params[r * ppr..(r + 1) * ppr].to_vec())
                .collect();
            let want = dequantize_words(host.format, &words, &params);
            checks.push(compare(
                format!("dequantize_blocks {format} rows {picked:?} of [{rows}, {cols}]"),
                &got,
                &want,
            ));
        }
    }
    checks.extend(check_block_products(device).await?);
    checks.extend(check_joined_view(device).await?);
    checks.extend(check_lora_products(device).await?);
    checks.extend(check_attention(device).await?);
    checks.extend(check_block_nodes(device).await?);
    checks.push(check_join(device).await?);
    Ok(checks)
}
