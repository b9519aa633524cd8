//! Copies of the caller's `contextvars.Context` made without allocating
//! one per call: not made at all until someone can see them, or, where the
//! thread state's layout is unknown, made from the `Context` objects of
//! handles the loop has recycled.
//!
//! asyncio runs a callback scheduled without `context=` in a copy of the
//! caller's context, taken when it is scheduled: a new `Context` object
//! sharing the caller's (immutable) mapping of variables. CPython keeps only
//! 255 freed contexts for reuse, so a burst of `call_soon_threadsafe` from
//! another thread (tens of thousands of handles per GIL slice) allocates and
//! frees every one, linking and unlinking it in the cyclic GC's lists:
//! about a quarter of that row's time, which rloop does not pay because it
//! skips the copy (its callbacks share one context).
//!
//! Where the copy is made at once, it is the same: a `Context` of the
//! exact built-in type whose mapping is the caller's current one, not
//! entered, with no weak references, held by nothing but the handle. It is
//! just not always new:
//! when a recycled handle's context is held by the handle alone, the loop
//! empties it (drops its mapping) and keeps it; the next copy takes it and
//! points it at the caller's mapping. No one can tell the difference: with a
//! single reference, no weak reference and no mapping, the object is
//! unreachable from Python until it is handed out again.
//!
//! Where the thread state's context field is known (`thread_context`), the
//! copy is not even made at first: the handle keeps the caller's mapping
//! itself (an "unmade" copy, told apart from a `Context` by its type,
//! CPython's `hamt`). A callback that nothing else can see runs in the
//! loop's batch context pointed at that mapping (`batch_context`), so for
//! most callbacks no `Context` object is ever made; the first time anyone
//! can see the copy (`get_context`, a shared handle running, a failure)
//! it is made ([`made_from`]) and kept by the handle from then on. A burst
//! of `call_soon_threadsafe` then allocates 80 bytes less per call, which
//! is fewer fresh pages to fault in.
//!
//! Reading the caller's mapping without a copy takes CPython's context
//! layout (`PyContext` is not a public struct): it has been the same from
//! 3.7 to 3.13, and [`layout_checked`] verifies it against the running
//! interpreter once; where it does not match, every copy is
//! `PyContext_CopyCurrent` as before. The current context is read from the
//! thread state where `thread_context` has verified where it lies, and
//! found otherwise by entering a probe context of our own, whose
//! `ctx_prev` then points at it.

use std::mem::offset_of;
use std::os::raw::c_int;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::handles::track_if_untracked;
use crate::thread_context;

/// CPython's `struct _pycontextobject` (Include/internal/pycore_context.h).
#[repr(C)]
struct RawContext {
    ob_base: ffi::PyObject,
    /// The context that was current when this one was entered (borrowed).
    ctx_prev: *mut ffi::PyObject,
    /// The variables: an immutable HAMT, shared by copies.
    ctx_vars: *mut ffi::PyObject,
    ctx_weakreflist: *mut ffi::PyObject,
    ctx_entered: c_int,
}

/// The contexts kept for reuse, and the probe used to find the current one.
///
/// Pooled contexts are emptied and untracked by the GC; each is tracked
/// again before the pool lets go of it (CPython's context dealloc unlinks
/// the object from the GC's list unconditionally).
pub struct ContextPool {
    contexts: Vec<Py<PyAny>>,
    /// Entered and exited at once to read the current context where the
    /// thread state's layout is not known (`context_slot`); `None` where
    /// the context layout check failed (the pool then stays empty).
    probe: Option<Py<PyAny>>,
    /// Where the thread state keeps the current context, if verified
    /// (`thread_context`): read there instead of through the probe.
    context_slot: Option<usize>,
}

impl ContextPool {
    pub fn new(py: Python<'_>) -> ContextPool {
        let probe = if layout_checked(py) {
            // SAFETY: the GIL is held; PyContext_New returns a new reference
            // or NULL with an exception set.
            unsafe { Bound::from_owned_ptr_or_opt(py, ffi::PyContext_New()) }.map(Bound::unbind)
        } else {
            None
        };
        let context_slot = probe
            .as_ref()
            .and_then(|_| thread_context::context_offset(py));
        ContextPool {
            contexts: Vec::new(),
            probe,
            context_slot,
        }
    }

    /// A copy of the caller's current context that allocates nothing and
    /// runs no Python code: unmade (the mapping, a new reference; see the
    /// module doc) where the thread state's context field is known, else
    /// made from a pooled context. None when the thread has no context yet,
    /// the pool is empty or the layout is unknown: the caller then copies
    /// with [`copy_current`], after letting go of the pool (that allocates,
    /// and a collection it triggers may run Python code).
    pub fn copy(&mut self, py: Python<'_>) -> Option<Py<PyAny>> {
        match self.context_slot {
            // SAFETY: the GIL is held (`py`); the offset was verified by
            // `context_offset`, the context layout by `layout_checked` (the
            // slot is only set when the probe is); the mapping is live while
            // the current context holds it, and we take a reference of our
            // own.
            Some(offset) => unsafe {
                let vars = vars_of(thread_context::current_at(offset));
                Bound::from_borrowed_ptr_or_opt(py, vars).map(Bound::unbind)
            },
            None => self.take_pooled(),
        }
    }

    /// A copy made from a pooled context, the current mapping found through
    /// the probe (see [`copy`](Self::copy)).
    fn take_pooled(&mut self) -> Option<Py<PyAny>> {
        if let (Some(probe), false) = (&self.probe, self.contexts.is_empty()) {
            // SAFETY: the GIL is held; the layout was verified; the probe is
            // ours and is exited before anything else can run.
            let vars = unsafe { current_vars(probe.as_ptr()) };
            if !vars.is_null() {
                let context = self.contexts.pop().expect("checked above");
                // SAFETY: a pooled context has no variables and no other
                // reference; it now owns a new reference to the mapping. It
                // stays untracked: the handle that takes it tracks it before
                // letting go (`Callback`'s drop).
                unsafe {
                    ffi::Py_INCREF(vars);
                    (*context.as_ptr().cast::<RawContext>()).ctx_vars = vars;
                }
                return Some(context);
            }
        }
        None
    }

    /// Whether freed contexts are kept for [`take_pooled`](Self::take_pooled):
    /// only where copies are made at once (the layout is known but not the
    /// thread state's). With unmade copies nothing would ever take them.
    fn pools(&self) -> bool {
        self.probe.is_some() && self.context_slot.is_none()
    }

    /// Keep `context` (a handle's, being let go) for reuse if nothing else
    /// can see it, up to `cap` contexts. Returns what the caller must drop
    /// once the pool is no longer borrowed (dropping a mapping may run
    /// Python code): the context's variables if it was kept, else the
    /// context itself, tracked by the GC as CPython expects of a context
    /// being released.
    pub fn give_back(&mut self, py: Python<'_>, context: Py<PyAny>, cap: usize) -> Py<PyAny> {
        if is_unmade(&context) {
            // A mapping: nothing to keep.
            return context;
        }
        let ptr = context.as_ptr();
        // SAFETY: the GIL is held (`py`); `ptr` is live (we hold
        // `context`); the layout was checked (`pools` implies the probe).
        unsafe {
            if self.pools() && self.contexts.len() < cap {
                // `private_vars` reads the fields only once the type is
                // known to be the built-in `Context`.
                let vars = private_vars(ptr);
                let raw = ptr.cast::<RawContext>();
                if !vars.is_null() && (*raw).ctx_prev.is_null() {
                    (*raw).ctx_vars = ptr::null_mut();
                    if ffi::PyObject_GC_IsTracked(ptr) != 0 {
                        ffi::PyObject_GC_UnTrack(ptr.cast());
                    }
                    self.contexts.push(context);
                    return Bound::from_owned_ptr(py, vars).unbind();
                }
            }
            track_if_untracked(ptr);
        }
        context
    }

    /// Keep at most `cap` contexts (the spare handles' limit); the caller
    /// drops the rest once the pool is no longer borrowed.
    pub fn trim(&mut self, cap: usize) -> Vec<Py<PyAny>> {
        if self.contexts.len() <= cap {
            return Vec::new();
        }
        let surplus = self.contexts.split_off(cap);
        for context in &surplus {
            // SAFETY: the GIL is held; the context is live and ours.
            unsafe { track_if_untracked(context.as_ptr()) };
        }
        surplus
    }

    /// Whether copies avoid a new `Context` per call, unmade or pooled
    /// (the layout check passed).
    pub fn reuses(&self) -> bool {
        self.probe.is_some()
    }

    /// Where the thread state keeps the current context, if both layouts
    /// checked out (`thread_context`); the copies read it there.
    pub fn context_slot(&self) -> Option<usize> {
        self.context_slot
    }

    pub fn len(&self) -> usize {
        self.contexts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }
}

impl Drop for ContextPool {
    fn drop(&mut self) {
        for context in &self.contexts {
            // SAFETY: the pool is dropped with its loop, with the GIL held
            // (the loop's dealloc or the GC's clear).
            unsafe { track_if_untracked(context.as_ptr()) };
        }
    }
}

/// A new copy of the current `contextvars` context, as `Handle` takes when
/// `context=None`.
pub fn copy_current(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: the GIL is held; PyContext_CopyCurrent returns a new reference
    // or NULL with an exception set.
    unsafe { Ok(Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())?.unbind()) }
}

/// The type of a context's mapping (CPython's `hamt`), recorded by
/// [`layout_checked`] when the layout checks out; null before or otherwise.
static HAMT_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(ptr::null_mut());

/// Whether a handle's context is an unmade copy: a mapping, not a
/// `Context` (see the module doc). Users cannot make one: a `context=`
/// argument is whatever they pass, and `hamt` objects are not exposed.
pub fn is_unmade(context: &Py<PyAny>) -> bool {
    // SAFETY: `context` is a live object (we hold a reference).
    unsafe { ffi::Py_TYPE(context.as_ptr()) == HAMT_TYPE.load(Ordering::Relaxed) }
}

/// The `Context` an unmade copy stands for: a new one holding `vars`.
pub fn made_from(py: Python<'_>, vars: &Py<PyAny>) -> PyResult<Py<PyAny>> {
    // SAFETY: the GIL is held (`py`); PyContext_New returns a new reference
    // or NULL with an exception set; the new context is ours alone and not
    // entered, so its (empty) mapping can be swapped for `vars` (live: the
    // caller holds it), and the old one is dropped at once (an empty
    // mapping runs no Python code when freed).
    unsafe {
        let context = Bound::from_owned_ptr_or_err(py, ffi::PyContext_New())?;
        let old = swap_vars(context.as_ptr(), vars.as_ptr());
        drop(Bound::from_owned_ptr_or_opt(py, old));
        Ok(context.unbind())
    }
}

/// The variables of the calling thread's current context (borrowed), or
/// NULL if it has none yet (a thread that never used contextvars; the
/// caller then copies with `PyContext_CopyCurrent`, which creates it).
///
/// # Safety
/// The GIL must be held, `probe` must be a `Context` that is not entered,
/// and [`layout_checked`] must have returned true.
unsafe fn current_vars(probe: *mut ffi::PyObject) -> *mut ffi::PyObject {
    if ffi::PyContext_Enter(probe) != 0 {
        ffi::PyErr_Clear();
        return ptr::null_mut();
    }
    let vars = vars_of((*probe.cast::<RawContext>()).ctx_prev);
    if ffi::PyContext_Exit(probe) != 0 {
        ffi::PyErr_Clear();
    }
    // The current context stays alive across the probe: the thread state
    // holds it.
    vars
}

/// The variables of `context` (borrowed), NULL for no context.
///
/// # Safety
/// The GIL must be held; `context` must be NULL or a live `Context`, and
/// [`layout_checked`] must have returned true.
pub unsafe fn vars_of(context: *mut ffi::PyObject) -> *mut ffi::PyObject {
    if context.is_null() {
        ptr::null_mut()
    } else {
        (*context.cast::<RawContext>()).ctx_vars
    }
}

/// The variables of `context` (borrowed) if it is a private copy: exactly a
/// `Context`, not entered, with no weak reference and no other reference
/// than the caller's; else NULL. Nothing but its holder can ever see such a
/// context (see `batch_context`).
///
/// # Safety
/// The GIL must be held; `context` must be a live object, and
/// [`layout_checked`] must have returned true.
pub unsafe fn private_vars(context: *mut ffi::PyObject) -> *mut ffi::PyObject {
    if ffi::Py_REFCNT(context) != 1 || ffi::Py_TYPE(context) != &raw mut ffi::PyContext_Type {
        return ptr::null_mut();
    }
    let raw = context.cast::<RawContext>();
    if (*raw).ctx_entered != 0 || !(*raw).ctx_weakreflist.is_null() {
        return ptr::null_mut();
    }
    (*raw).ctx_vars
}

/// Point `context` at `vars` (a new reference is taken; NULL empties it)
/// and hand back its old variables, owned (NULL if it had none), for the
/// caller to drop when it may run Python code.
///
/// # Safety
/// As [`vars_of`]; `context` must be a `Context` that nothing else may see
/// (a private one, not entered), since its variables change under it.
pub unsafe fn swap_vars(
    context: *mut ffi::PyObject,
    vars: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    if !vars.is_null() {
        ffi::Py_INCREF(vars);
    }
    std::mem::replace(&mut (*context.cast::<RawContext>()).ctx_vars, vars)
}

/// Whether the running interpreter's `Context` has the layout
/// [`RawContext`] describes, checked once: the type's size and weak
/// reference offset, and the fields of a fresh context before, while and
/// after it is entered.
fn layout_checked(py: Python<'_>) -> bool {
    static CHECKED: PyOnceLock<bool> = PyOnceLock::new();
    *CHECKED.get_or_init(py, || {
        // SAFETY: the GIL is held; the type object is static, and the
        // fields of `context` are only read once its size and type match.
        unsafe {
            let ty = &raw mut ffi::PyContext_Type;
            if (*ty).tp_basicsize != std::mem::size_of::<RawContext>() as ffi::Py_ssize_t
                || (*ty).tp_weaklistoffset
                    != offset_of!(RawContext, ctx_weakreflist) as ffi::Py_ssize_t
            {
                return false;
            }
            let Some(context) = Bound::from_owned_ptr_or_opt(py, ffi::PyContext_New()) else {
                ffi::PyErr_Clear();
                return false;
            };
            let Some(outer) = Bound::from_owned_ptr_or_opt(py, ffi::PyContext_New()) else {
                ffi::PyErr_Clear();
                return false;
            };
            let raw = context.as_ptr().cast::<RawContext>();
            let vars = (*raw).ctx_vars;
            let fresh = ffi::Py_TYPE(context.as_ptr()) == ty
                && (*raw).ctx_prev.is_null()
                && (*raw).ctx_weakreflist.is_null()
                && (*raw).ctx_entered == 0
                && !vars.is_null()
                && std::ffi::CStr::from_ptr((*ffi::Py_TYPE(vars)).tp_name) == c"hamt";
            if !fresh {
                return false;
            }
            // Entered inside `outer`: `ctx_prev` must point at `outer`.
            if ffi::PyContext_Enter(outer.as_ptr()) != 0 {
                ffi::PyErr_Clear();
                return false;
            }
            let mut entered_ok = false;
            if ffi::PyContext_Enter(context.as_ptr()) == 0 {
                entered_ok = (*raw).ctx_entered == 1 && (*raw).ctx_prev == outer.as_ptr();
                ffi::PyContext_Exit(context.as_ptr());
            }
            ffi::PyContext_Exit(outer.as_ptr());
            ffi::PyErr_Clear();
            let ok = entered_ok
                && (*raw).ctx_entered == 0
                && (*raw).ctx_prev.is_null()
                && (*raw).ctx_vars == vars;
            if ok {
                HAMT_TYPE.store(ffi::Py_TYPE(vars), Ordering::Relaxed);
            }
            ok
        }
    })
}
