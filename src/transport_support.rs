//! What the native stream and datagram transports share: running protocol
//! callbacks in the transport's context, and the cold paths that go back to
//! Python exactly as asyncio's `_SelectorTransport` does (error reporting,
//! flow-control callbacks, scheduling `connection_lost`, the warning for
//! writes after the connection was lost).

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::loop_core::LoopCore;
use crate::pyrefs::refs;

/// asyncio's `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
pub const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

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
        let callback = self.owner.getattr("_call_connection_lost")?;
        LoopCore::call_soon_internal(&self.loop_, callback, PyTuple::new(py, [exc])?)
    }
}

/// asyncio's warning for the fifth and later write after connection loss.
pub fn warn_write_after_loss(py: Python<'_>) -> PyResult<()> {
    refs(py)
        .asyncio_logger
        .bind(py)
        .call_method1("warning", ("socket.send() raised exception.",))?;
    Ok(())
}
