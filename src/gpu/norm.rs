//! `shaders/rms_norm_forward.wgsl` and `rms_norm_backward.wgsl` launched on
//! burn's cubecl backend: the GPU side of [`NormOps`].

use burn::backend::TensorMetadata;
use burn::tensor::DType;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::{WgslKernel, launch, u32s};
use super::{RMS_NORM_BACKWARD, RMS_NORM_FORWARD, ROW_WORKGROUP, workgroups};
use crate::model::norm::NormOps;

/// One workgroup per row of `x` `[N, d]`: `kernel` reads `x`, `w` and then
/// `g` when given, and writes a tensor shaped as `x`.
fn run(
    kernel: WgslKernel,
    x: CubeTensor,
    w: CubeTensor,
    g: Option<CubeTensor>,
    eps: f32,
) -> CubeTensor {
    let (x, w) = (into_contiguous(x), into_contiguous(w));
    let shape = x.shape();
    let [rows, d] = shape.dims::<2>();
    assert_eq!(w.shape().num_elements(), d, "one weight per column");
    let out = empty_device_contiguous_dtype(
        x.client.clone(),
        x.device.clone(),
        shape.clone(),
        DType::F32,
    );
    let mut buffers = vec![x.handle.clone().binding(), w.handle.clone().binding()];
    if let Some(g) = g {
        assert_eq!(g.shape(), shape, "the gradient is shaped as x");
        buffers.push(into_contiguous(g).handle.binding());
    }
    buffers.push(out.handle.clone().binding());
    let mut info = u32s(&[rows, d]);
    info.push(eps.to_bits());
    launch(kernel, workgroups(rows, 1), buffers, &info, &x);
    out
}

impl NormOps for CubeBackend {
    fn rms_norm_forward(x: CubeTensor, w: CubeTensor, eps: f32) -> CubeTensor {
        let kernel = WgslKernel {
            entry: "rms_norm_forward",
            workgroup: ROW_WORKGROUP,
            format: None,
            source: |_| RMS_NORM_FORWARD.to_string(),
        };
        run(kernel, x, w, None, eps)
    }

    fn rms_norm_backward(x: CubeTensor, w: CubeTensor, g: CubeTensor, eps: f32) -> CubeTensor {
        let kernel = WgslKernel {
            entry: "rms_norm_backward",
            workgroup: ROW_WORKGROUP,
            format: None,
            source: |_| RMS_NORM_BACKWARD.to_string(),
        };
        run(kernel, x, w, Some(g), eps)
    }
}
