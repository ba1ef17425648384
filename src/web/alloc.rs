//! The module's allocator counts the bytes it has handed out
//! ([`crate::counting`]), so the engine knows how much of wasm32's 4 GiB is
//! still free before it loads a model or starts a run (the memory itself
//! only grows, so its size says nothing about what is free inside it).

use crate::counting::Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

pub use crate::counting::{failed, live};

/// What wasm32 can address: 65,536 pages of 64 KiB (more than a 32-bit
/// `usize` holds).
pub const WASM32_BYTES: u64 = 4 << 30;
