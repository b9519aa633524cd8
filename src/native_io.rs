//! Readiness for the loop's native I/O objects (stream transports), which
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
//! stops early (a full buffer), it re-queues itself with [`IoRegistration::
//! requeue`]. Either way no extra syscall is spent on readiness.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;

use crate::fd_watch::{BorrowedFd, Direction, EventSink, FdEvent, NATIVE_FD};

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
        // socket open until it drops the registration (it deregisters before
        // closing the socket), so the fd stays valid for its lifetime.
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

    /// If the fd is ready for `direction`, run `op` on it. `op` returns the
    /// byte count and whether it consumed all that was available (a short
    /// read or write); then readiness is cleared and the waker armed, as it
    /// is on `WouldBlock`. Otherwise the event is re-queued, so a fd that is
    /// still ready is looked at again next iteration, as a level-triggered
    /// selector would.
    pub fn attempt<T>(
        &self,
        direction: Direction,
        op: impl FnOnce() -> io::Result<(T, bool)>,
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
            Ok((value, drained)) => {
                if drained {
                    guard.clear_ready();
                    drop(guard);
                    self.rearm(direction);
                } else {
                    drop(guard);
                    self.requeue(direction);
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

    /// Start watching `direction`: queue an event so the object polls
    /// readiness (which arms the waker if the fd is not ready yet).
    pub fn watch(&self, direction: Direction) {
        self.requeue(direction);
    }
}
