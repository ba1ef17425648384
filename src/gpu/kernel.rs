//! A WGSL kernel of ours as cubecl launches it: precompiled text (no IR),
//! one pipeline per entry point and block format (if it has one).

use burn_cubecl::cubecl::ir::{UIntKind, metadata::Info, settings::Dim3};
use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::cubecl::{CubeKernel, PrecompiledSource};

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
