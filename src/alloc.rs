//! strata's global allocator: glibc's malloc until a command that moves a lot of data switches
//! to mimalloc ([`use_mimalloc`]).
//!
//! Why two: builds, plans and the parser make many small, short-lived allocations, and glibc's
//! free/consolidate paths were a third of a warm build's user time; but the container
//! lifecycle (the client, the monitor re-exec, the container's init) runs a few milliseconds
//! and allocates little, and there mimalloc's start (its arenas, and a fresh page touched whole
//! for each size class) cost more than it saves. Frees go to whichever allocator owns the
//! address (mimalloc knows its own regions), so memory allocated before the switch is freed
//! correctly after it.
//!
//! mimalloc itself starts at the switch, not from a constructor in every process:
//! `.cargo/config.toml` builds it with `MI_PRIM_HAS_PROCESS_ATTACH`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

static MIMALLOC: AtomicBool = AtomicBool::new(false);

/// From now on, new allocations come from mimalloc. Call it while the process has one thread.
pub fn use_mimalloc() {
    // mimalloc starts lazily (see the module comment), and its start is run once but not
    // waited for: a second thread allocating meanwhile would find it half made. Start it
    // here, before any thread can allocate from it.
    // SAFETY: mimalloc's documented entry for starting the process's allocator; idempotent.
    unsafe { libmimalloc_sys::mi_process_init() };
    MIMALLOC.store(true, Ordering::Relaxed);
}

pub struct Strata;

fn owned_by_mimalloc(p: *mut u8) -> bool {
    // SAFETY: a lookup in mimalloc's page map; any address may be asked about.
    unsafe { libmimalloc_sys::mi_is_in_heap_region(p as *const _) }
}

// SAFETY: every block is freed or resized by the allocator that made it.
unsafe impl GlobalAlloc for Strata {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if MIMALLOC.load(Ordering::Relaxed) {
            unsafe { MiMalloc.alloc(layout) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if MIMALLOC.load(Ordering::Relaxed) {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if owned_by_mimalloc(ptr) {
            unsafe { MiMalloc.dealloc(ptr, layout) }
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if owned_by_mimalloc(ptr) {
            unsafe { MiMalloc.realloc(ptr, layout, new_size) }
        } else {
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}
