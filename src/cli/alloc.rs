//! Process set-up for the CLI: glibc allocator settings and SIGPIPE.
//!
//! By default glibc serves large blocks (tensor buffers) with `mmap` and
//! returns them with `munmap`, so every op's output is fresh memory the
//! kernel must fault in and zero: ~7% of a training step in `clear_page_erms`
//! and page faults (perf, SmolLM2, batch 4 x 256). Keeping such blocks on the
//! heap and not trimming it lets freed buffers be reused. Peak memory is
//! unchanged (measured: README, Benchmark).

/// Applies the settings; a value glibc rejects is left at its default.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called once at
    // start-up before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 512 << 20);
    }
}

/// Restores the default SIGPIPE action, so `tabtune eval | head` ends
/// quietly like other Unix tools instead of panicking on a closed pipe.
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default; done once at
    // start-up before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
