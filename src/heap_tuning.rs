//! One-time tuning of glibc's heap for a process that runs a loop.
//!
//! glibc returns the free top of its heap to the kernel (`brk` shrink)
//! once it exceeds a trim threshold, 128 KiB until the process first frees
//! a block big enough to have been `mmap`ed; from then on the thresholds
//! follow that block's size (glibc's "dynamic mmap threshold"). A busy
//! stream server allocates and frees 64-256 KiB every message (the read
//! `bytes`, `StreamReader`'s `bytearray` growing and shrinking), so under
//! the start-up thresholds the heap top is trimmed and re-grown over and
//! over, and every re-grown page costs a fault and a zeroing: five to seven
//! faults per request in the streams 100 KiB echo with 16 connections,
//! about a sixth of the server's CPU time.
//!
//! Freeing one 1 MiB block when the first loop is created moves the
//! thresholds where such a process would soon move them anyway (mmap above
//! 1 MiB, trim above 2 MiB), and keeps glibc's own adjustment on, which
//! `mallopt` would switch off. On other C libraries this is a harmless
//! allocation.

use std::sync::Once;

/// The block freed once: above glibc's initial 128 KiB mmap threshold, so
/// it is `mmap`ed and its free raises the thresholds to its size.
const BLOCK: usize = 1 << 20;

pub fn tune_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a plain malloc/free pair; the block is never touched.
        // (`black_box`: the compiler may otherwise drop the unused pair.)
        unsafe { libc::free(std::hint::black_box(libc::malloc(BLOCK))) };
    });
}
