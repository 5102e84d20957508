//! Matrix products through the system's OpenBLAS (`cblas_sgemm` / `cblas_dgemm`), whose
//! AVX-512 kernels run 2–3× faster here than the `gemm` crate candle uses (its AVX2 kernels):
//! 4096×256·256×1024 takes 11 ms instead of 30 on two cores. The feature `openblas` (on by
//! default; needs Debian's `libopenblas-dev`) turns it on; without it candle's matmul is used.
//!
//! This is the crate's one use of `unsafe`: the FFI calls below. Each checks, before calling,
//! that the slices hold exactly the matrices the dimensions describe.
#![allow(unsafe_code)]

use std::os::raw::c_int;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

#[link(name = "openblas")]
extern "C" {
    fn cblas_sgemm(
        layout: c_int,
        transa: c_int,
        transb: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn cblas_dgemm(
        layout: c_int,
        transa: c_int,
        transb: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f64,
        a: *const f64,
        lda: c_int,
        b: *const f64,
        ldb: c_int,
        beta: f64,
        c: *mut f64,
        ldc: c_int,
    );
}

extern "C" {
    fn openblas_set_num_threads(n: c_int);
}

/// OpenBLAS's own thread pool would spin against rayon's for the same two cores (a fifth of a
/// step went to `sched_yield`), so OpenBLAS runs single-threaded and rayon splits the rows.
fn single_threaded() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: sets a global of the library before any product runs; no pointers involved.
    ONCE.call_once(|| unsafe { openblas_set_num_threads(1) });
}

/// Row-major `c = op(a) · op(b)`, `op(a)` `[m, k]` and `op(b)` `[k, n]`; `ta` means `a` is
/// stored as `[k, m]`, `tb` that `b` is stored as `[n, k]`. Rows of `c` are computed in
/// parallel blocks.
pub trait Gemm: Copy + Send + Sync {
    /// One block: rows `r0..r0 + rows` of `c` into `c_rows`.
    #[allow(clippy::too_many_arguments)]
    fn gemm_block(ta: bool, tb: bool, m: usize, n: usize, k: usize, r0: usize, a: &[Self], b: &[Self], c_rows: &mut [Self]);

    #[allow(clippy::too_many_arguments)]
    fn gemm(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[Self], b: &[Self], c: &mut [Self]) {
        use rayon::prelude::*;
        assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n, "gemm: slices do not match {m}×{k}·{k}×{n}");
        single_threaded();
        let threads = rayon::current_num_threads().max(1);
        let rows = if m * n * k < 1 << 18 { m.max(1) } else { m.div_ceil(threads).max(1) };
        c.par_chunks_mut(rows * n.max(1)).enumerate().for_each(|(i, block)| {
            Self::gemm_block(ta, tb, m, n, k, i * rows, a, b, block);
        });
    }
}

/// Checks a block against the whole matrices and returns (rows, lda, ldb, offset into a).
fn block(ta: bool, tb: bool, m: usize, n: usize, k: usize, r0: usize, lens: (usize, usize, usize)) -> (c_int, c_int, c_int, c_int, c_int, usize) {
    let rows = lens.2.checked_div(n).unwrap_or(0);
    assert!(lens.0 == m * k && lens.1 == k * n && rows * n == lens.2 && r0 + rows <= m, "gemm: a block outside {m}×{k}·{k}×{n}");
    let int = |x: usize| c_int::try_from(x).expect("gemm: a dimension beyond the BLAS integer range");
    // op(a) rows r0.. start at a[r0 * k] when a is [m, k], at a[r0] (a column) when it is [k, m].
    let (lda, offset) = if ta { (m, r0) } else { (k, r0 * k) };
    let ldb = if tb { k } else { n };
    (int(rows), int(n), int(k), int(lda.max(1)), int(ldb.max(1)), offset)
}

impl Gemm for f32 {
    fn gemm_block(ta: bool, tb: bool, m: usize, n: usize, k: usize, r0: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (rows, ni, ki, lda, ldb, off) = block(ta, tb, m, n, k, r0, (a.len(), b.len(), c.len()));
        let t = |x: bool| if x { TRANS } else { NO_TRANS };
        // SAFETY: `block` checked that `a` is the whole m×k matrix (so rows r0..r0+rows of op(a),
        // read from offset `off` with leading dimension `lda`, lie inside it), `b` the whole
        // k×n matrix and `c` exactly `rows` rows of n; `c` is a unique borrow.
        unsafe { cblas_sgemm(ROW_MAJOR, t(ta), t(tb), rows, ni, ki, 1.0, a.as_ptr().add(off), lda, b.as_ptr(), ldb, 0.0, c.as_mut_ptr(), ni.max(1)) }
    }
}

impl Gemm for f64 {
    fn gemm_block(ta: bool, tb: bool, m: usize, n: usize, k: usize, r0: usize, a: &[f64], b: &[f64], c: &mut [f64]) {
        let (rows, ni, ki, lda, ldb, off) = block(ta, tb, m, n, k, r0, (a.len(), b.len(), c.len()));
        let t = |x: bool| if x { TRANS } else { NO_TRANS };
        // SAFETY: as for f32 above.
        unsafe { cblas_dgemm(ROW_MAJOR, t(ta), t(tb), rows, ni, ki, 1.0, a.as_ptr().add(off), lda, b.as_ptr(), ldb, 0.0, c.as_mut_ptr(), ni.max(1)) }
    }
}
