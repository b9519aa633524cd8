//! `sock_recv`, `sock_recv_into` and `sock_sendall` below the Python
//! coroutine: the whole of asyncio's prologue in one native call, and the
//! waiting half.
//!
//! asyncio's methods check the socket (`_check_ssl_socket`, non-blocking in
//! debug mode), try the call at once (a would-block is a `BlockingIOError`
//! raised and caught), and otherwise create a future, check that no
//! transport owns the fd, register a Python reader/writer callback and add a
//! done callback that removes it again. Here [`start`] does all of that for
//! a plain `socket.socket` with no timeout: the syscall goes through libc
//! (would-block is a return code), and the waiter is a native [`SockOp`]
//! that retries the call when the fd is ready and resolves the future, with
//! no Python frame and no done callback. It waits in the socket's
//! `SockWatch` (a registration kept across waits, see `sock_watch`), or, if
//! `add_reader`/`add_writer` already watch the fd, as an `fd_watch` callback
//! that removes itself, as asyncio's reader does.
//! Anything else (a socket subclass, a socket with a timeout, an argument
//! Python's socket methods would reject or treat specially) is answered
//! with `NotImplemented`, and the coroutine runs asyncio's own method, so
//! results and exceptions stay exactly asyncio's.
//!
//! Cancellation: the coroutine catches `CancelledError` around its `await`
//! and calls `_sock_wait_cancelled(future)`, which removes the registration
//! if it is still this call's (the fd is found in [`SockWaits`], by future).
//! That runs when the cancelled task resumes, right where asyncio's done
//! callback (queued just before the task's wake-up) would have run.

use rustc_hash::FxHashMap as HashMap;
use std::io;

use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::PyInt;

use crate::connect_op::ConnectOp;
use crate::errors::os_error;
use crate::fd_watch::Direction;
use crate::handles::Handle;
use crate::loop_core::LoopCore;
use crate::pyrefs::refs;
use crate::sock_io::{recv_new_bytes, send_some, ByteView};
use crate::socket_fields::{self, SocketFields};
use crate::transport_map;

/// Largest `sock_recv` size read into a fresh `bytes` here; larger ones
/// take asyncio's path (the allocation, and its `MemoryError`, are then
/// exactly `socket.recv`'s).
const MAX_FAST_RECV: isize = 64 * 1024 * 1024;

/// What a `sock_*` call asks for, as passed to [`start`].
pub enum Request<'a, 'py> {
    Recv(&'a Bound<'py, PyAny>),
    RecvInto(&'a Bound<'py, PyAny>),
    SendAll(&'a Bound<'py, PyAny>),
}

/// The one native call behind `sock_recv`/`sock_recv_into`/`sock_sendall`:
/// the result if the call completed at once, an `asyncio.Future` to await
/// if it has to wait, or `NotImplemented` for asyncio's own method.
pub fn start<'py>(
    loop_: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    request: Request<'_, 'py>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = sock.py();
    let not_implemented = || Ok(py.NotImplemented().into_bound(py));
    let Some(fd) = plain_socket_fd(loop_, sock)? else {
        return not_implemented();
    };
    let mut retry_soon = false;
    let call = match request {
        Request::Recv(nbytes) => {
            // socket.recv: TypeError for a non-int, ValueError below zero,
            // and b"" with no syscall for 0; let Python do those.
            let Ok(n) = nbytes.cast_exact::<PyInt>() else {
                return not_implemented();
            };
            let n: isize = match n.extract() {
                Ok(n) if n > 0 && n <= MAX_FAST_RECV => n,
                _ => return not_implemented(),
            };
            match retry_eintr(py, || recv_new_bytes(py, fd, n as usize))? {
                Some(bytes) => return Ok(bytes.into_bound(py).into_any()),
                None => SockCall::Recv { nbytes: n as usize },
            }
        }
        Request::RecvInto(buffer) => {
            let Ok(view) = ByteView::new(buffer, true) else {
                // Not a writable contiguous buffer: socket.recv_into raises
                // its own TypeError.
                PyErr::take(py);
                return not_implemented();
            };
            let (ptr, len) = view.raw_parts();
            if len == 0 {
                return not_implemented(); // 0 with no syscall, as Python does
            }
            let received = retry_eintr(py, || {
                // SAFETY: the view keeps `len` writable bytes at `ptr` alive
                // until it is dropped, after the call.
                let n = unsafe { libc::recv(fd, ptr, len, libc::MSG_DONTWAIT) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            })?;
            drop(view);
            match received {
                Some(n) => return Ok(n.into_pyobject(py)?.into_any()),
                None => SockCall::RecvInto {
                    buffer: buffer.clone().unbind(),
                },
            }
        }
        Request::SendAll(data) => {
            let Ok(view) = ByteView::new(data, false) else {
                PyErr::take(py);
                return not_implemented();
            };
            // asyncio compares what send() returned with len(data), which
            // counts items, not bytes, for a memoryview of wider items.
            if data.len().ok() != Some(view.len()) {
                PyErr::take(py);
                return not_implemented();
            }
            let sent = retry_eintr(py, || send_some(fd, view.as_slice()))?;
            if sent == Some(view.len()) {
                return Ok(py.None().into_bound(py));
            }
            // A short send without a would-block: asyncio's writer fires
            // with the next poll if the socket is writable by then, which a
            // kept watch would not report (no change); so it is looked at
            // (`LoopCore::retry_sock_watch`).
            retry_soon = sent.is_some();
            SockCall::SendAll {
                data: data.clone().unbind(),
                sent: sent.unwrap_or(0),
            }
        }
    };
    wait(loop_, sock, fd, call, retry_soon)
}

/// `sock_connect`'s waiting half, after `connect_ex` said the connect is
/// in progress: a future resolved when the socket turns writable (None, or
/// asyncio's `OSError(err, "Connect call failed ...")` from `SO_ERROR`),
/// or `NotImplemented` for asyncio's own method.
pub fn connect_wait<'py>(
    loop_: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    address: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(fd) = plain_socket_fd(loop_, sock)? else {
        return Ok(sock.py().NotImplemented().into_bound(sock.py()));
    };
    let call = SockCall::Connect {
        address: address.clone().unbind(),
    };
    wait(loop_, sock, fd, call, false)
}

/// The fd of an exact `socket.socket` with no timeout, after asyncio's
/// debug-mode check; `None` for anything the fast path leaves to asyncio
/// (`_check_ssl_socket` only rejects subclasses, which go there too).
fn plain_socket_fd(loop_: &Bound<'_, LoopCore>, sock: &Bound<'_, PyAny>) -> PyResult<Option<i32>> {
    let py = sock.py();
    if !sock.get_type().is(refs(py).socket_type.bind(py)) {
        return Ok(None);
    }
    let SocketFields { fd, non_blocking } = socket_fields::of(sock)?;
    if !non_blocking {
        if loop_.get().debug_flag() {
            return Err(PyValueError::new_err("the socket must be non-blocking"));
        }
        // socket.recv &c. would block or wait for the timeout.
        return Ok(None);
    }
    Ok((fd >= 0).then_some(fd))
}

/// Run a non-blocking syscall as Python's socket methods do: retried on
/// `EINTR` after the signal handlers ran; `None` if it would block.
fn retry_eintr<T>(py: Python<'_>, mut op: impl FnMut() -> io::Result<T>) -> PyResult<Option<T>> {
    loop {
        match op() {
            Ok(value) => return Ok(Some(value)),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => py.check_signals()?,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(err) => return Err(os_error(err)),
        }
    }
}

/// asyncio's waiting half: the transport check, a future, and a waiter on
/// the fd: the socket's `SockWatch` (kept across waits), or an `fd_watch`
/// callback when `add_reader`/`add_writer` already watch the fd.
fn wait<'py>(
    loop_: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    fd: i32,
    call: SockCall,
    retry_soon: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = loop_.py();
    transport_map::ensure_fd_no_transport(loop_, fd, PyInt::new(py, fd).as_any())?;
    let future = LoopCore::create_future(loop_)?;
    register(loop_, sock, fd, call, retry_soon, &future, None)?;
    Ok(future)
}

/// The waiter on the fd for `call`, which resolves `future`, or, with
/// `then`, hands its outcome to that connect (see `connect_op`).
pub fn register<'py>(
    loop_: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    fd: i32,
    call: SockCall,
    retry_soon: bool,
    future: &Bound<'py, PyAny>,
    then: Option<Py<ConnectOp>>,
) -> PyResult<()> {
    let py = loop_.py();
    let direction = call.direction();
    let mut op = SockOp::new(loop_.clone().unbind(), fd, future.clone().unbind(), call);
    op.then = then;
    let op = Py::new(py, op)?;
    let registered = match LoopCore::sock_watch(loop_, sock, fd)? {
        Some(watch) => {
            if let Some(replaced) = watch.get().start(op.clone_ref(py), direction) {
                replaced.get().forget_wait(py);
            }
            if retry_soon {
                loop_.get().retry_sock_watch(py, fd, direction);
            }
            Registered::Watch(op)
        }
        None => Registered::Handle(LoopCore::watch_sock_op(
            loop_,
            fd,
            op.into_any(),
            direction,
        )?),
    };
    loop_.get().sock_waits().lock().insert(
        future,
        SockWait {
            fd,
            direction,
            registered,
        },
    );
    Ok(())
}

/// Where a waiting call is registered.
pub enum Registered {
    /// An `fd_watch` callback running the `SockOp`.
    Handle(Py<Handle>),
    /// The waiting call of the fd's `SockWatch`.
    Watch(Py<SockOp>),
}

/// A waiting call's registration, found by its future.
pub struct SockWait {
    pub fd: i32,
    pub direction: Direction,
    pub registered: Registered,
}

/// The waiting `sock_*` calls, by future (identity), so a cancelled one
/// can find its fd even after the socket was closed.
#[derive(Default)]
pub struct SockWaits {
    by_future: HashMap<usize, SockWait>,
}

impl SockWaits {
    fn key(future: &Bound<'_, PyAny>) -> usize {
        future.as_ptr() as usize
    }

    pub fn insert(&mut self, future: &Bound<'_, PyAny>, wait: SockWait) {
        // The entry holds the handle, which holds the future: its address
        // cannot be reused while the entry exists.
        self.by_future.insert(Self::key(future), wait);
    }

    /// How many calls wait (for tests, see `LoopCore::_io_counts`).
    pub fn len(&self) -> usize {
        self.by_future.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_future.is_empty()
    }

    pub fn remove(&mut self, future: &Bound<'_, PyAny>) -> Option<SockWait> {
        self.by_future.remove(&Self::key(future))
    }

    /// The call now waits through `fd_watch` (its `SockWatch` was released).
    pub fn moved_to_handle(
        &mut self,
        future: &Bound<'_, PyAny>,
        handle: Py<Handle>,
    ) -> Option<SockWait> {
        let wait = self.by_future.get_mut(&Self::key(future))?;
        let old = std::mem::replace(&mut wait.registered, Registered::Handle(handle));
        Some(SockWait {
            fd: wait.fd,
            direction: wait.direction,
            registered: old,
        })
    }

    pub fn take_all(&mut self) -> Vec<SockWait> {
        self.by_future.drain().map(|(_, w)| w).collect()
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for wait in self.by_future.values() {
            match &wait.registered {
                Registered::Handle(h) => visit.call(h)?,
                Registered::Watch(op) => visit.call(op)?,
            }
        }
        Ok(())
    }
}

pub enum SockCall {
    Recv {
        nbytes: usize,
    },
    RecvInto {
        buffer: Py<PyAny>,
    },
    SendAll {
        data: Py<PyAny>,
        sent: usize,
    },
    /// A non-blocking connect in progress, to `address` (for the message).
    Connect {
        address: Py<PyAny>,
    },
}

impl SockCall {
    pub fn direction(&self) -> Direction {
        match self {
            SockCall::SendAll { .. } | SockCall::Connect { .. } => Direction::Write,
            _ => Direction::Read,
        }
    }

    fn method(&self) -> &'static str {
        match self {
            SockCall::Recv { .. } => "sock_recv",
            SockCall::RecvInto { .. } => "sock_recv_into",
            SockCall::SendAll { .. } => "sock_sendall",
            SockCall::Connect { .. } => "sock_connect",
        }
    }
}

/// What one attempt produced.
pub enum Outcome {
    Retry,
    Done(Py<PyAny>),
    Failed(PyErr),
}

/// One waiting `sock_*` call: the future, the call, and where to retry it.
#[pyclass(frozen, module = "tokioloop._tokioloop")]
pub struct SockOp {
    loop_: Py<LoopCore>,
    fd: i32,
    future: Py<PyAny>,
    /// Taken only by the attempt (on the loop thread, which may run Python
    /// code meanwhile: a buffer's `__buffer__`, an address's repr) and by
    /// the GC's `try_lock`; what others ask (direction, repr) is copied
    /// out at construction, so no thread can wait for it holding the GIL.
    call: Mutex<SockCall>,
    direction: Direction,
    method: &'static str,
    /// The `create_connection` this connect is for, which takes the
    /// outcome instead of the future (see `connect_op`).
    then: Option<Py<ConnectOp>>,
}

impl SockOp {
    pub fn new(loop_: Py<LoopCore>, fd: i32, future: Py<PyAny>, call: SockCall) -> Self {
        SockOp {
            loop_,
            fd,
            future,
            direction: call.direction(),
            method: call.method(),
            call: Mutex::new(call),
            then: None,
        }
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    pub fn future(&self) -> &Py<PyAny> {
        &self.future
    }

    pub fn future_done(&self, py: Python<'_>) -> PyResult<bool> {
        self.future
            .bind(py)
            .call_method0(intern!(py, "done"))?
            .is_truthy()
    }

    /// Retry the call (a `sock_sendall` sends until done or would-block).
    pub fn attempt_all(&self, py: Python<'_>) -> Outcome {
        let mut call = self.call.lock();
        let result: PyResult<Option<Py<PyAny>>> = match &mut *call {
            SockCall::Recv { nbytes } => recv(py, self.fd, *nbytes),
            SockCall::RecvInto { buffer } => recv_into(py, self.fd, buffer.bind(py)),
            SockCall::SendAll { data, sent } => send_rest(py, self.fd, data.bind(py), sent),
            SockCall::Connect { address } => connect_result(py, self.fd, address.bind(py)),
        };
        match result {
            Ok(Some(value)) => Outcome::Done(value),
            Ok(None) => Outcome::Retry,
            Err(err) => Outcome::Failed(err),
        }
    }

    /// This call no longer waits: drop its entry in the loop's table.
    pub fn forget_wait(&self, py: Python<'_>) {
        let wait = self
            .loop_
            .get()
            .sock_waits()
            .lock()
            .remove(self.future.bind(py));
        drop(wait); // after unlocking: it may hold the last reference
    }

    /// Resolve the future with what the call produced. Only
    /// `KeyboardInterrupt`/`SystemExit` escape, to stop the loop.
    pub fn finish(&self, py: Python<'_>, outcome: Outcome) -> PyResult<()> {
        if let Some(then) = &self.then {
            return ConnectOp::connected(then.bind(py), outcome);
        }
        let future = self.future.bind(py);
        match outcome {
            Outcome::Done(value) => {
                future.call_method1(intern!(py, "set_result"), (value,))?;
            }
            Outcome::Failed(err) => {
                if crate::transport_support::is_fatal(py, &err) {
                    return Err(err);
                }
                future.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?;
            }
            Outcome::Retry => {}
        }
        Ok(())
    }
}

fn would_block(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// A waiting call's syscall failed: wait again (`None`) if it would block
/// or was interrupted, else raise the error as Python's socket does.
fn wait_again_or_raise<T>(err: io::Error) -> PyResult<Option<T>> {
    if would_block(&err) {
        Ok(None)
    } else {
        Err(os_error(err))
    }
}

fn recv(py: Python<'_>, fd: i32, nbytes: usize) -> PyResult<Option<Py<PyAny>>> {
    match recv_new_bytes(py, fd, nbytes) {
        Ok(bytes) => Ok(Some(bytes.into_any())),
        Err(err) => wait_again_or_raise(err),
    }
}

fn recv_into(py: Python<'_>, fd: i32, buffer: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let view = ByteView::new(buffer, true)?;
    let (ptr, len) = view.raw_parts();
    // SAFETY: the view keeps `len` writable bytes at `ptr` alive until it
    // is dropped, after the call.
    let n = unsafe { libc::recv(fd, ptr, len, libc::MSG_DONTWAIT) };
    drop(view);
    if n < 0 {
        return wait_again_or_raise(io::Error::last_os_error());
    }
    Ok(Some((n as usize).into_pyobject(py)?.into_any().unbind()))
}

/// Send what is left of `data` until all of it is out or the socket is
/// full (so a waiter only ever waits after a would-block).
fn send_rest(
    py: Python<'_>,
    fd: i32,
    data: &Bound<'_, PyAny>,
    sent: &mut usize,
) -> PyResult<Option<Py<PyAny>>> {
    let view = ByteView::new(data, false)?;
    while *sent < view.len() {
        match send_some(fd, &view.as_slice()[*sent..]) {
            Ok(n) => *sent += n,
            Err(err) => return wait_again_or_raise(err),
        }
    }
    Ok(Some(py.None()))
}

/// asyncio's `_sock_connect_cb` once the socket is writable: the pending
/// error from `SO_ERROR`, raised as asyncio raises it.
fn connect_result(
    py: Python<'_>,
    fd: i32,
    address: &Bound<'_, PyAny>,
) -> PyResult<Option<Py<PyAny>>> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a c_int out-parameter of the stated size; a bad fd is an
    // error return.
    let got = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if got < 0 {
        return wait_again_or_raise(io::Error::last_os_error());
    }
    if err == 0 {
        return Ok(Some(py.None()));
    }
    let message = format!("Connect call failed {}", address.str()?);
    Err(PyOSError::new_err((err, message)))
}

#[pymethods]
impl SockOp {
    /// Run by the loop when the fd is ready, for a call that waits through
    /// `fd_watch` (as asyncio's `_sock_recv` &c. do).
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let direction = this.direction();
        let loop_ = this.loop_.bind(py);
        if this.future_done(py)? {
            // Cancelled: the coroutine's `_sock_wait_cancelled` has not run
            // yet; the fd is free again from now on, as with asyncio.
            this.forget_wait(py);
            LoopCore::remove_fd_native(loop_, this.fd, direction)?;
            return Ok(());
        }
        let outcome = this.attempt_all(py);
        if matches!(outcome, Outcome::Retry) {
            return Ok(());
        }
        this.forget_wait(py);
        LoopCore::remove_fd_native(loop_, this.fd, direction)?;
        this.finish(py, outcome)
    }

    fn __repr__(&self) -> String {
        format!("<{} fd={}>", self.method, self.fd)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.future)?;
        if let Some(then) = &self.then {
            visit.call(then)?;
        }
        if let Some(call) = self.call.try_lock() {
            match &*call {
                SockCall::RecvInto { buffer } => visit.call(buffer)?,
                SockCall::SendAll { data, .. } => visit.call(data)?,
                SockCall::Connect { address } => visit.call(address)?,
                SockCall::Recv { .. } => {}
            }
        }
        Ok(())
    }
}
