//! The browser façade (wasm32 only): a thin wasm-bindgen layer over the same
//! loader, trainer, generator and exporter the CLI uses. `www/worker.js`
//! owns one [`Engine`] and drives it; nothing here names a DOM type (the
//! data file comes in as a `Blob`, read a slice at a time).
//!
//! Every GPU readback is async (`read_async`, `export_async`): a blocking
//! read panics on wasm.

mod alloc;
mod blob;
mod engine;
mod sink;

pub use engine::Engine;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// Defined by the worker: forwards a panic's message to the page.
    #[wasm_bindgen(js_namespace = globalThis, js_name = tabtunePanic)]
    fn report_panic(message: &str);
}

/// Runs once when the module is instantiated: panics are logged to the
/// console and forwarded to the page, which shows them and restarts the
/// worker (a panic aborts the wasm instance).
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        report_panic(&info.to_string());
    }));
}

/// `initThreadPool(n)` (the `threads` build): starts `n` Web Workers sharing
/// this module's memory as rayon's pool, so flex's matrix products and
/// reductions use every core. Needs a cross-origin isolated page.
#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

/// The size of the allocation the engine's memory refused, 0 when none
/// was, and the bytes in use: read by the worker after the engine traps,
/// to say it ran out of memory and how far.
#[wasm_bindgen(js_name = memoryFailure)]
pub fn memory_failure() -> Vec<f64> {
    vec![alloc::failed() as f64, alloc::live() as f64]
}

/// The crate's version, shown in the page's footer.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
