//! Accepting on a TCP listener, for the loop's accept loop
//! (`Loop._accept_connection`): one `accept4` (`loop._accept_inet(fd)`),
//! or the whole loop for a listener without TLS outside debug mode
//! (`loop._accept_inet_all(...)`, see `accept_all`, run by the listener's
//! native reader callback `loop._accept_inet_round`).
//!
//! Python's `socket._accept()` accepts a blocking socket (the loop then pays
//! an `ioctl(FIONBIO)` in `setblocking(False)`) and reports an empty queue
//! as a `BlockingIOError`, whose construction costs about ten times the
//! accept. Here the connection is accepted non-blocking and close-on-exec
//! (`SOCK_NONBLOCK | SOCK_CLOEXEC`, as libuv does), an empty queue (or
//! `EINTR`, which asyncio treats the same way) is `None`, and the peer
//! and local addresses are kept raw (`inet_address::SocketNames`) until
//! someone reads them as the tuples Python's socket module builds. Other
//! errors are raised as Python's accept raises them (`OSError` with its
//! errno). Only for AF_INET/AF_INET6 listeners; the caller keeps Python's
//! accept for other families.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::RawFd;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::os_error;
use crate::inet_address::SocketNames;

/// A connection one accept took; the caller owns `fd`.
pub struct Conn {
    pub fd: RawFd,
    pub names: SocketNames,
}

/// What one accept found.
// Consumed as soon as it is returned: boxing the connection would be a
// malloc per accept to save a move of 280 bytes.
#[allow(clippy::large_enum_variant)]
pub enum Accepted {
    Conn(Conn),
    /// The queue is empty: the listener is drained.
    Empty,
    /// A signal interrupted the call (asyncio ends the round, as for an
    /// empty queue, but the listener may still be readable).
    Interrupted,
}

/// Accept one connection on the non-blocking AF_INET/AF_INET6 listener
/// `fd`. The new fd is non-blocking and close-on-exec.
pub fn accept_inet(fd: RawFd) -> PyResult<Accepted> {
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
    let peer = unsafe { storage.assume_init() };
    // The local address too (as asyncio's transport records it), read now
    // and formatted only if asked for.
    Ok(Accepted::Conn(Conn {
        fd: conn,
        names: SocketNames::of(conn, Some(peer)),
    }))
}

/// The listener a batch of accepts is for, and what each connection goes to.
pub struct Listener<'a, 'py> {
    pub fd: RawFd,
    /// The new sockets' `family`, `type` and `proto` (the listener's; the
    /// type with `SOCK_NONBLOCK`, so the socket object knows).
    pub family: i32,
    pub kind: i32,
    pub proto: i32,
    /// Called through `call_soon` as `on_accept(protocol_factory, conn,
    /// names, server)`, where `names` is the connection's `SocketNames`.
    pub on_accept: &'a Bound<'py, PyAny>,
    pub protocol_factory: &'a Bound<'py, PyAny>,
    pub server: &'a Bound<'py, PyAny>,
}

/// How a batch ended.
pub enum BatchEnd {
    /// The queue is empty: the listener is no longer readable.
    Drained,
    /// A signal interrupted the accept, or `backlog` connections were taken.
    Done,
    /// The accept of attempt number `attempts` (from 1) failed with `error`.
    Failed { attempts: usize, error: PyErr },
}

/// asyncio's accept loop body for `backlog` attempts, with no Python frame
/// per connection: each connection becomes a `socket.socket` (built as its
/// `__init__` would, without the frame) and is queued with `schedule`
/// (`call_soon`) as `on_accept(protocol_factory, conn, names, server)`.
/// An accept error ends the batch; the caller reports it as asyncio does
/// and may go on.
pub fn accept_all<'py>(
    py: Python<'py>,
    listener: &Listener<'_, 'py>,
    backlog: usize,
    mut schedule: impl FnMut(Bound<'py, PyAny>, Bound<'py, PyTuple>) -> PyResult<()>,
) -> PyResult<BatchEnd> {
    for attempt in 1..=backlog {
        let conn = match accept_inet(listener.fd) {
            Ok(Accepted::Conn(conn)) => conn,
            Ok(Accepted::Empty) => return Ok(BatchEnd::Drained),
            Ok(Accepted::Interrupted) => return Ok(BatchEnd::Done),
            Err(error) => {
                return Ok(BatchEnd::Failed {
                    attempts: attempt,
                    error,
                })
            }
        };
        let sock = crate::socket_object::new_socket(
            py,
            listener.family,
            listener.kind,
            listener.proto,
            Some(conn.fd),
        )?;
        let names = Bound::new(py, conn.names)?;
        let args = PyTuple::new(
            py,
            [
                listener.protocol_factory.clone(),
                sock,
                names.into_any(),
                listener.server.clone(),
            ],
        )?;
        schedule(listener.on_accept.clone(), args)?;
    }
    Ok(BatchEnd::Done)
}
