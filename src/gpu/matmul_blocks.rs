//! `shaders/matmul_blocks.wgsl` launched on burn's cubecl backend: a
//! product with a packed weight, read where it lies, in one launch; for a
//! weight of joined rows (q, k and v; gate and up), each part's product, or
//! the sum of the parts' gradients, in one launch.

use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::{WgslKernel, launch, u32s};
use super::{BLOCKS_ENTRY, BLOCKS_TILE, BLOCKS_WORKGROUP, blocks_source};
use crate::model::blocks::BlockFormat;

/// The most parts the kernel takes.
pub const MAX_PARTS: usize = 3;

/// `x: [M, cols]` (contiguous f32) times the transpose of the packed
/// `[rows, cols]` (`words`, `params` contiguous), its rows in `parts`
/// (summing to `rows`): part `i` of `x·Wᵀ` as its own `[M, parts[i]]`.
pub fn project_parts(
    x: CubeTensor,
    words: CubeTensor,
    params: CubeTensor,
    format: BlockFormat,
    [rows, cols]: [usize; 2],
    parts: &[usize],
) -> Vec<CubeTensor> {
    let m = x.shape()[0];
    check_parts(parts, rows);
    let outs: Vec<_> = parts.iter().map(|&p| empty(&x, [m, p])).collect();
    let mut bound = outs.clone();
    let c = bound.remove(0);
    run(Launch {
        a: x,
        words,
        params,
        c,
        rest: bound,
        format,
        shape: [rows, cols],
        parts,
        transpose: true,
    });
    outs
}

/// The gradient reaching `x` from every part: `Σ gs[i]·W_i`, `gs[i]:
/// [M, rows of part i]` (contiguous f32, the parts in `W`'s row order,
/// summing to `rows`), giving `[M, cols]`.
pub fn grad_parts(
    mut gs: Vec<CubeTensor>,
    words: CubeTensor,
    params: CubeTensor,
    format: BlockFormat,
    [rows, cols]: [usize; 2],
) -> CubeTensor {
    let parts: Vec<usize> = gs.iter().map(|g| g.shape()[1]).collect();
    check_parts(&parts, rows);
    let m = gs[0].shape()[0];
    assert!(
        gs.iter().all(|g| g.shape()[0] == m),
        "the parts' gradients differ in rows"
    );
    let c = empty(&gs[0], [m, cols]);
    let a = gs.remove(0);
    run(Launch {
        a,
        words,
        params,
        c: c.clone(),
        rest: gs,
        format,
        shape: [rows, cols],
        parts: &parts,
        transpose: false,
    });
    c
}

/// `a` (contiguous f32) times the packed `[rows, cols]` (`words`, `params`
/// contiguous): with `transpose`, `a: [M, cols]` times its transpose,
/// giving `[M, rows]` (`x·Wᵀ`); without, `a: [M, rows]` times it, giving
/// `[M, cols]` (`dY·W`).
pub fn matmul_blocks(
    a: CubeTensor,
    words: CubeTensor,
    params: CubeTensor,
    format: BlockFormat,
    [rows, cols]: [usize; 2],
    transpose: bool,
) -> CubeTensor {
    if transpose {
        let mut outs = project_parts(a, words, params, format, [rows, cols], &[rows]);
        outs.pop().expect("one part")
    } else {
        grad_parts(vec![a], words, params, format, [rows, cols])
    }
}

fn check_parts(parts: &[usize], rows: usize) {
    // An empty part would bind an empty buffer, which may not validate.
    assert!(
        (1..=MAX_PARTS).contains(&parts.len())
            && parts.iter().all(|&p| p > 0)
            && parts.iter().sum::<usize>() == rows,
        "parts {parts:?} of {rows} rows"
    );
}

fn empty(like: &CubeTensor, shape: [usize; 2]) -> CubeTensor {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::new(shape),
        DType::F32,
    )
}

/// One launch: `a` the input, `c` the output, `rest` the other parts (of
/// the output with `transpose`, of the input without).
struct Launch<'a> {
    a: CubeTensor,
    words: CubeTensor,
    params: CubeTensor,
    c: CubeTensor,
    rest: Vec<CubeTensor>,
    format: BlockFormat,
    shape: [usize; 2],
    parts: &'a [usize],
    transpose: bool,
}

fn run(l: Launch) {
    let [rows, cols] = l.shape;
    let m = l.a.shape()[0];
    let (k, n) = if l.transpose {
        (l.a.shape()[1], rows)
    } else {
        (rows, cols)
    };
    let inner = if l.transpose { cols } else { rows };
    // The kernel would read past its arrays, not fail, otherwise.
    assert_eq!(k, inner, "a has {k} columns, the product takes {inner}");
    assert!(
        u32::try_from(rows * cols).is_ok() && u32::try_from(m * k.max(n)).is_ok(),
        "[{m}, {k}]·[{rows}, {cols}] past u32 indices"
    );
    let tiles = |len: usize| {
        u32::try_from(len.div_ceil(BLOCKS_TILE).max(1))
            .ok()
            .filter(|&t| t <= 65_535)
            .unwrap_or_else(|| panic!("{len} rows or columns: more than 65,535 tiles of 64"))
    };
    debug_assert_eq!(
        (l.a.dtype, l.words.dtype, l.params.dtype),
        (DType::F32, DType::U32, DType::F32)
    );
    if m == 0 {
        // Nothing to write, and an empty binding may not validate.
        return;
    }
    // Part starts s1, s2 (rows when a part is missing); unused slots are
    // allocated, never written: a write would submit the queue mid-step.
    let s1 = l.parts[0];
    let s2 = s1 + l.parts.get(1).copied().unwrap_or(rows - s1);
    let unused: Vec<_> = (l.rest.len()..MAX_PARTS - 1)
        .map(|_| empty(&l.a, [1, 1]))
        .collect();
    let rest = l.rest.iter().chain(&unused);
    let kernel = WgslKernel {
        entry: BLOCKS_ENTRY,
        workgroup: BLOCKS_WORKGROUP,
        format: Some(l.format),
        source: |f| blocks_source(f.expect("a block format")),
    };
    let mut buffers = vec![
        l.words.handle.clone().binding(),
        l.params.handle.clone().binding(),
        l.a.handle.clone().binding(),
        l.c.handle.clone().binding(),
    ];
    buffers.extend(rest.map(|t| t.handle.clone().binding()));
    launch(
        kernel,
        (tiles(n), tiles(m)),
        buffers,
        &u32s(&[m, n, k, cols, usize::from(l.transpose), s1, s2]),
        &l.c,
    );
}
