//! `shaders/rope.wgsl` launched on burn's cubecl backend: the GPU side of
//! [`RopeOps`].

use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::{WgslKernel, launch, u32s};
use super::{ELEMENTWISE_WORKGROUP, ROPE, workgroups};
use crate::model::rope::RopeOps;

/// `x1` (and `x2`, the same rows) rotated in one launch: `(y1, y2)`, `y2`
/// an unwritten 4-byte buffer without `x2`.
fn rotate(
    x1: CubeTensor,
    x2: Option<CubeTensor>,
    cos: CubeTensor,
    sin: CubeTensor,
    inverse: bool,
) -> (CubeTensor, CubeTensor) {
    let (x1, cos, sin) = (
        into_contiguous(x1),
        into_contiguous(cos),
        into_contiguous(sin),
    );
    let x2 = x2.map(into_contiguous);
    let [len, hd] = cos.shape().dims::<2>();
    assert_eq!(sin.shape(), cos.shape(), "sin and cos differ");
    let empty = |shape: Shape| {
        empty_device_contiguous_dtype(x1.client.clone(), x1.device.clone(), shape, DType::F32)
    };
    let width = |x: &CubeTensor| {
        let [_, width] = x.shape().dims::<2>();
        assert!(
            hd % 2 == 0 && width % hd == 0,
            "RoPE of width {width} in heads of {hd}"
        );
        width
    };
    let (w1, n1) = (width(&x1), x1.shape().num_elements());
    let y1 = empty(x1.shape());
    // Unused slots are allocated, never written: a write would submit the
    // queue mid-step.
    let (x2, w2, n2) = match x2 {
        Some(x2) => {
            assert_eq!(x2.shape()[0], x1.shape()[0], "x1 and x2 differ in rows");
            let (w2, n2) = (width(&x2), x2.shape().num_elements());
            (x2, w2, n2)
        }
        None => (empty(Shape::new([1])), 0, 0),
    };
    let y2 = empty(x2.shape());
    // The kernel's index runs over both tensors' values.
    let info = u32s(&[n1, w1, hd, len, inverse as usize, n2, w2, n1 + n2]);
    let kernel = WgslKernel {
        entry: "rope",
        workgroup: ELEMENTWISE_WORKGROUP,
        format: None,
        source: |_| ROPE.to_string(),
    };
    launch(
        kernel,
        workgroups(n1 + n2, ELEMENTWISE_WORKGROUP),
        vec![
            x1.handle.clone().binding(),
            x2.handle.clone().binding(),
            cos.handle.clone().binding(),
            sin.handle.clone().binding(),
            y1.handle.clone().binding(),
            y2.handle.clone().binding(),
        ],
        &info,
        &x1,
    );
    (y1, y2)
}

impl RopeOps for CubeBackend {
    fn rope_rotate(x: CubeTensor, cos: CubeTensor, sin: CubeTensor, inverse: bool) -> CubeTensor {
        rotate(x, None, cos, sin, inverse).0
    }

    fn rope_pair(
        x1: CubeTensor,
        x2: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        inverse: bool,
    ) -> (CubeTensor, CubeTensor) {
        rotate(x1, Some(x2), cos, sin, inverse)
    }
}
