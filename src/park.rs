//! How the loop thread waits: the wake-up cell other code pokes, and the
//! futures the loop hands to `block_on` to park or to poll I/O once.
//!
//! Everything that should end a park (a readiness edge for a native
//! transport or an fd watcher, a `call_soon_threadsafe` from another
//! thread, a signal) calls [`Wakeup::wake`]. It costs one atomic load unless
//! the loop is parked, and then one write to the cell's eventfd, which sits
//! in the epoll instance the loop parks on (`loop_poll`), or, where the
//! loop parks in tokio instead, one `AtomicWaker` wake of the `block_on`
//! task. The park future itself only checks the cell and the timer: no
//! `Notify` waiter list. The signal socket and the timer fd are not polled
//! on every park either: their readiness raises a [`WakeFlag`] through a
//! waker of their own, which also ends the park.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Wake};

use atomic_waker::AtomicWaker;

/// The loop thread's wake-up cell.
pub struct Wakeup {
    /// Set while the loop thread is (about to be) parked, so only wake-ups
    /// that are needed pay for waking it.
    parked: AtomicBool,
    waker: AtomicWaker,
    /// Written to wake a loop parked in its own epoll instance.
    event_fd: OwnedFd,
    /// The loop parks in its own epoll instance (see `loop_poll`), not in
    /// tokio: wake it through `event_fd`.
    through_fd: AtomicBool,
}

impl Wakeup {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Wakeup {
            parked: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            // SAFETY: `fd` is fresh and owned by nothing else.
            event_fd: unsafe { OwnedFd::from_raw_fd(fd) },
            through_fd: AtomicBool::new(false),
        })
    }

    /// Wake the loop thread if it is parked (or about to park).
    pub fn wake(&self) {
        // swap: of a burst of wake-ups while the loop is parked, only the
        // first pays for the wake (the loop clears the flag too).
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            if self.through_fd.load(Ordering::Relaxed) {
                let one = 1u64.to_ne_bytes();
                // SAFETY: writing 8 bytes from a live buffer to our own
                // eventfd; a full counter (EAGAIN) is a pending wake anyway.
                unsafe { libc::write(self.event_fd.as_raw_fd(), one.as_ptr().cast(), 8) };
            } else {
                self.waker.wake();
            }
        }
    }

    /// The fd that `loop_poll` watches for wake-ups.
    pub fn event_fd(&self) -> RawFd {
        self.event_fd.as_raw_fd()
    }

    /// From now on the loop parks in its own epoll instance.
    pub fn wake_through_fd(&self) {
        self.through_fd.store(true, Ordering::Relaxed);
    }

    /// Consume the wake-ups written to the eventfd.
    pub fn drain_fd(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer from our own fd.
        unsafe { libc::read(self.event_fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
    }

    /// Publish that the loop is about to park. The caller then re-checks
    /// for work under its locks: anything queued before the flag was seen
    /// did not wake us.
    pub fn about_to_park(&self) {
        self.parked.store(true, Ordering::SeqCst);
    }

    /// The loop is awake. A plain store, not `about_to_park`'s fenced one:
    /// a thread that still reads the old `true` only makes a wake-up the
    /// loop does not need (the next park drains it), and on x86 the fenced
    /// store (`xchg`) stalled the loop on the flag's cache line on every
    /// wake from a park (5% of the loop's own time in a 100 KiB echo).
    pub fn unparked(&self) {
        self.parked.store(false, Ordering::Release);
    }
}

/// Park until woken (timers wake us through the timer fd's `WakeFlag`).
pub async fn park(wakeup: &Wakeup) {
    poll_fn(|cx| {
        // Register first, then check: a wake that lands in between finds
        // the waker and polls us again.
        wakeup.waker.register(cx.waker());
        if wakeup.parked.load(Ordering::SeqCst) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await
}

/// Let the driver poll I/O once without blocking: the yield makes the
/// current-thread scheduler turn the driver with a zero timeout.
pub async fn poll_once() {
    tokio::task::yield_now().await;
}

/// Raised by a waker when its fd (the signal socket, the timer fd) turns
/// readable; the loop takes it after each `block_on`.
pub struct WakeFlag {
    raised: AtomicBool,
    wakeup: Arc<Wakeup>,
}

impl WakeFlag {
    pub fn new(wakeup: Arc<Wakeup>) -> Arc<Self> {
        Arc::new(WakeFlag {
            raised: AtomicBool::new(false),
            wakeup,
        })
    }

    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.wakeup.wake();
    }

    /// Whether it was raised since the last call.
    pub fn take(&self) -> bool {
        self.raised.load(Ordering::Relaxed) && self.raised.swap(false, Ordering::AcqRel)
    }
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.raise();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.raise();
    }
}
