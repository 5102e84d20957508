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
