//! The epoll instance that holds sockets' kept registrations (`SockWatch`).
//!
//! Why a second epoll instance instead of tokio registrations: a kept
//! registration usually outlives its socket (the program closes the socket
//! between two `sock_*` calls, without telling the loop). Deregistering a
//! closed fd fails (`EBADF`, or `ENOENT` once the number is reused), and
//! tokio then keeps the registration's state for the runtime's lifetime, on
//! purpose (a dup of the file may still be in epoll with that token): one
//! leak per such socket. Here the registrations are plain `epoll_ctl` calls
//! on an epoll fd of our own, keyed by our own never-reused tokens, so a
//! failed `EPOLL_CTL_DEL` costs nothing: the kernel drops a closed file's
//! entry by itself, and an entry kept alive by a dup only ever reports a
//! token nobody owns any more, which is ignored.
//!
//! The inner epoll fd is itself registered with tokio's reactor (an epoll
//! fd is readable while it has events). When tokio reports it readable, the
//! loop drains it with zero-timeout `epoll_wait`s (`drain`) and queues the
//! watches whose waiting calls can now go on. Sockets are registered
//! edge-triggered for reading and writing: a waiting call only ever starts
//! after its syscall returned `EAGAIN`, so the next edge is exactly the
//! news it waits for, and edges while nobody waits can be dropped (the next
//! call tries the socket before it waits).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Weak};

use crate::fd_watch::{Direction, EventSink};
use crate::loop_poll::{self, LoopPoller};
use crate::native_io::{Attempt, IoRegistration, Readiness};

/// Events read per `epoll_wait`; a full batch means "look again".
const BATCH: usize = 64;

pub struct SockPoller {
    /// Dropped after `epfd` is deregistered (field order).
    io: IoRegistration,
    epfd: OwnedFd,
}

impl SockPoller {
    /// A new epoll instance in the loop's (`poller`), reporting as `token`.
    pub fn new(
        poller: &Arc<LoopPoller>,
        token: u64,
        sink: Weak<dyn EventSink>,
    ) -> io::Result<Self> {
        let epfd = loop_poll::epoll_create()?;
        let io = IoRegistration::new(poller, epfd.as_raw_fd(), token, sink)?;
        // Queue a first event: handling it tries the fd, which arms the
        // registration for the next edge if there is nothing yet.
        io.watch(Direction::Read);
        Ok(SockPoller { io, epfd })
    }

    /// Watch `fd` (edge-triggered, both directions) and report it as `key`.
    pub fn add(&self, fd: RawFd, key: u64) -> io::Result<()> {
        let epfd = self.epfd.as_raw_fd();
        loop_poll::ctl(epfd, libc::EPOLL_CTL_ADD, fd, loop_poll::EDGE_BOTH, key)
    }

    /// Stop watching `fd`. Errors are expected and ignored: a closed fd is
    /// gone from the instance already (or kept by a dup, reporting a key
    /// that is no longer anybody's).
    pub fn remove(&self, fd: RawFd) {
        let _ = loop_poll::ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Handle the reactor's event for the inner epoll fd: read what it has
    /// and call `f(key, readable, writable)` for each socket event. Errors
    /// and hang-ups count for both directions, as with a selector.
    pub fn drain(&self, mut f: impl FnMut(u64, bool, bool)) {
        self.io.take_pending(Direction::Read);
        let epfd = self.epfd.as_raw_fd();
        let attempt = self.io.attempt(Direction::Read, || {
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
            // SAFETY: `events` has room for BATCH entries; zero timeout.
            let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), BATCH as i32, 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            let readiness = if n < BATCH {
                Readiness::Drained
            } else {
                Readiness::MoreLater
            };
            Ok(((events, n), readiness))
        });
        let (events, n) = match attempt {
            Attempt::Done(Ok((events, n))) => (events, n),
            // Not ready after all, or EINTR (queued again): nothing to do.
            _ => return,
        };
        let err = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        let read = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 | err;
        let write = libc::EPOLLOUT as u32 | err;
        for event in &events[..n] {
            let mask = event.events;
            let key = event.u64;
            f(key, mask & read != 0, mask & write != 0);
        }
    }
}
