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
//!
//! The same methods (with `get_write_buffer_size()` and `close()`) are also
//! method descriptors of the Python transport class, `_transports.SocketTransport`
//! ([`_install_core_forwarders`]), forwarding to the core the transport
//! keeps in its `_core` slot. Bound as instance attributes instead
//! (`self.write = core.write`), `transport.write` cannot be specialised by
//! CPython's `LOAD_METHOD`/`LOAD_ATTR` (an instance attribute shadowing a
//! class one): every call took the generic lookup, ~160 instructions, a
//! twentieth of a 1 KiB echo request. A method descriptor of the class is
//! specialised, and so is the call; the core is one load at the slot's
//! offset.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyInt, PyType};

use crate::fastcall::{add_method, finish};
use crate::stream_transport::StreamTransport;

/// `write(data)` on the core `resolve` finds from `slf`.
///
/// # Safety
/// Called by CPython as a `METH_FASTCALL | METH_KEYWORDS` method: the GIL
/// is held, `slf` is live and `args` holds `nargs` positional then
/// `len(kwnames)` keyword argument values, all live; `resolve` accepts
/// `slf`.
unsafe fn write_entry(
    resolve: for<'py> unsafe fn(
        Python<'py>,
        *mut ffi::PyObject,
    ) -> PyResult<Bound<'py, StreamTransport>>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let py = Python::assume_attached();
    let outcome = catch_unwind(AssertUnwindSafe(|| -> PyResult<Py<PyAny>> {
        let core = resolve(py, slf)?;
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
        StreamTransport::write(&core, &Bound::from_borrowed_ptr(py, *args))?;
        Ok(py.None())
    }));
    finish(py, "write", outcome)
}

/// The core itself (`self` of a `StreamTransportCore` method).
///
/// # Safety
/// The GIL is held and `slf` is live.
unsafe fn core_itself<'py>(
    py: Python<'py>,
    slf: *mut ffi::PyObject,
) -> PyResult<Bound<'py, StreamTransport>> {
    Ok(Bound::from_borrowed_ptr(py, slf).cast_into::<StreamTransport>()?)
}

/// `StreamTransportCore.write(data)`.
///
/// # Safety
/// As for [`write_entry`].
unsafe extern "C" fn write(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    write_entry(core_itself, slf, args, nargs, kwnames)
}

/// A `METH_NOARGS` method on the core `resolve` finds from `slf`.
///
/// # Safety
/// The GIL is held, `slf` is live and `resolve` accepts it.
unsafe fn noargs_entry(
    name: &str,
    resolve: for<'py> unsafe fn(
        Python<'py>,
        *mut ffi::PyObject,
    ) -> PyResult<Bound<'py, StreamTransport>>,
    slf: *mut ffi::PyObject,
    method: fn(Python<'_>, &StreamTransport) -> Py<PyAny>,
) -> *mut ffi::PyObject {
    let py = Python::assume_attached();
    let outcome = catch_unwind(AssertUnwindSafe(|| -> PyResult<Py<PyAny>> {
        let core = resolve(py, slf)?;
        let core = core.try_borrow()?;
        Ok(method(py, &core))
    }));
    finish(py, name, outcome)
}

fn closing(py: Python<'_>, core: &StreamTransport) -> Py<PyAny> {
    PyBool::new(py, core.closing())
        .to_owned()
        .into_any()
        .unbind()
}

fn buffered(py: Python<'_>, core: &StreamTransport) -> Py<PyAny> {
    PyInt::new(py, core.buffered()).into_any().unbind()
}

/// `StreamTransportCore.is_closing()`.
///
/// # Safety
/// Called by CPython as a `METH_NOARGS` method: the GIL is held and `slf`
/// is live.
unsafe extern "C" fn is_closing(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    noargs_entry("is_closing", core_itself, slf, closing)
}

/// Add `write` and `is_closing` to `tp` with these entry points: the core
/// type's own, or the owner class's forwarders.
fn add_write_and_is_closing(
    tp: &Bound<'_, PyType>,
    write: ffi::PyCFunctionFastWithKeywords,
    is_closing: ffi::PyCFunction,
) -> PyResult<()> {
    add_method(
        tp,
        c"is_closing",
        ffi::PyMethodDefPointer {
            PyCFunction: is_closing,
        },
        ffi::METH_NOARGS,
        c"is_closing(): True once the transport is closing or closed.",
    )?;
    add_method(
        tp,
        c"write",
        ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: write,
        },
        ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        c"write(data): send data, buffering what the socket does not take.",
    )
}

/// Add `write` and `is_closing` to the `StreamTransportCore` type.
pub fn install(transport_type: &Bound<'_, PyType>) -> PyResult<()> {
    add_write_and_is_closing(transport_type, write, is_closing)
}

/// Where the owner class keeps its core: the `_core` slot's offset in its
/// instances, and the class (whose instances, subclasses' included, all
/// have the slot there).
struct OwnerSlot {
    class: usize,
    offset: isize,
}

static OWNER_SLOT: OnceLock<OwnerSlot> = OnceLock::new();

/// The core of `owner`, an instance of the class
/// [`_install_core_forwarders`] was given (CPython's method descriptor
/// checks `self`'s type before calling).
///
/// # Safety
/// The GIL is held and `owner` is a live instance of that class.
unsafe fn core_of<'py>(
    py: Python<'py>,
    owner: *mut ffi::PyObject,
) -> PyResult<Bound<'py, StreamTransport>> {
    let Some(core) = core_slot(owner) else {
        // As Python reports an unset slot.
        let owner = Bound::from_borrowed_ptr(py, owner);
        return Err(PyAttributeError::new_err(format!(
            "'{}' object has no attribute '_core'",
            owner.get_type().name()?
        )));
    };
    Ok(Bound::from_borrowed_ptr(py, core).cast_into::<StreamTransport>()?)
}

/// The object in `owner`'s `_core` slot, None while it is unset.
///
/// # Safety
/// As for [`core_of`].
unsafe fn core_slot(owner: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
    let slot = OWNER_SLOT
        .get()
        .expect("installed before the class is used");
    debug_assert!(ffi::PyObject_TypeCheck(owner, slot.class as *mut ffi::PyTypeObject) != 0);
    let core = *owner
        .cast::<u8>()
        .offset(slot.offset)
        .cast::<*mut ffi::PyObject>();
    (!core.is_null()).then_some(core)
}

/// `SocketTransport.write(data)`: the core's `write`.
///
/// # Safety
/// As for [`write_entry`], as a method descriptor of the owner class.
unsafe extern "C" fn owner_write(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    write_entry(core_of, slf, args, nargs, kwnames)
}

/// `SocketTransport.is_closing()`.
///
/// # Safety
/// Called by CPython as a `METH_NOARGS` method descriptor of the owner
/// class: the GIL is held and `slf` is live.
unsafe extern "C" fn owner_is_closing(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    noargs_entry("is_closing", core_of, slf, closing)
}

/// `SocketTransport.get_write_buffer_size()`.
///
/// # Safety
/// As for [`owner_is_closing`].
unsafe extern "C" fn owner_get_write_buffer_size(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    noargs_entry("get_write_buffer_size", core_of, slf, buffered)
}

/// `SocketTransport.close()`: the core's `close`. Once per connection,
/// where the Python method was a frame (~700 instructions) that only
/// called it.
///
/// # Safety
/// As for [`owner_is_closing`].
unsafe extern "C" fn owner_close(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let py = Python::assume_attached();
    let outcome = catch_unwind(AssertUnwindSafe(|| -> PyResult<Py<PyAny>> {
        StreamTransport::close(&core_of(py, slf)?)?;
        Ok(py.None())
    }));
    finish(py, "close", outcome)
}

/// What `SocketTransport.__del__` does for a transport still holding its
/// socket (the ResourceWarning, the socket's close): the Python
/// `_NativeTransport.__del__`, given to `_install_core_forwarders`.
static UNCLOSED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `SocketTransport.__del__()`: nothing for a transport whose connection
/// was lost (its socket gone, the usual case) or whose construction failed
/// before its core was made; otherwise the Python clean-up. Once per
/// connection, where the Python method was a frame that only checked.
///
/// # Safety
/// As for [`owner_is_closing`].
unsafe extern "C" fn owner_del(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let py = Python::assume_attached();
    let outcome = catch_unwind(AssertUnwindSafe(|| -> PyResult<Py<PyAny>> {
        let holds_socket = match core_slot(slf) {
            None => false,
            Some(core) => match Bound::from_borrowed_ptr(py, core).cast::<StreamTransport>() {
                Ok(core) => core
                    .try_borrow()
                    .map_or(true, |c| c.owner_attrs.sock.is_some()),
                Err(_) => true,
            },
        };
        if holds_socket {
            let unclosed = UNCLOSED.get(py).expect("installed with the forwarders");
            unclosed
                .bind(py)
                .call1((Bound::from_borrowed_ptr(py, slf),))?;
        }
        Ok(py.None())
    }));
    finish(py, "__del__", outcome)
}

/// Make `write`, `is_closing`, `get_write_buffer_size`, `close` and
/// `__del__` of `owner` (the Python `SocketTransport` class, which declares
/// `__slots__ = ("_core",)`) method descriptors forwarding to the core in
/// that slot; `unclosed` is what `__del__` calls for a transport that still
/// holds its socket. Once per process: the class is the module's own.
#[pyfunction]
pub fn _install_core_forwarders(owner: &Bound<'_, PyType>, unclosed: Py<PyAny>) -> PyResult<()> {
    let _ = UNCLOSED.set(owner.py(), unclosed);
    let member = owner.getattr("__dict__")?.get_item("_core")?;
    // SAFETY: the GIL is held; the descriptor's fields are read only once
    // its type is known to be the member descriptor type, and the offset
    // only once the member is known to be an object slot.
    let offset = unsafe {
        let ptr = member.as_ptr();
        if ffi::Py_TYPE(ptr) != &raw mut ffi::PyMemberDescr_Type {
            return Err(PyTypeError::new_err("_core must be a __slots__ member"));
        }
        let def = (*ptr.cast::<ffi::PyMemberDescrObject>())
            .d_member
            .cast::<ffi::PyMemberDef>();
        if (*def).type_code != ffi::Py_T_OBJECT_EX {
            return Err(PyTypeError::new_err("_core must be an object slot"));
        }
        (*def).offset
    };
    let slot = OWNER_SLOT.get_or_init(|| OwnerSlot {
        class: owner.as_type_ptr() as usize,
        offset: offset as isize,
    });
    if slot.class != owner.as_type_ptr() as usize {
        return Err(PyTypeError::new_err(
            "core forwarders are installed already",
        ));
    }
    add_write_and_is_closing(owner, owner_write, owner_is_closing)?;
    add_method(
        owner,
        c"get_write_buffer_size",
        ffi::PyMethodDefPointer {
            PyCFunction: owner_get_write_buffer_size,
        },
        ffi::METH_NOARGS,
        c"get_write_buffer_size(): bytes buffered and not yet sent.",
    )?;
    add_method(
        owner,
        c"close",
        ffi::PyMethodDefPointer {
            PyCFunction: owner_close,
        },
        ffi::METH_NOARGS,
        c"close(): close once the buffer is sent; connection_lost follows.",
    )?;
    add_method(
        owner,
        c"__del__",
        ffi::PyMethodDefPointer {
            PyCFunction: owner_del,
        },
        ffi::METH_NOARGS,
        c"__del__(): warn about, and close, a transport never closed.",
    )
}
