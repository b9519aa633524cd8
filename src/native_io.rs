//! Readiness for the loop's native I/O objects (transports), which do their
//! own reads and writes instead of running Python callbacks. (The sockets
//! `sock_*` waits keep registered need no readiness state: see
//! `LoopPoller::add_sock`.)
//!
//! A native object owns one [`IoRegistration`]: its fd in the loop's own
//! epoll instance (`loop_poll`, edge-triggered, both directions) and an
//! [`IoState`] that the loop updates from the events: per direction, whether
//! the fd is ready, whether the object waits for an edge (it found the fd
//! not ready, or drained it), and whether an event is queued and not yet
//! handled (so edges are de-duplicated until the object has handled the
//! last one). An edge for a direction the object waits on queues
//! the object itself (no `Handle`, no Python call) on the loop's ready
//! queue: the loop keeps each object and its state together in one registry
//! ([`NativeEntry`], by token), so an epoll event costs one lookup.
//!
//! Unlike `fd_watch`, which has to emulate a selector's level-triggered
//! callbacks with a `poll(2)` after each one, a native object knows exactly
//! when the fd is drained (`WouldBlock`, or a short read) and clears
//! readiness then; when it stops early (a full buffer), it re-queues itself
//! (see [`Readiness`]). Either way no extra syscall is spent on readiness.
//! The state is only read and written with the GIL held (events are decoded
//! after the park, with the GIL taken again), so an edge can never slip in
//! between an attempt's `EAGAIN` and its clearing readiness: it waits in
//! the epoll instance until the next poll.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};

use crate::datagram_transport::DatagramTransport;
use crate::fd_watch::{Direction, EventSink, FdEvent};
use crate::loop_poll::LoopPoller;
use crate::sock_watch::SockWatch;
use crate::stream_transport::StreamTransport;

/// One direction's readiness bits (see the module doc).
#[derive(Default)]
struct Side {
    ready: AtomicBool,
    /// This side was hung up (`EPOLLHUP`, or `EPOLLRDHUP` for reading):
    /// final, so readiness is never cleared again. The edge that reported
    /// it is the last one, and whatever is left to read (the EOF) must
    /// still be read after a short read.
    closed: AtomicBool,
    /// The object waits for the next edge.
    armed: AtomicBool,
    /// An event for this direction is queued and not yet handled.
    pending: AtomicBool,
}

/// A registration's readiness, shared with the poller that decodes its
/// events.
pub struct IoState {
    token: u64,
    sink: Weak<dyn EventSink>,
    sides: [Side; 2],
    /// An error or hang-up came with an edge since the last
    /// `take_error_edge`.
    error: AtomicBool,
}

impl IoState {
    /// Claim the queued event for `direction`: false if one is queued
    /// already (edges are de-duplicated until the object handled it).
    fn claim(&self, direction: Direction) -> bool {
        !self.sides[direction as usize]
            .pending
            .swap(true, Ordering::AcqRel)
    }

    /// Queue an event for `direction` through the loop's event list, unless
    /// one is queued already (the object asks from inside its own I/O, so
    /// the loop's registry may be locked: see `LoopCore::dispatch_fd_events`).
    fn signal(&self, direction: Direction) {
        if !self.claim(direction) {
            return;
        }
        if let Some(sink) = self.sink.upgrade() {
            sink.push_fd_event(FdEvent {
                token: self.token,
                direction,
            });
        }
    }

    /// An epoll event for this fd (`mask`): set readiness, and queue an
    /// event (`queue`) for each direction the object waits on. Errors and
    /// hang-ups count for both directions, as with a selector.
    pub fn on_edge(&self, mask: u32, mut queue: impl FnMut(Direction)) {
        let err = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        if mask & err != 0 {
            self.error.store(true, Ordering::Relaxed);
        }
        let read = (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP) as u32 | err;
        let write = libc::EPOLLOUT as u32 | err;
        let hup = libc::EPOLLHUP as u32;
        let read_hup = hup | libc::EPOLLRDHUP as u32;
        for (bits, closes, direction) in [
            (read, read_hup, Direction::Read),
            (write, hup, Direction::Write),
        ] {
            if mask & bits == 0 {
                continue;
            }
            let side = &self.sides[direction as usize];
            if mask & closes != 0 {
                side.closed.store(true, Ordering::Relaxed);
            }
            side.ready.store(true, Ordering::Relaxed);
            if side.armed.swap(false, Ordering::Relaxed) && self.claim(direction) {
                queue(direction);
            }
        }
    }
}

/// One fd in the loop's epoll instance, owned by a native I/O object.
pub struct IoRegistration {
    poller: Arc<LoopPoller>,
    fd: RawFd,
    state: Arc<IoState>,
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
    /// Not ready; the next edge queues an event.
    NotReady,
    /// The I/O ran and returned this (`WouldBlock` is handled inside).
    Done(io::Result<T>),
}

impl IoRegistration {
    /// Register `fd` (borrowed: the caller closes it, after dropping this)
    /// with `poller`, reporting events as `token` to `sink`. `in_poller`:
    /// the fd may still be in the instance under a released key (see
    /// `LoopPoller::rekey`).
    pub fn new(
        poller: &Arc<LoopPoller>,
        fd: RawFd,
        token: u64,
        sink: Weak<dyn EventSink>,
        in_poller: bool,
    ) -> io::Result<Self> {
        let state = Arc::new(IoState {
            token,
            sink,
            sides: Default::default(),
            error: AtomicBool::new(false),
        });
        if in_poller {
            poller.rekey(fd, token)?;
        } else {
            poller.add(fd, token)?;
        }
        Ok(IoRegistration {
            poller: poller.clone(),
            fd,
            state,
        })
    }

    /// The readiness state, for the loop's registry to update from edges.
    pub fn state(&self) -> Arc<IoState> {
        self.state.clone()
    }

    fn side(&self, direction: Direction) -> &Side {
        &self.state.sides[direction as usize]
    }

    /// The queued event for `direction` is being handled: later edges queue
    /// a new one.
    pub fn take_pending(&self, direction: Direction) {
        self.side(direction).pending.store(false, Ordering::Release);
    }

    /// Queue an event for `direction` now (readiness may still be set, or
    /// the object wants to look again next iteration).
    pub fn requeue(&self, direction: Direction) {
        self.state.signal(direction);
    }

    /// Readiness is gone: the next edge queues an event. On a hung-up side
    /// no edge will come, and it stays ready: look again next iteration.
    fn clear(&self, direction: Direction) {
        let side = self.side(direction);
        if side.closed.load(Ordering::Relaxed) {
            self.requeue(direction);
            return;
        }
        side.ready.store(false, Ordering::Relaxed);
        side.armed.store(true, Ordering::Relaxed);
    }

    /// If the fd is ready for `direction`, run `op` on it. `op` returns its
    /// result and what it learnt about readiness (see [`Readiness`]). On
    /// `WouldBlock` readiness is cleared and the next edge awaited.
    pub fn attempt<T>(
        &self,
        direction: Direction,
        op: impl FnOnce() -> io::Result<(T, Readiness)>,
    ) -> Attempt<T> {
        let side = self.side(direction);
        if !side.ready.load(Ordering::Relaxed) {
            side.armed.store(true, Ordering::Relaxed);
            return Attempt::NotReady;
        }
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.clear(direction);
                Attempt::Done(Err(e))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                self.requeue(direction);
                Attempt::Done(Err(e))
            }
            Err(e) => Attempt::Done(Err(e)),
            Ok((value, readiness)) => {
                match readiness {
                    Readiness::Drained => self.clear(direction),
                    Readiness::MoreLater => self.requeue(direction),
                    Readiness::Unknown => {}
                }
                Attempt::Done(Ok(value))
            }
        }
    }

    /// Consume a write edge that carries an error (`EPOLLERR` alone, which
    /// only the write side hears on a connected datagram socket): true if
    /// there was one. The next write edge is awaited either way. Only for
    /// objects that watch writes for errors while they have nothing to
    /// write.
    pub fn take_error_edge(&self) -> bool {
        if !self.side(Direction::Write).ready.load(Ordering::Relaxed) {
            self.side(Direction::Write)
                .armed
                .store(true, Ordering::Relaxed);
            return false;
        }
        // Not `clear`: a hung-up side would queue itself again for ever.
        let side = self.side(Direction::Write);
        side.ready.store(false, Ordering::Relaxed);
        side.armed.store(true, Ordering::Relaxed);
        self.state.error.swap(false, Ordering::Relaxed)
    }

    /// Start watching `direction`: queue an event so the object tries its
    /// I/O (which arms the side if the fd is not ready yet).
    pub fn watch(&self, direction: Direction) {
        self.requeue(direction);
    }
}

impl Drop for IoRegistration {
    fn drop(&mut self) {
        self.poller.remove(self.fd);
    }
}

/// A native I/O object as the loop's registry holds it, by token.
pub struct NativeEntry {
    pub io: NativeIo,
    /// The readiness state its fd's edges update; `None` for a socket's
    /// kept registration, whose edges need none (see
    /// `LoopPoller::add_sock`).
    pub state: Option<Arc<IoState>>,
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
