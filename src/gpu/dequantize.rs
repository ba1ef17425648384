//! The GPU side of [`BlockOps`] on burn's cubecl backend:
//! `shaders/dequantize_blocks.wgsl` launched, and the products by a packed
//! weight handed to `matmul_blocks.rs` (or, for a few rows, `matmul_few.rs`).

use burn::backend::TensorMetadata;
use burn::tensor::DType;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::{WgslKernel, launch};
use super::{DEQUANTIZE_ENTRY, DEQUANTIZE_WORKGROUP, dequantize_source, workgroups};
use crate::model::blocks::{BlockFormat, BlockOps, FEW_ROWS, expanded_shape};

impl BlockOps for CubeBackend {
    fn dequantize_blocks(words: CubeTensor, params: CubeTensor, format: BlockFormat) -> CubeTensor {
        debug_assert_eq!((words.dtype, params.dtype), (DType::U32, DType::F32));
        let words = into_contiguous(words); // [rows, cols / per_word] u32
        let params = into_contiguous(params); // [rows, blocks × P] f32
        let shape = expanded_shape(&words.shape(), &format);
        let n = shape.num_elements();
        // The kernel writes value i at i: a dense layout, whatever the runtime prefers.
        let values = empty_device_contiguous_dtype(
            words.client.clone(),
            words.device.clone(),
            shape,
            DType::F32,
        );
        let count = u32::try_from(n).expect("a matrix of fewer than 2^32 values");
        let kernel = WgslKernel {
            entry: DEQUANTIZE_ENTRY,
            workgroup: DEQUANTIZE_WORKGROUP,
            format: Some(format),
            source: |f| dequantize_source(f.expect("a block format")),
        };
        let buffers = vec![
            words.handle.clone().binding(),
            params.handle.clone().binding(),
            values.handle.clone().binding(),
        ];
        launch(
            kernel,
            workgroups(n, DEQUANTIZE_WORKGROUP),
            buffers,
            &[count],
            &values,
        );
        values
    }

    fn blocks_matmul(
        x: CubeTensor,
        words: CubeTensor,
        params: CubeTensor,
        format: BlockFormat,
    ) -> CubeTensor {
        let [rows, cols] = expanded_shape(&words.shape(), &format).dims::<2>();
        if x.shape()[0] <= FEW_ROWS {
            // Decoding: read the packed weight where it lies.
            let (x, words, params) = (
                into_contiguous(x),
                into_contiguous(words),
                into_contiguous(params),
            );
            return super::matmul_few::matmul_few(x, words, params, format, rows, cols);
        }
        let (x, words, params) = (
            into_contiguous(x),
            into_contiguous(words),
            into_contiguous(params),
        );
        super::matmul_blocks::matmul_blocks(x, words, params, format, [rows, cols], true)
    }

    fn blocks_matmul_grad(
        g: CubeTensor,
        words: CubeTensor,
        params: CubeTensor,
        format: BlockFormat,
    ) -> CubeTensor {
        let shape = expanded_shape(&words.shape(), &format).dims::<2>();
        let (g, words, params) = (
            into_contiguous(g),
            into_contiguous(words),
            into_contiguous(params),
        );
        super::matmul_blocks::matmul_blocks(g, words, params, format, shape, false)
    }

    fn blocks_matmul_pair(
        x: CubeTensor,
        words: CubeTensor,
        params: CubeTensor,
        format: BlockFormat,
        first: usize,
    ) -> (CubeTensor, CubeTensor) {
        let shape = expanded_shape(&words.shape(), &format).dims::<2>();
        assert!(
            first < shape[0],
            "the first part's {first} rows of {}",
            shape[0]
        );
        let parts = [first, shape[0] - first];
        let [a, b] = project_parts(x, words, params, format, shape, &parts);
        (a, b)
    }

    fn blocks_matmul_triple(
        x: CubeTensor,
        words: CubeTensor,
        params: CubeTensor,
        format: BlockFormat,
        [a, b]: [usize; 2],
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let shape = expanded_shape(&words.shape(), &format).dims::<2>();
        assert!(
            a + b < shape[0],
            "the first parts' {a} and {b} rows of {}",
            shape[0]
        );
        let parts = [a, b, shape[0] - a - b];
        let [q, k, v] = project_parts(x, words, params, format, shape, &parts);
        (q, k, v)
    }

    fn blocks_matmul_grad_pair(
        g0: CubeTensor,
        g1: CubeTensor,
        words: CubeTensor,
        params: CubeTensor,
        format: BlockFormat,
    ) -> CubeTensor {
        grad_parts(vec![g0, g1], words, params, format)
    }

    fn blocks_matmul_grad_triple(
        g0: CubeTensor,
        g1: CubeTensor,
        g2: CubeTensor,
        words: CubeTensor,
        params: CubeTensor,
        format: BlockFormat,
    ) -> CubeTensor {
        grad_parts(vec![g0, g1, g2], words, params, format)
    }
}

/// Each part of `x·Wᵀ` (`parts`: `W`'s rows of each) in one launch.
fn project_parts<const K: usize>(
    x: CubeTensor,
    words: CubeTensor,
    params: CubeTensor,
    format: BlockFormat,
    shape: [usize; 2],
    parts: &[usize; K],
) -> [CubeTensor; K] {
    let (x, words, params) = (
        into_contiguous(x),
        into_contiguous(words),
        into_contiguous(params),
    );
    super::matmul_blocks::project_parts(x, words, params, format, shape, parts)
        .try_into()
        .unwrap_or_else(|_| unreachable!("one output a part"))
}

/// `Σ gs[i]·W_i` in one launch.
fn grad_parts(
    gs: Vec<CubeTensor>,
    words: CubeTensor,
    params: CubeTensor,
    format: BlockFormat,
) -> CubeTensor {
    let shape = expanded_shape(&words.shape(), &format).dims::<2>();
    let gs = gs.into_iter().map(into_contiguous).collect();
    let (words, params) = (into_contiguous(words), into_contiguous(params));
    super::matmul_blocks::grad_parts(gs, words, params, format, shape)
}
