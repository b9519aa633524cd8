//! One `accept4` on a TCP listener, for the loop's accept loop
//! (`Loop._accept_connection` calls it as `loop._accept_inet(fd)`).
//!
//! Python's `socket._accept()` accepts a blocking socket (the loop then pays
//! an `ioctl(FIONBIO)` in `setblocking(False)`) and reports an empty queue
//! as a `BlockingIOError`, whose construction costs about ten times the
//! accept. Here the connection is accepted non-blocking and close-on-exec
//! (`SOCK_NONBLOCK | SOCK_CLOEXEC`, as libuv does), an empty queue (or
//! `EINTR`, which asyncio treats the same way) is `None`, and the peer
//! and local addresses are the tuples Python's socket module builds
//! (`inet_address`). Other errors are raised as Python's accept raises
//! them (`OSError` with its errno). Only for AF_INET/AF_INET6 listeners;
//! the caller keeps Python's accept for other families.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::RawFd;

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::IntoPyObjectExt;

use crate::errors::os_error;
use crate::inet_address::{address_tuple, local_name};

/// What one accept found.
pub enum Accepted<'py> {
    /// `(conn_fd, peer_address, local_address)`; the caller owns the fd.
    Conn(Bound<'py, PyTuple>),
    /// The queue is empty: the listener is drained.
    Empty,
    /// A signal interrupted the call (asyncio ends the round, as for an
    /// empty queue, but the listener may still be readable).
    Interrupted,
}

/// Accept one connection on the non-blocking AF_INET/AF_INET6 listener
/// `fd`. The new fd is non-blocking and close-on-exec.
pub fn accept_inet(py: Python<'_>, fd: RawFd) -> PyResult<Accepted<'_>> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` is a writable sockaddr_storage of `len` bytes; an
    // invalid `fd` is reported by the kernel as EBADF/ENOTSOCK.
    let conn = unsafe {
        libc::accept4(
            fd,
            storage.as_mut_ptr().cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if conn < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EAGAIN) => Ok(Accepted::Empty),
            Some(libc::EINTR) => Ok(Accepted::Interrupted),
            _ => Err(os_error(err)),
        };
    }
    // SAFETY: zero-initialised, and the kernel filled in the peer address.
    let storage = unsafe { storage.assume_init() };
    // The local address too: the transport records it, and the socket
    // module's getsockname would format it again with printf.
    let names = address_tuple(py, &storage).and_then(|peer| Ok((peer, local_name(py, conn)?)));
    match names {
        Ok((peer, local)) => Ok(Accepted::Conn(PyTuple::new(
            py,
            [conn.into_bound_py_any(py)?, peer, local],
        )?)),
        Err(err) => {
            // SAFETY: `conn` is the fd accept4 just gave us, owned by no one
            // else; without an address nobody will take it.
            unsafe { libc::close(conn) };
            Err(err)
        }
    }
}
