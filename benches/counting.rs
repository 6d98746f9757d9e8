//! A counting global allocator, for figures of a run that noise cannot move: allocations made
//! and the peak of live heap bytes. It forwards every call to the system allocator unchanged and
//! keeps three atomic counters beside it. A benchmark binary installs it with
//! `#[global_allocator] static ALLOCATOR: Counting = Counting;` and reads it with [`measure`].

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// The system allocator, counted.
pub struct Counting;

/// Allocations (and reallocations) made since the process started.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Heap bytes allocated and not yet freed.
static LIVE: AtomicU64 = AtomicU64::new(0);
/// The most `LIVE` has been since the last [`measure`] began.
static PEAK: AtomicU64 = AtomicU64::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes as u64, Relaxed) + bytes as u64;
    PEAK.fetch_max(live, Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes as u64, Relaxed);
}

// SAFETY: every method passes its arguments to `System` unchanged and returns what `System`
// returned; the counters are atomics and allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller keeps `GlobalAlloc::alloc`'s contract for `layout`.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCATIONS.fetch_add(1, Relaxed);
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOCATIONS.fetch_add(1, Relaxed);
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; the caller keeps `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCATIONS.fetch_add(1, Relaxed);
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

/// What a piece of work cost the heap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocations and reallocations it made.
    pub allocations: u64,
    /// The most heap it held at once, above what was live when it began.
    pub peak_bytes: u64,
}

/// Runs `work` and says what it cost the heap. Meaningful only in a binary that installs
/// [`Counting`] as its global allocator, and while nothing but `work` allocates.
pub fn measure<T>(work: impl FnOnce() -> T) -> (T, Usage) {
    let live = LIVE.load(Relaxed);
    PEAK.store(live, Relaxed);
    let allocations = ALLOCATIONS.load(Relaxed);
    let out = work();
    let usage = Usage {
        allocations: ALLOCATIONS.load(Relaxed) - allocations,
        peak_bytes: PEAK.load(Relaxed).saturating_sub(live),
    };
    (out, usage)
}
