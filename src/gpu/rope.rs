//! `shaders/rope.wgsl` launched on burn's cubecl backend: the GPU side of
//! [`RopeOps`].

use burn::backend::TensorMetadata;
use burn::tensor::DType;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::{WgslKernel, launch, u32s};
use super::{ELEMENTWISE_WORKGROUP, ROPE, workgroups};
use crate::model::rope::RopeOps;

impl RopeOps for CubeBackend {
    fn rope_rotate(x: CubeTensor, cos: CubeTensor, sin: CubeTensor, inverse: bool) -> CubeTensor {
        let (x, cos, sin) = (
            into_contiguous(x),
            into_contiguous(cos),
            into_contiguous(sin),
        );
        let shape = x.shape();
        let [_, width] = shape.dims::<2>();
        let [len, hd] = cos.shape().dims::<2>();
        assert_eq!(sin.shape(), cos.shape(), "sin and cos differ");
        assert!(
            hd % 2 == 0 && width % hd == 0,
            "RoPE of width {width} in heads of {hd}"
        );
        let y = empty_device_contiguous_dtype(
            x.client.clone(),
            x.device.clone(),
            shape.clone(),
            DType::F32,
        );
        let n = shape.num_elements();
        let info = u32s(&[n, width, hd, len, inverse as usize]);
        let kernel = WgslKernel {
            entry: "rope",
            workgroup: ELEMENTWISE_WORKGROUP,
            format: None,
            source: |_| ROPE.to_string(),
        };
        launch(
            kernel,
            workgroups(n, ELEMENTWISE_WORKGROUP),
            vec![
                x.handle.clone().binding(),
                cos.handle.clone().binding(),
                sin.handle.clone().binding(),
                y.handle.clone().binding(),
            ],
            &info,
            &x,
        );
        y
    }
}
