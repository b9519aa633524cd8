//! The loop's own epoll instance, where it parks, with tokio's reactor
//! nested inside it.
//!
//! Why: a park through tokio (`block_on`, its scheduler, its driver turn,
//! a `ScheduledIo` wake per fd, our waker, the event list) cost ~1,500
//! instructions per wake-up on top of the `epoll_wait` itself, which in a
//! request/response exchange is per request. The loop's hot fds (the native
//! transports' sockets, `native_io`) are therefore registered here, in an
//! epoll instance of the loop's own, edge-triggered, keyed by their never
//! reused tokens, and the loop parks in one `epoll_wait` on it. The poller
//! keeps no state per fd: [`LoopPoller::decode`] hands each edge, by token,
//! to the loop, whose registry holds the object and its readiness. The
//! `add_reader`/`add_writer` callbacks are here too, level-triggered (see
//! `fd_watch`). Everything else stays on tokio's reactor (the signal
//! socket, Rust code's own tokio I/O): tokio's epoll fd is itself
//! registered here, level-triggered, so when it has events the loop lets
//! tokio turn once (`block_on` of a yield) and tokio dispatches them as
//! before. The loop's timer fd is here too, and so are the sockets
//! `sock_*` calls keep registered (`sock_watch`, tagged keys). A
//! `call_soon_threadsafe` from another thread wakes the park through an
//! eventfd here (see `park::Wakeup`).
//!
//! tokio does not expose its epoll fd; `runtime::build` finds it (the
//! lowest free fd number when the runtime was built, checked by a probe).
//! If it cannot be found, the nesting is turned around: this instance is
//! registered with tokio like any fd, the loop parks in tokio as before,
//! and drains this instance when tokio reports it readable.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::fd_watch::{BorrowedFd, Direction};
use crate::park::{WakeFlag, Wakeup};

/// Keys of the fds of our own in the instance (tokens count up from 0).
const REACTOR_KEY: u64 = u64::MAX;
const WAKE_KEY: u64 = u64::MAX - 1;
const TIMER_KEY: u64 = u64::MAX - 2;
/// Set in the key of a `sock_*` kept registration (`sock_watch`): its
/// edges need no readiness state (see [`LoopPoller::add_sock`]).
const SOCK_TAG: u64 = 1 << 62;
/// Set in the key of an `add_reader`/`add_writer` registration
/// (`fd_watch`), which holds the fd and the registration's token.
const WATCH_TAG: u64 = 1 << 61;
/// The bits of a watch's token its key keeps (29, above the fd's 32).
const WATCH_TOKEN_BITS: u64 = (1 << 29) - 1;

/// The key of `fd`'s `add_reader`/`add_writer` registration `token`: the
/// fd number, and enough of the token to tell its events from those of an
/// earlier registration of the same number that epoll still holds (a dup
/// of a file closed while watched).
pub fn watch_key(fd: RawFd, token: u64) -> u64 {
    WATCH_TAG | ((token & WATCH_TOKEN_BITS) << 32) | u64::from(fd as u32)
}

/// The fd and the token bits a [`watch_key`] holds.
fn split_watch_key(key: u64) -> (RawFd, u64) {
    (key as u32 as RawFd, (key >> 32) & WATCH_TOKEN_BITS)
}

/// Whether an event's key is a [`watch_key`] (the keys of the loop's own
/// fds have both tag bits set).
pub fn is_watch_key(key: u64) -> bool {
    key & (SOCK_TAG | WATCH_TAG) == WATCH_TAG
}

/// Events read per `epoll_wait`. A full batch makes the next iteration
/// poll again, whatever the busy-poll pacing.
pub const BATCH: usize = 256;

pub type RawEvents = Vec<libc::epoll_event>;

pub fn raw_events() -> RawEvents {
    vec![libc::epoll_event { events: 0, u64: 0 }; BATCH]
}

enum Nesting {
    /// tokio's epoll fd is in ours: the loop parks in [`LoopPoller::wait`].
    ReactorInside,
    /// Ours is registered with tokio: the loop parks in tokio, whose
    /// readiness for our fd raises `flag`.
    InsideReactor {
        afd: AsyncFd<BorrowedFd>,
        flag: Arc<WakeFlag>,
        waker: Waker,
    },
}

/// An edge of a native registration, as [`LoopPoller::decode`] reports it.
pub enum NativeEdge {
    /// A native I/O object's fd (`native_io`), with the event mask.
    Io { token: u64, mask: u32 },
    /// A socket kept registered for `sock_*` calls, with the directions the
    /// edge reports (see [`sock_directions`]).
    Sock { token: u64, mask: u32 },
    /// An `add_reader`/`add_writer` fd (level-triggered), with the token of
    /// its registration as its key keeps it (see [`watch_key`]).
    Watch { fd: RawFd, token: u64, mask: u32 },
}

/// What a poll found besides the native registrations' edges.
#[derive(Default)]
pub struct Polled {
    /// tokio's reactor has events: let it turn.
    pub reactor: bool,
    /// The batch was full: poll again next iteration.
    pub more: bool,
    /// The timer fd is readable.
    pub timer: bool,
    /// How many watched fds had `add_reader`/`add_writer` callbacks
    /// queued: the next iteration polls, to see whether they are still
    /// ready (unless each callback reports its fd drained, see
    /// `LoopCore::rechecks`).
    pub watched: u32,
}

pub struct LoopPoller {
    /// Dropped after `epfd` (field order) in the fallback nesting, where it
    /// holds tokio's registration of `epfd`.
    nesting: Nesting,
    epfd: OwnedFd,
    /// Fallback nesting: the last look at the instance filled its batch, so
    /// events may be left that tokio will not report again (it reports the
    /// instance edge-triggered). The next poll looks first.
    left_unread: AtomicBool,
}

/// How sockets are watched: edge-triggered, both directions, with the
/// peer's half-close.
pub const EDGE_BOTH: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// A new epoll instance.
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is checked before use.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `epoll_ctl(epfd, op, fd)` with `events`, reporting as `key`.
pub fn ctl(epfd: RawFd, op: libc::c_int, fd: RawFd, events: u32, key: u64) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: key };
    // SAFETY: `event` is a valid epoll_event for the duration of the call.
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut event) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl LoopPoller {
    /// A new instance. With `reactor_fd` (tokio's epoll fd) it nests the
    /// reactor and `wakeup`'s eventfd; without, it registers itself with
    /// the reactor of the current runtime context (must run inside it).
    pub fn new(reactor_fd: Option<RawFd>, wakeup: &Arc<Wakeup>) -> io::Result<Self> {
        let epfd = epoll_create()?;
        let raw = epfd.as_raw_fd();
        let nesting = match reactor_fd {
            Some(fd) => {
                ctl(
                    raw,
                    libc::EPOLL_CTL_ADD,
                    fd,
                    libc::EPOLLIN as u32,
                    REACTOR_KEY,
                )?;
                ctl(
                    raw,
                    libc::EPOLL_CTL_ADD,
                    wakeup.event_fd(),
                    libc::EPOLLIN as u32,
                    WAKE_KEY,
                )?;
                wakeup.wake_through_fd();
                Nesting::ReactorInside
            }
            None => {
                // SAFETY: `epfd` is owned by the poller and outlives the
                // registration (field order).
                let afd =
                    unsafe { AsyncFd::register_with_interest(BorrowedFd(raw), Interest::READABLE) }
                        .map_err(io::Error::from)?;
                let flag = WakeFlag::new(wakeup.clone());
                let waker = Waker::from(flag.clone());
                let nesting = Nesting::InsideReactor { afd, flag, waker };
                arm(&nesting);
                nesting
            }
        };
        Ok(LoopPoller {
            nesting,
            epfd,
            left_unread: AtomicBool::new(false),
        })
    }

    /// Whether the loop parks here (else in tokio, see the module doc).
    pub fn parks_here(&self) -> bool {
        matches!(self.nesting, Nesting::ReactorInside)
    }

    /// Watch the loop's timer fd (level-triggered: it stays readable until
    /// the loop reads it). Only where the loop parks here.
    pub fn add_timer(&self, fd: RawFd) -> io::Result<()> {
        ctl(
            self.epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            libc::EPOLLIN as u32,
            TIMER_KEY,
        )
    }

    /// In the fallback nesting: whether tokio reported our fd readable since
    /// the last call (the waker is armed again).
    pub fn take_reactor_report(&self) -> bool {
        match &self.nesting {
            Nesting::ReactorInside => false,
            Nesting::InsideReactor { afd, flag, waker } => {
                if !flag.take() {
                    return false;
                }
                let mut cx = Context::from_waker(waker);
                if let Poll::Ready(Ok(mut guard)) = afd.poll_read_ready(&mut cx) {
                    guard.clear_ready();
                }
                arm(&self.nesting);
                true
            }
        }
    }

    /// Fallback nesting: note whether the last look filled its batch; and
    /// take that note (see the field).
    pub fn set_left_unread(&self, full: bool) {
        self.left_unread.store(full, Ordering::Relaxed);
    }

    pub fn take_left_unread(&self) -> bool {
        self.left_unread.swap(false, Ordering::Relaxed)
    }

    /// Watch `fd` (edge-triggered, both directions) for the native I/O
    /// object `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        debug_assert!(token < WATCH_TAG, "tokens count up from 0");
        ctl(
            self.epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            EDGE_BOTH,
            token,
        )
    }

    /// [`add`](Self::add) for an fd that may still be in the instance
    /// under a key nobody owns any more (a released `sock_*` watch): the
    /// entry re-keyed in one `EPOLL_CTL_MOD`, which reports the fd's
    /// current readiness as an addition would. If the entry is gone (the
    /// watched file was closed and the number reused), an addition.
    pub fn rekey(&self, fd: RawFd, token: u64) -> io::Result<()> {
        debug_assert!(token < WATCH_TAG, "tokens count up from 0");
        let raw = self.epfd.as_raw_fd();
        match ctl(raw, libc::EPOLL_CTL_MOD, fd, EDGE_BOTH, token) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                ctl(raw, libc::EPOLL_CTL_ADD, fd, EDGE_BOTH, token)
            }
            other => other,
        }
    }

    /// Watch `fd` level-triggered for `events` (`EPOLLIN`, `EPOLLOUT`),
    /// reporting as `key`; `added` if it is in the instance already (the
    /// events change). An fd closed since it was added left the instance
    /// by itself, so a change that finds it gone adds it again (the number
    /// now names another file, which the caller now watches).
    pub fn set_watch(&self, fd: RawFd, key: u64, events: u32, added: bool) -> io::Result<()> {
        let raw = self.epfd.as_raw_fd();
        if added {
            match ctl(raw, libc::EPOLL_CTL_MOD, fd, events, key) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                other => return other,
            }
        }
        ctl(raw, libc::EPOLL_CTL_ADD, fd, events, key)
    }

    /// Stop watching `fd`, whatever registered it. A failed
    /// `EPOLL_CTL_DEL` (the fd already closed) is ignored: the owner left
    /// the loop's registries first, so a stale event for its key is dropped
    /// there (see [`add_sock`](Self::add_sock)).
    pub fn remove(&self, fd: RawFd) {
        let _ = ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Watch a `sock_*` socket (edge-triggered, both directions), reported
    /// as a native event for `token` (a `SockWatch`; see `sock_watch`).
    ///
    /// A kept registration usually outlives its socket: the program closes
    /// it between two `sock_*` calls without telling the loop. Here that
    /// costs nothing: the kernel drops a closed file's entry by itself, a
    /// failed [`remove`](Self::remove) is ignored, and an entry
    /// kept alive by a dup of the file only ever reports a token nobody
    /// owns any more. (tokio, by contrast, keeps the state of a
    /// registration it could not deregister for the runtime's lifetime.)
    pub fn add_sock(&self, fd: RawFd, token: u64) -> io::Result<()> {
        debug_assert!(token < WATCH_TAG, "tokens count up from 0");
        ctl(
            self.epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            EDGE_BOTH,
            token | SOCK_TAG,
        )
    }

    /// `epoll_wait` with `timeout_ms` (-1: until something happens): how
    /// many events it wrote. The caller releases the GIL around a blocking
    /// wait and hands the events to [`decode`](Self::decode) with the GIL
    /// held again. An interrupted wait (a signal) is `Err(Interrupted)`.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: `events` has room for `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sort the events of a `wait`: the loop's own fds are noted in the
    /// result, the native registrations' edges handed to `native` (the
    /// loop's registry, which the caller locks at most once per batch).
    pub fn decode(
        &self,
        events: &[libc::epoll_event],
        wakeup: &Wakeup,
        mut native: impl FnMut(NativeEdge),
    ) -> Polled {
        let mut polled = Polled {
            more: events.len() == BATCH,
            ..Polled::default()
        };
        if events.is_empty() {
            return polled;
        }
        for event in events {
            let (mask, key) = (event.events, event.u64);
            match key {
                REACTOR_KEY => polled.reactor = true,
                WAKE_KEY => wakeup.drain_fd(),
                TIMER_KEY => polled.timer = true,
                key if key & SOCK_TAG != 0 => native(NativeEdge::Sock {
                    token: key & !SOCK_TAG,
                    mask,
                }),
                key if key & WATCH_TAG != 0 => {
                    let (fd, token) = split_watch_key(key);
                    native(NativeEdge::Watch { fd, token, mask })
                }
                token => native(NativeEdge::Io { token, mask }),
            }
        }
        polled
    }
}

/// The directions a `sock_*` socket's edge (`mask`) reports. Errors and
/// hang-ups count for both, as with a selector; there is no readiness
/// state to keep (a waiting call only starts after its syscall returned
/// `EAGAIN`, so the next edge is exactly the news it waits for, and an
/// edge while nobody waits is dropped by the loop: the next call tries the
/// socket before it waits).
pub fn sock_directions(mask: u32) -> impl Iterator<Item = Direction> {
    let err = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
    let read = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 | err;
    let write = libc::EPOLLOUT as u32 | err;
    [(read, Direction::Read), (write, Direction::Write)]
        .into_iter()
        .filter(move |(bits, _)| mask & bits != 0)
        .map(|(_, direction)| direction)
}

/// Have tokio raise the flag when our fd turns readable (fallback nesting).
fn arm(nesting: &Nesting) {
    if let Nesting::InsideReactor { afd, flag, waker } = nesting {
        let mut cx = Context::from_waker(waker);
        if afd.poll_read_ready(&mut cx).is_ready() {
            flag.raise();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_keys_hold_the_fd_and_the_token_and_no_other_key_is_one() {
        for (fd, token) in [(0, 0), (7, 1), (i32::MAX, WATCH_TOKEN_BITS)] {
            let key = watch_key(fd, token);
            assert!(is_watch_key(key));
            assert_eq!(split_watch_key(key), (fd, token));
        }
        // Tokens wrap at 29 bits: a registration 2^29 later has the old key.
        assert_eq!(watch_key(3, WATCH_TOKEN_BITS + 1), watch_key(3, 0));
        assert_ne!(watch_key(3, 1), watch_key(3, 2));
        assert_ne!(watch_key(3, 1), watch_key(4, 1));
        for key in [REACTOR_KEY, WAKE_KEY, TIMER_KEY, 5, 5 | SOCK_TAG] {
            assert!(!is_watch_key(key), "{key:#x}");
        }
    }
}
