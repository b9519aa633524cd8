//! The fd and timeout of a `socket.socket`, and its family, type and
//! protocol, read from the C object.
//!
//! Every `sock_recv`/`sock_sendall` needs both: the fd to call the kernel,
//! the timeout to tell a non-blocking socket (the fast path) from one that
//! asyncio would block on. Through Python's `gettimeout()` and `fileno()`
//! they cost about 700 instructions per call, a sixth of a sock-style echo
//! request. The object's layout (`PySocketSockObject`: the fd right after
//! the object header, the timeout in nanoseconds after the family, type,
//! protocol and error handler, -1 s for none) is the same from 3.10 to 3.13;
//! it is checked once, on a real socket, against what the methods answer,
//! and where it does not match the methods are called as before.

use std::os::raw::{c_int, c_void};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyFloat;

use crate::pyrefs::refs;

/// `PySocketSockObject` up to its timeout (Modules/socketmodule.h).
#[repr(C)]
struct SocketObject {
    ob_base: pyo3::ffi::PyObject,
    sock_fd: c_int,
    sock_family: c_int,
    sock_type: c_int,
    sock_proto: c_int,
    errorhandler: *mut c_void,
    sock_timeout: i64,
}

/// What the fast paths need of a socket.
#[derive(Debug, PartialEq, Eq)]
pub struct SocketFields {
    /// -1 once closed, as `fileno()` answers.
    pub fd: i32,
    /// A timeout of exactly 0.0 (`setblocking(False)`).
    pub non_blocking: bool,
}

static LAYOUT_MATCHES: PyOnceLock<bool> = PyOnceLock::new();

/// The fields of `sock`, which must be exactly a `socket.socket`.
pub fn of(sock: &Bound<'_, PyAny>) -> PyResult<SocketFields> {
    let py = sock.py();
    debug_assert!(sock.get_type().is(refs(py).socket_type.bind(py)));
    if _reads_socket_fields(py) {
        // SAFETY: `sock` is a live `socket.socket`, whose C layout was
        // checked to start as `SocketObject`; the GIL is held.
        return Ok(unsafe { read(sock) });
    }
    by_methods(sock)
}

/// # Safety
/// `sock` is a `socket.socket` laid out as `SocketObject`.
unsafe fn read(sock: &Bound<'_, PyAny>) -> SocketFields {
    let object = sock.as_ptr().cast::<SocketObject>();
    SocketFields {
        fd: (*object).sock_fd,
        non_blocking: (*object).sock_timeout == 0,
    }
}

/// A socket's family, type and protocol, as the C type's getters read them
/// (the type without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`, as CPython stores it).
#[derive(Debug, PartialEq, Eq)]
pub struct SocketKind {
    pub family: i32,
    pub sock_type: i32,
    pub proto: i32,
}

/// The kind of `sock`, which must be exactly a `socket.socket`: read from
/// the C object, or through its Python properties where the layout check
/// failed.
pub fn kind_of(sock: &Bound<'_, PyAny>) -> PyResult<SocketKind> {
    let py = sock.py();
    debug_assert!(sock.get_type().is(refs(py).socket_type.bind(py)));
    if _reads_socket_fields(py) {
        // SAFETY: as in `of`.
        return Ok(unsafe { read_kind(sock) });
    }
    Ok(SocketKind {
        family: sock.getattr(intern!(py, "family"))?.extract()?,
        sock_type: sock.getattr(intern!(py, "type"))?.extract()?,
        proto: sock.getattr(intern!(py, "proto"))?.extract()?,
    })
}

/// # Safety
/// `sock` is a `socket.socket` laid out as `SocketObject`.
unsafe fn read_kind(sock: &Bound<'_, PyAny>) -> SocketKind {
    let object = sock.as_ptr().cast::<SocketObject>();
    SocketKind {
        family: (*object).sock_family,
        sock_type: (*object).sock_type,
        proto: (*object).sock_proto,
    }
}

fn by_methods(sock: &Bound<'_, PyAny>) -> PyResult<SocketFields> {
    let py = sock.py();
    let timeout = sock.call_method0(intern!(py, "gettimeout"))?;
    let non_blocking = timeout
        .cast_exact::<PyFloat>()
        .is_ok_and(|t| t.value() == 0.0);
    let fd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
    Ok(SocketFields { fd, non_blocking })
}

/// Whether reading the object gives what the methods say, on a socket
/// made for the check: blocking, non-blocking, with a timeout, closed.
fn layout_matches(py: Python<'_>) -> PyResult<bool> {
    let sock = refs(py).socket_type.bind(py).call0()?;
    // SAFETY: reading the basic size of a live type object.
    let basicsize = unsafe { (*sock.get_type().as_type_ptr()).tp_basicsize };
    if basicsize < std::mem::size_of::<SocketObject>() as isize {
        sock.call_method0("close")?;
        return Ok(false);
    }
    let timeouts = [
        (py.None().into_bound(py), -1_000_000_000),
        (PyFloat::new(py, 0.0).into_any(), 0),
        // Nanoseconds: 1.5 s must read 1,500,000,000.
        (PyFloat::new(py, 1.5).into_any(), 1_500_000_000),
    ];
    // A default socket: IPv4, stream, protocol 0 (its getters' values).
    // SAFETY: as below.
    let mut matches = unsafe { read_kind(&sock) }
        == SocketKind {
            family: libc::AF_INET,
            sock_type: libc::SOCK_STREAM,
            proto: 0,
        };
    for (timeout, nanoseconds) in timeouts {
        sock.call_method1("settimeout", (timeout,))?;
        // SAFETY: the object is big enough for `SocketObject` (checked
        // above), `sock` is live and the GIL is held.
        let (fields, raw) = unsafe {
            (
                read(&sock),
                (*sock.as_ptr().cast::<SocketObject>()).sock_timeout,
            )
        };
        matches &= fields == by_methods(&sock)? && raw == nanoseconds;
    }
    sock.call_method0("close")?;
    // SAFETY: as above.
    matches &= unsafe { read(&sock) }.fd == -1;
    Ok(matches)
}

/// Whether this Python's sockets are read directly (the layout check
/// passed, and `TOKIOLOOP_SOCKET_FIELDS_BY_METHODS` is unset: set, it
/// makes the tests run the fallback through the socket's methods, which
/// no supported CPython needs otherwise). For tests and debugging.
#[pyfunction]
pub fn _reads_socket_fields(py: Python<'_>) -> bool {
    *LAYOUT_MATCHES.get_or_init(py, || {
        let by_methods =
            std::env::var_os("TOKIOLOOP_SOCKET_FIELDS_BY_METHODS").is_some_and(|v| !v.is_empty());
        !by_methods && layout_matches(py).unwrap_or(false)
    })
}
