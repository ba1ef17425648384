//! Kernels of ours for the GPU path: WGSL text in `shaders/`, completed
//! here per variant, and (with the `webgpu` or `gpu` feature) launched on
//! burn's cubecl backend. Each has a Rust twin the CPU runs and the tests
//! compare it with.

#[cfg(any(feature = "webgpu", feature = "gpu"))]
mod attention;
pub mod check;
#[cfg(any(feature = "webgpu", feature = "gpu"))]
mod dequantize;
#[cfg(any(feature = "webgpu", feature = "gpu"))]
mod join;
#[cfg(any(feature = "webgpu", feature = "gpu"))]
mod kernel;
#[cfg(any(feature = "webgpu", feature = "gpu"))]
mod lora;
#[cfg(any(feature = "webgpu", feature = "gpu"))]
mod matmul_blocks;
#[cfg(any(feature = "webgpu", feature = "gpu"))]
mod matmul_few;
#[cfg(any(feature = "webgpu", feature = "gpu"))]
mod norm;
#[cfg(any(feature = "webgpu", feature = "gpu"))]
mod rope;
#[cfg(any(feature = "webgpu", feature = "gpu"))]
mod swiglu;

use burn::tensor::Device;

use crate::model::blocks::{BlockFormat, FEW_ROWS};

/// The most bytes one buffer can hold on `device` when it is a GPU, `None`
/// on the CPU. It is cubecl's `max_page_size`: for wgpu, the device's
/// `min(maxBufferSize, maxStorageBufferBindingSize)`, and the device asks
/// for its adapter's own limits. A larger tensor cannot be made at all.
pub fn max_buffer(device: &Device) -> Option<u64> {
    #[cfg(any(feature = "webgpu", feature = "gpu"))]
    {
        use burn::backend::DispatchDevice;
        let inner = device.clone().inner();
        if let DispatchDevice::Cube(d) = inner.as_dispatch() {
            return Some(d.client().properties().memory.max_page_size);
        }
    }
    let _ = device;
    None
}

/// `shaders/dequantize_blocks.wgsl`, as written.
pub const DEQUANTIZE_BLOCKS: &str = include_str!("../../shaders/dequantize_blocks.wgsl");

/// The entry point of [`DEQUANTIZE_BLOCKS`].
pub const DEQUANTIZE_ENTRY: &str = "dequantize_blocks";

/// Invocations per workgroup in [`DEQUANTIZE_BLOCKS`].
pub const DEQUANTIZE_WORKGROUP: u32 = 256;

/// `shaders/matmul_blocks_few.wgsl`, as written.
pub const MATMUL_BLOCKS_FEW: &str = include_str!("../../shaders/matmul_blocks_few.wgsl");

/// The entry point of [`MATMUL_BLOCKS_FEW`].
pub const FEW_ENTRY: &str = "matmul_blocks_few";

/// Invocations per workgroup (one workgroup per row of `W`) in
/// [`MATMUL_BLOCKS_FEW`].
pub const FEW_LANES: u32 = 64;

/// `shaders/matmul_blocks.wgsl`, as written.
pub const MATMUL_BLOCKS: &str = include_str!("../../shaders/matmul_blocks.wgsl");

/// The entry point of [`MATMUL_BLOCKS`].
pub const BLOCKS_ENTRY: &str = "matmul_blocks";

/// Invocations per workgroup (one 64 × 64 tile of the product) in
/// [`MATMUL_BLOCKS`].
pub const BLOCKS_WORKGROUP: u32 = 256;

/// Rows and columns of the product one workgroup of [`MATMUL_BLOCKS`] gives.
pub const BLOCKS_TILE: usize = 64;

/// `shaders/lora_product.wgsl`, as written (it has no variants).
pub const LORA_PRODUCT: &str = include_str!("../../shaders/lora_product.wgsl");

/// The entry point of [`LORA_PRODUCT`].
pub const LORA_ENTRY: &str = "lora_product";

/// Invocations per workgroup (one per output value) in [`LORA_PRODUCT`].
pub const LORA_WORKGROUP: u32 = 64;

/// `shaders/lora_rows.wgsl`, as written.
pub const LORA_ROWS: &str = include_str!("../../shaders/lora_rows.wgsl");

/// `shaders/lora_pair.wgsl`, as written (one invocation per output value,
/// [`LORA_WORKGROUP`] to a workgroup).
pub const LORA_PAIR: &str = include_str!("../../shaders/lora_pair.wgsl");

/// `shaders/attention_forward.wgsl`, as written.
pub const ATTENTION_FORWARD: &str = include_str!("../../shaders/attention_forward.wgsl");

/// `shaders/attention_backward_dq.wgsl`, as written.
pub const ATTENTION_BACKWARD_DQ: &str = include_str!("../../shaders/attention_backward_dq.wgsl");

/// `shaders/attention_backward_dkv.wgsl`, as written.
pub const ATTENTION_BACKWARD_DKV: &str = include_str!("../../shaders/attention_backward_dkv.wgsl");

/// `shaders/rope.wgsl`, as written.
pub const ROPE: &str = include_str!("../../shaders/rope.wgsl");

/// `shaders/swiglu_forward.wgsl`, as written.
pub const SWIGLU_FORWARD: &str = include_str!("../../shaders/swiglu_forward.wgsl");

/// `shaders/swiglu_backward.wgsl`, as written.
pub const SWIGLU_BACKWARD: &str = include_str!("../../shaders/swiglu_backward.wgsl");

/// `shaders/join.wgsl`, as written.
pub const JOIN: &str = include_str!("../../shaders/join.wgsl");

/// Invocations per workgroup (one per value) in the element-wise kernels
/// ([`ROPE`], [`SWIGLU_FORWARD`], [`SWIGLU_BACKWARD`], [`JOIN`]).
pub const ELEMENTWISE_WORKGROUP: u32 = 64;

/// `shaders/rms_norm_forward.wgsl`, as written.
pub const RMS_NORM_FORWARD: &str = include_str!("../../shaders/rms_norm_forward.wgsl");

/// `shaders/rms_norm_backward.wgsl`, as written.
pub const RMS_NORM_BACKWARD: &str = include_str!("../../shaders/rms_norm_backward.wgsl");

/// Invocations per workgroup (one workgroup per row) in the row kernels
/// ([`LORA_ROWS`], [`RMS_NORM_FORWARD`], [`RMS_NORM_BACKWARD`]).
pub const ROW_WORKGROUP: u32 = 64;

/// `format`'s constants, as the kernels that read blocks declare them.
fn format_consts(format: BlockFormat) -> String {
    format!(
        "const BITS: u32 = {}u;\nconst OFFSET: f32 = {:.1};\nconst PARAMS: u32 = {}u;\n\n",
        format.bits(),
        format.offset(),
        format.params(),
    )
}

/// The dequantizing kernel for `format`: its constants, then the shader.
pub fn dequantize_source(format: BlockFormat) -> String {
    format_consts(format) + DEQUANTIZE_BLOCKS
}

/// The few-rows product for `format`: its constants (and the most rows,
/// [`FEW_ROWS`]), then the shader.
pub fn few_source(format: BlockFormat) -> String {
    format!("const FEW: u32 = {FEW_ROWS}u;\n") + &format_consts(format) + MATMUL_BLOCKS_FEW
}

/// The tiled product for `format`: its constants, then the shader.
pub fn blocks_source(format: BlockFormat) -> String {
    format_consts(format) + MATMUL_BLOCKS
}

/// Workgroups `(x, y)` covering `n` invocations of `per` each, at most
/// 65,535 along `x` (WebGPU's default limit per dimension).
pub fn workgroups(n: usize, per: u32) -> (u32, u32) {
    let groups = n.div_ceil(per as usize).max(1);
    let x = groups.min(65_535);
    (x as u32, groups.div_ceil(x) as u32)
}
