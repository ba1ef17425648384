//! `shaders/matmul_blocks_few.wgsl` launched on burn's cubecl backend: the
//! product of a few rows (decoding) with a packed weight, read where it lies.

use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::{WgslKernel, launch, u32s};
use super::{FEW_ENTRY, FEW_LANES, few_source, workgroups};
use crate::model::blocks::{BlockFormat, FEW_ROWS};

/// `x: [n, cols]` (contiguous f32, `n ≤ FEW_ROWS`) times the transpose of
/// the packed `[rows, cols]` (`words`, `params` contiguous), giving `[n, rows]`.
pub fn matmul_few(
    x: CubeTensor,
    words: CubeTensor,
    params: CubeTensor,
    format: BlockFormat,
    rows: usize,
    cols: usize,
) -> CubeTensor {
    let [n, x_cols] = x.shape().dims::<2>();
    // The kernel would read and write past its arrays, not fail, otherwise.
    assert!(
        n <= FEW_ROWS,
        "{n} rows of x, the kernel takes at most {FEW_ROWS}"
    );
    assert_eq!(x_cols, cols, "x has {x_cols} columns, W {cols}");
    assert!(
        u32::try_from(rows * cols).is_ok(),
        "[{rows}, {cols}] past u32 indices"
    );
    debug_assert_eq!(
        (x.dtype, words.dtype, params.dtype),
        (DType::F32, DType::U32, DType::F32)
    );
    let y = empty_device_contiguous_dtype(
        x.client.clone(),
        x.device.clone(),
        Shape::new([n, rows]),
        DType::F32,
    );
    let kernel = WgslKernel {
        entry: FEW_ENTRY,
        workgroup: FEW_LANES,
        format: Some(format),
        source: |f| few_source(f.expect("a block format")),
    };
    let buffers = vec![
        words.handle.clone().binding(),
        params.handle.clone().binding(),
        x.handle.clone().binding(),
        y.handle.clone().binding(),
    ];
    launch(
        kernel,
        workgroups(rows, 1),
        buffers,
        &u32s(&[rows, cols, n]),
        &y,
    );
    y
}
