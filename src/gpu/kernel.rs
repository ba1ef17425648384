//! A WGSL kernel of ours as cubecl launches it: precompiled text (no IR),
//! one pipeline per entry point and block format (if it has one).

use burn_cubecl::cubecl::ir::{UIntKind, metadata::Info, settings::Dim3};
use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::cubecl::server::{BufferBinding, KernelArguments, MetadataBindingInfo};
use burn_cubecl::cubecl::{CubeKernel, PrecompiledSource};
use burn_cubecl::tensor::CubeTensor;

use crate::model::blocks::BlockFormat;

/// One of `shaders/`'s kernels (for one block format, when it reads blocks).
pub(super) struct WgslKernel {
    /// The WGSL entry point, also the kernel's name in the cache key.
    pub entry: &'static str,
    /// Invocations per workgroup, as the WGSL declares them.
    pub workgroup: u32,
    /// The format the text is completed for.
    pub format: Option<BlockFormat>,
    /// The completed text for a format. Called only when the pipeline is
    /// not cached yet.
    pub source: fn(Option<BlockFormat>) -> String,
}

impl KernelMetadata for WgslKernel {
    fn id(&self) -> KernelId {
        // The entry and the format decide the text, so both key the cache.
        KernelId::new::<Self>()
            .info((self.entry, self.format))
            .cube_dim(Dim3::new_1d(self.workgroup))
    }

    fn address_type(&self) -> ElemType {
        ElemType::UInt(UIntKind::U32)
    }
}

impl CubeKernel for WgslKernel {
    fn define(&self) -> KernelDefinition {
        // The text is the kernel; the definition only keys the cache.
        let settings = KernelSettings::new(
            Dim3::new_1d(self.workgroup),
            ExecutionMode::Checked,
            AddressType::U32,
        );
        KernelDefinition {
            body: Scope::root(settings.clone()),
            settings,
            info: Info::default(),
        }
    }

    fn source(&self) -> Option<PrecompiledSource> {
        Some(PrecompiledSource {
            source: (self.source)(self.format),
            entrypoint_name: self.entry.to_string(),
            lang: "wgsl",
        })
    }
}

/// `values` as the u32s of a kernel's `info`. Panics past u32 (the kernels
/// index in u32; their callers check sizes first).
pub(super) fn u32s(values: &[usize]) -> Vec<u32> {
    values
        .iter()
        .map(|&v| u32::try_from(v).expect("a kernel indexed in u32"))
        .collect()
}

/// The u32 words of `info` every kernel declares: `var<uniform> info:
/// array<vec4<u32>, 8>` (a uniform array's stride is 16 bytes), read as
/// `info[i / 4u][i % 4u]`.
pub(crate) const INFO_WORDS: usize = 32;

/// Launches `kernel` over `groups` workgroups `(x, y)` on `like`'s device,
/// binding `buffers` in order and then `info` as a uniform buffer (padded
/// with zeros to [`INFO_WORDS`]). A uniform is not one of the 8 storage
/// buffers WebGPU lets a kernel bind by default, its reads are uniform to
/// WGSL's analysis, and cubecl keeps it in a cache of uniforms by content
/// instead of allocating a buffer each launch.
pub(super) fn launch(
    kernel: WgslKernel,
    groups: (u32, u32),
    buffers: Vec<BufferBinding>,
    info: &[u32],
    like: &CubeTensor,
) {
    assert!(
        info.len() <= INFO_WORDS,
        "{} info words for `{}`",
        info.len(),
        kernel.entry
    );
    let mut words = [0u32; INFO_WORDS];
    words[..info.len()].copy_from_slice(info);
    // cubecl packs info in u64s: two u32s each, the first in the low half,
    // which is where a little-endian u32 array reads it.
    let packed: Vec<u64> = words
        .chunks(2)
        .map(|w| u64::from(w[0]) | (u64::from(w[1]) << 32))
        .collect();
    let mut args = KernelArguments::new();
    for b in buffers {
        args = args.with_buffer(b);
    }
    // Our kernels write only their outputs; cubecl has no compiled answer
    // for a hand-written kernel, so a launch that fails is taken to have
    // written every buffer.
    like.client.launch(
        Box::new(kernel),
        CubeCount::Static(groups.0, groups.1, 1),
        args.with_info(MetadataBindingInfo::custom(packed)),
    );
}
