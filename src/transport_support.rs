//! What the native stream and datagram transports share: their common
//! state and its rules ([`TransportState`]: closing, flow-control marks,
//! watching), running protocol callbacks in the transport's context, and the
//! cold paths that go back to Python exactly as asyncio's
//! `_SelectorTransport` does (error reporting, flow-control callbacks,
//! scheduling `connection_lost`, the warning for writes after the
//! connection was lost).

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::{PyDict, PyTuple};

use crate::fd_watch::Direction;
use crate::loop_core::LoopCore;
use crate::native_io::IoRegistration;
use crate::pyrefs::refs;

/// asyncio's `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

/// Exceptions that must stop the loop rather than be reported.
pub fn is_fatal(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

/// Run `f` inside `context` (`PyContext_Enter/Exit`).
pub fn in_context<T>(
    py: Python<'_>,
    context: &Py<PyAny>,
    f: impl FnOnce() -> PyResult<T>,
) -> PyResult<T> {
    // SAFETY: the GIL is held and `context` is a live Context object;
    // Enter/Exit are paired on this thread.
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    let result = f();
    // SAFETY: as above; this exits the context entered above.
    if unsafe { ffi::PyContext_Exit(context.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    result
}

/// A protocol method the transport cached when the protocol was set, taken
/// out of the transport for one call.
///
/// asyncio looks the method up on every event, so a protocol that lacked it
/// then fails only when data arrives, with getattr's `AttributeError`
/// (reported like any error the method raises), and one that has gained it
/// since is called: a method missing from the cache is looked up again
/// ([`ProtocolMethod::resolve`], outside any borrow of the transport, since
/// a `__getattr__` is Python code).
pub enum ProtocolMethod {
    Cached(Py<PyAny>),
    /// Not there when cached: the protocol to look it up on.
    Missing(Py<PyAny>),
}

impl ProtocolMethod {
    /// `cached` (None when the protocol had no such method) from a
    /// transport whose protocol is `protocol`; None when there is neither
    /// (the transport has let go of its protocol).
    pub fn of(
        py: Python<'_>,
        cached: Option<&Py<PyAny>>,
        protocol: Option<&Py<PyAny>>,
    ) -> Option<Self> {
        match (cached, protocol) {
            (Some(m), _) => Some(Self::Cached(m.clone_ref(py))),
            (None, Some(p)) => Some(Self::Missing(p.clone_ref(py))),
            (None, None) => None,
        }
    }

    /// The method to call: the cached one, or `protocol.<name>` now.
    pub fn resolve<'py>(self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Self::Cached(m) => Ok(m.into_bound(py)),
            Self::Missing(protocol) => protocol.bind(py).getattr(name),
        }
    }
}

/// The Python side of a native transport, and the loop it runs on.
pub struct Peers<'py> {
    pub loop_: Bound<'py, LoopCore>,
    /// The Python transport object; None once detached.
    pub owner: Bound<'py, PyAny>,
    pub protocol: Option<Bound<'py, PyAny>>,
}

impl Peers<'_> {
    /// `loop.call_exception_handler({...})` with the keys asyncio's
    /// transports use.
    pub fn report(&self, message: &str, err: PyErr) -> PyResult<()> {
        let py = self.loop_.py();
        let context = PyDict::new(py);
        context.set_item("message", message)?;
        context.set_item("exception", err.into_value(py))?;
        context.set_item("transport", &self.owner)?;
        context.set_item(
            "protocol",
            self.protocol
                .as_ref()
                .map_or_else(|| py.None(), |p| p.clone().unbind()),
        )?;
        self.loop_
            .call_method1("call_exception_handler", (context,))?;
        Ok(())
    }

    /// `protocol.pause_writing()`/`resume_writing()`; a failure goes to the
    /// exception handler, as `_FlowControlMixin` does.
    pub fn flow_control(&self, method: &str) -> PyResult<()> {
        let Some(protocol) = &self.protocol else {
            return Ok(());
        };
        match protocol.call_method0(method) {
            Ok(_) => Ok(()),
            Err(err) if is_fatal(self.loop_.py(), &err) => Err(err),
            Err(err) => self.report(&format!("protocol.{method}() failed"), err),
        }
    }

    /// asyncio's `_fatal_error` (the Python side reports, then force-closes).
    /// Only `KeyboardInterrupt`/`SystemExit` escape, to stop the loop.
    pub fn fatal_error(&self, err: PyErr, message: &str) -> PyResult<()> {
        let py = self.loop_.py();
        if is_fatal(py, &err) {
            return Err(err);
        }
        if self.owner.is_none() {
            return Ok(());
        }
        self.owner
            .call_method1("_fatal_error", (err.into_value(py), message))?;
        Ok(())
    }

    /// `loop.call_soon(transport._call_connection_lost, exc)`.
    pub fn schedule_connection_lost(&self, exc: Py<PyAny>) -> PyResult<()> {
        if self.owner.is_none() {
            return Ok(());
        }
        let py = self.loop_.py();
        let callback = self.owner.getattr(intern!(py, "_call_connection_lost"))?;
        LoopCore::call_soon_internal(&self.loop_, callback, PyTuple::new(py, [exc])?)
    }
}

/// asyncio's warning for the fifth and later write after connection loss.
fn warn_write_after_loss(py: Python<'_>) -> PyResult<()> {
    refs(py)
        .asyncio_logger
        .bind(py)
        .call_method1("warning", ("socket.send() raised exception.",))?;
    Ok(())
}

/// The state every native transport keeps, with asyncio's
/// `_SelectorTransport`/`_FlowControlMixin` rules for it. Each transport core
/// embeds one as `base` and adds its own buffers.
pub struct TransportState {
    pub loop_: Py<LoopCore>,
    /// The Python transport object the protocol sees; dropped at detach.
    pub owner: Option<Py<PyAny>>,
    pub protocol: Option<Py<PyAny>>,
    pub protocol_connected: bool,
    /// Protocol callbacks run in a copy of the creation context.
    pub context: Py<PyAny>,
    pub fd: i32,
    pub token: u64,
    pub io: Option<IoRegistration>,
    pub high_water: usize,
    pub low_water: usize,
    pub protocol_paused: bool,
    pub closing: bool,
    /// Reads are wanted (asyncio: the reader is registered).
    pub reading: bool,
    /// Writes are pending (asyncio: the writer is registered).
    pub writing: bool,
    pub conn_lost: u32,
}

impl TransportState {
    /// asyncio's rule for a write after the connection is lost: dropped
    /// and counted, with a warning from the fifth on. Returns whether the
    /// write was such a one.
    pub fn drop_write_after_loss(&mut self, py: Python<'_>) -> PyResult<bool> {
        if self.conn_lost == 0 {
            return Ok(false);
        }
        if self.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
            warn_write_after_loss(py)?;
        }
        self.conn_lost += 1;
        Ok(true)
    }

    pub fn new(loop_: Py<LoopCore>, owner: Py<PyAny>, context: Py<PyAny>, fd: i32) -> Self {
        TransportState {
            loop_,
            owner: Some(owner),
            protocol: None,
            protocol_connected: false,
            context,
            fd,
            token: 0,
            io: None,
            high_water: 64 * 1024,
            low_water: 16 * 1024,
            protocol_paused: false,
            closing: false,
            reading: false,
            writing: false,
            conn_lost: 0,
        }
    }

    pub fn peers<'py>(&self, py: Python<'py>) -> Peers<'py> {
        Peers {
            loop_: self.loop_.bind(py).clone(),
            owner: self.owner_or_none(py).into_bound(py),
            protocol: self.protocol.as_ref().map(|p| p.bind(py).clone()),
        }
    }

    /// The protocol, or None once detached.
    pub fn protocol_or_none(&self, py: Python<'_>) -> Py<PyAny> {
        self.protocol
            .as_ref()
            .map_or_else(|| py.None(), |p| p.clone_ref(py))
    }

    /// The Python transport, or None once detached.
    pub fn owner_or_none(&self, py: Python<'_>) -> Py<PyAny> {
        self.owner
            .as_ref()
            .map_or_else(|| py.None(), |o| o.clone_ref(py))
    }

    /// Start watching `direction` unless already watching.
    pub fn watch(&mut self, direction: Direction) {
        let flag = match direction {
            Direction::Read => &mut self.reading,
            Direction::Write => &mut self.writing,
        };
        if !*flag {
            *flag = true;
            if let Some(io) = &self.io {
                io.watch(direction);
            }
        }
    }

    /// `close()`: returns whether `connection_lost` is due now (nothing
    /// left to write); otherwise the flush calls it when done.
    pub fn begin_close(&mut self, buffer_empty: bool) -> bool {
        if self.closing {
            return false;
        }
        self.closing = true;
        self.reading = false;
        if !buffer_empty {
            return false;
        }
        self.conn_lost += 1;
        self.writing = false;
        true
    }

    /// `_force_close()`: returns whether `connection_lost` is to be
    /// scheduled (the caller drops its buffer).
    pub fn begin_force_close(&mut self) -> bool {
        if self.conn_lost > 0 {
            return false;
        }
        self.writing = false;
        self.closing = true;
        self.reading = false;
        self.conn_lost += 1;
        true
    }

    /// Above the high-water mark and not paused yet: pause now.
    pub fn should_pause(&mut self, buffered: usize) -> bool {
        if buffered <= self.high_water || self.protocol_paused {
            return false;
        }
        self.protocol_paused = true;
        true
    }

    /// Paused and at or below the low-water mark: resume now.
    pub fn should_resume(&mut self, buffered: usize) -> bool {
        if !self.protocol_paused || buffered > self.low_water {
            return false;
        }
        self.protocol_paused = false;
        true
    }

    /// What detaching releases (the caller drops it after the borrow ends,
    /// then unregisters `token` from the loop).
    pub fn detach(&mut self) -> (Option<IoRegistration>, Option<Py<PyAny>>, Option<Py<PyAny>>) {
        self.reading = false;
        self.writing = false;
        (self.io.take(), self.protocol.take(), self.owner.take())
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.context)?;
        for obj in [&self.owner, &self.protocol].into_iter().flatten() {
            visit.call(obj)?;
        }
        Ok(())
    }
}

/// asyncio's `futures._set_result_unless_cancelled(fut, result)` without
/// its frame: how a transport's waiter gets its result, once per
/// connection (`stream_owner`; the Python transports' `_start`).
#[pyfunction]
pub fn _set_result_unless_cancelled(
    fut: &Bound<'_, PyAny>,
    result: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = fut.py();
    if !fut.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
        fut.call_method1(intern!(py, "set_result"), (result,))?;
    }
    Ok(())
}
