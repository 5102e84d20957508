//! The elementwise kernels (GELU, softmax, layer norm, AdamW, sums) compiled again for the
//! vector units the CPU has. The crate is built for baseline x86-64 (SSE2: 4 floats a vector);
//! [`best`] runs a closure inside a function compiled for AVX-512 (16 floats) or AVX2 (8),
//! chosen once at run time from the CPU's features, so the compiler vectorises the inlined
//! kernel for those units. Each element is computed by the same operations in the same order
//! on every path (the compiler does not fuse or reorder float arithmetic; sums run in the
//! kernels' explicit lanes), so the results are the same bits whichever path runs.
//!
//! This module's `unsafe` is calling those functions, after checking the CPU has the features.
#![allow(unsafe_code)]

/// Runs `f` compiled for the best vector units the CPU has (see the module's documentation).
#[inline(always)]
pub fn best<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: `level` found the CPU has AVX-512 F/BW/DQ/VL, AVX2 and FMA.
            Level::Avx512 => return unsafe { avx512(f) },
            // SAFETY: `level` found the CPU has AVX2 and FMA.
            Level::Avx2 => return unsafe { avx2(f) },
            Level::Baseline => {}
        }
    }
    f()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Level {
    Avx512,
    Avx2,
    Baseline,
}

/// A level forced by [`force`] (0: none).
static FORCED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Makes [`best`] run at `level` (at most what the CPU has) from now on, or as detected again
/// with `None`: for tests that compare the paths' results (which are the same bits by design,
/// so other threads computing meanwhile get the same results, only slower or faster).
pub fn force(level: Option<Level>) {
    let code = match level.map(|l| l.min_with(detected())) {
        None => 0,
        Some(Level::Avx512) => 1,
        Some(Level::Avx2) => 2,
        Some(Level::Baseline) => 3,
    };
    FORCED.store(code, std::sync::atomic::Ordering::Relaxed);
}

impl Level {
    fn min_with(self, other: Level) -> Level {
        let rank = |l: Level| match l {
            Level::Baseline => 0,
            Level::Avx2 => 1,
            Level::Avx512 => 2,
        };
        if rank(self) <= rank(other) {
            self
        } else {
            other
        }
    }
}

/// The vector units [`best`] compiles for now: the CPU's best (see [`detected`]) unless
/// [`force`]d lower.
pub fn level() -> Level {
    match FORCED.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Level::Avx512,
        2 => Level::Avx2,
        3 => Level::Baseline,
        _ => detected(),
    }
}

/// The best vector units of this CPU that [`best`] compiles for.
pub fn detected() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let avx512 = avx2
                && ["avx512f", "avx512bw", "avx512dq", "avx512vl"].iter().all(|f| match *f {
                    "avx512f" => is_x86_feature_detected!("avx512f"),
                    "avx512bw" => is_x86_feature_detected!("avx512bw"),
                    "avx512dq" => is_x86_feature_detected!("avx512dq"),
                    _ => is_x86_feature_detected!("avx512vl"),
                });
            if avx512 {
                return Level::Avx512;
            }
            if avx2 {
                return Level::Avx2;
            }
        }
        Level::Baseline
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A new vector of `n` elements built in parallel chunks of `chunk` elements, each chunk by
/// `write(index of its first element, its slots)`, which the callers here write in full;
/// the safe wrappers below are the only callers.
///
/// # Safety
/// `write` must initialise every slot it is given.
unsafe fn build<T: Send>(n: usize, chunk: usize, write: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    // SAFETY: the caller's contract.
    unsafe { build_reserving(n, 0, chunk, write) }
}

/// [`build`] into a vector with room for `extra` more elements (to be pushed after).
///
/// # Safety
/// As for [`build`].
unsafe fn build_reserving<T: Send>(n: usize, extra: usize, chunk: usize, write: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(n + extra);
    out.spare_capacity_mut()[..n].par_chunks_mut(chunk.max(1)).enumerate().for_each(|(i, slots)| write(i * chunk.max(1), slots));
    // SAFETY: the chunks cover all n slots, and the caller's `write` initialised each.
    unsafe { out.set_len(n) };
    out
}

/// `f(x[i])` for every element, in parallel chunks compiled by [`best`], into a new vector
/// (never zeroed first). `f` is copied into each chunk's loop (so its captures are locals the
/// compiler keeps in registers, which lets it vectorise).
pub fn map<T: Copy + Send + Sync, F: Fn(T) -> T + Copy + Sync>(x: &[T], chunk: usize, f: F) -> Vec<T> {
    // SAFETY: each chunk of slots is written element by element from the equally long chunk
    // of `x` at the same offset.
    unsafe {
        build(x.len(), chunk, |at, slots| {
            #[allow(clippy::redundant_locals)] // a copy on this task's stack: see `map`
            let f = f;
            let x = &x[at..at + slots.len()];
            best(
                #[inline(always)]
                || {
                    for (o, &v) in slots.iter_mut().zip(x) {
                        o.write(f(v));
                    }
                },
            )
        })
    }
}

/// `f(x[i], y[i])` for every element, as [`map`]. Panics if the lengths differ.
pub fn map2<T: Copy + Send + Sync, F: Fn(T, T) -> T + Copy + Sync>(x: &[T], y: &[T], chunk: usize, f: F) -> Vec<T> {
    map2_reserving(x, y, 0, chunk, f)
}

/// [`map2`] into a vector with room for `extra` more elements.
pub fn map2_reserving<T: Copy + Send + Sync, F: Fn(T, T) -> T + Copy + Sync>(x: &[T], y: &[T], extra: usize, chunk: usize, f: F) -> Vec<T> {
    assert_eq!(x.len(), y.len(), "map2: inputs of different lengths");
    // SAFETY: as in `map`, the chunks of `x` and `y` being as long as the slots.
    unsafe {
        build_reserving(x.len(), extra, chunk, |at, slots| {
            #[allow(clippy::redundant_locals)] // a copy on this task's stack: see `map`
            let f = f;
            let (x, y) = (&x[at..at + slots.len()], &y[at..at + slots.len()]);
            best(
                #[inline(always)]
                || {
                    for ((o, &a), &b) in slots.iter_mut().zip(x).zip(y) {
                        o.write(f(a, b));
                    }
                },
            )
        })
    }
}

/// Row by row over rows of `d` elements: `stats(row)` once per row, then `f(&stats, x, i)` for
/// the row's element `x` in column `i`, as [`map`] (chunks of `rows_per_chunk` rows). Panics
/// unless `x` is whole rows.
pub fn map_rows<T, S, G, F>(x: &[T], d: usize, rows_per_chunk: usize, stats: G, f: F) -> Vec<T>
where
    T: Copy + Send + Sync,
    G: Fn(&[T]) -> S + Copy + Sync,
    F: Fn(&S, T, usize) -> T + Copy + Sync,
{
    assert!(d > 0 && x.len().is_multiple_of(d), "map_rows: {} elements are not rows of {d}", x.len());
    // SAFETY: the chunks are whole rows (a multiple of d); every row's slots are written
    // element by element from the equally long row of `x`.
    unsafe {
        build(x.len(), d * rows_per_chunk.max(1), |at, slots| {
            #[allow(clippy::redundant_locals)] // copies on this task's stack: see `map`
            let (stats, f) = (stats, f);
            let x = &x[at..at + slots.len()];
            best(
                #[inline(always)]
                || {
                    for (o, x) in slots.chunks_mut(d).zip(x.chunks(d)) {
                        let s = stats(x);
                        for (i, (o, &v)) in o.iter_mut().zip(x).enumerate() {
                            o.write(f(&s, v, i));
                        }
                    }
                },
            )
        })
    }
}

/// Three new vectors side by side in one, `[a; b; c]` of `n` each, where `f(k)` gives element
/// k of each; as [`map`].
pub fn map_to3<T: Copy + Send + Sync, F: Fn(usize) -> (T, T, T) + Copy + Sync>(n: usize, chunk: usize, f: F) -> Vec<T> {
    let chunk = chunk.max(1);
    let mut out: Vec<T> = Vec::with_capacity(3 * n);
    {
        let (a, rest) = out.spare_capacity_mut()[..3 * n].split_at_mut(n);
        let (b, c) = rest.split_at_mut(n);
        a.par_chunks_mut(chunk).zip(b.par_chunks_mut(chunk).zip(c.par_chunks_mut(chunk))).enumerate().for_each(|(i, (a, (b, c)))| {
            #[allow(clippy::redundant_locals)] // a copy on this task's stack: see `map`
            let f = f;
            best(
                #[inline(always)]
                || {
                    for (j, ((a, b), c)) in a.iter_mut().zip(b.iter_mut()).zip(c.iter_mut()).enumerate() {
                        let (x, y, z) = f(i * chunk + j);
                        a.write(x);
                        b.write(y);
                        c.write(z);
                    }
                },
            )
        });
    }
    // SAFETY: the three thirds are chunked alike (n elements each, the same chunk size), so
    // the zipped chunks cover every slot of each third, and each slot was written above.
    unsafe { out.set_len(3 * n) };
    out
}

/// `n_rows` rows of `w` elements, each the concatenation of `pieces` slices `piece(row, j)`
/// (j in 0..pieces), into a new vector (never zeroed first), rows in parallel chunks of
/// `rows_per_chunk`. Panics unless a row's pieces add up to exactly `w` elements.
pub fn concat_rows<'a, T, P>(n_rows: usize, w: usize, rows_per_chunk: usize, pieces: usize, piece: P) -> Vec<T>
where
    T: Copy + Send + Sync + 'a,
    P: Fn(usize, usize) -> &'a [T] + Sync,
{
    let chunk = w * rows_per_chunk.max(1);
    if w == 0 {
        return Vec::new();
    }
    // SAFETY: each chunk is whole rows of w slots; every row is checked to be exactly covered
    // by its pieces before they are written one element after another from its start.
    unsafe {
        build(n_rows * w, chunk, |at, slots| {
            for (r, row) in slots.chunks_mut(w).enumerate() {
                let row_index = at / w + r;
                let total: usize = (0..pieces).map(|j| piece(row_index, j).len()).sum();
                assert_eq!(total, w, "concat_rows: row {row_index}'s pieces are not {w} elements");
                let mut slot = row.iter_mut();
                for j in 0..pieces {
                    // The piece first: `zip` takes from its first iterator first, and must not
                    // take a slot past the piece's end.
                    for (&v, o) in piece(row_index, j).iter().zip(&mut slot) {
                        o.write(v);
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The builders fill every element with what their functions give, for lengths that are
    /// not multiples of the chunks (and one empty), at every vector level this CPU has.
    #[test]
    fn the_builders_write_every_element() {
        for n in [0usize, 1, 7, 4096, 10_001] {
            let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let y: Vec<f32> = (0..n).map(|i| (i % 13) as f32).collect();
            assert_eq!(map(&x, 1000, |v| v * 2.0), x.iter().map(|v| v * 2.0).collect::<Vec<_>>());
            assert_eq!(map2(&x, &y, 999, |a, b| a - b), x.iter().zip(&y).map(|(a, b)| a - b).collect::<Vec<_>>());
            let three = map_to3(n, 998, |k| (x[k], y[k], 1.0));
            assert_eq!(three.len(), 3 * n);
            assert!(three[..n] == x[..] && three[n..2 * n] == y[..] && three[2 * n..].iter().all(|&v| v == 1.0));
        }
        let x: Vec<f32> = (0..35).map(|i| i as f32).collect();
        let rows = map_rows(&x, 5, 2, |r| r[0], |first, v, i| v - first + i as f32 * 100.0);
        assert_eq!(rows, (0..35).map(|i| (i % 5) as f32 * 101.0).collect::<Vec<_>>());
        let parts = [vec![1f32, 2.0], vec![3.0], vec![4.0, 5.0, 6.0]];
        let joined = concat_rows(4, 6, 3, 3, |r, j| if r % 2 == 0 { &parts[j][..] } else { &parts[2 - j][..] });
        assert_eq!(joined[..12], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 4.0, 5.0, 6.0, 3.0, 1.0, 2.0]);
        assert_eq!(joined.len(), 24);
    }
}
