//! The loop's signal wake-up socket.
//!
//! A non-blocking socket pair: Python's C signal handler writes the signal
//! number to the write end (it is installed with `signal.set_wakeup_fd` while
//! the loop runs on the main thread, as asyncio's `add_signal_handler` does),
//! and the read end is registered with the loop's tokio driver, so a signal
//! wakes a parked loop at once. That is how Ctrl+C interrupts a loop that is
//! waiting with nothing to do.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::task::{Context, Poll, Waker};

use tokio::net::UnixStream;

pub struct SignalSocket {
    read: UnixStream,
    write: StdUnixStream,
}

impl SignalSocket {
    /// Must be called inside the runtime's context (`Runtime::enter`).
    pub fn new() -> io::Result<Self> {
        let (read, write) = StdUnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(SignalSocket {
            read: UnixStream::from_std(read)?,
            write,
        })
    }

    /// The fd to hand to `signal.set_wakeup_fd`.
    pub fn write_fd(&self) -> i32 {
        self.write.as_raw_fd()
    }

    /// Arm `waker` for the next time the socket turns readable; true if it
    /// already is (the waker is then not armed).
    pub fn arm(&self, waker: &Waker) -> bool {
        let mut cx = Context::from_waker(waker);
        matches!(self.read.poll_read_ready(&mut cx), Poll::Ready(_))
    }

    /// Everything written so far: one byte per delivered signal.
    pub fn drain(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match self.read.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        out
    }
}
