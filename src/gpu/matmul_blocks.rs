//! `shaders/matmul_blocks.wgsl` launched on burn's cubecl backend: a
//! product with a packed weight, read where it lies, in one launch.

use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::{WgslKernel, launch, u32s};
use super::{BLOCKS_ENTRY, BLOCKS_TILE, BLOCKS_WORKGROUP, blocks_source};
use crate::model::blocks::BlockFormat;

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
    let [m, k] = a.shape().dims::<2>();
    let (inner, n) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
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
        (a.dtype, words.dtype, params.dtype),
        (DType::F32, DType::U32, DType::F32)
    );
    let c = empty_device_contiguous_dtype(
        a.client.clone(),
        a.device.clone(),
        Shape::new([m, n]),
        DType::F32,
    );
    if m == 0 {
        // Nothing to write, and an empty binding may not validate.
        return c;
    }
    let kernel = WgslKernel {
        entry: BLOCKS_ENTRY,
        workgroup: BLOCKS_WORKGROUP,
        format: Some(format),
        source: |f| blocks_source(f.expect("a block format")),
    };
    let buffers = vec![
        words.handle.clone().binding(),
        params.handle.clone().binding(),
        a.handle.clone().binding(),
        c.handle.clone().binding(),
    ];
    launch(
        kernel,
        (tiles(n), tiles(m)),
        buffers,
        &u32s(&[m, n, k, cols, usize::from(transpose)]),
        &c,
    );
    c
}
