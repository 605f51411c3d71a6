//! One relay server in a process of its own, for `compare relay-throughput` and `compare
//! relay-memory` (`quicpeer_bench::compare::circuits`), which start it: its memory is then
//! its own to measure.
//!
//! ```text
//! compare-relay quicpeer|rust-libp2p
//! ```
//!
//! Prints `LISTEN <multiaddr>/p2p/<id>` once it listens; then each line `mem` on stdin is
//! answered with `MEM <resident set bytes> <heap bytes in use>`. It exits when stdin closes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use quicpeer_bench::compare::circuits::{own_rss, serve, Server};

/// Bytes the process's allocations hold now.
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes it holds for the program.
struct Counting;

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

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(server) = Server::from_name(&name) else {
        eprintln!("usage: compare-relay quicpeer|rust-libp2p");
        return ExitCode::from(2);
    };
    // Answers `mem` until stdin closes, then ends the process (the relay loops forever).
    std::thread::spawn(|| {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim() == "mem" {
                let heap = ALLOCATED.load(Ordering::Relaxed);
                println!("MEM {} {heap}", own_rss().unwrap_or(0));
            }
        }
        std::process::exit(0);
    });
    match serve(server, |addr| println!("LISTEN {addr}")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare-relay: {e}");
            ExitCode::FAILURE
        }
    }
}
