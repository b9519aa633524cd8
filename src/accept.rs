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
//! and local addresses are the tuples Python's socket module builds
//! (`inet_address`). Other errors are raised as Python's accept raises
//! them (`OSError` with its errno). Only for AF_INET/AF_INET6 listeners;
//! the caller keeps Python's accept for other families.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::RawFd;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::os_error;
use crate::inet_address::{address_tuple, local_name};

/// A connection one accept took; the caller owns `fd`.
pub struct Conn<'py> {
    pub fd: RawFd,
    pub peer: Bound<'py, PyAny>,
    pub local: Bound<'py, PyAny>,
}

/// What one accept found.
pub enum Accepted<'py> {
    Conn(Conn<'py>),
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
        Ok((peer, local)) => Ok(Accepted::Conn(Conn {
            fd: conn,
            peer,
            local,
        })),
        Err(err) => {
            // SAFETY: `conn` is the fd accept4 just gave us, owned by no one
            // else; without an address nobody will take it.
            unsafe { libc::close(conn) };
            Err(err)
        }
    }
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
    /// extra, server)`, where `extra` holds `peername` and `sockname`.
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
/// (`call_soon`) as `on_accept(protocol_factory, conn, extra, server)`.
/// An accept error ends the batch; the caller reports it as asyncio does
/// and may go on.
pub fn accept_all<'py>(
    py: Python<'py>,
    listener: &Listener<'_, 'py>,
    backlog: usize,
    mut schedule: impl FnMut(Bound<'py, PyAny>, Bound<'py, PyTuple>) -> PyResult<()>,
) -> PyResult<BatchEnd> {
    for attempt in 1..=backlog {
        let conn = match accept_inet(py, listener.fd) {
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
        let extra = PyDict::new(py);
        extra.set_item(intern!(py, "peername"), conn.peer)?;
        extra.set_item(intern!(py, "sockname"), conn.local)?;
        let args = PyTuple::new(
            py,
            [
                listener.protocol_factory.clone(),
                sock,
                extra.into_any(),
                listener.server.clone(),
            ],
        )?;
        schedule(listener.on_accept.clone(), args)?;
    }
    Ok(BatchEnd::Done)
}
