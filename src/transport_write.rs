//! `StreamTransportCore.write` as a hand-parsed `METH_FASTCALL` C method.
//!
//! `transport.write(data)` runs once per response in every protocol
//! server (the Python transport binds `core.write` as its own `write`).
//! A PyO3 method goes through the generic fastcall argument extraction and
//! trampoline, about 100 instructions a call; the one argument is taken
//! here directly (by position, or as `data=` as asyncio's method allows).
//!
//! `is_closing()` is a `METH_NOARGS` C method for the same reason: uvicorn
//! and aiohttp ask it once per request.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyType};

use crate::fastcall::{add_method, finish};
use crate::stream_transport::StreamTransport;

/// # Safety
/// Called by CPython as a `METH_FASTCALL | METH_KEYWORDS` method: the GIL
/// is held, `slf` is live and `args` holds `nargs` positional then
/// `len(kwnames)` keyword argument values, all live.
unsafe extern "C" fn write(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let py = Python::assume_attached();
    let outcome = catch_unwind(AssertUnwindSafe(|| -> PyResult<Py<PyAny>> {
        let slf = Bound::from_borrowed_ptr(py, slf).cast_into::<StreamTransport>()?;
        let nkw = if kwnames.is_null() {
            0
        } else {
            ffi::PyTuple_GET_SIZE(kwnames)
        };
        let by_keyword = nkw == 1
            && nargs == 0
            && Bound::from_borrowed_ptr(py, ffi::PyTuple_GET_ITEM(kwnames, 0))
                .eq(intern!(py, "data"))?;
        if nargs + nkw != 1 || (nkw == 1 && !by_keyword) {
            return Err(PyTypeError::new_err(
                "write() takes exactly one argument: data",
            ));
        }
        StreamTransport::write(&slf, &Bound::from_borrowed_ptr(py, *args))?;
        Ok(py.None())
    }));
    finish(py, "write", outcome)
}

/// # Safety
/// Called by CPython as a `METH_NOARGS` method: the GIL is held and `slf`
/// is live.
unsafe extern "C" fn is_closing(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let py = Python::assume_attached();
    let outcome = catch_unwind(AssertUnwindSafe(|| -> PyResult<Py<PyAny>> {
        let slf = Bound::from_borrowed_ptr(py, slf).cast_into::<StreamTransport>()?;
        let closing = slf.try_borrow()?.closing();
        Ok(PyBool::new(py, closing).to_owned().into_any().unbind())
    }));
    finish(py, "is_closing", outcome)
}

/// Add `write` and `is_closing` to the `StreamTransportCore` type.
pub fn install(transport_type: &Bound<'_, PyType>) -> PyResult<()> {
    add_method(
        transport_type,
        c"is_closing",
        ffi::PyMethodDefPointer {
            PyCFunction: is_closing,
        },
        ffi::METH_NOARGS,
        c"is_closing(): True once the transport is closing or closed.",
    )?;
    add_method(
        transport_type,
        c"write",
        ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: write,
        },
        ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        c"write(data): send data, buffering what the socket does not take.",
    )
}
