//! The calling thread's current `contextvars.Context`, read straight from
//! its `PyThreadState`.
//!
//! Every `call_soon` without `context=` copies the caller's context
//! (`context_pool`), which first has to find it. The C API has no getter
//! that does not copy, so the pool entered and exited a probe context of
//! its own and read the probe's `ctx_prev`: two calls and two bumps of the
//! thread's context version, about 90 instructions a handle. The thread
//! state keeps the current context in a field (`PyThreadState.context`),
//! whose offset is stable within a CPython minor version; reading it is a
//! load.
//!
//! `PyThreadState` is not a stable struct, so the offset per minor version
//! comes from CPython's headers (`offsetof(PyThreadState, context)`: 240 on
//! 3.10, 224 on 3.11, 208 on 3.12 and 3.13), and [`context_offset`] checks
//! it against the running interpreter once, by entering two contexts of its
//! own and seeing each appear at that offset and leave it. Where the check
//! fails (another version, another build), the caller keeps the probe.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// `offsetof(PyThreadState, context)` in the headers of each supported
/// CPython minor version.
fn header_offset(py: Python<'_>) -> Option<usize> {
    let version = py.version_info();
    match (version.major, version.minor) {
        (3, 10) => Some(240),
        (3, 11) => Some(224),
        (3, 12) | (3, 13) => Some(208),
        _ => None,
    }
}

/// The offset of the current context in the thread state, if the running
/// interpreter verifiably keeps it where its headers say (checked once).
pub fn context_offset(py: Python<'_>) -> Option<usize> {
    static OFFSET: PyOnceLock<Option<usize>> = PyOnceLock::new();
    *OFFSET.get_or_init(py, || {
        let offset = header_offset(py)?;
        // SAFETY: the GIL is held. The offset is inside `PyThreadState` on
        // the versions `header_offset` names (it is the field's own); the
        // contexts are ours, entered and exited in order on this thread.
        unsafe { verify(py, offset) }.then_some(offset)
    })
}

/// Whether the pointer at `offset` in the thread state follows two
/// contexts entered one inside the other, and goes back when they exit.
///
/// # Safety
/// The GIL must be held and `offset` must lie inside `PyThreadState`.
unsafe fn verify(py: Python<'_>, offset: usize) -> bool {
    let (Some(outer), Some(inner)) = (
        Bound::from_owned_ptr_or_opt(py, ffi::PyContext_New()),
        Bound::from_owned_ptr_or_opt(py, ffi::PyContext_New()),
    ) else {
        ffi::PyErr_Clear();
        return false;
    };
    let before = current_at(offset);
    if before == outer.as_ptr() || before == inner.as_ptr() {
        return false;
    }
    if ffi::PyContext_Enter(outer.as_ptr()) != 0 {
        ffi::PyErr_Clear();
        return false;
    }
    let mut seen_outer = current_at(offset) == outer.as_ptr();
    let mut seen_inner = false;
    if ffi::PyContext_Enter(inner.as_ptr()) == 0 {
        seen_inner = current_at(offset) == inner.as_ptr();
        ffi::PyContext_Exit(inner.as_ptr());
        seen_outer &= current_at(offset) == outer.as_ptr();
    }
    ffi::PyContext_Exit(outer.as_ptr());
    ffi::PyErr_Clear();
    // The thread had no context before (NULL) unless it used contextvars;
    // either way the field must hold it again.
    seen_outer && seen_inner && current_at(offset) == before
}

/// The calling thread's current context (borrowed; NULL if the thread has
/// never had one), read at `offset` in its thread state.
///
/// # Safety
/// The GIL must be held, and `offset` must lie inside `PyThreadState` (as
/// [`context_offset`]'s does).
pub unsafe fn current_at(offset: usize) -> *mut ffi::PyObject {
    let state = ffi::PyThreadState_Get().cast::<u8>();
    *state.add(offset).cast::<*mut ffi::PyObject>()
}
