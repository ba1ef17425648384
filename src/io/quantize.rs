//! f32 to ggml's Q8_0 and Q4_0 blocks, for bases quantized at load.
//!
//! Transcriptions of ggml's reference `quantize_row_q8_0_ref` and
//! `quantize_row_q4_0_ref` (`ggml/src/ggml-quants.c`): per block of 32, an
//! f16 scale `d` and 32 signed bytes (`round(x / d)`, `d = max|x| / 127`),
//! or 16 bytes of nibbles (`min(15, trunc(x / d + 8.5))`, `d = m / -8` for
//! the `m` of largest magnitude). `tests/quantized_base.rs` checks the bytes
//! against the `gguf` Python package's `gguf.quants.quantize`, and the
//! round trip's error.

use half::f16;

use crate::io::dequant::GgmlType;

/// Elements per Q8_0 or Q4_0 block.
const QK: usize = 32;

/// The types [`quantize`] writes.
pub const QUANTIZE_TO: [GgmlType; 2] = [GgmlType::Q8_0, GgmlType::Q4_0];

/// `x` (a whole number of 32-element blocks) in `ty`'s blocks; a reason
/// when `ty` is not one [`QUANTIZE_TO`] lists or `x` is not whole blocks.
pub fn quantize(ty: GgmlType, x: &[f32]) -> Result<Vec<u8>, String> {
    if !x.len().is_multiple_of(QK) {
        return Err(format!(
            "{} values are not a whole number of {ty:?} blocks of {QK}",
            x.len()
        ));
    }
    let blocks = x.chunks_exact(QK);
    let mut out = Vec::with_capacity(x.len() / QK * ty.block_bytes());
    match ty {
        GgmlType::Q8_0 => blocks.for_each(|b| q8_0_block(b, &mut out)),
        GgmlType::Q4_0 => blocks.for_each(|b| q4_0_block(b, &mut out)),
        other => return Err(format!("cannot quantize to {other:?} (only Q8_0 and Q4_0)")),
    }
    Ok(out)
}

fn q8_0_block(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend(f16::from_f32(d).to_le_bytes());
    // `f32::round` rounds half away from zero, as C's `roundf`.
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

fn q4_0_block(x: &[f32], out: &mut Vec<u8>) {
    // The first value of largest magnitude, sign kept.
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend(f16::from_f32(d).to_le_bytes());
    // `as i8` truncates toward zero (and saturates), as C's `(int8_t)`.
    let nibble = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    for j in 0..QK / 2 {
        out.push(nibble(x[j]) | (nibble(x[QK / 2 + j]) << 4));
    }
}
