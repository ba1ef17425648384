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
use crate::model::attention::{AttentionOps, Dims, backward_shape, forward_shape};
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
    fn attention_forward(q: CubeTensor, k: CubeTensor, v: CubeTensor, scale: f32) -> CubeTensor {
        let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
        let d = dims(&q, &k, &v);
        let out = empty(&q, forward_shape(&q.shape()));
        let mut info = u32s(&[d.rows(), d.h, d.kv, d.t, d.hd]);
        info.push(scale.to_bits());
        run(
            FORWARD,
            d.rows(),
            vec![
                q.handle.clone().binding(),
                k.handle.clone().binding(),
                v.handle.clone().binding(),
                out.handle.clone().binding(),
            ],
            &info,
            &q,
        );
        out
    }

    fn attention_backward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        fwd: CubeTensor,
        d_o: CubeTensor,
        scale: f32,
    ) -> CubeTensor {
        let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
        let (fwd, d_o) = (into_contiguous(fwd), into_contiguous(d_o));
        let d = dims(&q, &k, &v);
        let grads = empty(&q, backward_shape(&q.shape(), &k.shape()));
        let d_start = d.q_len() + 2 * d.k_len();
        let buffers = || {
            vec![
                q.handle.clone().binding(),
                k.handle.clone().binding(),
                v.handle.clone().binding(),
                fwd.handle.clone().binding(),
                d_o.handle.clone().binding(),
                grads.handle.clone().binding(),
            ]
        };
        let scale = scale.to_bits() as usize;
        // dq and D, then dk and dv (which read D).
        let info = u32s(&[d.rows(), d.h, d.kv, d.t, d.hd, scale, d_start]);
        run(BACKWARD_DQ, d.rows(), buffers(), &info, &q);
        let k_rows = d.b * d.kv * d.t;
        let info = u32s(&[k_rows, d.h, d.kv, d.t, d.hd, scale, d_start, d.rows()]);
        run(BACKWARD_DKV, k_rows, buffers(), &info, &q);
        grads
    }
}
