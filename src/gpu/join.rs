//! `shaders/join.wgsl` launched on burn's cubecl backend: the GPU side of
//! [`JoinOps`].

use burn::backend::TensorMetadata;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::{WgslKernel, launch};
use super::{ELEMENTWISE_WORKGROUP, JOIN, workgroups};
use crate::train::join::{JoinOps, PARTS, Run};

impl JoinOps for CubeBackend {
    fn join_into(
        flat: CubeTensor,
        p0: CubeTensor,
        p1: CubeTensor,
        p2: CubeTensor,
        p3: CubeTensor,
        p4: CubeTensor,
        p5: CubeTensor,
        run: Run,
    ) -> CubeTensor {
        // Written in place when nothing else holds the vector.
        let flat = into_contiguous(flat);
        let flat = if flat.can_mut() { flat } else { flat.copy() };
        let count = run.ends[PARTS - 1];
        assert!(
            run.start + count <= flat.shape().num_elements(),
            "the parts fit the vector"
        );
        let mut buffers: Vec<_> = [p0, p1, p2, p3, p4, p5]
            .into_iter()
            .map(|p| into_contiguous(p).handle.binding())
            .collect();
        buffers.push(flat.handle.clone().binding());
        let kernel = WgslKernel {
            entry: "join",
            workgroup: ELEMENTWISE_WORKGROUP,
            format: None,
            source: |_| JOIN.to_string(),
        };
        launch(
            kernel,
            workgroups(count, ELEMENTWISE_WORKGROUP),
            buffers,
            &run.info(),
            &flat,
        );
        flat
    }
}
