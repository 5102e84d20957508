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
    fn openblas_get_corename() -> *const std::os::raw::c_char;
}

/// The OpenBLAS kernel set ("core") in use, e.g. `SkylakeX`, `Haswell`, `Prescott`.
pub fn core_name() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string of the library.
    let name = unsafe { openblas_get_corename() };
    if name.is_null() {
        return "unknown".into();
    }
    // SAFETY: non-null, NUL-terminated and static (checked above).
    unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned()
}

/// OpenBLAS x86-64 cores from the oldest instruction sets to the newest that Debian's 0.3.21
/// ships kernels for.
const CORES: [&str; 9] = ["prescott", "core2", "penryn", "dunnington", "nehalem", "sandybridge", "haswell", "zen", "skylakex"];

/// The best core this CPU can run, from its features (`None` off x86-64).
fn best_core() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512cd")
        {
            return Some("SkylakeX");
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some("Haswell");
        }
        if is_x86_feature_detected!("avx") {
            return Some("Sandybridge");
        }
    }
    None
}

fn rank(core: &str) -> Option<usize> {
    CORES.iter().position(|c| c.eq_ignore_ascii_case(core))
}

/// The core to run instead of `current`, when the CPU's `best` is a newer one (both known).
fn upgrade(current: &str, best: Option<&'static str>) -> Option<&'static str> {
    let best = best?;
    (rank(current)? < rank(best)?).then_some(best)
}

/// Makes OpenBLAS run this CPU's kernels. Debian's OpenBLAS 0.3.21 picks its kernels when it
/// is loaded (before `main`) from the CPU model, and does not know recent Xeons: it falls back
/// to `Prescott` (SSE3), 2–3× slower than the AVX-512 `SkylakeX` kernels the CPU can run. When
/// the core in use is older than the CPU's features allow, the process runs itself again with
/// `OPENBLAS_CORETYPE` set (once: an `OPENBLAS_CORETYPE` already set, by the user or that
/// re-run, is left alone). Returns only when nothing needs changing or the re-run failed.
pub fn ensure_best_core() {
    if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
        return;
    }
    let current = core_name();
    let Some(best) = upgrade(&current, best_core()) else { return };
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else { return };
    let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env("OPENBLAS_CORETYPE", best).exec();
    eprintln!("blas: OpenBLAS chose {current} kernels and running again with {best} failed ({err}); continuing with {current}");
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
pub trait Gemm: Copy + Send + Sync + 'static {
    const ZERO: Self;
    const ONE: Self;

    /// One BLAS call: `c = op(a)·op(b) + beta·c` over `rows` rows of `c` (row-major, leading
    /// dimensions given).
    ///
    /// # Safety
    /// The pointers must hold the matrices the dimensions and leading dimensions describe, `c`
    /// writable and not aliasing `a` or `b`; with `beta` 0 `c` may be uninitialised (BLAS
    /// does not read `c` then: it writes every element).
    #[allow(clippy::too_many_arguments)]
    unsafe fn raw(ta: bool, tb: bool, rows: c_int, n: c_int, k: c_int, a: *const Self, lda: c_int, b: *const Self, ldb: c_int, beta: Self, c: *mut Self);

    /// One block: rows `r0..r0 + rows` of `c` into `c_rows`.
    #[allow(clippy::too_many_arguments)]
    fn gemm_block(ta: bool, tb: bool, m: usize, n: usize, k: usize, r0: usize, a: &[Self], b: &[Self], c_rows: &mut [Self]) {
        let (rows, ni, ki, lda, ldb, off) = block(ta, tb, m, n, k, r0, (a.len(), b.len(), c_rows.len()));
        // SAFETY: `block` checked that `a` is the whole m×k matrix (so rows r0..r0+rows of
        // op(a), read from offset `off` with leading dimension `lda`, lie inside it), `b` the
        // whole k×n matrix and `c_rows` exactly `rows` rows of n; `c_rows` is a unique borrow.
        unsafe { Self::raw(ta, tb, rows, ni, ki, a.as_ptr().add(off), lda, b.as_ptr(), ldb, Self::ZERO, c_rows.as_mut_ptr()) }
    }

    /// `c = op(a)·op(b)`.
    #[allow(clippy::too_many_arguments)]
    fn gemm(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[Self], b: &[Self], c: &mut [Self]) {
        use rayon::prelude::*;
        assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n, "gemm: slices do not match {m}×{k}·{k}×{n}");
        single_threaded();
        let rows = rows_per_block(m, n, k);
        c.par_chunks_mut(rows * n.max(1)).enumerate().for_each(|(i, block)| {
            Self::gemm_block(ta, tb, m, n, k, i * rows, a, b, block);
        });
    }

    /// `c += op(a)·op(b)` (BLAS's β = 1: `c` holds, say, the bias already, and BLAS adds to
    /// it instead of zeroing it first).
    #[allow(clippy::too_many_arguments)]
    fn gemm_acc(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[Self], b: &[Self], c: &mut [Self]) {
        use rayon::prelude::*;
        assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n, "gemm: slices do not match {m}×{k}·{k}×{n}");
        single_threaded();
        let rows = rows_per_block(m, n, k);
        c.par_chunks_mut(rows * n.max(1)).enumerate().for_each(|(i, c_rows)| {
            let (rows, ni, ki, lda, ldb, off) = block(ta, tb, m, n, k, i * rows, (a.len(), b.len(), c_rows.len()));
            // SAFETY: as in `gemm_block`; `c_rows` is initialised, so β = 1 reads defined values.
            unsafe { Self::raw(ta, tb, rows, ni, ki, a.as_ptr().add(off), lda, b.as_ptr(), ldb, Self::ONE, c_rows.as_mut_ptr()) }
        });
    }

    /// `op(a)·op(b)` in a new vector, written once by BLAS (not zeroed first by us as well).
    fn gemm_new(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[Self], b: &[Self]) -> Vec<Self> {
        use rayon::prelude::*;
        assert!(a.len() == m * k && b.len() == k * n, "gemm: slices do not match {m}×{k}·{k}×{n}");
        if k == 0 || n == 0 {
            return vec![Self::ZERO; m * n];
        }
        single_threaded();
        let rows = rows_per_block(m, n, k);
        let mut c: Vec<Self> = Vec::with_capacity(m * n);
        c.spare_capacity_mut()[..m * n].par_chunks_mut(rows * n).enumerate().for_each(|(i, c_rows)| {
            let (rows, ni, ki, lda, ldb, off) = block(ta, tb, m, n, k, i * rows, (a.len(), b.len(), c_rows.len()));
            // SAFETY: as in `gemm_block`, with β = 0: BLAS writes every element of the block
            // without reading it (k ≥ 1 and n ≥ 1 here), so uninitialised memory is fine.
            unsafe { Self::raw(ta, tb, rows, ni, ki, a.as_ptr().add(off), lda, b.as_ptr(), ldb, Self::ZERO, c_rows.as_mut_ptr().cast()) }
        });
        // SAFETY: the blocks cover all m·n elements (par_chunks_mut over exactly that many),
        // each written by its BLAS call above.
        unsafe { c.set_len(m * n) };
        c
    }
}

/// `x·w + bias (+ residual)` for `x` `[m, k]`, `w` `[k, n]`, `bias` `[n]` and `residual`
/// `[m, n]`, in a new vector: each parallel block of rows is first set to the bias (plus the
/// residual row: `residual + bias`), then BLAS adds the product to it (β = 1). One pass over
/// the output besides the product's, in parallel, and no zeroing.
pub fn linear_new<T: Gemm + std::ops::Add<Output = T>>(m: usize, n: usize, k: usize, x: &[T], w: &[T], bias: &[T], residual: Option<&[T]>) -> Vec<T> {
    use rayon::prelude::*;
    assert!(x.len() == m * k && w.len() == k * n && bias.len() == n, "linear: slices do not match {m}×{k}·{k}×{n} + {n}");
    assert!(residual.is_none_or(|r| r.len() == m * n), "linear: the residual is not {m}×{n}");
    if n == 0 {
        return Vec::new();
    }
    single_threaded();
    let rows = rows_per_block(m, n, k);
    let mut c: Vec<T> = Vec::with_capacity(m * n);
    c.spare_capacity_mut()[..m * n].par_chunks_mut(rows * n).enumerate().for_each(|(i, c_rows)| {
        let r0 = i * rows;
        for (r, row) in c_rows.chunks_mut(n).enumerate() {
            match residual {
                Some(res) => {
                    let res = &res[(r0 + r) * n..(r0 + r + 1) * n];
                    row.iter_mut().zip(res).zip(bias).for_each(|((o, &x), &b)| {
                        o.write(x + b);
                    });
                }
                None => row.iter_mut().zip(bias).for_each(|(o, &b)| {
                    o.write(b);
                }),
            }
        }
        if k == 0 {
            return;
        }
        let (rows, ni, ki, lda, ldb, off) = block(false, false, m, n, k, r0, (x.len(), w.len(), c_rows.len()));
        // SAFETY: as in `gemm_block`; every element of `c_rows` was written just above (the
        // rows are whole: `c_rows.len()` is a multiple of n), so β = 1 reads defined values.
        unsafe { T::raw(false, false, rows, ni, ki, x.as_ptr().add(off), lda, w.as_ptr(), ldb, T::ONE, c_rows.as_mut_ptr().cast()) }
    });
    // SAFETY: the blocks cover all m·n elements, each written by the loop above.
    unsafe { c.set_len(m * n) };
    c
}

/// A matrix inside a slice: `rows × cols` elements from `offset` on, rows `ld` elements apart
/// (one head's queries inside the rows of a `[t, 3·d]` projection, say).
#[derive(Clone, Copy)]
pub struct View<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
}

impl<'a, T> View<'a, T> {
    /// A whole dense `rows × cols` matrix.
    pub fn dense(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self { data, offset: 0, rows, cols, ld: cols }
    }

    /// Panics unless the view lies inside its slice.
    fn check(&self) {
        let fits = self.rows == 0 || self.cols == 0 || (self.ld >= self.cols && self.offset + (self.rows - 1) * self.ld + self.cols <= self.data.len());
        assert!(fits, "gemm: a {}×{} view from {} with rows {} apart outside {} elements", self.rows, self.cols, self.offset, self.ld, self.data.len());
    }
}

/// `op(a)·op(b)` of two views (`ta`: `a` stores op(a) transposed; likewise `tb`) into a new
/// dense `[m, n]` vector, in one BLAS call on this thread (for callers already in parallel
/// tasks): no gathering of strided operands, no zeroing of the output.
pub fn gemm_views<T: Gemm>(ta: bool, a: View<T>, tb: bool, b: View<T>) -> Vec<T> {
    a.check();
    b.check();
    let (m, k) = if ta { (a.cols, a.rows) } else { (a.rows, a.cols) };
    let (k2, n) = if tb { (b.cols, b.rows) } else { (b.rows, b.cols) };
    assert_eq!(k, k2, "gemm: {m}×{k} · {k2}×{n}");
    if k == 0 || n == 0 || m == 0 {
        return vec![T::ZERO; m * n];
    }
    single_threaded();
    let int = |x: usize| c_int::try_from(x).expect("gemm: a dimension beyond the BLAS integer range");
    let mut c: Vec<T> = Vec::with_capacity(m * n);
    // SAFETY: `check` put both views inside their slices (op(a) is m×k, op(b) k×n as asserted,
    // read from their offsets with their leading dimensions); `c` has room for m×n, which BLAS
    // writes whole with β = 0 without reading it.
    unsafe {
        T::raw(ta, tb, int(m), int(n), int(k), a.data.as_ptr().add(a.offset), int(a.ld), b.data.as_ptr().add(b.offset), int(b.ld), T::ZERO, c.as_mut_ptr());
        c.set_len(m * n);
    }
    c
}

/// Rows of `c` per parallel block: all of them for a small product, else an even share per
/// thread.
fn rows_per_block(m: usize, n: usize, k: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    if m * n * k < 1 << 18 {
        m.max(1)
    } else {
        m.div_ceil(threads).max(1)
    }
}

/// Checks a block against the whole matrices and returns (rows, n, k, lda, ldb, offset into a).
fn block(ta: bool, tb: bool, m: usize, n: usize, k: usize, r0: usize, lens: (usize, usize, usize)) -> (c_int, c_int, c_int, c_int, c_int, usize) {
    let rows = lens.2.checked_div(n).unwrap_or(0);
    assert!(lens.0 == m * k && lens.1 == k * n && rows * n == lens.2 && r0 + rows <= m, "gemm: a block outside {m}×{k}·{k}×{n}");
    let int = |x: usize| c_int::try_from(x).expect("gemm: a dimension beyond the BLAS integer range");
    // op(a) rows r0.. start at a[r0 * k] when a is [m, k], at a[r0] (a column) when it is [k, m].
    let (lda, offset) = if ta { (m, r0) } else { (k, r0 * k) };
    let ldb = if tb { k } else { n };
    (int(rows), int(n), int(k), int(lda.max(1)), int(ldb.max(1)), offset)
}

fn trans(x: bool) -> c_int {
    if x {
        TRANS
    } else {
        NO_TRANS
    }
}

impl Gemm for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    unsafe fn raw(ta: bool, tb: bool, rows: c_int, n: c_int, k: c_int, a: *const f32, lda: c_int, b: *const f32, ldb: c_int, beta: f32, c: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { cblas_sgemm(ROW_MAJOR, trans(ta), trans(tb), rows, n, k, 1.0, a, lda, b, ldb, beta, c, n.max(1)) }
    }
}

impl Gemm for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    unsafe fn raw(ta: bool, tb: bool, rows: c_int, n: c_int, k: c_int, a: *const f64, lda: c_int, b: *const f64, ldb: c_int, beta: f64, c: *mut f64) {
        // SAFETY: the caller's contract.
        unsafe { cblas_dgemm(ROW_MAJOR, trans(ta), trans(tb), rows, n, k, 1.0, a, lda, b, ldb, beta, c, n.max(1)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `op(a)·op(b)` in f64, one sum at a time.
    fn reference(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let at = |i: usize, p: usize| f64::from(if ta { a[p * m + i] } else { a[i * k + p] });
        let bt = |p: usize, j: usize| f64::from(if tb { b[j * k + p] } else { b[p * n + j] });
        (0..m * n).map(|ij| (0..k).map(|p| at(ij / n, p) * bt(p, ij % n)).sum()).collect()
    }

    #[test]
    fn an_older_core_than_the_cpu_allows_is_upgraded_and_nothing_else() {
        assert_eq!(upgrade("Prescott", Some("SkylakeX")), Some("SkylakeX"), "Debian's 0.3.21 on a CPU it does not know");
        assert_eq!(upgrade("Haswell", Some("SkylakeX")), Some("SkylakeX"));
        assert_eq!(upgrade("SKYLAKEX", Some("SkylakeX")), None, "already the best");
        assert_eq!(upgrade("SkylakeX", Some("Haswell")), None, "never downgraded");
        assert_eq!(upgrade("Cooperlake", Some("SkylakeX")), None, "a core newer than the list is left alone");
        assert_eq!(upgrade("Prescott", None), None, "no x86-64 features known");
    }

    /// The kernels in use on this machine (whatever core OpenBLAS picked, or was told to)
    /// compute the same products as plain sums, for every transpose and for sizes that are
    /// not multiples of any kernel's block (older OpenBLAS builds are known to get some
    /// processors wrong).
    #[test]
    fn the_kernels_in_use_compute_the_products_of_plain_sums() {
        let mut rng = crate::rng::Rng::new(7);
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (17, 33, 65), (64, 64, 64), (129, 257, 96), (600, 70, 300)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect();
                let mut c = vec![0f32; m * n];
                f32::gemm(ta, tb, m, n, k, &a, &b, &mut c);
                let want = reference(ta, tb, m, n, k, &a, &b);
                let worst = c.iter().zip(&want).map(|(&x, &y)| (f64::from(x) - y).abs()).fold(0.0, f64::max);
                assert!(worst < 1e-4 * (k as f64).sqrt(), "{} kernels: {m}×{k}·{k}×{n} (ta {ta}, tb {tb}) off by {worst}", core_name());
                // Into a new, never-zeroed vector: the same bits; added to what `c` holds: the sums.
                assert_eq!(f32::gemm_new(ta, tb, m, n, k, &a, &b), c, "gemm_new: {m}×{k}·{k}×{n} (ta {ta}, tb {tb})");
                let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25).collect();
                let res: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32).collect();
                if !ta && !tb {
                    for (residual, extra) in [(None, 0.0), (Some(&res[..]), 1.0)] {
                        let got = linear_new(m, n, k, &a, &b, &bias, residual);
                        let worst =
                            (0..m * n).map(|i| (f64::from(got[i]) - want[i] - f64::from(bias[i % n]) - extra * f64::from(res[i])).abs()).fold(0.0, f64::max);
                        assert!(worst < 1e-4 * (k as f64).sqrt(), "linear_new: {m}×{k}·{k}×{n} off by {worst}");
                    }
                }
                // The same product from views inside larger matrices (rows 3 further apart, 2 in).
                let pad = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> {
                    (0..rows).flat_map(|r| [9.0, 9.0].into_iter().chain(x[r * cols..(r + 1) * cols].iter().copied()).chain([9.0])).collect()
                };
                let (ar, ac) = if ta { (k, m) } else { (m, k) };
                let (br, bc) = if tb { (n, k) } else { (k, n) };
                let (pa, pb) = (pad(&a, ar, ac), pad(&b, br, bc));
                let va = View { data: &pa, offset: 2, rows: ar, cols: ac, ld: ac + 3 };
                let vb = View { data: &pb, offset: 2, rows: br, cols: bc, ld: bc + 3 };
                let got = gemm_views(ta, va, tb, vb);
                let worst = got.iter().zip(&want).map(|(&x, &y)| (f64::from(x) - y).abs()).fold(0.0, f64::max);
                assert!(worst < 1e-4 * (k as f64).sqrt(), "gemm_views: {m}×{k}·{k}×{n} (ta {ta}, tb {tb}) off by {worst}");
                let mut acc = vec![0.75f32; m * n];
                f32::gemm_acc(ta, tb, m, n, k, &a, &b, &mut acc);
                let worst = acc.iter().zip(&want).map(|(&x, &y)| (f64::from(x) - 0.75 - y).abs()).fold(0.0, f64::max);
                assert!(worst < 1e-4 * (k as f64).sqrt(), "gemm_acc: {m}×{k}·{k}×{n} (ta {ta}, tb {tb}) off by {worst}");
            }
        }
        // Every other core the CPU can run (the generic SSE3 one and the AVX2 and AVX-512 ones
        // the trainer may choose): the same test again in a process OpenBLAS loads with it.
        if std::env::var_os("OPENBLAS_CORETYPE").is_none() {
            let best = best_core().and_then(rank).unwrap_or(0);
            for core in
                ["Prescott", "Sandybridge", "Haswell", "SkylakeX"].into_iter().filter(|c| rank(c).unwrap_or(0) <= best && !c.eq_ignore_ascii_case(&core_name()))
            {
                let out = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["blas::tests::the_kernels_in_use_compute_the_products_of_plain_sums", "--exact", "--nocapture"])
                    .env("OPENBLAS_CORETYPE", core)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success() && text.contains("1 passed"), "on {core} kernels:\n{text}{}", String::from_utf8_lossy(&out.stderr));
                let checked = String::from_utf8_lossy(&out.stderr).lines().find(|l| l.starts_with("products checked on")).map(str::to_string);
                assert_eq!(checked.as_deref().map(|l| l.to_lowercase()), Some(format!("products checked on {} kernels", core.to_lowercase())));
            }
        }
        eprintln!("products checked on {} kernels", core_name());
    }
}
