//! One `contextvars.Context` entered across a run of callbacks whose own
//! contexts are private copies, instead of an enter and an exit per
//! callback.
//!
//! asyncio runs a callback scheduled without `context=` in a copy of the
//! scheduler's context, and `Handle._run` enters and leaves that copy
//! around the call: two C calls and two bumps of the thread's context
//! version, about 90 instructions of a ~1,400-instruction `call_soon`. When
//! nothing but the ready queue holds the handle, and nothing but the handle
//! holds its copy (`handles::private_call`), no one can ever tell which of
//! two contexts with the same variables the callback ran in: not through
//! the handle (`get_context()` needs a reference to it), not through the
//! copy. So such a callback may run in the loop's own private context set
//! to the copy's variables, and that context may stay entered for the next
//! such callback when it has the same variables: the common case, since
//! copies share their mapping of variables (the empty one, or that of the
//! task or thread that scheduled them).
//!
//! What keeps it exact:
//! - Other variables: the context is exited, pointed at them and entered
//!   again. Entering bumps the thread's context version, which
//!   `ContextVar`'s cache of its last lookup is keyed on.
//! - A callback that sets a variable changes the entered context's mapping;
//!   the next callback has other variables then, so it gets a fresh enter.
//! - A callback that keeps a reference to the context (a `Token` from
//!   `ContextVar.set` does) makes it escape: it is exited and becomes the
//!   handle's context, in which nothing else runs, as with asyncio's copy.
//!   The next callback gets a new one.
//! - A callback that fails hands its handle to the exception handler, so
//!   the context becomes the handle's too: the handler finds there what the
//!   callback set (3.12+ runs it in `handle.get_context()`).
//! - Anything else the loop runs (other ready items, the exception handler,
//!   the next iteration's I/O) runs after the context is exited, in the
//!   loop's own context, as in asyncio.
//! - A callback that leaves a context of its own entered fails when the
//!   batch context is exited, with the error `Context.run` would give.
//!
//! Only dropping a callback's arguments after it ran (the loop recycles its
//! handle) happens with the context still entered, so a `__del__` there
//! sees the callback's variables; the cyclic GC runs finalizers in
//! whatever context is current anyway.

use pyo3::ffi;
use pyo3::prelude::*;

use crate::context_pool;
use crate::handles::{self, Handle};
use crate::thread_context;

/// The loop's private context and whether it is entered now.
pub struct BatchContext {
    /// Where the thread state keeps the current context.
    slot: usize,
    /// Ours alone, plus the thread state's reference while entered.
    context: Option<Py<PyAny>>,
    entered: bool,
}

impl BatchContext {
    /// A batch context, reusing `kept` (from [`BatchContext::finish`]), or
    /// None where the layouts of `Context` and of the thread state are not
    /// verified (no `slot`, see `ContextPool::context_slot`): callbacks then
    /// enter their own contexts.
    pub fn new(slot: Option<usize>, kept: Option<Py<PyAny>>) -> Option<BatchContext> {
        Some(BatchContext {
            slot: slot?,
            context: kept,
            entered: false,
        })
    }

    /// Run a ready handle: in the batch context if it may (see the module
    /// doc), else in its own after leaving the batch context.
    pub fn run(&mut self, handle: &Bound<'_, Handle>) -> PyResult<()> {
        let py = handle.py();
        let Some(call) = handles::private_call(handle) else {
            self.leave(py)?;
            return Handle::run(handle);
        };
        self.enter_with(py, call.vars)?;
        let called = handles::call(py, &call.func, &call.args);
        // A failure to exit (a context the callback left entered) outranks
        // the callback's own result, as in `Context.run`.
        let result = self.check_after_call(py, handle).and(called);
        match result {
            Ok(()) => Ok(()),
            Err(err) => {
                // The exception handler runs in the loop's context, and is
                // handed the handle: from here on, the handle's context is
                // the one its callback ran in (3.12+ runs the handler in
                // it).
                self.give_to(py, handle)?;
                let (func, args) = (call.func.clone_ref(py), call.args.clone_ref(py));
                handles::report_failure(handle, func, args, err)
            }
        }
    }

    /// Exit the batch context if it is entered (before anything but a
    /// private callback runs).
    pub fn leave(&mut self, py: Python<'_>) -> PyResult<()> {
        if !self.entered {
            return Ok(());
        }
        self.entered = false;
        let context = self.context.as_ref().expect("entered implies a context");
        // SAFETY: the GIL is held; the context is live (ours) and was
        // entered on this thread by `enter_with`.
        if unsafe { ffi::PyContext_Exit(context.as_ptr()) } != 0 {
            // Still entered, under a context someone left entered: give it
            // up to the thread state's chain.
            self.context = None;
            return Err(PyErr::fetch(py));
        }
        Ok(())
    }

    /// Leave, and hand back the context for the next batch, emptied (its
    /// variables keep nothing alive between batches).
    pub fn finish(mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.leave(py)?;
        let Some(context) = self.context.take() else {
            return Ok(None);
        };
        // SAFETY: the GIL is held; not entered, and the reference count says
        // nothing else holds it (else it escaped and is not ours to empty).
        unsafe {
            if ffi::Py_REFCNT(context.as_ptr()) != 1 {
                return Ok(None);
            }
            let old = context_pool::swap_vars(context.as_ptr(), std::ptr::null_mut());
            drop(Bound::from_owned_ptr_or_opt(py, old));
        }
        Ok(Some(context))
    }

    /// Make the batch context the current one, holding `vars`.
    fn enter_with(&mut self, py: Python<'_>, vars: *mut ffi::PyObject) -> PyResult<()> {
        if self.entered {
            let context = self.context.as_ref().expect("entered implies a context");
            // SAFETY: the GIL is held; the layout was checked (`new`).
            if unsafe { context_pool::vars_of(context.as_ptr()) } == vars {
                return Ok(());
            }
            self.leave(py)?;
        }
        let context = match &self.context {
            Some(context) => context,
            // SAFETY: the GIL is held; a new reference or NULL with an
            // exception set.
            None => self.context.insert(unsafe {
                Bound::from_owned_ptr_or_err(py, ffi::PyContext_New())?.unbind()
            }),
        };
        // SAFETY: the GIL is held; the context is ours alone and not
        // entered; `vars` is live (the handle's copy holds it).
        let old = unsafe { context_pool::swap_vars(context.as_ptr(), vars) };
        // Dropped before entering: anything it runs runs in the loop's
        // context. It cannot reach ours.
        // SAFETY: `old` is an owned reference or NULL.
        drop(unsafe { Bound::from_owned_ptr_or_opt(py, old) });
        let context = self.context.as_ref().expect("set above");
        // SAFETY: the GIL is held; the context is live and not entered.
        if unsafe { ffi::PyContext_Enter(context.as_ptr()) } != 0 {
            return Err(PyErr::fetch(py));
        }
        self.entered = true;
        Ok(())
    }

    /// After a callback: the batch context must still be current (else
    /// exit it, which fails as `Context.run` would) and private (else it
    /// escaped: it becomes `handle`'s, see [`BatchContext::give_to`]).
    fn check_after_call(&mut self, py: Python<'_>, handle: &Bound<'_, Handle>) -> PyResult<()> {
        let context = self
            .context
            .as_ref()
            .expect("entered for the call")
            .as_ptr();
        // SAFETY: the GIL is held; `slot` was verified; the context is live.
        let (current, refcnt) = unsafe {
            (
                thread_context::current_at(self.slot),
                ffi::Py_REFCNT(context),
            )
        };
        if current != context {
            return self.leave(py);
        }
        // Ours and the thread state's.
        if refcnt != 2 {
            self.give_to(py, handle)?;
        }
        Ok(())
    }

    /// Leave, and hand the context over to `handle`, whose callback just
    /// ran in it: it is the handle's context from now on, as asyncio's copy
    /// would be, and the next callback gets a new one.
    fn give_to(&mut self, py: Python<'_>, handle: &Bound<'_, Handle>) -> PyResult<()> {
        self.leave(py)?;
        if let Some(context) = self.context.take() {
            drop(handles::adopt_context(handle, context));
        }
        Ok(())
    }
}

impl Drop for BatchContext {
    fn drop(&mut self) {
        if self.entered {
            // Only on a path that skipped `finish` (a panic): leave the
            // thread's context as it was, whatever the cost.
            // SAFETY: the GIL is held wherever a batch runs.
            unsafe {
                if let Some(context) = &self.context {
                    if ffi::PyContext_Exit(context.as_ptr()) != 0 {
                        ffi::PyErr_Clear();
                    }
                }
            }
        }
    }
}
