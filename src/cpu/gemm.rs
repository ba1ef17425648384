//! Matrix products split over the cores by rows of the output.
//!
//! flex hands a product below 192³ multiply-adds to `gemm` on one thread,
//! and the rank-r products of LoRA (`[N, d]·[d, r]` and the like) are all
//! below it, so they ran serially while the other core waited. Each product
//! here cuts its output into one band of rows per thread and runs `gemm` on
//! each band.

/// A read-only matrix view over f32 values: `rows × cols`, element `(i, j)`
/// at `i·row_stride + j·col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// `data` as a row-major `rows × cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            Some(data.len()),
            rows.checked_mul(cols),
            "a {rows} x {cols} matrix"
        );
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, as a view of the same values.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Rows `start..start + len` of this view.
    fn band(self, start: usize, len: usize) -> Self {
        assert!(start + len <= self.rows, "rows within the matrix");
        let from = (start * self.row_stride).min(self.data.len());
        Self {
            data: &self.data[from..],
            rows: len,
            ..self
        }
    }
}

/// `out = scale · lhs · rhs`, `out` row-major `[lhs.rows, rhs.cols]`
/// (overwritten), one band of rows per thread.
pub fn matmul_into(out: &mut [f32], lhs: Mat, rhs: Mat, scale: f32) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(k, rhs.rows, "inner dimensions agree");
    assert_eq!(Some(out.len()), m.checked_mul(n), "out is [{m}, {n}]");
    if m == 0 || n == 0 {
        return;
    }
    let band = m.div_ceil(crate::cpu::par::threads()).max(1); // rows per thread
    crate::cpu::par::chunks(out, band * n, |start, piece| {
        let (row, rows) = (start / n, piece.len() / n);
        product(piece, lhs.band(row, rows), rhs, scale);
    });
}

/// One `gemm` call on this thread: `out = scale · lhs · rhs`.
fn product(out: &mut [f32], lhs: Mat, rhs: Mat, scale: f32) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(out.len(), m * n);
    // The furthest element each view reads must lie inside its slice.
    for v in [lhs, rhs] {
        if v.rows > 0 && v.cols > 0 {
            let last = (v.rows - 1)
                .checked_mul(v.row_stride)
                .zip((v.cols - 1).checked_mul(v.col_stride))
                .and_then(|(a, b)| a.checked_add(b));
            assert!(
                last.is_some_and(|l| l < v.data.len()),
                "a view within its values"
            );
        }
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    // SAFETY: every index gemm forms is (i, j) within the shapes above, and
    // the asserts show each view's last element lies inside its slice; `out`
    // is exactly m·n values, written row-major.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
