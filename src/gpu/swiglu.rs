//! `shaders/swiglu_forward.wgsl` and `swiglu_backward.wgsl` launched on
//! burn's cubecl backend: the GPU side of [`SwigluOps`].

use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::{WgslKernel, launch, u32s};
use super::{ELEMENTWISE_WORKGROUP, SWIGLU_BACKWARD, SWIGLU_FORWARD, workgroups};
use crate::model::swiglu::SwigluOps;

/// One invocation per value of `inputs[0]`: `kernel` reads `inputs` and
/// writes a tensor of `shape`.
fn run(kernel: WgslKernel, inputs: Vec<CubeTensor>, shape: Shape) -> CubeTensor {
    let inputs: Vec<CubeTensor> = inputs.into_iter().map(into_contiguous).collect();
    let n = inputs[0].shape().num_elements();
    for x in &inputs {
        assert_eq!(x.shape().num_elements(), n, "SwiGLU's inputs are one shape");
    }
    let like = &inputs[0];
    let out =
        empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, DType::F32);
    let mut buffers: Vec<_> = inputs.iter().map(|x| x.handle.clone().binding()).collect();
    buffers.push(out.handle.clone().binding());
    launch(
        kernel,
        workgroups(n, ELEMENTWISE_WORKGROUP),
        buffers,
        &u32s(&[n]),
        like,
    );
    out
}

impl SwigluOps for CubeBackend {
    fn swiglu(gate: CubeTensor, up: CubeTensor) -> CubeTensor {
        let shape = gate.shape();
        let kernel = WgslKernel {
            entry: "swiglu_forward",
            workgroup: ELEMENTWISE_WORKGROUP,
            format: None,
            source: |_| SWIGLU_FORWARD.to_string(),
        };
        run(kernel, vec![gate, up], shape)
    }

    fn swiglu_backward(gate: CubeTensor, up: CubeTensor, dy: CubeTensor) -> CubeTensor {
        let [n, f] = gate.shape().dims::<2>();
        let kernel = WgslKernel {
            entry: "swiglu_backward",
            workgroup: ELEMENTWISE_WORKGROUP,
            format: None,
            source: |_| SWIGLU_BACKWARD.to_string(),
        };
        run(kernel, vec![gate, up, dy], Shape::new([2 * n, f]))
    }
}
