//! The adapter factors' gradients joined into the flat optimizer's vector
//! on a GPU, six per launch of `shaders/join.wgsl`, written in place.
//!
//! burn's `cat` copies each part with a launch of its own: 420 launches a
//! step for the default model's factors. Here the flat vector is allocated
//! once (uninitialised: every value is written) and each launch copies six
//! parts into it (six parts and the vector are seven of the eight storage
//! buffers WebGPU allows a shader stage by default). On the
//! CPU the twin [`join_into_values`] runs the operation for the tests; the
//! CPU's own join stays `cat`.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension,
};
use burn::tensor::{Device, Tensor, TensorData};

use crate::cpu::owned_values;

/// Parts per launch.
pub const PARTS: usize = 6;

/// Where one launch's parts go: from `start` in the flat vector, part `i`
/// ending `ends[i]` values after it (a part of length 0 is not read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// The first part's first place in the flat vector.
    pub start: usize,
    /// Each part's end, counted from `start`.
    pub ends: [usize; PARTS],
}

impl Run {
    /// `shaders/join.wgsl`'s `info`: `start`, then the ends. Panics past u32.
    pub fn info(&self) -> [u32; PARTS + 1] {
        let u = |v: usize| u32::try_from(v).expect("a join indexed in u32");
        // The last place written must be indexable too.
        let _ = u(self.start + self.ends[PARTS - 1]);
        let mut info = [u(self.start); PARTS + 1];
        for (word, &end) in info[1..].iter_mut().zip(&self.ends) {
            *word = u(end);
        }
        info
    }
}

/// The kernel's twin: `parts` (each at least as long as its slot in `run`)
/// written into `flat` back to back from `run.start`.
pub fn join_into_values(flat: &mut [f32], parts: &[&[f32]; PARTS], run: Run) {
    let mut begin = 0;
    for (part, &end) in parts.iter().zip(&run.ends) {
        let len = end - begin;
        flat[run.start + begin..run.start + end].copy_from_slice(&part[..len]);
        begin = end;
    }
}

/// `tensors` (flattened) joined into one `[len]` vector, `len` their total
/// length, on a GPU six per launch; on the CPU by `cat`.
pub fn join(tensors: Vec<Tensor<1>>, len: usize, device: &Device) -> Tensor<1> {
    if crate::model::is_cpu(device) || tensors.is_empty() {
        return Tensor::cat(tensors, 0);
    }
    join_in_runs(tensors, len, device)
}

/// [`join`] by the join operation on any device (the CPU runs its twin),
/// [`PARTS`] at a time.
pub fn join_in_runs(tensors: Vec<Tensor<1>>, len: usize, device: &Device) -> Tensor<1> {
    let mut flat = Tensor::<1>::empty([len], device);
    let mut start = 0;
    let mut parts = tensors.into_iter().peekable();
    while parts.peek().is_some() {
        let chunk: Vec<Tensor<1>> = parts.by_ref().take(PARTS).collect();
        let mut ends = [0; PARTS];
        let mut end = 0;
        for (slot, part) in ends.iter_mut().zip(&chunk) {
            end += part.dims()[0];
            *slot = end;
        }
        for slot in ends.iter_mut().skip(chunk.len()) {
            *slot = end;
        }
        let run = Run { start, ends };
        flat = join_into(flat, chunk, run, device);
        start += end;
    }
    assert_eq!(start, len, "the parts fill the vector");
    flat
}

/// One launch: `chunk` (up to [`PARTS`]) written into `flat` per `run`.
fn join_into(flat: Tensor<1>, chunk: Vec<Tensor<1>>, run: Run, device: &Device) -> Tensor<1> {
    // Empty slots get a buffer of their own (never read): one buffer bound
    // twice read-write is a validation error.
    let mut parts: Vec<_> = chunk.into_iter().map(|t| t.into_dispatch()).collect();
    while parts.len() < PARTS {
        parts.push(Tensor::<1>::empty([1], device).into_dispatch());
    }
    let [p0, p1, p2, p3, p4, p5]: [_; PARTS] = parts.try_into().expect("six parts");
    Tensor::from_dispatch(Dispatch::join_into(
        flat.into_dispatch(),
        p0,
        p1,
        p2,
        p3,
        p4,
        p5,
        run,
    ))
}

/// The join as a backend operation (our kernel on a GPU, the twin on the
/// CPU); no gradient flows through it.
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "webgpu", feature = "gpu")),
    Fusion: cfg(any(feature = "webgpu", feature = "gpu")),
    Autodiff
)]
pub trait JoinOps: Backend {
    /// `flat` with the parts written per `run`.
    #[fusion(dtype = flat, shape = flat)]
    #[allow(clippy::too_many_arguments)]
    fn join_into(
        flat: FloatTensor<Self>,
        p0: FloatTensor<Self>,
        p1: FloatTensor<Self>,
        p2: FloatTensor<Self>,
        p3: FloatTensor<Self>,
        p4: FloatTensor<Self>,
        p5: FloatTensor<Self>,
        run: Run,
    ) -> FloatTensor<Self>;
}

impl JoinOps for Flex {
    fn join_into(
        flat: FlexTensor,
        p0: FlexTensor,
        p1: FlexTensor,
        p2: FlexTensor,
        p3: FlexTensor,
        p4: FlexTensor,
        p5: FlexTensor,
        run: Run,
    ) -> FlexTensor {
        let shape = flat.shape();
        let mut values = owned_values(flat);
        let parts = [p0, p1, p2, p3, p4, p5].map(owned_values);
        let parts: [&[f32]; PARTS] = std::array::from_fn(|i| parts[i].as_slice());
        join_into_values(&mut values, &parts, run);
        FlexTensor::from_data(TensorData::new(values, shape))
    }
}

impl<B: Backend + JoinOps, C: CheckpointStrategy> JoinOps for Autodiff<B, C> {
    fn join_into(
        flat: FloatTensor<Self>,
        p0: FloatTensor<Self>,
        p1: FloatTensor<Self>,
        p2: FloatTensor<Self>,
        p3: FloatTensor<Self>,
        p4: FloatTensor<Self>,
        p5: FloatTensor<Self>,
        run: Run,
    ) -> FloatTensor<Self> {
        // Gradients are joined outside any graph.
        Self::from_inner(B::join_into(
            Self::inner(flat),
            Self::inner(p0),
            Self::inner(p1),
            Self::inner(p2),
            Self::inner(p3),
            Self::inner(p4),
            Self::inner(p5),
            run,
        ))
    }
}
