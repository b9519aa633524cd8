//! File-descriptor callbacks (`add_reader`/`add_writer`) with asyncio's
//! level-triggered semantics, in the loop's own epoll instance
//! (`loop_poll`).
//!
//! Each watched fd is one registration, level-triggered, for the
//! directions that have a callback (`EPOLLIN`, `EPOLLOUT`), keyed by the fd
//! and a token of the registration (`loop_poll::watch_key`). That is a
//! selector exactly: every poll reports the fd while it is ready, and the
//! loop queues the callbacks' handles ([`FdWatchers::fired`]) like a
//! selector loop's `_process_events`. (They used to sit on tokio's reactor,
//! which reports edges: a nested reactor turn per event, and a `poll(2)`
//! after every callback to emulate levels, made a round trip through two
//! `add_reader` callbacks twice as slow as uvloop's.)
//!
//! A selector habit asyncio relies on comes with it: `EPOLLERR` alone
//! counts as readable (a pipe's write end whose reader went away, which
//! asyncio's write-pipe transport watches for reading; a connected UDP
//! socket with a pending ICMP error), since epoll always reports errors.
//!
//! So does a selector's one trap: an fd closed without its callback removed
//! leaves the instance only when its file is closed everywhere. While a dup
//! (or a child process) keeps that file open and readable, epoll keeps
//! reporting the old registration, and the loop keeps waking for it (once
//! the callback is removed, or the number watched again, the events are
//! dropped: the key's token no longer matches). asyncio's epoll selector
//! spins the same way; the remedy is the same too: remove the callback
//! before closing the fd.

use rustc_hash::FxHashMap as HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use pyo3::prelude::*;

use crate::handles::Handle;
use crate::loop_poll::{self, LoopPoller};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// A native I/O object's request to run for `direction` again (see
/// `native_io::IoRegistration::requeue`), by its registration token.
#[derive(Clone, Copy, Debug)]
pub struct FdEvent {
    pub token: u64,
    pub direction: Direction,
}

/// Where native I/O objects' requests go; owned by the loop's shared state.
pub trait EventSink: Send + Sync + 'static {
    fn push_fd_event(&self, event: FdEvent);
}

/// A borrowed fd: the caller keeps ownership and closes it.
pub(crate) struct BorrowedFd(pub(crate) RawFd);

impl AsRawFd for BorrowedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

struct Entry {
    /// Tells this registration's events from those of an earlier one of
    /// the same fd number (see `loop_poll::watch_key`).
    token: u64,
    reader: Option<Py<Handle>>,
    writer: Option<Py<Handle>>,
    /// The object the fd was first registered with, when not an int: a
    /// selector keeps it too, and finds a registration by it once its
    /// `fileno()` no longer answers (a socket closed while watched, then
    /// passed to `remove_reader`; see [`FdWatchers::fd_of`]).
    fileobj: Option<Py<PyAny>>,
    /// The events the fd is in the epoll instance for (0: not in it).
    interest: u32,
}

impl Entry {
    fn slot(&mut self, direction: Direction) -> &mut Option<Py<Handle>> {
        match direction {
            Direction::Read => &mut self.reader,
            Direction::Write => &mut self.writer,
        }
    }

    /// The events the callbacks registered now want.
    fn wanted(&self) -> u32 {
        let read = if self.reader.is_some() {
            libc::EPOLLIN
        } else {
            0
        };
        let write = if self.writer.is_some() {
            libc::EPOLLOUT
        } else {
            0
        };
        (read | write) as u32
    }

    /// Bring the epoll registration in line with the callbacks.
    fn sync(&mut self, poller: &LoopPoller, fd: RawFd) -> io::Result<()> {
        let wanted = self.wanted();
        if wanted == self.interest {
            return Ok(());
        }
        let key = loop_poll::watch_key(fd, self.token);
        if wanted == 0 {
            poller.remove(fd);
        } else {
            poller.set_watch(fd, key, wanted, self.interest != 0)?;
        }
        self.interest = wanted;
        Ok(())
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
}

/// The callbacks one epoll event of a watched fd runs, and the cancelled
/// ones it found (to be removed, as asyncio's `_process_events` does).
#[derive(Default)]
pub struct Fired<'a> {
    pub run: [Option<&'a Py<Handle>>; 2],
    pub cancelled: [Option<Direction>; 2],
}

impl FdWatchers {
    /// Watch `fd` (given as `fileobj`, None for an int) for `direction`
    /// with `handle`; returns the handle it replaces. The caller still
    /// holds `fileobj`, so dropping it here (fd already watched) frees
    /// nothing.
    pub fn add(
        &mut self,
        poller: &LoopPoller,
        fd: RawFd,
        direction: Direction,
        handle: Py<Handle>,
        fileobj: Option<Py<PyAny>>,
    ) -> io::Result<Option<Py<Handle>>> {
        let new = !self.entries.contains_key(&fd);
        if new {
            let token = self.next_token;
            self.next_token += 1;
            let entry = Entry {
                token,
                reader: None,
                writer: None,
                fileobj,
                interest: 0,
            };
            self.entries.insert(fd, entry);
        }
        let entry = self.entries.get_mut(&fd).expect("inserted above");
        let old = entry.slot(direction).replace(handle);
        // asyncio's contract for add_reader/add_writer is that the caller
        // keeps the fd open until it removes the callback, as with any
        // selector. If a program closes it early, epoll drops the closed
        // fd by itself, and a later change of that number's registration
        // finds it gone (see `LoopPoller::set_watch`).
        if let Err(err) = entry.sync(poller, fd) {
            // As a selector whose `register` failed: nothing changes.
            *entry.slot(direction) = old;
            if new {
                self.entries.remove(&fd);
            }
            return Err(err);
        }
        Ok(old)
    }

    /// Stop watching `fd` for `direction`; returns the removed handle.
    /// The registration goes away with the last direction; its file object
    /// is returned too, for the caller to drop once its lock is released
    /// (it may be the last reference, and dropping it run Python code).
    pub fn remove(&mut self, poller: &LoopPoller, fd: RawFd, direction: Direction) -> Removed {
        let Some(entry) = self.entries.get_mut(&fd) else {
            return Removed::default();
        };
        let handle = entry.slot(direction).take();
        // Errors mean the fd was closed already, which took it out of the
        // instance (see `add`).
        let _ = entry.sync(poller, fd);
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

    /// The callbacks an epoll event (`mask`) of the registration `token`
    /// of `fd` runs, read as asyncio's epoll selector reads it: anything
    /// but `EPOLLIN` counts as writable and anything but `EPOLLOUT` as
    /// readable (so an error or hang-up runs both callbacks). A stale
    /// event (of an earlier registration of the number) runs nothing.
    pub fn fired(&self, fd: RawFd, token: u64, mask: u32) -> Fired<'_> {
        let mut fired = Fired::default();
        let Some(entry) = self.entries.get(&fd) else {
            return fired;
        };
        if loop_poll::watch_key(fd, entry.token) != loop_poll::watch_key(fd, token) {
            return fired;
        }
        let read = mask & !(libc::EPOLLOUT as u32) != 0;
        let write = mask & !(libc::EPOLLIN as u32) != 0;
        for (i, (wanted, slot, direction)) in [
            (read, &entry.reader, Direction::Read),
            (write, &entry.writer, Direction::Write),
        ]
        .into_iter()
        .enumerate()
        {
            match slot {
                Some(h) if wanted && h.get().is_cancelled() => fired.cancelled[i] = Some(direction),
                Some(h) if wanted => fired.run[i] = Some(h),
                _ => {}
            }
        }
        fired
    }

    /// Number of watched fds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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

    /// Empty the registry (its fds out of the epoll instance); what it
    /// held is returned, to be dropped once the caller's lock is released.
    pub fn take_all(&mut self, poller: &LoopPoller) -> (Vec<Py<Handle>>, Vec<Py<PyAny>>) {
        let mut handles = Vec::new();
        let mut fileobjs = Vec::new();
        for (fd, e) in self.entries.drain() {
            if e.interest != 0 {
                poller.remove(fd);
            }
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
