//! The waiting half of `sock_recv`, `sock_recv_into` and `sock_sendall`.
//!
//! asyncio tries the socket call at once and, if it would block, registers
//! a Python reader/writer callback plus a done callback on the future that
//! removes it again. Here the callback is a native [`SockOp`]: it retries the
//! call when the fd is ready, resolves the future, and removes its own
//! registration, with no Python frame and no done callback. Cancellation
//! goes through the future's `cancel()` (tokioloop's `_SockFuture`), which
//! removes the registration at once, before the task that awaited it can go
//! on to close the socket, as asyncio's done callback does.

use std::io;

use parking_lot::Mutex;
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};

use crate::errors::os_error;
use crate::fd_watch::Direction;
use crate::loop_core::LoopCore;
use crate::sock_io::{recv_new_bytes, ByteView};

pub enum SockCall {
    Recv { nbytes: usize },
    RecvInto { buffer: Py<PyAny> },
    SendAll { data: Py<PyAny>, sent: usize },
}

impl SockCall {
    pub fn direction(&self) -> Direction {
        match self {
            SockCall::SendAll { .. } => Direction::Write,
            _ => Direction::Read,
        }
    }
}

/// What one attempt produced.
enum Outcome {
    Retry,
    Done(Py<PyAny>),
    Failed(PyErr),
}

#[pyclass(frozen, module = "tokioloop._tokioloop")]
pub struct SockOp {
    loop_: Py<LoopCore>,
    fd: i32,
    future: Py<PyAny>,
    call: Mutex<SockCall>,
}

impl SockOp {
    pub fn new(loop_: Py<LoopCore>, fd: i32, future: Py<PyAny>, call: SockCall) -> Self {
        SockOp {
            loop_,
            fd,
            future,
            call: Mutex::new(call),
        }
    }

    fn attempt(&self, py: Python<'_>) -> Outcome {
        let mut call = self.call.lock();
        let result: PyResult<Option<Py<PyAny>>> = match &mut *call {
            SockCall::Recv { nbytes } => recv(py, self.fd, *nbytes),
            SockCall::RecvInto { buffer } => recv_into(py, self.fd, buffer.bind(py)),
            SockCall::SendAll { data, sent } => send_rest(py, self.fd, data.bind(py), sent),
        };
        match result {
            Ok(Some(value)) => Outcome::Done(value),
            Ok(None) => Outcome::Retry,
            Err(err) => Outcome::Failed(err),
        }
    }
}

fn would_block(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn recv(py: Python<'_>, fd: i32, nbytes: usize) -> PyResult<Option<Py<PyAny>>> {
    match recv_new_bytes(py, fd, nbytes) {
        Ok(bytes) => Ok(Some(bytes.into_any())),
        Err(err) if would_block(&err) => Ok(None),
        Err(err) => Err(os_error(err)),
    }
}

fn recv_into(py: Python<'_>, fd: i32, buffer: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let view = ByteView::new(buffer, true)?;
    let (ptr, len) = view.raw_parts();
    // SAFETY: the view keeps `len` writable bytes at `ptr` alive until it
    // is dropped, after the call.
    let n = unsafe { libc::recv(fd, ptr, len, 0) };
    drop(view);
    if n < 0 {
        let err = io::Error::last_os_error();
        return if would_block(&err) {
            Ok(None)
        } else {
            Err(os_error(err))
        };
    }
    Ok(Some((n as usize).into_pyobject(py)?.into_any().unbind()))
}

fn send_rest(
    py: Python<'_>,
    fd: i32,
    data: &Bound<'_, PyAny>,
    sent: &mut usize,
) -> PyResult<Option<Py<PyAny>>> {
    let view = ByteView::new(data, false)?;
    let rest = &view.as_slice()[(*sent).min(view.len())..];
    if !rest.is_empty() {
        // SAFETY: `rest` is a valid slice of the view; MSG_NOSIGNAL turns a
        // closed peer into EPIPE instead of SIGPIPE.
        let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if would_block(&err) {
                Ok(None)
            } else {
                Err(os_error(err))
            };
        }
        *sent += n as usize;
    }
    if *sent >= view.len() {
        Ok(Some(py.None()))
    } else {
        Ok(None)
    }
}

#[pymethods]
impl SockOp {
    /// Run by the loop when the fd is ready (as asyncio's `_sock_recv` &c.).
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let future = this.future.bind(py);
        let direction = this.call.lock().direction();
        if future.call_method0("done")?.is_truthy()? {
            LoopCore::remove_fd_native(this.loop_.bind(py), this.fd, direction)?;
            return Ok(());
        }
        let outcome = this.attempt(py);
        if matches!(outcome, Outcome::Retry) {
            return Ok(());
        }
        LoopCore::remove_fd_native(this.loop_.bind(py), this.fd, direction)?;
        match outcome {
            Outcome::Done(value) => {
                future.call_method1("set_result", (value,))?;
            }
            Outcome::Failed(err) => {
                if err.is_instance_of::<PyKeyboardInterrupt>(py)
                    || err.is_instance_of::<PySystemExit>(py)
                {
                    return Err(err);
                }
                future.call_method1("set_exception", (err.into_value(py),))?;
            }
            Outcome::Retry => {}
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        let what = match &*self.call.lock() {
            SockCall::Recv { .. } => "sock_recv",
            SockCall::RecvInto { .. } => "sock_recv_into",
            SockCall::SendAll { .. } => "sock_sendall",
        };
        format!("<{what} fd={}>", self.fd)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.future)?;
        if let Some(call) = self.call.try_lock() {
            match &*call {
                SockCall::RecvInto { buffer } => visit.call(buffer)?,
                SockCall::SendAll { data, .. } => visit.call(data)?,
                SockCall::Recv { .. } => {}
            }
        }
        Ok(())
    }
}
