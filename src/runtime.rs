//! The tokio runtime each loop owns: current-thread, driven only from the
//! thread that calls `run_forever`, with park hooks that release the GIL
//! while the thread blocks in the driver (see `gil_park`). No time driver:
//! the loop's timers wake it through a timerfd (see `timer_fd`).
//!
//! `build` also finds the runtime's epoll fd, which the loop nests in its
//! own epoll instance (see `loop_poll`). tokio does not expose it, but it
//! is the first fd the build creates, so it gets the lowest free fd number
//! (POSIX), which is taken just before. A thread that opens an fd at the
//! same moment could take that number first, so the candidate is probed:
//! a pipe registered with the runtime is made readable, and the candidate
//! must turn readable with it (and not be readable before). A build whose
//! candidate fails is retried a few times; after that the loop does
//! without (`None`). So does every loop when `TOKIOLOOP_PARK_IN_TOKIO` is
//! set in the environment (non-empty): the test suite runs that fallback
//! this way.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::{Builder, Runtime};

use crate::fd_watch::BorrowedFd;
use crate::gil_park;

const ATTEMPTS: usize = 3;

fn build_runtime() -> io::Result<Runtime> {
    Builder::new_current_thread()
        .enable_io()
        .on_thread_park(gil_park::before_park)
        .on_thread_unpark(gil_park::after_unpark)
        .build()
}

/// A new runtime and, if found, its reactor's epoll fd.
pub fn build() -> io::Result<(Runtime, Option<RawFd>)> {
    if std::env::var_os("TOKIOLOOP_PARK_IN_TOKIO").is_some_and(|v| !v.is_empty()) {
        return Ok((build_runtime()?, None));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let candidate = lowest_free_fd()?;
        let runtime = build_runtime()?;
        if is_reactor_fd(&runtime, candidate)? {
            return Ok((runtime, Some(candidate)));
        }
        if attempt == ATTEMPTS {
            return Ok((runtime, None));
        }
    }
}

/// The number the next new fd will get.
fn lowest_free_fd() -> io::Result<RawFd> {
    // SAFETY: plain syscall; the fd is owned (and closed) right away.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is fresh and owned by nothing else.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(fd)
}

/// Whether `fd` readies when an fd registered with `runtime` does.
fn is_reactor_fd(runtime: &Runtime, fd: RawFd) -> io::Result<bool> {
    let mut ends = [0; 2];
    // SAFETY: `ends` has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    let found = {
        let _context = runtime.enter();
        // SAFETY: `read` outlives the registration (dropped first, below).
        let registration = unsafe {
            AsyncFd::register_with_interest(BorrowedFd(read.as_raw_fd()), Interest::READABLE)
        }?;
        let before = readable(fd);
        // SAFETY: one byte from a live buffer into our own pipe.
        let wrote = unsafe { libc::write(write.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        let found = wrote == 1 && !before && readable(fd);
        // Deregistering takes the probe's event off the reactor's ready
        // list (no `block_on` here: the loop may be made inside another
        // runtime's `block_on`, where one would panic).
        drop(registration);
        found
    };
    drop((read, write));
    Ok(found)
}

/// Whether `fd` polls readable right now.
fn readable(fd: RawFd) -> bool {
    let mut entry = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut entry, 1, 0) };
    n == 1 && entry.revents & libc::POLLIN != 0 && entry.revents & libc::POLLNVAL == 0
}
