//! An allocator that counts: the system allocator, with the bytes it has
//! handed out and their peak. The page's CPU engine installs it
//! (`web/alloc.rs`) so the memory guard knows what is free of wasm32's
//! 4 GiB; the memory-estimate test installs it to measure a step's peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator (dlmalloc on wasm32), counting. Install it with
/// `#[global_allocator]`.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The size of the last allocation the system allocator refused.
static FAILED: AtomicUsize = AtomicUsize::new(0);

/// Notes a refused allocation of `size` bytes and passes the null on.
fn refused(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        FAILED.store(size, Ordering::Relaxed);
    }
    p
}

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        refused(p, layout.size())
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        refused(p, layout.size())
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new) };
        if !q.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new);
        }
        refused(q, new)
    }
}

/// Bytes allocated now (0 unless [`Counting`] is the global allocator).
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most bytes allocated at once since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// The size of the last allocation refused (the memory was full), 0 when
/// none was. After one, the program aborts (on wasm32, a trap the worker
/// catches and reports with this size).
pub fn failed() -> usize {
    FAILED.load(Ordering::Relaxed)
}

/// Starts a new peak from what is allocated now.
pub fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}
