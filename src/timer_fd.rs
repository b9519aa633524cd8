//! The loop's one kernel timer: a `timerfd` on the reactor, armed for the
//! earliest timer in the heap.
//!
//! A park must end when the next timer is due. The timer fd sits in the
//! epoll instance the loop parks on (`loop_poll`), or, where the loop parks
//! in tokio (the fallback), on tokio's reactor. tokio's own timers would
//! end a park too, but its time driver
//! costs about 300 instructions on every park (wheel processing, clock
//! reads) even when no timer is set, and it rounds deadlines to whole
//! milliseconds. A timerfd armed at the heap's earliest deadline (absolute
//! `CLOCK_MONOTONIC`, the clock of `loop.time()`) costs a syscall only when
//! that deadline moves earlier than what is armed: a later one leaves the
//! armed time alone, and the loop then wakes early once, finds nothing due
//! and arms again, much as asyncio's selector loop wakes on its rounded-up
//! timeout. The runtime is built without tokio's time driver.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::fd_watch::BorrowedFd;
use crate::park::{WakeFlag, Wakeup};

/// `armed` when nothing is armed.
const DISARMED: u64 = u64::MAX;
/// Deadlines further out than this are armed this far out (the loop wakes
/// once a day and arms again), so a huge or infinite `when` cannot
/// overflow a `timespec`.
const MAX_WAIT: f64 = 86_400.0;

pub struct TimerFd {
    /// tokio's registration of `fd` (fallback); `None` when the fd is in
    /// the loop's epoll instance, whose poll raises `flag` directly.
    /// Dropped before `fd` (field order).
    afd: Option<AsyncFd<BorrowedFd>>,
    fd: OwnedFd,
    flag: Arc<WakeFlag>,
    waker: Waker,
    /// The armed expiry (`f64` bits, monotonic seconds), or `DISARMED`.
    armed: AtomicU64,
}

impl TimerFd {
    /// On tokio's reactor (`on_reactor`; must then run inside the runtime's
    /// context), or for the caller to put in the loop's epoll instance.
    pub fn new(wakeup: Arc<Wakeup>, on_reactor: bool) -> io::Result<Self> {
        // SAFETY: plain syscall; the fd it returns is owned by `OwnedFd`.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let afd = if on_reactor {
            // SAFETY: the registration is dropped before the fd is closed
            // (field order).
            let afd = unsafe {
                AsyncFd::register_with_interest(BorrowedFd(fd.as_raw_fd()), Interest::READABLE)
            }
            .map_err(io::Error::from)?;
            Some(afd)
        } else {
            None
        };
        let flag = WakeFlag::new(wakeup);
        let waker = Waker::from(flag.clone());
        let timer = TimerFd {
            afd,
            fd,
            flag,
            waker,
            armed: AtomicU64::new(DISARMED),
        };
        timer.arm_waker();
        Ok(timer)
    }

    /// The fd, for the loop's epoll instance to watch (level-triggered).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The loop's epoll instance saw the fd readable.
    pub fn fired(&self) {
        self.flag.raise();
    }

    /// Make sure the timer goes off no later than `deadline` (monotonic
    /// seconds; `now` is the current time).
    pub fn expire_by(&self, deadline: f64, now: f64) -> io::Result<()> {
        let armed = self.armed.load(Ordering::Relaxed);
        if armed != DISARMED && f64::from_bits(armed) <= deadline {
            return Ok(());
        }
        // NaN and the past both mean "now"; a zero expiry would disarm.
        let deadline = if deadline >= now { deadline } else { now };
        let deadline = deadline.min(now + MAX_WAIT).max(1e-9);
        let secs = deadline.floor();
        // Round up: waking a hair early costs a wasted park cycle.
        let nanos = ((deadline - secs) * 1e9).ceil().min(999_999_999.0);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: secs as libc::time_t,
                tv_nsec: nanos as libc::c_long,
            },
        };
        // SAFETY: valid fd and a valid itimerspec; the old value is not asked for.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed.store(deadline.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Whether the timer went off since the last call. If it did, its
    /// expirations are consumed, and it counts as disarmed.
    pub fn take_expired(&self) -> bool {
        if !self.flag.take() {
            return false;
        }
        let mut count = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer from our own fd.
        let read = unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        // Drained either way (a one-shot timer only goes off again once we
        // arm it); a failed read is a leftover wake-up with nothing to read.
        self.clear_readiness();
        if read == 8 {
            self.armed.store(DISARMED, Ordering::Relaxed);
        }
        self.arm_waker();
        true
    }

    /// tokio keeps readiness set until told the fd is drained.
    fn clear_readiness(&self) {
        let Some(afd) = &self.afd else { return };
        let mut cx = Context::from_waker(&self.waker);
        if let Poll::Ready(Ok(mut guard)) = afd.poll_read_ready(&mut cx) {
            guard.clear_ready();
        }
    }

    /// Have the reactor raise the flag when the fd turns readable.
    fn arm_waker(&self) {
        let Some(afd) = &self.afd else { return };
        let mut cx = Context::from_waker(&self.waker);
        if afd.poll_read_ready(&mut cx).is_ready() {
            self.flag.raise();
        }
    }
}
