//! The allocator's settings. The trainer binary allocates through mimalloc (see its
//! `#[global_allocator]`); a training step frees and allocates again hundreds of megabytes of
//! tensors, and mimalloc by default hands freed memory back to the kernel ("purges" it) a
//! short delay after it is freed (`purge_delay`: 10 ms in mimalloc 2, 1 s in mimalloc 3, which
//! this build uses), so the next step faults its pages in again (zeroed by the kernel:
//! `clear_page_erms` took 13% of a step). Keeping freed memory for reuse instead takes a step
//! from ~950 to ~750 ms. The process's memory stays at its peak (what a step needs) instead
//! of shrinking between steps, which is what a trainer wants.
//!
//! This module's `unsafe` is the FFI calls into mimalloc's option API.
#![allow(unsafe_code)]

use std::os::raw::{c_int, c_long};

// Links mimalloc (and the C library under it, whose functions are declared below) wherever
// this crate is, not only where it is the global allocator.
extern crate mimalloc as _;

extern "C" {
    fn mi_version() -> c_int;
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_option_get(option: c_int) -> c_long;
}

/// `mi_option_purge_delay` in mimalloc 2.x and 3.x (`mimalloc.h`'s `mi_option_t`): the
/// milliseconds before freed memory is returned to the OS, or −1 for never.
const PURGE_DELAY: c_int = 15;

/// Tells mimalloc never to return freed memory to the OS (its `purge_delay` −1, what the
/// environment variable `MIMALLOC_PURGE_DELAY=-1` sets). Returns a line for the log, or why
/// not (an unknown mimalloc version). A `MIMALLOC_PURGE_DELAY` set by the user wins.
pub fn keep_freed_memory() -> String {
    if let Some(v) = std::env::var_os("MIMALLOC_PURGE_DELAY") {
        return format!("mimalloc: purge delay {} (MIMALLOC_PURGE_DELAY)", v.to_string_lossy());
    }
    // SAFETY: `mi_version` takes nothing and returns a number.
    let version = unsafe { mi_version() };
    if !(20_000..40_000).contains(&version) {
        return format!("mimalloc: version {version} not known; its purge delay left as it is");
    }
    // SAFETY: plain integer arguments; `PURGE_DELAY` is the option's index in the versions
    // accepted above, and mimalloc's options may be set at any time.
    let delay = unsafe {
        mi_option_set(PURGE_DELAY, -1);
        mi_option_get(PURGE_DELAY)
    };
    format!("mimalloc: freed memory kept for reuse (purge delay {delay})")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option index is mimalloc's `purge_delay`: before it is set it holds that option's
    /// default, 10 ms in mimalloc 2 and 1,000 ms in mimalloc 3 (an index off by one would read
    /// another option's default), and once set it reads back −1.
    #[test]
    fn the_purge_delay_is_set_and_reads_back() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: plain integer argument, as in `keep_freed_memory`.
        let before = unsafe { mi_option_get(PURGE_DELAY) };
        assert!([10, 1000, -1].contains(&before), "option {PURGE_DELAY} read {before}: not mimalloc's purge_delay (default 10 or 1,000 ms)");
        assert_eq!(keep_freed_memory(), "mimalloc: freed memory kept for reuse (purge delay -1)");
    }
}
