//! Hand-written `METH_FASTCALL` entry points for `call_soon` and
//! `call_soon_threadsafe`.
//!
//! These are the hottest methods of the loop: besides user code, asyncio's C
//! `Future` calls `loop.call_soon(callback, future, context=ctx)` for every
//! completion. PyO3's generic `*args`/keyword extraction and trampoline cost
//! about 150 instructions a call (a third of scheduling a callback); the
//! signature here is fixed and simple, so it is parsed by hand. The
//! descriptors replace nothing PyO3 generates: `LoopCore` has no
//! `#[pymethods]` of these names, `install` adds them to the type.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple, PyType};

use crate::handles::Handle;
use crate::loop_core::LoopCore;

type Scheduler = fn(
    &Bound<'_, LoopCore>,
    Bound<'_, PyAny>,
    Bound<'_, PyTuple>,
    Option<Bound<'_, PyAny>>,
) -> PyResult<Py<Handle>>;

/// `name(callback, *args, context=None)` parsed from a fastcall frame.
///
/// # Safety
/// The GIL is held; `slf` is a live object; `args` holds `nargs` positional
/// then `len(kwnames)` keyword argument values, all live (CPython's
/// `METH_FASTCALL | METH_KEYWORDS` calling convention).
unsafe fn schedule_fastcall(
    name: &str,
    scheduler: Scheduler,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let py = Python::assume_attached();
    let outcome = catch_unwind(AssertUnwindSafe(|| -> PyResult<Py<Handle>> {
        let slf = Bound::from_borrowed_ptr(py, slf).cast_into::<LoopCore>()?;
        let nargs = nargs as usize;
        let arg = |i: usize| Bound::from_borrowed_ptr(py, *args.add(i));
        let mut callback = (nargs > 0).then(|| arg(0));
        let rest = positional_tuple(py, args, nargs)?;
        let mut context = None;
        if !kwnames.is_null() {
            let kwnames = Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>();
            for (i, kw) in kwnames.iter().enumerate() {
                let kw = kw.cast_into::<PyString>()?;
                // Keyword names are interned: compare pointers before text.
                let slot = if kw.is(intern!(py, "context")) {
                    &mut context
                } else {
                    match kw.to_str()? {
                        "context" => &mut context,
                        "callback" => &mut callback,
                        _ => {
                            return Err(PyTypeError::new_err(format!(
                                "{name}() got an unexpected keyword argument '{kw}'"
                            )))
                        }
                    }
                };
                if slot.replace(arg(nargs + i)).is_some() {
                    return Err(PyTypeError::new_err(format!(
                        "{name}() got multiple values for argument '{kw}'"
                    )));
                }
            }
        }
        let Some(callback) = callback else {
            return Err(PyTypeError::new_err(format!(
                "{name}() missing 1 required positional argument: 'callback'"
            )));
        };
        scheduler(&slf, callback, rest, context)
    }));
    match outcome {
        Ok(Ok(handle)) => handle.into_ptr(),
        Ok(Err(err)) => {
            err.restore(py);
            std::ptr::null_mut()
        }
        Err(_) => {
            PanicException::new_err(format!("panic in {name}")).restore(py);
            std::ptr::null_mut()
        }
    }
}

/// `args[1..nargs]` as a tuple (the callback's own arguments).
///
/// # Safety
/// As for `schedule_fastcall`: the GIL is held and `args` holds `nargs` live
/// objects.
unsafe fn positional_tuple<'py>(
    py: Python<'py>,
    args: *const *mut ffi::PyObject,
    nargs: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    let len = nargs.saturating_sub(1);
    // PyTuple_New(0) is the shared empty tuple; otherwise a new tuple whose
    // slots we fill with new references, as PyTuple_SET_ITEM expects.
    let tuple = ffi::PyTuple_New(len as ffi::Py_ssize_t);
    let tuple = Bound::from_owned_ptr_or_err(py, tuple)?;
    for i in 0..len {
        let item = *args.add(i + 1);
        ffi::Py_INCREF(item);
        ffi::PyTuple_SET_ITEM(tuple.as_ptr(), i as ffi::Py_ssize_t, item);
    }
    Ok(tuple.cast_into_unchecked::<PyTuple>())
}

unsafe extern "C" fn call_soon(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: called by CPython with the fastcall convention (see above).
    unsafe {
        schedule_fastcall(
            "call_soon",
            LoopCore::call_soon_impl,
            slf,
            args,
            nargs,
            kwnames,
        )
    }
}

unsafe extern "C" fn call_soon_threadsafe(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: called by CPython with the fastcall convention (see above).
    unsafe {
        schedule_fastcall(
            "call_soon_threadsafe",
            LoopCore::call_soon_threadsafe_impl,
            slf,
            args,
            nargs,
            kwnames,
        )
    }
}

/// Add `call_soon` and `call_soon_threadsafe` to the `LoopCore` type.
pub fn install(py: Python<'_>, loop_type: &Bound<'_, PyType>) -> PyResult<()> {
    let methods: [(
        &'static std::ffi::CStr,
        ffi::PyCFunctionFastWithKeywords,
        &'static std::ffi::CStr,
    ); 2] = [
        (
            c"call_soon",
            call_soon,
            c"call_soon($self, callback, *args, context=None)\n--\n\n\
              Arrange for a callback to be called as soon as possible.",
        ),
        (
            c"call_soon_threadsafe",
            call_soon_threadsafe,
            c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\n\
              Like call_soon(), but thread-safe.",
        ),
    ];
    for (name, function, doc) in methods {
        // The definition must outlive the type: leaked once per import.
        let def = Box::leak(Box::new(ffi::PyMethodDef {
            ml_name: name.as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: function,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: doc.as_ptr(),
        }));
        // SAFETY: the GIL is held; `loop_type` is a live type object and
        // `def` lives forever; a NULL result has an exception set.
        let descr = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyDescr_NewMethod(loop_type.as_ptr().cast(), def),
            )?
        };
        loop_type.setattr(
            name.to_str()
                .map_err(|e| PyValueError::new_err(e.to_string()))?,
            descr,
        )?;
    }
    Ok(())
}
