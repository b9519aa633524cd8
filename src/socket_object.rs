//! `socket.socket` objects built natively: what `socket.socket.__init__`
//! does (the C type's `__init__`, then `_io_refs = 0` and
//! `_closed = False`; the same on 3.10-3.13) without its Python frame.
//! Once per accepted connection (`accept`) and per client connection
//! (`connect_op`, and `LoopCore._new_socket` for `Loop._connect_numeric`).
//!
//! The object is allocated and initialised through the types' own slots
//! (`tp_new` of `socket.socket`, inherited from the C type, and the C
//! type's `tp_init`), as `socket.socket(...)` itself ends up calling them:
//! through `__new__` and `__init__` as Python attributes the same calls
//! cost ~1k instructions more (the wrappers' argument checks).

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::pyrefs::refs;

/// `socket.socket(family, kind, proto, fd)`; with `fd` None, the C type
/// makes the socket itself (`socket(2)`, as `socket.socket(family, kind,
/// proto)`), and its errors are that constructor's.
pub fn new_socket(
    py: Python<'_>,
    family: i32,
    kind: i32,
    proto: i32,
    fd: Option<i32>,
) -> PyResult<Bound<'_, PyAny>> {
    let refs = refs(py);
    let socket_type = refs
        .socket_type
        .bind(py)
        .as_ptr()
        .cast::<ffi::PyTypeObject>();
    let base_type = refs
        .socket_base_type
        .bind(py)
        .as_ptr()
        .cast::<ffi::PyTypeObject>();
    let args = PyTuple::new(
        py,
        [
            family.into_pyobject(py)?.into_any(),
            kind.into_pyobject(py)?.into_any(),
            proto.into_pyobject(py)?.into_any(),
            fd.into_pyobject(py)?,
        ],
    )?;
    // SAFETY: both are live type objects (kept in `refs`), and `socket.socket`
    // derives from `_socket.socket`, so its `tp_new` (the C type's, which
    // ignores its arguments) makes an object the C type's `tp_init`
    // initialises, exactly as `type.__call__` would call them. The GIL is
    // held; each returns a new reference or NULL / -1 with an exception set.
    unsafe {
        let (Some(tp_new), Some(tp_init)) = ((*socket_type).tp_new, (*base_type).tp_init) else {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "socket type without slots",
            ));
        };
        let empty = PyTuple::empty(py);
        let sock = Bound::from_owned_ptr_or_err(
            py,
            tp_new(socket_type, empty.as_ptr(), std::ptr::null_mut()),
        )?;
        if tp_init(sock.as_ptr(), args.as_ptr(), std::ptr::null_mut()) < 0 {
            return Err(PyErr::fetch(py));
        }
        sock.setattr(intern!(py, "_io_refs"), 0)?;
        sock.setattr(intern!(py, "_closed"), false)?;
        Ok(sock)
    }
}
