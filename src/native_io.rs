//! Readiness for the loop's native I/O objects (transports, and the epoll
//! instance of the sockets `sock_*` waits keep registered, `sock_poll`), which
//! do their own reads and writes instead of running Python callbacks.
//!
//! A native object owns one [`IoRegistration`]: a tokio `AsyncFd` for its
//! socket plus two wakers (read, write). When the reactor sees an edge, the
//! waker records `(token, direction)` in the loop's event list, once: a
//! per-direction `pending` flag de-duplicates edges until the object has
//! handled the last one. The loop looks the token up in its registry and
//! queues the object itself (no `Handle`, no Python call) on the ready queue.
//!
//! Unlike `fd_watch`, which has to emulate a selector's level-triggered
//! callbacks with a `poll(2)` after each one, a native object does its I/O
//! while holding tokio's readiness guard, so it knows exactly when the fd is
//! drained (`WouldBlock`, or a short read) and clears readiness then; when it
//! stops early (a full buffer), it re-queues itself (see [`Readiness`]).
//! Either way no extra syscall is spent on readiness.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};

use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;

use crate::datagram_transport::DatagramTransport;
use crate::fd_watch::{BorrowedFd, Direction, EventSink, FdEvent, NATIVE_FD};
use crate::sock_watch::SockWatch;
use crate::stream_transport::StreamTransport;

struct IoWaker {
    sink: Weak<dyn EventSink>,
    token: u64,
    direction: Direction,
    /// An event for this direction is queued and not yet handled.
    pending: AtomicBool,
}

impl IoWaker {
    fn signal(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            if let Some(sink) = self.sink.upgrade() {
                sink.push_fd_event(FdEvent {
                    fd: NATIVE_FD,
                    token: self.token,
                    direction: self.direction,
                });
            }
        }
    }
}

impl Wake for IoWaker {
    fn wake(self: Arc<Self>) {
        self.signal();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.signal();
    }
}

/// One fd on the loop's reactor, owned by a native I/O object.
pub struct IoRegistration {
    afd: AsyncFd<BorrowedFd>,
    wakers: [Arc<IoWaker>; 2],
    task_wakers: [Waker; 2],
}

/// What an I/O call learnt about the fd's readiness.
pub enum Readiness {
    /// It took less than offered, or found nothing more: clear readiness,
    /// the next edge wakes us.
    Drained,
    /// It stopped early (a full buffer): look again next iteration.
    MoreLater,
    /// It did all it wanted: leave readiness as it is, with no event queued.
    Unknown,
}

/// What happened when the object asked for readiness and tried its I/O.
pub enum Attempt<T> {
    /// Not ready; the waker is armed.
    NotReady,
    /// The I/O ran and returned this (`WouldBlock` is handled inside).
    Done(io::Result<T>),
}

impl IoRegistration {
    /// Register `fd` (borrowed: the caller closes it, after dropping this).
    /// Must run inside the loop runtime's context.
    pub fn new(fd: RawFd, token: u64, sink: Weak<dyn EventSink>) -> io::Result<Self> {
        // SAFETY: the native object that owns this registration keeps the
        // fd open until it drops the registration (a transport deregisters
        // before closing its socket; the `SockPoller` owns its epoll fd and
        // drops the registration first), so the fd stays valid for its
        // lifetime.
        let afd = unsafe {
            AsyncFd::register_with_interest(BorrowedFd(fd), Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(io::Error::from)?;
        let waker = |direction| {
            Arc::new(IoWaker {
                sink: sink.clone(),
                token,
                direction,
                pending: AtomicBool::new(false),
            })
        };
        let wakers = [waker(Direction::Read), waker(Direction::Write)];
        let task_wakers = [
            Waker::from(wakers[0].clone()),
            Waker::from(wakers[1].clone()),
        ];
        Ok(IoRegistration {
            afd,
            wakers,
            task_wakers,
        })
    }

    /// The queued event for `direction` is being handled: later edges queue
    /// a new one.
    pub fn take_pending(&self, direction: Direction) {
        self.wakers[direction as usize]
            .pending
            .store(false, Ordering::Release);
    }

    /// Queue an event for `direction` now (readiness may still be set, or
    /// the object wants to look again next iteration).
    pub fn requeue(&self, direction: Direction) {
        self.wakers[direction as usize].signal();
    }

    fn poll_guard(&self, direction: Direction) -> Option<AsyncFdReadyGuard<'_, BorrowedFd>> {
        let mut cx = Context::from_waker(&self.task_wakers[direction as usize]);
        let polled = match direction {
            Direction::Read => self.afd.poll_read_ready(&mut cx),
            Direction::Write => self.afd.poll_write_ready(&mut cx),
        };
        match polled {
            Poll::Ready(Ok(guard)) => Some(guard),
            // An error here means the reactor is gone (loop closing): treat
            // it as "not ready"; the object is torn down with the loop.
            Poll::Ready(Err(_)) | Poll::Pending => None,
        }
    }

    /// If the fd is ready for `direction`, run `op` on it. `op` returns its
    /// result and what it learnt about readiness (see [`Readiness`]). On
    /// `WouldBlock` readiness is cleared and the waker armed.
    pub fn attempt<T>(
        &self,
        direction: Direction,
        op: impl FnOnce() -> io::Result<(T, Readiness)>,
    ) -> Attempt<T> {
        let Some(mut guard) = self.poll_guard(direction) else {
            return Attempt::NotReady;
        };
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                guard.clear_ready();
                drop(guard);
                self.rearm(direction);
                Attempt::Done(Err(e))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                drop(guard);
                self.requeue(direction);
                Attempt::Done(Err(e))
            }
            Err(e) => Attempt::Done(Err(e)),
            Ok((value, readiness)) => {
                match readiness {
                    Readiness::Drained => {
                        guard.clear_ready();
                        drop(guard);
                        self.rearm(direction);
                    }
                    Readiness::MoreLater => {
                        drop(guard);
                        self.requeue(direction);
                    }
                    Readiness::Unknown => {}
                }
                Attempt::Done(Ok(value))
            }
        }
    }

    /// After clearing readiness: register the waker, or, if an edge arrived
    /// in between, queue the event at once.
    fn rearm(&self, direction: Direction) {
        if self.poll_guard(direction).is_some() {
            self.requeue(direction);
        }
    }

    /// Consume a write edge that carries an error (`EPOLLERR` alone, which
    /// tokio reports as write-closed): true if there was one. The write
    /// waker is armed again either way. Only for objects that watch writes
    /// for errors while they have nothing to write.
    pub fn take_error_edge(&self) -> bool {
        let Some(mut guard) = self.poll_guard(Direction::Write) else {
            return false;
        };
        let error = guard.ready().is_write_closed();
        guard.clear_ready();
        drop(guard);
        self.rearm(Direction::Write);
        error
    }

    /// Start watching `direction`: queue an event so the object polls
    /// readiness (which arms the waker if the fd is not ready yet).
    pub fn watch(&self, direction: Direction) {
        self.requeue(direction);
    }
}

/// A native I/O object the loop dispatches readiness events to.
pub enum NativeIo {
    Stream(Py<StreamTransport>),
    Datagram(Py<DatagramTransport>),
    /// A socket's registration kept across `sock_*` waits.
    Sock(Py<SockWatch>),
}

impl NativeIo {
    pub fn clone_ref(&self, py: Python<'_>) -> Self {
        match self {
            NativeIo::Stream(t) => NativeIo::Stream(t.clone_ref(py)),
            NativeIo::Datagram(t) => NativeIo::Datagram(t.clone_ref(py)),
            NativeIo::Sock(w) => NativeIo::Sock(w.clone_ref(py)),
        }
    }

    /// Handle a readiness event; `Err` only for exceptions that must stop
    /// the loop.
    pub fn on_ready(&self, py: Python<'_>, direction: Direction) -> PyResult<()> {
        match self {
            NativeIo::Stream(t) => StreamTransport::on_ready(t.bind(py), direction),
            NativeIo::Datagram(t) => DatagramTransport::on_ready(t.bind(py), direction),
            NativeIo::Sock(w) => SockWatch::on_ready(w.bind(py), direction),
        }
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            NativeIo::Stream(t) => visit.call(t),
            NativeIo::Datagram(t) => visit.call(t),
            NativeIo::Sock(w) => visit.call(w),
        }
    }
}
