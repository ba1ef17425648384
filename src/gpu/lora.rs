//! `shaders/lora_product.wgsl` launched on burn's cubecl backend: the GPU
//! side of [`AdaptedOps`]'s products.

use burn::backend::TensorMetadata;
use burn::tensor::DType;
use burn_cubecl::CubeBackend;
use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::cubecl::server::KernelArguments;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::WgslKernel;
use super::{LORA_ENTRY, LORA_PRODUCT, LORA_WORKGROUP, workgroups};
use crate::model::adapted::{AdaptedOps, Product, product_shape};

impl AdaptedOps for CubeBackend {
    fn lora_product(p: CubeTensor, q: CubeTensor, spec: Product) -> CubeTensor {
        launch(p, q, None, spec)
    }

    fn lora_product_add(
        p: CubeTensor,
        q: CubeTensor,
        acc: CubeTensor,
        spec: Product,
    ) -> CubeTensor {
        launch(p, q, Some(acc), spec)
    }
}

/// `alpha·P·Q (+ acc)` per `spec`, `[M, K]`.
fn launch(p: CubeTensor, q: CubeTensor, acc: Option<CubeTensor>, spec: Product) -> CubeTensor {
    debug_assert_eq!((p.dtype, q.dtype), (DType::F32, DType::F32));
    // The kernel indexes its inputs row-major through the spec's strides.
    let (p, q) = (into_contiguous(p), into_contiguous(q));
    let shape = product_shape(&p.shape(), &q.shape(), &spec);
    let info = spec.info(p.shape().dims::<2>(), q.shape().dims::<2>(), acc.is_some());
    let client = p.client.clone();
    let c =
        empty_device_contiguous_dtype(client.clone(), p.device.clone(), shape.clone(), DType::F32);
    let acc = match acc {
        Some(acc) => {
            assert_eq!(acc.shape(), shape, "acc is the output's shape");
            into_contiguous(acc).handle.binding()
        }
        // Bound but never read: one binding may not alias another writable one.
        None => client.create_from_slice(&0f32.to_le_bytes()).binding(),
    };
    let info: Vec<u8> = info.iter().flat_map(|v| v.to_le_bytes()).collect();
    let info = client.create_from_slice(&info);
    let (x, y) = workgroups(shape.num_elements(), LORA_WORKGROUP);
    // The kernel reads four buffers and writes `c`; cubecl has no compiled
    // answer for a hand-written kernel, so a launch that fails is taken to
    // have written all five.
    client.launch(
        Box::new(WgslKernel {
            entry: LORA_ENTRY,
            workgroup: LORA_WORKGROUP,
            format: None,
            source: |_| LORA_PRODUCT.to_string(),
        }),
        CubeCount::Static(x, y, 1),
        KernelArguments::new()
            .with_buffer(p.handle.clone().binding())
            .with_buffer(q.handle.clone().binding())
            .with_buffer(acc)
            .with_buffer(c.handle.clone().binding())
            .with_buffer(info.binding()),
    );
    c
}
