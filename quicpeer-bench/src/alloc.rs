//! A counting global allocator, for the benchmarks that weigh memory (`bench memory`,
//! `bench relay-memory`, `compare relay-memory`): a binary that makes [`Counting`] its global
//! allocator reads the heap it holds with [`allocated`].
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: quicpeer_bench::alloc::Counting = quicpeer_bench::alloc::Counting;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes the process's allocations hold now (while [`Counting`] is the global allocator).
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

/// Bytes currently allocated on the heap by this process, when [`Counting`] is its global
/// allocator (zero otherwise).
pub fn allocated() -> usize {
    ALLOCATED.load(Ordering::Relaxed)
}

/// The system allocator, counting the bytes it holds for the program: a relaxed atomic add per
/// allocation and free, and nothing else.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is only
// arithmetic on the sizes the caller passes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which is `System.alloc`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract, which is `System.realloc`'s.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
            ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        }
        new
    }
}
