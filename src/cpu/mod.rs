//! Operations the CPU backend (burn's flex) runs better as one pass of ours
//! than as a chain of its own ops.
//!
//! flex runs each element-wise op as its own pass over memory, on one
//! thread. Profiling a training step of the default model (batch 4 × 256)
//! found the rayon workers idle for about a third of it while the main
//! thread ran such chains: SiLU's sigmoid, the loss's softmax. Each op here
//! does the same arithmetic in one pass split over the cores, on plain f32
//! slices, and has the composed burn ops it replaces as its reference twin
//! (they stay the path on a GPU, where kernel fusion merges them). The
//! tests compare the two. SwiGLU's one pass (`model::swiglu`) is shared
//! with the GPU, where it is a kernel of ours.

pub mod gemm;
pub mod lora;
pub mod par;
pub mod xent;

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;

/// A flex tensor's values as an owned f32 vector in row-major order
/// (converted from another float type if need be).
pub(crate) fn owned_values(t: FlexTensor) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("f32 values")
}

/// A flex tensor's f32 values in row-major order: borrowed when they are
/// contiguous (a view at an offset included), copied into order otherwise.
pub(crate) fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("f32 values")
                .to_vec(),
        ),
    }
}
