//! `shaders/lora_product.wgsl`, `lora_rows.wgsl` and `lora_pair.wgsl`
//! launched on burn's cubecl backend: the GPU side of [`AdaptedOps`]'s
//! products.

use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::kernel::{WgslKernel, launch};
use super::{
    LORA_ENTRY, LORA_PAIR, LORA_PRODUCT, LORA_ROWS, LORA_WORKGROUP, ROW_WORKGROUP, workgroups,
};
use crate::model::adapted::{
    AdaptedOps, Product, pair_info, product_shape, rows_info, rows_shapes,
};

impl AdaptedOps for CubeBackend {
    fn lora_product(p: CubeTensor, q: CubeTensor, spec: Product) -> CubeTensor {
        launch_product(p, q, None, spec)
    }

    fn lora_product_add(
        p: CubeTensor,
        q: CubeTensor,
        acc: CubeTensor,
        spec: Product,
    ) -> CubeTensor {
        launch_product(p, q, Some(acc), spec)
    }

    fn lora_pair(
        p1: CubeTensor,
        q1: CubeTensor,
        p2: CubeTensor,
        q2: CubeTensor,
        first: Product,
        second: Product,
    ) -> (CubeTensor, CubeTensor) {
        let [p1, q1, p2, q2] = [p1, q1, p2, q2].map(into_contiguous);
        let dims = |t: &CubeTensor| t.shape().dims::<2>();
        let info = pair_info(
            (&first, dims(&p1), dims(&q1)),
            (&second, dims(&p2), dims(&q2)),
        );
        let one = product_shape(&p1.shape(), &q1.shape(), &first);
        let two = product_shape(&p2.shape(), &q2.shape(), &second);
        let count = one.num_elements() + two.num_elements();
        let empty = |shape| {
            empty_device_contiguous_dtype(p1.client.clone(), p1.device.clone(), shape, DType::F32)
        };
        let (c1, c2) = (empty(one), empty(two));
        let kernel = WgslKernel {
            entry: "lora_pair",
            workgroup: LORA_WORKGROUP,
            format: None,
            source: |_| LORA_PAIR.to_string(),
        };
        let buffers = vec![
            p1.handle.clone().binding(),
            q1.handle.clone().binding(),
            p2.handle.clone().binding(),
            q2.handle.clone().binding(),
            c1.handle.clone().binding(),
            c2.handle.clone().binding(),
        ];
        launch(
            kernel,
            workgroups(count, LORA_WORKGROUP),
            buffers,
            &info,
            &p1,
        );
        (c1, c2)
    }

    fn lora_rows(
        p: CubeTensor,
        f1: CubeTensor,
        f2: CubeTensor,
        first: Product,
        second: Product,
    ) -> (CubeTensor, CubeTensor) {
        launch_rows(p, f1, f2, (None, None), first, second)
    }

    fn lora_rows_add(
        p: CubeTensor,
        f1: CubeTensor,
        f2: CubeTensor,
        acc: CubeTensor,
        first: Product,
        second: Product,
    ) -> (CubeTensor, CubeTensor) {
        launch_rows(p, f1, f2, (Some(acc), None), first, second)
    }

    fn lora_rows_res(
        p: CubeTensor,
        f1: CubeTensor,
        f2: CubeTensor,
        acc: CubeTensor,
        res: CubeTensor,
        first: Product,
        second: Product,
    ) -> (CubeTensor, CubeTensor) {
        launch_rows(p, f1, f2, (Some(acc), Some(res)), first, second)
    }
}

/// `(second(u·F2) (+ acc) (+ res), u = first(P·F1))`: one workgroup of
/// `shaders/lora_rows.wgsl` per row of `P`.
fn launch_rows(
    p: CubeTensor,
    f1: CubeTensor,
    f2: CubeTensor,
    (acc, res): (Option<CubeTensor>, Option<CubeTensor>),
    first: Product,
    second: Product,
) -> (CubeTensor, CubeTensor) {
    let (p, f1, f2) = (into_contiguous(p), into_contiguous(f1), into_contiguous(f2));
    let (c_shape, u_shape) = rows_shapes(&p.shape(), &f1.shape(), &f2.shape(), &first, &second);
    let info = rows_info(
        p.shape().dims::<2>(),
        f1.shape().dims::<2>(),
        f2.shape().dims::<2>(),
        &first,
        &second,
        acc.is_some(),
        res.is_some(),
    );
    let (rows, cols) = (info[12] as usize, info[13] as usize);
    let client = p.client.clone();
    let empty =
        |shape| empty_device_contiguous_dtype(client.clone(), p.device.clone(), shape, DType::F32);
    let (c, u) = (empty(c_shape), empty(u_shape));
    let bind = |t: Option<CubeTensor>, what: &str| match t {
        Some(t) => {
            assert_eq!(t.shape().dims::<2>(), [rows, cols], "{what} is c's shape");
            into_contiguous(t).handle.binding()
        }
        // Bound but never read: one binding may not alias another writable
        // one. Allocated, not written: a write would submit the queue.
        None => empty(Shape::new([1])).handle.binding(),
    };
    let (acc, res) = (bind(acc, "acc"), bind(res, "res"));
    let kernel = WgslKernel {
        entry: "lora_rows",
        workgroup: ROW_WORKGROUP,
        format: None,
        source: |_| LORA_ROWS.to_string(),
    };
    let buffers = vec![
        p.handle.clone().binding(),
        f1.handle.clone().binding(),
        f2.handle.clone().binding(),
        acc,
        res,
        c.handle.clone().binding(),
        u.handle.clone().binding(),
    ];
    launch(kernel, workgroups(rows, 1), buffers, &info, &p);
    (c, u)
}

/// `alpha·P·Q (+ acc)` per `spec`, `[M, K]`.
fn launch_product(
    p: CubeTensor,
    q: CubeTensor,
    acc: Option<CubeTensor>,
    spec: Product,
) -> CubeTensor {
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
        // Bound but never read: one binding may not alias another writable
        // one. Allocated, not written: a write would submit the queue.
        None => empty_device_contiguous_dtype(
            client.clone(),
            p.device.clone(),
            Shape::new([1]),
            DType::F32,
        )
        .handle
        .binding(),
    };
    let kernel = WgslKernel {
        entry: LORA_ENTRY,
        workgroup: LORA_WORKGROUP,
        format: None,
        source: |_| LORA_PRODUCT.to_string(),
    };
    let buffers = vec![
        p.handle.clone().binding(),
        q.handle.clone().binding(),
        acc,
        c.handle.clone().binding(),
    ];
    let groups = workgroups(shape.num_elements(), LORA_WORKGROUP);
    launch(kernel, groups, buffers, &info, &p);
    c
}
