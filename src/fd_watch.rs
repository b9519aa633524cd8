//! File-descriptor readiness for `add_reader`/`add_writer`, on tokio's
//! reactor, with asyncio's level-triggered semantics.
//!
//! Each watched fd is one `AsyncFd` registration (read and write interest).
//! Instead of a tokio task per fd, the registration's wakers are
//! [`FdWaker`]s: when the reactor sees the fd become ready inside the loop's
//! `block_on`, the waker only records `(fd, token, direction)` in the loop's
//! event list. After `block_on` returns, the loop thread turns each event
//! into the registered callback's handle on the ready queue, outside the
//! runtime's context, like a selector loop's `_process_events`.
//!
//! tokio reports edges; asyncio promises levels (a reader callback that
//! does not drain the fd runs again next iteration). So after the callbacks
//! of an iteration ran, every fd that fired has its cached readiness cleared
//! and is checked with a zero-timeout `poll(2)`: still ready means another
//! event now; not ready means the next edge will wake us.
//!
//! One more selector habit asyncio relies on: `EPOLLERR` alone counts as
//! readable (a pipe's write end whose reader went away, which asyncio's
//! write-pipe transport watches for reading; a connected UDP socket with a
//! pending ICMP error). tokio reports it only as write-closed. So a reader
//! also arms the write waker, and a write edge carrying write-closed with no
//! writer registered runs the reader.

use rustc_hash::FxHashMap as HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};

use pyo3::prelude::*;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::handles::Handle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// `FdEvent::fd` of events for native I/O objects (`native_io`), which are
/// found by token, not by fd.
pub const NATIVE_FD: RawFd = -1;

/// One readiness edge reported by the reactor.
#[derive(Clone, Copy, Debug)]
pub struct FdEvent {
    pub fd: RawFd,
    pub token: u64,
    pub direction: Direction,
}

/// Where wakers deliver events; owned by the loop's shared state.
pub trait EventSink: Send + Sync + 'static {
    fn push_fd_event(&self, event: FdEvent);
}

struct FdWaker<S: EventSink> {
    sink: Weak<S>,
    event: FdEvent,
}

impl<S: EventSink> Wake for FdWaker<S> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(sink) = self.sink.upgrade() {
            sink.push_fd_event(self.event);
        }
    }
}

/// A borrowed fd: the caller keeps ownership and closes it.
pub(crate) struct BorrowedFd(pub(crate) RawFd);

impl AsRawFd for BorrowedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

struct Entry {
    token: u64,
    afd: AsyncFd<BorrowedFd>,
    reader: Option<Py<Handle>>,
    writer: Option<Py<Handle>>,
    /// The object the fd was first registered with, when not an int: a
    /// selector keeps it too, and finds a registration by it once its
    /// `fileno()` no longer answers (a socket closed while watched, then
    /// passed to `remove_reader`; see [`FdWatchers::fd_of`]).
    fileobj: Option<Py<PyAny>>,
    wakers: [Waker; 2],
    /// Callback already queued this iteration, per direction.
    fired: [bool; 2],
    /// The callback found the fd drained (see [`FdWatchers::mark_drained`]):
    /// the re-check after it can skip its `poll(2)`.
    drained: [bool; 2],
}

impl Entry {
    fn slot(&mut self, direction: Direction) -> &mut Option<Py<Handle>> {
        match direction {
            Direction::Read => &mut self.reader,
            Direction::Write => &mut self.writer,
        }
    }

    /// Poll tokio's cached readiness, registering our waker if not ready.
    fn poll_ready(&self, direction: Direction, clear: bool) -> bool {
        let waker = &self.wakers[direction as usize];
        let mut cx = Context::from_waker(waker);
        let ready = match direction {
            Direction::Read => match self.afd.poll_read_ready(&mut cx) {
                Poll::Ready(Ok(mut guard)) => {
                    if clear {
                        guard.clear_ready();
                    }
                    true
                }
                _ => false,
            },
            Direction::Write => match self.afd.poll_write_ready(&mut cx) {
                Poll::Ready(Ok(mut guard)) => {
                    if clear {
                        guard.clear_ready();
                    }
                    true
                }
                _ => false,
            },
        };
        if ready && clear {
            // Re-register the waker now that the cached readiness is gone.
            return self.poll_ready(direction, false);
        }
        ready
    }
}

impl Entry {
    /// Consume cached write readiness (re-arming the write waker) and say
    /// whether it carried write-closed, i.e. `EPOLLERR`/`EPOLLHUP`.
    fn take_write_closed(&self) -> bool {
        let mut cx = Context::from_waker(&self.wakers[Direction::Write as usize]);
        let closed = match self.afd.poll_write_ready(&mut cx) {
            Poll::Ready(Ok(mut guard)) => {
                let closed = guard.ready().is_write_closed();
                guard.clear_ready();
                closed
            }
            _ => return false,
        };
        // Registers the waker: nothing can have arrived since the clear.
        let _ = self.afd.poll_write_ready(&mut cx);
        closed
    }
}

/// True if `poll(2)` says the fd is ready for `direction` right now
/// (errors and hang-ups count, as they do for select-based loops).
fn ready_now(fd: RawFd, direction: Direction) -> bool {
    let events = match direction {
        Direction::Read => libc::POLLIN | libc::POLLPRI,
        Direction::Write => libc::POLLOUT,
    };
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (events | libc::POLLERR | libc::POLLHUP) != 0
}

/// `_readable(fd)`: whether `fd` would report readable right now (one
/// zero-timeout `poll(2)`). The accept loop asks before each accept after
/// the first: an accept that finds the queue empty raises
/// `BlockingIOError`, which costs about ten times this check.
#[pyfunction]
pub fn _readable(fd: RawFd) -> bool {
    ready_now(fd, Direction::Read)
}

/// The reader and writer handles of one watched fd.
pub type Registered<'a> = (Option<&'a Py<Handle>>, Option<&'a Py<Handle>>);

/// Every fd the loop watches for callbacks.
#[derive(Default)]
pub struct FdWatchers {
    entries: HashMap<RawFd, Entry>,
    next_token: u64,
    /// Events turned into callbacks this iteration, re-checked afterwards
    /// (each entry's `fired` flags say the same, for O(1) de-duplication).
    fired: Vec<FdEvent>,
}

impl FdWatchers {
    /// Watch `fd` (given as `fileobj`, None for an int) for `direction`
    /// with `handle`; returns the handle it replaces. Must run inside the
    /// runtime's context (registration). The caller still holds
    /// `fileobj`, so dropping it here (fd already watched) frees nothing.
    pub fn add<S: EventSink>(
        &mut self,
        sink: &Arc<S>,
        fd: RawFd,
        direction: Direction,
        handle: Py<Handle>,
        fileobj: Option<Py<PyAny>>,
    ) -> io::Result<Option<Py<Handle>>> {
        if !self.entries.contains_key(&fd) {
            let token = self.next_token;
            self.next_token += 1;
            // SAFETY: asyncio's contract for add_reader/add_writer is that
            // the caller keeps the fd open until it removes the callback, as
            // with any selector. If a program closes it early, the worst case
            // is what a selector loop suffers too: epoll drops the closed fd
            // by itself, and our later deregistration of that number fails
            // or hits a reused fd's registration; no memory is involved.
            let afd = unsafe {
                AsyncFd::register_with_interest(
                    BorrowedFd(fd),
                    Interest::READABLE | Interest::WRITABLE,
                )
            }
            .map_err(io::Error::from)?;
            let waker = |direction| {
                Waker::from(Arc::new(FdWaker {
                    sink: Arc::downgrade(sink),
                    event: FdEvent {
                        fd,
                        token,
                        direction,
                    },
                }))
            };
            let wakers = [waker(Direction::Read), waker(Direction::Write)];
            self.entries.insert(
                fd,
                Entry {
                    token,
                    afd,
                    reader: None,
                    writer: None,
                    fileobj,
                    wakers,
                    fired: [false; 2],
                    drained: [false; 2],
                },
            );
        }
        let entry = self.entries.get_mut(&fd).expect("inserted above");
        let old = entry.slot(direction).replace(handle);
        let token = entry.token;
        if entry.poll_ready(direction, false) {
            sink.push_fd_event(FdEvent {
                fd,
                token,
                direction,
            });
        }
        if direction == Direction::Read && entry.writer.is_none() && entry.take_write_closed() {
            sink.push_fd_event(FdEvent {
                fd,
                token,
                direction: Direction::Write,
            });
        }
        Ok(old)
    }

    /// Stop watching `fd` for `direction`; returns the removed handle.
    /// The registration goes away with the last direction; its file object
    /// is returned too, for the caller to drop once its lock is released
    /// (it may be the last reference, and dropping it run Python code).
    pub fn remove(&mut self, fd: RawFd, direction: Direction) -> Removed {
        let Some(entry) = self.entries.get_mut(&fd) else {
            return Removed::default();
        };
        let handle = entry.slot(direction).take();
        let fileobj = if entry.reader.is_none() && entry.writer.is_none() {
            self.entries.remove(&fd).and_then(|e| e.fileobj)
        } else {
            None
        };
        Removed { handle, fileobj }
    }

    /// The fd registered with `fileobj` (by identity), as a selector's
    /// exhaustive search finds it when `fileno()` fails.
    pub fn fd_of(&self, fileobj: &Bound<'_, PyAny>) -> Option<RawFd> {
        self.entries
            .iter()
            .find(|(_, e)| e.fileobj.as_ref().is_some_and(|f| f.is(fileobj)))
            .map(|(fd, _)| *fd)
    }

    /// The handles registered for `fd`, as a selector key would show them.
    pub fn get(&self, fd: RawFd) -> Option<Registered<'_>> {
        self.entries
            .get(&fd)
            .map(|e| (e.reader.as_ref(), e.writer.as_ref()))
    }

    /// Turn reactor events into the callbacks to run this iteration.
    pub fn dispatch(
        &mut self,
        events: impl IntoIterator<Item = FdEvent>,
        mut run: impl FnMut(&Py<Handle>),
    ) {
        for event in events {
            let Some(entry) = self.entries.get_mut(&event.fd) else {
                continue;
            };
            if entry.token != event.token {
                continue; // a stale event for an fd number since reused
            }
            let mut event = event;
            if event.direction == Direction::Write && entry.writer.is_none() {
                // An error edge: the reader hears about it, as with selectors.
                if !entry.take_write_closed() || entry.reader.is_none() {
                    continue;
                }
                event.direction = Direction::Read;
            }
            if entry.fired[event.direction as usize] {
                continue; // already queued this iteration
            }
            if let Some(handle) = entry.slot(event.direction).as_ref() {
                if !handle.get().is_cancelled() {
                    run(handle);
                    entry.fired[event.direction as usize] = true;
                    self.fired.push(event);
                }
            }
        }
    }

    /// After the iteration's callbacks ran: events for fds that are still
    /// ready (level-triggered), wakers re-armed for the others.
    pub fn rearm<S: EventSink>(&mut self, sink: &S) {
        for event in std::mem::take(&mut self.fired) {
            let Some(entry) = self.entries.get_mut(&event.fd) else {
                continue;
            };
            if entry.token != event.token {
                continue;
            }
            let d = event.direction as usize;
            entry.fired[d] = false;
            let drained = std::mem::take(&mut entry.drained[d]);
            if entry.slot(event.direction).is_none() {
                continue;
            }
            // Clearing the cached readiness keeps any edge that arrived
            // after it was set, so a drained fd needs no poll(2): a new
            // connection or datagram since the drain wakes us as usual.
            let still = entry.poll_ready(event.direction, true);
            let ready = if drained {
                still
            } else {
                ready_now(event.fd, event.direction)
            };
            if ready {
                sink.push_fd_event(event);
            }
        }
    }

    /// The callback running for `fd`'s `direction` event this iteration saw
    /// it would block (the accept loop's `accept4` found the queue empty):
    /// skip the level-triggered re-check after it. No-op unless an event
    /// for that direction is being handled.
    pub fn mark_drained(&mut self, fd: RawFd, direction: Direction) {
        if let Some(entry) = self.entries.get_mut(&fd) {
            let d = direction as usize;
            if entry.fired[d] {
                entry.drained[d] = true;
            }
        }
    }

    /// Number of watched fds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn has_fired(&self) -> bool {
        !self.fired.is_empty()
    }

    /// Everything registered (for the GC and for close).
    pub fn handles(&self) -> impl Iterator<Item = &Py<Handle>> {
        self.entries
            .values()
            .flat_map(|e| e.reader.iter().chain(e.writer.iter()))
    }

    /// The file objects registrations keep (for the GC).
    pub fn fileobjs(&self) -> impl Iterator<Item = &Py<PyAny>> {
        self.entries.values().filter_map(|e| e.fileobj.as_ref())
    }

    /// Empty the registry; what it held is returned, to be dropped once
    /// the caller's lock is released.
    pub fn take_all(&mut self) -> (Vec<Py<Handle>>, Vec<Py<PyAny>>) {
        self.fired.clear();
        let mut handles = Vec::new();
        let mut fileobjs = Vec::new();
        for (_, e) in self.entries.drain() {
            handles.extend(e.reader.into_iter().chain(e.writer));
            fileobjs.extend(e.fileobj);
        }
        (handles, fileobjs)
    }
}

/// What [`FdWatchers::remove`] took out.
#[derive(Default)]
pub struct Removed {
    pub handle: Option<Py<Handle>>,
    /// The registration's file object, when the fd is no longer watched.
    pub fileobj: Option<Py<PyAny>>,
}

impl Removed {
    /// Let go of what was removed, once the registry's lock is released
    /// (the file object may go with it), cancelling the removed callback:
    /// `remove_reader`'s answer, whether there was one.
    pub fn cancel(self, py: Python<'_>) -> PyResult<bool> {
        drop(self.fileobj);
        match self.handle {
            Some(old) => {
                old.bind(py).call_method0("cancel")?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
