//! `loop._transports`: which transport owns which fd, held weakly.
//!
//! asyncio's selector loop keeps a `weakref.WeakValueDictionary` from fd
//! number to transport, so that `add_reader`, `sock_recv` & co. can refuse
//! an fd a live transport uses (`_ensure_fd_no_transport`). Every
//! connection inserts into it and, when the transport dies, a `KeyedRef`
//! callback removes it again: Python frames for the insert, the `KeyedRef`'s
//! construction and the removal, about 10k instructions per connection.
//! [`TransportMap`] is the same mapping for that use, natively: a plain weak
//! reference per entry, no callback. A dead entry reads as missing and is
//! dropped when it is looked up or replaced; transports also remove their
//! own entry when their connection is lost (`discard`), so stale ones are
//! rare and bounded by the fd numbers in use.

use std::collections::HashMap;

use pyo3::exceptions::PyKeyError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyWeakrefReference};

use crate::gil_cell::GilCell;
use crate::loop_core::LoopCore;
use crate::pyrefs::refs;

/// asyncio's `_ensure_fd_no_transport(subject)` for `fd` (`subject` is
/// `fd` itself or the socket that has it, which the error names), called
/// only when the loop's transports map has a live entry for `fd` at all:
/// a lookup in its `TransportMap`, or a plain dict lookup in a
/// `WeakValueDictionary` put in its place. The fd is usually free, and the
/// Python method is a frame per new transport or `sock_*` wait.
pub(crate) fn ensure_fd_no_transport(
    loop_: &Bound<'_, LoopCore>,
    fd: i32,
    subject: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = loop_.py();
    let transports = loop_.get().transports(py)?;
    let maybe_used = if let Ok(map) = transports.cast::<TransportMap>() {
        map.get().live(py, i64::from(fd)).is_some()
    } else if transports
        .get_type()
        .is(refs(py).weak_value_dict_type.bind(py))
    {
        let data = transports.getattr(intern!(py, "data"))?;
        match data.cast::<PyDict>() {
            Ok(data) => data.contains(fd)?,
            Err(_) => true,
        }
    } else {
        true
    };
    if maybe_used {
        loop_.call_method1(intern!(py, "_ensure_fd_no_transport"), (subject,))?;
    }
    Ok(())
}

#[pyclass(frozen, module = "tokioloop", name = "TransportMap")]
pub struct TransportMap {
    entries: GilCell<HashMap<i64, Py<PyWeakrefReference>>>,
}

impl TransportMap {
    /// The live transport at `fd`; a dead entry is dropped.
    fn live<'py>(&self, py: Python<'py>, fd: i64) -> Option<Bound<'py, PyAny>> {
        let weak = self.entries.borrow_mut(py).get(&fd)?.clone_ref(py);
        let live = weak.bind(py).upgrade();
        if live.is_none() {
            self.remove(py, fd);
        }
        live
    }

    /// `map[fd] = transport`, natively (a new transport's registration).
    pub(crate) fn insert(
        &self,
        py: Python<'_>,
        fd: i64,
        transport: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.__setitem__(py, fd, transport)
    }

    fn remove(&self, py: Python<'_>, fd: i64) {
        let removed = self.entries.borrow_mut(py).remove(&fd);
        drop(removed); // after the borrow: dropping may run Python code
    }

    /// Every live (fd, transport), in no particular order.
    fn live_items<'py>(&self, py: Python<'py>) -> Vec<(i64, Bound<'py, PyAny>)> {
        let weak: Vec<_> = self
            .entries
            .borrow_mut(py)
            .iter()
            .map(|(fd, w)| (*fd, w.clone_ref(py)))
            .collect();
        weak.into_iter()
            .filter_map(|(fd, w)| w.bind(py).upgrade().map(|t| (fd, t)))
            .collect()
    }
}

#[pymethods]
impl TransportMap {
    #[new]
    fn new() -> Self {
        TransportMap {
            entries: GilCell::new(HashMap::new()),
        }
    }

    fn __getitem__<'py>(&self, py: Python<'py>, fd: i64) -> PyResult<Bound<'py, PyAny>> {
        self.live(py, fd).ok_or_else(|| PyKeyError::new_err(fd))
    }

    fn __setitem__(&self, py: Python<'_>, fd: i64, transport: &Bound<'_, PyAny>) -> PyResult<()> {
        let weak = PyWeakrefReference::new(transport)?.unbind();
        let old = self.entries.borrow_mut(py).insert(fd, weak);
        drop(old); // after the borrow
        Ok(())
    }

    fn __delitem__(&self, py: Python<'_>, fd: i64) -> PyResult<()> {
        // As a WeakValueDictionary: deleting a dead entry is a KeyError.
        if self.live(py, fd).is_none() {
            return Err(PyKeyError::new_err(fd));
        }
        self.remove(py, fd);
        Ok(())
    }

    fn __contains__(&self, py: Python<'_>, fd: i64) -> bool {
        self.live(py, fd).is_some()
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.live_items(py).len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.keys(py)?.try_iter().map(Bound::into_any)
    }

    #[pyo3(signature = (fd, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        fd: i64,
        default: Option<Bound<'py, PyAny>>,
    ) -> Bound<'py, PyAny> {
        self.live(py, fd)
            .or(default)
            .unwrap_or_else(|| py.None().into_bound(py))
    }

    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.live_items(py).into_iter().map(|(fd, _)| fd))
    }

    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.live_items(py).into_iter().map(|(_, t)| t))
    }

    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.live_items(py))
    }

    /// Remove the entry for `fd` if it is `transport` (a transport whose
    /// connection is lost; the fd number may already be someone else's).
    pub(crate) fn discard(&self, py: Python<'_>, fd: i64, transport: &Bound<'_, PyAny>) {
        if self.live(py, fd).is_some_and(|t| t.is(transport)) {
            self.remove(py, fd);
        }
    }
}
