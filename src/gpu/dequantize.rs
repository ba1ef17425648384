//! `shaders/dequantize_blocks.wgsl` launched on burn's cubecl backend: the
//! GPU side of [`BlockOps`].

use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::tensor::DType;
use burn_cubecl::CubeBackend;
use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::cubecl::server::KernelArguments;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::WgslKernel;
use super::{DEQUANTIZE_ENTRY, DEQUANTIZE_WORKGROUP, dequantize_source, workgroups};
use crate::model::blocks::{BlockFormat, BlockOps, FEW_ROWS, expanded_shape};

impl BlockOps for CubeBackend {
    fn dequantize_blocks(words: CubeTensor, params: CubeTensor, format: BlockFormat) -> CubeTensor {
        debug_assert_eq!((words.dtype, params.dtype), (DType::U32, DType::F32));
        let words = into_contiguous(words); // [rows, cols / per_word] u32
        let params = into_contiguous(params); // [rows, blocks × P] f32
        let shape = expanded_shape(&words.shape(), &format);
        let n = shape.num_elements();
        let client = words.client.clone();
        // The kernel writes value i at i: a dense layout, whatever the runtime prefers.
        let values =
            empty_device_contiguous_dtype(client.clone(), words.device.clone(), shape, DType::F32);
        let count = u32::try_from(n).expect("a matrix of fewer than 2^32 values");
        let info = client.create_from_slice(&count.to_le_bytes());
        let (x, y) = workgroups(n, DEQUANTIZE_WORKGROUP);
        // The kernel reads three buffers and writes `values`; cubecl has no
        // compiled answer for a hand-written kernel, so a launch that fails
        // is taken to have written all four.
        client.launch(
            Box::new(WgslKernel {
                entry: DEQUANTIZE_ENTRY,
                workgroup: DEQUANTIZE_WORKGROUP,
                format: Some(format),
                source: |f| dequantize_source(f.expect("a block format")),
            }),
            CubeCount::Static(x, y, 1),
            KernelArguments::new()
                .with_buffer(words.handle.clone().binding())
                .with_buffer(params.handle.clone().binding())
                .with_buffer(values.handle.clone().binding())
                .with_buffer(info.binding()),
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
        let w = Self::dequantize_blocks(words, params, format); // [rows, cols]
        Self::float_matmul(x, Self::float_transpose(w)) // [N, rows]
    }
}
