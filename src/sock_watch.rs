//! Reactor registrations kept across `sock_*` waits.
//!
//! A server written with `sock_recv`/`sock_sendall` waits on the same socket
//! again and again. Registering the fd with epoll for each wait and
//! deregistering it after (`fd_watch`, asyncio's reader/writer model) costs
//! two `epoll_ctl` calls per wait. A [`SockWatch`] instead keeps one
//! registration per socket (in the loop's own epoll instance, see
//! `LoopPoller::add_sock`, which also explains why not in tokio's) for as
//! long as the
//! socket is used only with `sock_*` calls, and runs the waiting [`SockOp`]
//! natively when the fd is ready (like a native transport: no `Handle`, no
//! `poll(2)` re-check).
//!
//! A registration that outlives the wait usually outlives its socket too:
//! the program closes the socket and the fd number is reused. epoll drops a
//! closed file's registration by itself; what must not happen is the new
//! socket at that number being taken for the old one. So:
//! - a watch belongs to one socket object (a weak reference) and its fd
//!   number; a wait on that fd from any other object (or after the object
//!   died) releases the old watch and registers the new socket;
//! - every other way the loop watches an fd (`add_reader`/`add_writer`,
//!   native transports) releases a watch on that fd number first. A release
//!   hands waiting calls over to `fd_watch` (as asyncio's readers), unless
//!   the socket was closed or detached (they retry on the fd number, which
//!   may now be another file) or a transport takes the fd (asyncio's
//!   transport replaces the reader): then they are dropped and their
//!   futures stay pending, as a replaced asyncio reader's;
//! - a socket that `fd_watch` already watches never gets a watch: its waits
//!   go through `fd_watch`, as asyncio's do.
//!
//! What it cannot see is an fd closed behind its socket object's back
//! (`os.close(sock.fileno())`) and reused while that object lives on; asyncio
//! only promises anything for sockets closed through their object.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::PyWeakrefReference;

use crate::fd_watch::Direction;
use crate::sock_ops::{Outcome, SockOp};

#[pyclass(frozen, module = "tokioloop._tokioloop")]
pub struct SockWatch {
    fd: i32,
    /// The key its poller events carry (never reused).
    pub(crate) token: u64,
    /// `weakref.ref(sock)`: which socket object the registration is for.
    sock: Py<PyWeakrefReference>,
    /// Set at release: events still queued for this watch are ignored.
    released: AtomicBool,
    /// The waiting call per direction (read, write).
    ops: Mutex<[Option<Py<SockOp>>; 2]>,
}

impl SockWatch {
    /// The watch of `sock` (on `fd`); the caller registers `fd` with the
    /// poller under `token`.
    pub fn new(sock: &Bound<'_, PyAny>, fd: i32, token: u64) -> PyResult<Self> {
        Ok(SockWatch {
            fd,
            token,
            sock: PyWeakrefReference::new(sock)?.unbind(),
            released: AtomicBool::new(false),
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

    /// Whether a call waits for `direction`: edges nobody waits for are
    /// dropped (a call tries the socket before it waits).
    pub fn waits_for(&self, direction: Direction) -> bool {
        self.ops.lock()[direction as usize].is_some()
    }

    /// Wait with `op` for `direction`. Its first try just found the socket
    /// not ready, so the next edge is the news it waits for. Returns a call
    /// it replaces, as a second `add_reader` replaces the first: that call's
    /// future never completes, as with asyncio.
    pub fn start(&self, op: Py<SockOp>, direction: Direction) -> Option<Py<SockOp>> {
        self.ops.lock()[direction as usize].replace(op)
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

    /// Released (the caller takes the fd off the poller): both waiting
    /// calls, for the caller to drop or hand over after unlocking.
    pub fn release(&self) -> [Option<Py<SockOp>>; 2] {
        self.released.store(true, Ordering::Relaxed);
        std::mem::take(&mut *self.ops.lock())
    }

    /// The fd is ready for `direction` (an edge from the poller).
    pub fn on_ready(slf: &Bound<'_, Self>, direction: Direction) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.released.load(Ordering::Relaxed) {
            return Ok(()); // a stale event
        }
        let Some(op) = this.ops.lock()[direction as usize]
            .as_ref()
            .map(|op| op.clone_ref(py))
        else {
            return Ok(()); // nobody waits (any more)
        };
        let sock_op = op.get();
        if sock_op.future_done(py)? {
            // Cancelled; the coroutine's clean-up has not run yet.
            this.take_op(direction, Some(&op));
            sock_op.forget_wait(py);
            return Ok(());
        }
        let outcome = sock_op.attempt_all(py);
        if matches!(outcome, Outcome::Retry) {
            return Ok(()); // not ready after all: wait for the next edge
        }
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
        let ops = std::mem::take(&mut *self.ops.lock());
        drop(ops);
    }

    fn __repr__(&self) -> String {
        format!("<sock watch fd={}>", self.fd)
    }
}
