//! Releasing the GIL exactly while the loop thread is parked.
//!
//! The loop holds the GIL while it runs callbacks and drives I/O, and drops
//! it only while tokio blocks in the driver waiting for I/O, a timer or a
//! wake-up. tokio calls `before_park`/`after_unpark` around that blocking
//! wait (the runtime is built with them as its park hooks), which is the same
//! place CPython's selector loop releases the GIL (`epoll.poll`). The hooks
//! act only on a thread that is inside [`ParkScope`], i.e. inside
//! `LoopCore._run`, which is entered from Python with the GIL held. When
//! the loop parks in its own epoll instance instead (`loop_poll`), it
//! releases the GIL itself around that wait ([`released`]).

use std::cell::Cell;

thread_local! {
    /// True while this thread runs a loop and holds the GIL.
    static IN_LOOP: Cell<bool> = const { Cell::new(false) };
    /// The thread state saved by `before_park`, restored by `after_unpark`.
    static SAVED: Cell<*mut pyo3::ffi::PyThreadState> = const { Cell::new(std::ptr::null_mut()) };
}

pub fn before_park() {
    if IN_LOOP.get() && SAVED.get().is_null() {
        // SAFETY: IN_LOOP is only set while this thread holds the GIL (inside
        // a pymethod) and no Python code runs while parked; after_unpark
        // restores the state before anything else touches Python.
        SAVED.set(unsafe { pyo3::ffi::PyEval_SaveThread() });
    }
}

pub fn after_unpark() {
    let saved = SAVED.replace(std::ptr::null_mut());
    if !saved.is_null() {
        // SAFETY: `saved` came from PyEval_SaveThread on this same thread.
        unsafe { pyo3::ffi::PyEval_RestoreThread(saved) };
    }
}

/// Run `f` with the GIL released: the loop thread parking in its own epoll
/// instance (see `loop_poll`), where no tokio park hook runs. `f` must not
/// touch Python.
pub fn released<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(*mut pyo3::ffi::PyThreadState);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: the state came from PyEval_SaveThread on this thread.
            unsafe { pyo3::ffi::PyEval_RestoreThread(self.0) };
        }
    }
    // SAFETY: only called by the loop thread inside `_run`, which holds the
    // GIL; `Restore` takes it back before anything else touches Python,
    // even if `f` unwinds.
    let _restore = Restore(unsafe { pyo3::ffi::PyEval_SaveThread() });
    f()
}

/// Marks this thread as running a loop for the guard's lifetime.
pub struct ParkScope {
    previous: bool,
}

impl ParkScope {
    pub fn enter() -> Self {
        ParkScope {
            previous: IN_LOOP.replace(true),
        }
    }
}

impl Drop for ParkScope {
    fn drop(&mut self) {
        // A park always ends with an unpark before block_on returns, but be
        // defensive: never leave this thread without its GIL.
        after_unpark();
        IN_LOOP.set(self.previous);
    }
}
