//! `shaders/attention_forward.wgsl`, `attention_backward_dq.wgsl` and
//! `attention_backward_dkv.wgsl` launched on burn's cubecl backend: the GPU
//! side of [`AttentionOps`].

use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::cubecl::server::BufferBinding;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::{WgslKernel, launch, u32s};
use super::workgroups;
use crate::model::attention::{AttentionOps, Dims, rows_shape};
use crate::model::blocks::BlockFormat;

/// Invocations per workgroup (one workgroup per row) in the three kernels.
const LANES: u32 = 64;

/// A kernel's entry point and its text.
type Kernel = (&'static str, fn(Option<BlockFormat>) -> String);

const FORWARD: Kernel = ("attention_forward", |_| {
    super::ATTENTION_FORWARD.to_string()
});
const BACKWARD_DQ: Kernel = ("attention_backward_dq", |_| {
    super::ATTENTION_BACKWARD_DQ.to_string()
});
const BACKWARD_DKV: Kernel = ("attention_backward_dkv", |_| {
    super::ATTENTION_BACKWARD_DKV.to_string()
});

/// Launches `kernel` over `rows` workgroups with `buffers` then `info`.
fn run(kernel: Kernel, rows: usize, buffers: Vec<BufferBinding>, info: &[u32], like: &CubeTensor) {
    let kernel = WgslKernel {
        entry: kernel.0,
        workgroup: LANES,
        format: None,
        source: kernel.1,
    };
    launch(kernel, workgroups(rows, 1), buffers, info, like);
}

fn dims(q: &CubeTensor, k: &CubeTensor, v: &CubeTensor) -> Dims {
    assert_eq!(v.shape(), k.shape(), "v and k differ");
    let d = Dims::of(&q.shape(), &k.shape());
    assert!(
        d.supported(),
        "attention of {d:?} is past the kernels' sizes"
    );
    d
}

fn empty(like: &CubeTensor, shape: Shape) -> CubeTensor {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, DType::F32)
}

impl AttentionOps for CubeBackend {
    fn attention_forward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        scale: f32,
    ) -> (CubeTensor, CubeTensor) {
        let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
        let d = dims(&q, &k, &v);
        let o = empty(&q, q.shape()); // [b, t, h, hd]
        let lse = empty(&q, rows_shape(&q.shape())); // [b, t, h]
        let mut info = u32s(&[d.rows(), d.h, d.kv, d.t, d.hd]);
        info.push(scale.to_bits());
        let buffers = [&q, &k, &v, &o, &lse].map(|t| t.handle.clone().binding());
        run(FORWARD, d.rows(), buffers.into(), &info, &q);
        (o, lse)
    }

    fn attention_backward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        o: CubeTensor,
        lse: CubeTensor,
        d_o: CubeTensor,
        scale: f32,
    ) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
        let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
        let (o, lse, d_o) = (
            into_contiguous(o),
            into_contiguous(lse),
            into_contiguous(d_o),
        );
        let d = dims(&q, &k, &v);
        let dq = empty(&q, q.shape()); // [b, t, h, hd]
        let dk = empty(&q, k.shape()); // [b, t, kv, hd]
        let dv = empty(&q, k.shape());
        let big_d = empty(&q, rows_shape(&q.shape())); // [b, t, h]
        let scale = scale.to_bits() as usize;
        let info = u32s(&[d.rows(), d.h, d.kv, d.t, d.hd, scale]);
        // dq and D, then dk and dv (which read D): eight tensors each.
        let buffers = [&q, &k, &v, &o, &lse, &d_o, &dq, &big_d].map(|t| t.handle.clone().binding());
        run(BACKWARD_DQ, d.rows(), buffers.into(), &info, &q);
        let k_rows = d.b * d.kv * d.t;
        let info = u32s(&[k_rows, d.h, d.kv, d.t, d.hd, scale]);
        let buffers =
            [&q, &k, &v, &lse, &d_o, &big_d, &dk, &dv].map(|t| t.handle.clone().binding());
        run(BACKWARD_DKV, k_rows, buffers.into(), &info, &q);
        (dq, dk, dv, big_d)
    }
}
