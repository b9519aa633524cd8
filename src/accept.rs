//! One `accept4` on a TCP listener, for the loop's accept loop
//! (`Loop._accept_connection` calls it as `loop._accept_inet(fd)`).
//!
//! Python's `socket._accept()` accepts a blocking socket (the loop then pays
//! an `ioctl(FIONBIO)` in `setblocking(False)`) and reports an empty queue
//! as a `BlockingIOError`, whose construction costs about ten times the
//! accept. Here the connection is accepted non-blocking and close-on-exec
//! (`SOCK_NONBLOCK | SOCK_CLOEXEC`, as libuv does), an empty queue (or
//! `EINTR`, which asyncio treats the same way) is `None`, and the peer
//! address is the tuple Python's socket module builds, made the same way
//! (`inet_ntop`): `(host, port)` for IPv4, `(host, port, flowinfo,
//! scope_id)` for IPv6. Other errors are raised as Python's accept raises
//! them (`OSError` with its errno). Only for AF_INET/AF_INET6 listeners;
//! the caller keeps Python's accept for other families.

use std::ffi::CStr;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::RawFd;

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::IntoPyObjectExt;

use crate::errors::os_error;

// Not in the libc crate; glibc's, the function Python's socket module uses.
extern "C" {
    fn inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

/// Room for the longest IPv6 text form and its NUL (`INET6_ADDRSTRLEN`).
const ADDR_TEXT_LEN: usize = 46;

/// `inet_ntop` of the address at `src`, as Python's socket module formats
/// it.
///
/// # Safety
/// `src` must point to an address of `family` (an `in_addr` for AF_INET,
/// an `in6_addr` for AF_INET6).
unsafe fn host_text(family: libc::c_int, src: *const libc::c_void) -> io::Result<String> {
    let mut buf = [0 as libc::c_char; ADDR_TEXT_LEN];
    if inet_ntop(family, src, buf.as_mut_ptr(), buf.len() as libc::socklen_t).is_null() {
        return Err(io::Error::last_os_error());
    }
    Ok(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned())
}

/// The peer address tuple of an accepted AF_INET/AF_INET6 connection.
fn peer_address<'py>(
    py: Python<'py>,
    storage: &libc::sockaddr_storage,
) -> PyResult<Bound<'py, PyAny>> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for an AF_INET peer,
            // and sockaddr_storage is large and aligned enough for it.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            // SAFETY: `sin_addr` is an in_addr, as AF_INET requires.
            let host = unsafe { host_text(libc::AF_INET, &a.sin_addr as *const _ as *const _) }
                .map_err(os_error)?;
            (host, u16::from_be(a.sin_port)).into_bound_py_any(py)
        }
        libc::AF_INET6 => {
            // SAFETY: as above, a sockaddr_in6 for an AF_INET6 peer.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            // SAFETY: `sin6_addr` is an in6_addr, as AF_INET6 requires.
            let host = unsafe { host_text(libc::AF_INET6, &a.sin6_addr as *const _ as *const _) }
                .map_err(os_error)?;
            (
                host,
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )
                .into_bound_py_any(py)
        }
        other => Err(pyo3::exceptions::PyOSError::new_err(format!(
            "unexpected address family {other} from accept"
        ))),
    }
}

/// What one accept found.
pub enum Accepted<'py> {
    /// `(conn_fd, peer_address)`; the caller owns the fd.
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
    match peer_address(py, &storage) {
        Ok(addr) => Ok(Accepted::Conn(PyTuple::new(
            py,
            [conn.into_bound_py_any(py)?, addr],
        )?)),
        Err(err) => {
            // SAFETY: `conn` is the fd accept4 just gave us, owned by no one
            // else; without an address nobody will take it.
            unsafe { libc::close(conn) };
            Err(err)
        }
    }
}
