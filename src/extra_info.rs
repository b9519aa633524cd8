//! A stream transport's extra info: `transport._extra`, the dict asyncio's
//! `get_extra_info` reads, with the socket (as a `TransportSocket`), its
//! `sockname` and `peername`, and whatever the loop passed in.
//!
//! asyncio builds the dict when the transport is made. Here the loop's own
//! connections (accepted by the native accept loop, or connected to a
//! numeric host) pass their two addresses raw (`SocketNames`), and the
//! dict is built the first time anyone reads `_extra`. A server whose
//! protocol never asks spares the wrapper, the dict and both address
//! tuples: about 2.5k instructions a connection (`benches/churn.py`). The
//! addresses are still those read when the connection was made.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::PyVisit;

use crate::inet_address::SocketNames;
use crate::pyrefs::refs;

pub enum ExtraInfo {
    /// Not set (the transport's construction failed before it was).
    Unset,
    /// The dict itself, or whatever was assigned to `_extra`.
    Built(Py<PyAny>),
    /// Built from these on first read.
    Pending {
        sock: Py<PyAny>,
        names: Py<SocketNames>,
    },
}

impl ExtraInfo {
    /// The extra info of a new transport for `sock`, from the `extra` the
    /// loop passed: `SocketNames` (built later), or None or a dict, which
    /// is completed now as asyncio's `_SelectorTransport.__init__` does:
    /// the socket, and each name the dict lacks from the socket's own
    /// method (None where that raises `OSError`).
    pub fn new(sock: &Bound<'_, PyAny>, extra: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = sock.py();
        if let Ok(names) = extra.cast::<SocketNames>() {
            return Ok(ExtraInfo::Pending {
                sock: sock.clone().unbind(),
                names: names.clone().unbind(),
            });
        }
        let extra = if extra.is_none() {
            PyDict::new(py).into_any()
        } else {
            extra.clone()
        };
        extra.set_item(intern!(py, "socket"), transport_socket(sock)?)?;
        for (key, method) in [
            (intern!(py, "sockname"), intern!(py, "getsockname")),
            (intern!(py, "peername"), intern!(py, "getpeername")),
        ] {
            if !extra.contains(key)? {
                let name = match sock.call_method0(method) {
                    Ok(name) => name,
                    Err(err) if err.is_instance_of::<pyo3::exceptions::PyOSError>(py) => {
                        py.None().into_bound(py)
                    }
                    Err(err) => return Err(err),
                };
                extra.set_item(key, name)?;
            }
        }
        Ok(ExtraInfo::Built(extra.unbind()))
    }

    /// `_extra`: the dict, and whether it was built now from pending
    /// names (the caller then stores it as `Built`). Runs no Python code.
    pub fn read<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, bool)> {
        match self {
            ExtraInfo::Built(extra) => Ok((extra.bind(py).clone(), false)),
            ExtraInfo::Pending { sock, names } => {
                let extra = PyDict::new(py);
                extra.set_item(intern!(py, "socket"), transport_socket(sock.bind(py))?)?;
                let names = names.get();
                extra.set_item(intern!(py, "sockname"), names.local(py)?)?;
                extra.set_item(intern!(py, "peername"), names.peer(py)?)?;
                Ok((extra.into_any(), true))
            }
            ExtraInfo::Unset => Err(pyo3::exceptions::PyAttributeError::new_err("_extra")),
        }
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        match self {
            ExtraInfo::Built(extra) => visit.call(extra),
            ExtraInfo::Pending { sock, names } => {
                visit.call(sock)?;
                visit.call(names)
            }
            ExtraInfo::Unset => Ok(()),
        }
    }
}

/// `trsock.TransportSocket(sock)` without its `__init__` frame: the one
/// slot that `__init__` sets (the same on 3.10-3.13).
fn transport_socket<'py>(sock: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = sock.py();
    let r = refs(py);
    let wrapper = r
        .object_new
        .bind(py)
        .call1((r.transport_socket_type.bind(py),))?;
    wrapper.setattr(intern!(py, "_sock"), sock)?;
    Ok(wrapper)
}
