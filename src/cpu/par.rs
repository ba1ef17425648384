//! Work split over the cores where there are threads (natively, and in the
//! page's threaded build), in order on one thread otherwise.

/// Threads the work may be split over.
pub fn threads() -> usize {
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    return rayon::current_num_threads().max(1);
    #[cfg(not(any(not(target_arch = "wasm32"), feature = "threads")))]
    1
}

/// Elements per task: large enough that a task outweighs its scheduling.
pub const CHUNK: usize = 16 * 1024;

/// Calls `f(start, piece)` for `out` cut into pieces of `chunk` elements,
/// where `start` is the piece's offset in `out`.
pub fn chunks<T: Send>(out: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Send + Sync) {
    let chunk = chunk.max(1);
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, piece)| f(i * chunk, piece));
    }
    #[cfg(not(any(not(target_arch = "wasm32"), feature = "threads")))]
    out.chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, piece)| f(i * chunk, piece));
}

/// As [`chunks`] over two outputs of the same length, cut alike.
pub fn chunks2<T: Send>(
    a: &mut [T],
    b: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T], &mut [T]) + Send + Sync,
) {
    assert_eq!(a.len(), b.len(), "two outputs of one length");
    let chunk = chunk.max(1);
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        use rayon::prelude::*;
        a.par_chunks_mut(chunk)
            .zip(b.par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(i, (pa, pb))| f(i * chunk, pa, pb));
    }
    #[cfg(not(any(not(target_arch = "wasm32"), feature = "threads")))]
    a.chunks_mut(chunk)
        .zip(b.chunks_mut(chunk))
        .enumerate()
        .for_each(|(i, (pa, pb))| f(i * chunk, pa, pb));
}

/// Calls `f(r, row, side)` for each row `r` of `out` (rows of `row`
/// elements) with its own element of `side` (one per row).
pub fn rows<T: Send, U: Send>(
    out: &mut [T],
    row: usize,
    side: &mut [U],
    f: impl Fn(usize, &mut [T], &mut U) + Send + Sync,
) {
    assert_eq!(out.len(), row * side.len(), "one side element per row");
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(row.max(1))
            .zip(side.par_iter_mut())
            .enumerate()
            .for_each(|(r, (x, s))| f(r, x, s));
    }
    #[cfg(not(any(not(target_arch = "wasm32"), feature = "threads")))]
    out.chunks_mut(row.max(1))
        .zip(side.iter_mut())
        .enumerate()
        .for_each(|(r, (x, s))| f(r, x, s));
}
