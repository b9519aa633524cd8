//! Reactor registrations kept across `sock_*` waits.
//!
//! A server written with `sock_recv`/`sock_sendall` waits on the same socket
//! again and again. Registering the fd with epoll for each wait and
//! deregistering it after (`fd_watch`, asyncio's reader/writer model) costs
//! two `epoll_ctl` calls per wait. A [`SockWatch`] instead keeps one
//! registration per socket for as long as the socket is used only with
//! `sock_*` calls, and runs the waiting [`SockOp`] natively when the fd is
//! ready (like a native transport: no `Handle`, no `poll(2)` re-check).
//!
//! The danger of a registration that outlives the wait is a closed socket's
//! fd number being reused: epoll drops a closed file's registration by
//! itself, and a later `EPOLL_CTL_DEL` by number would hit the new file. So:
//! - a watch belongs to one socket object (a weak reference) and its fd
//!   number; a wait on that fd from any other object (or after the object
//!   died) releases the old watch before registering anything;
//! - every other way the loop registers an fd (`add_reader`/`add_writer`,
//!   native transports) releases a watch on that fd number first, so a
//!   release never runs after the new file was registered. A release hands
//!   waiting calls over to `fd_watch` (as asyncio's readers), unless the
//!   socket was closed or detached (they retry on the fd number, which may
//!   now be another file) or a transport takes the fd (asyncio's transport
//!   replaces the reader): then they are dropped and their futures stay
//!   pending, as a replaced asyncio reader's;
//! - a socket that `fd_watch` already watches never gets a watch: its waits
//!   go through `fd_watch`, as asyncio's do.
//!
//! What it cannot see is an fd closed behind its socket object's back
//! (`os.close(sock.fileno())`) and reused while that object lives on; asyncio
//! only promises anything for sockets closed through their object.

use std::io;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::PyWeakrefReference;

use crate::fd_watch::Direction;
use crate::native_io::{Attempt, IoRegistration, Readiness};
use crate::sock_ops::{Outcome, SockOp};

#[pyclass(frozen, module = "tokioloop._tokioloop")]
pub struct SockWatch {
    fd: i32,
    pub(crate) token: u64,
    /// `weakref.ref(sock)`: which socket object the registration is for.
    sock: Py<PyWeakrefReference>,
    /// Taken (and dropped, which deregisters the fd) at release, even while
    /// an event for this watch is still queued. An `Arc` so an event being
    /// handled does not hold the lock while it calls into Python.
    io: Mutex<Option<Arc<IoRegistration>>>,
    /// The waiting call per direction (read, write).
    ops: Mutex<[Option<Py<SockOp>>; 2]>,
}

impl SockWatch {
    pub fn new(sock: &Bound<'_, PyAny>, fd: i32, token: u64, io: IoRegistration) -> PyResult<Self> {
        Ok(SockWatch {
            fd,
            token,
            sock: PyWeakrefReference::new(sock)?.unbind(),
            io: Mutex::new(Some(Arc::new(io))),
            ops: Mutex::new([None, None]),
        })
    }

    /// Whether this registration is `sock`'s (same live object, same fd).
    pub fn is_for(&self, py: Python<'_>, sock: &Bound<'_, PyAny>, fd: i32) -> bool {
        self.fd == fd
            && self
                .sock
                .bind(py)
                .upgrade()
                .is_some_and(|live| live.is(sock))
    }

    /// Whether the socket object is alive and still has this fd (not
    /// closed or detached): only then may its waiting calls be handed to
    /// `fd_watch`, since they retry on the fd number.
    pub fn socket_still_open(&self, py: Python<'_>) -> bool {
        let Some(sock) = self.sock.bind(py).upgrade() else {
            return false;
        };
        sock.call_method0(pyo3::intern!(py, "fileno"))
            .and_then(|fd| fd.extract::<i32>())
            .is_ok_and(|fd| fd == self.fd)
    }

    /// Wait with `op` for `direction` (its first try just found the socket
    /// not ready). Returns a call it replaces, as a second `add_reader`
    /// replaces the first: that call's future never completes, as with
    /// asyncio.
    pub fn start(&self, op: Py<SockOp>, direction: Direction) -> Option<Py<SockOp>> {
        let replaced = self.ops.lock()[direction as usize].replace(op);
        let Some(io) = self.io() else {
            return replaced; // released: never, a released watch is not reused
        };
        // The try just failed with EAGAIN: drop readiness tokio may still
        // cache from an older edge and arm the waker. No edge can be lost:
        // the reactor only runs inside the loop's `block_on`, and clearing
        // only drops the readiness of the edge it was read from.
        let _ = io.attempt(direction, || {
            Err::<((), Readiness), _>(io::Error::from(io::ErrorKind::WouldBlock))
        });
        replaced
    }

    /// Take the call waiting for `direction` if it is `op` (or any, with
    /// `None`).
    pub fn take_op(&self, direction: Direction, op: Option<&Py<SockOp>>) -> Option<Py<SockOp>> {
        let mut ops = self.ops.lock();
        let slot = &mut ops[direction as usize];
        match (slot.as_ref(), op) {
            (Some(current), Some(op)) if !current.is(op) => None,
            _ => slot.take(),
        }
    }

    fn io(&self) -> Option<Arc<IoRegistration>> {
        self.io.lock().clone()
    }

    /// Off the reactor: the registration and both waiting calls, for the
    /// caller to drop (the registration first) after unlocking.
    pub fn release(&self) -> (Option<Arc<IoRegistration>>, [Option<Py<SockOp>>; 2]) {
        let io = self.io.lock().take();
        let ops = std::mem::take(&mut *self.ops.lock());
        (io, ops)
    }

    /// A readiness event from the loop.
    pub fn on_ready(slf: &Bound<'_, Self>, direction: Direction) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let Some(io) = this.io() else {
            return Ok(()); // released; a stale event
        };
        io.take_pending(direction);
        let Some(op) = this.ops.lock()[direction as usize]
            .as_ref()
            .map(|op| op.clone_ref(py))
        else {
            // Nobody waits: the readiness stays cached for the next wait,
            // which tries the socket first anyway.
            return Ok(());
        };
        let sock_op = op.get();
        if sock_op.future_done(py)? {
            // Cancelled; the coroutine's clean-up has not run yet.
            this.take_op(direction, Some(&op));
            sock_op.forget_wait(py);
            return Ok(());
        }
        let attempt = io.attempt(direction, || match sock_op.attempt_all(py) {
            Outcome::Retry => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            outcome => Ok((outcome, Readiness::Unknown)),
        });
        let Attempt::Done(Ok(outcome)) = attempt else {
            return Ok(()); // not ready after all; the waker is armed again
        };
        this.take_op(direction, Some(&op));
        sock_op.forget_wait(py);
        sock_op.finish(py, outcome)
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.sock)?;
        if let Some(ops) = self.ops.try_lock() {
            for op in ops.iter().flatten() {
                visit.call(op)?;
            }
        }
        Ok(())
    }
}

#[pymethods]
impl SockWatch {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.traverse(&visit)
    }

    fn __clear__(&self) {
        let released = self.release();
        drop(released);
    }

    fn __repr__(&self) -> String {
        format!("<sock watch fd={}>", self.fd)
    }
}
