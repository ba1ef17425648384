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

use burn::tensor::{Device, Int, Tensor, TensorData, Transaction};
use half::f16;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::dequant::GgmlType;
use crate::io::quantize::quantize;
use crate::model::blocks::{
    BlockFormat, DeviceBlocks, FEW_ROWS, WordBlocks, dequantize_words, product_few,
};
use crate::model::packed::PackedWeight;
use crate::readback::Readback;

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

/// Runs our kernels (through [`DeviceBlocks`]) on `device` for every case
/// and compares each with its twin.
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
    Ok(checks)
}
