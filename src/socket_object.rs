//! `socket.socket` objects built natively: what `socket.socket.__init__`
//! does (the C type's `__init__`, then `_io_refs = 0` and
//! `_closed = False`; the same on 3.10-3.13) without its Python frame.
//! Once per accepted connection (`accept`) and per client connection
//! (`LoopCore._new_socket`, for `Loop._connect_numeric`).

use pyo3::intern;
use pyo3::prelude::*;

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
    let sock = refs
        .socket_new
        .bind(py)
        .call1((refs.socket_type.bind(py),))?;
    refs.socket_init
        .bind(py)
        .call1((&sock, family, kind, proto, fd))?;
    sock.setattr(intern!(py, "_io_refs"), 0)?;
    sock.setattr(intern!(py, "_closed"), false)?;
    Ok(sock)
}
