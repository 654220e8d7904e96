//! A counting global allocator: per-thread live and peak bytes, so a check can assert that a
//! decoder stays within its documented memory limit (libFuzzer's `-rss_limit_mb` only sees the
//! whole process, far too coarsely).
//!
//! It is installed as the global allocator of every binary that links this crate (the fuzz
//! targets and the replay test). Counters are thread-local: other threads (the test harness)
//! do not disturb a measurement.

// GlobalAlloc is an unsafe trait; this file only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

static USED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grow(n: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(n);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrink(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(n)));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters are plain thread-local cells that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        USED.store(true, Ordering::Relaxed);
        grow(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        USED.store(true, Ordering::Relaxed);
        grow(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a fresh allocation, then the old one freed: the peak includes both,
        // as it does when realloc has to copy.
        grow(new_size);
        shrink(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the peak number of bytes this thread had allocated
/// at any moment during `f`, above what was live when it started.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get);
    assert!(
        USED.load(Ordering::Relaxed),
        "knock_fuzz::alloc::Counting is not the global allocator: memory limits would not be checked"
    );
    (r, peak.saturating_sub(start))
}

/// Panics when `f` allocates more than `limit` bytes at once (`what` names the decoder).
pub fn within<R>(what: &str, limit: usize, f: impl FnOnce() -> R) -> R {
    let (r, peak) = peak_during(f);
    assert!(
        peak <= limit,
        "{what} allocated {peak} bytes at its peak, over its documented limit of {limit}"
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_peak_of_this_thread() {
        let (_, peak) = peak_during(|| {
            let a = vec![0u8; 10_000];
            drop(a);
            let b = vec![0u8; 4_000];
            b.len()
        });
        assert!((10_000..11_000).contains(&peak), "{peak}");
        let (_, none) = peak_during(|| 1 + 1);
        assert_eq!(none, 0);
    }

    #[test]
    #[should_panic(expected = "over its documented limit")]
    fn within_panics_over_the_limit() {
        within("test", 100, || vec![0u8; 1000].len());
    }
}
