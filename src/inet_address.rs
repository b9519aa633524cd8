//! AF_INET/AF_INET6 socket addresses as the Python tuples the socket module
//! builds: `(host, port)` for IPv4, `(host, port, flowinfo, scope_id)` for
//! IPv6. Used for the peer of an accepted connection and the two ends of a
//! new one (`SocketNames`, formatted when first read), where the socket module's `getsockname` and
//! `getpeername` would each cost a method call and a `printf` (`inet_ntop`
//! formats IPv4 with `sprintf`, ~1,000 instructions an address).
//!
//! IPv4 text is formatted here (dotted decimal, which is all `inet_ntop`
//! ever writes for IPv4); IPv6 keeps glibc's `inet_ntop`, whose choices
//! (zero-run compression, embedded IPv4 forms) Python users see.

use std::ffi::CStr;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::RawFd;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
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
const IPV6_TEXT_LEN: usize = 46;

/// Dotted-decimal text of an IPv4 address (network byte order octets), as
/// `inet_ntop` writes it, into `buf`.
pub fn ipv4_text(octets: [u8; 4], buf: &mut [u8; 15]) -> &str {
    let mut len = 0;
    for (i, octet) in octets.into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            buf[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            buf[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        buf[len] = b'0' + octet % 10;
        len += 1;
    }
    // Only ASCII digits and dots were written.
    std::str::from_utf8(&buf[..len]).expect("ASCII")
}

/// `inet_ntop` text of an IPv6 address.
fn ipv6_text<'py>(py: Python<'py>, addr: &libc::in6_addr) -> PyResult<Bound<'py, PyString>> {
    let mut buf = [0 as libc::c_char; IPV6_TEXT_LEN];
    // SAFETY: `addr` is an in6_addr, as AF_INET6 requires, and `buf` is
    // writable for the length passed.
    let text = unsafe {
        inet_ntop(
            libc::AF_INET6,
            (addr as *const libc::in6_addr).cast(),
            buf.as_mut_ptr(),
            buf.len() as libc::socklen_t,
        )
    };
    if text.is_null() {
        return Err(os_error(io::Error::last_os_error()));
    }
    // SAFETY: on success inet_ntop wrote a NUL-terminated string into buf.
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(PyString::new(
        py,
        text.to_str().expect("inet_ntop writes ASCII"),
    ))
}

/// The address tuple of an AF_INET/AF_INET6 socket address.
pub fn address_tuple<'py>(
    py: Python<'py>,
    storage: &libc::sockaddr_storage,
) -> PyResult<Bound<'py, PyAny>> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for an AF_INET address,
            // and sockaddr_storage is large and aligned enough for it.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let mut buf = [0u8; 15];
            let host = ipv4_text(a.sin_addr.s_addr.to_ne_bytes(), &mut buf);
            (PyString::new(py, host), u16::from_be(a.sin_port)).into_bound_py_any(py)
        }
        libc::AF_INET6 => {
            // SAFETY: as above, a sockaddr_in6 for an AF_INET6 address.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            (
                ipv6_text(py, &a.sin6_addr)?,
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )
                .into_bound_py_any(py)
        }
        other => Err(pyo3::exceptions::PyOSError::new_err(format!(
            "unexpected address family {other}"
        ))),
    }
}

type NameCall =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// `getsockname` or `getpeername` of `fd` as the kernel gives it; None when
/// the call fails (asyncio's transports record None then).
fn raw_name(fd: RawFd, call: NameCall) -> Option<libc::sockaddr_storage> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` is a writable sockaddr_storage of `len` bytes; a bad
    // fd is an error return, not undefined behaviour.
    if unsafe { call(fd, storage.as_mut_ptr().cast(), &mut len) } != 0 {
        return None;
    }
    // SAFETY: zero-initialised, and the kernel filled in the address.
    Some(unsafe { storage.assume_init() })
}

/// The tuple for an address `raw_name` read; None for a failed call or a
/// socket that is not AF_INET/AF_INET6.
fn name_tuple<'py>(
    py: Python<'py>,
    name: Option<&libc::sockaddr_storage>,
) -> PyResult<Bound<'py, PyAny>> {
    match name {
        Some(storage)
            if matches!(
                storage.ss_family as libc::c_int,
                libc::AF_INET | libc::AF_INET6
            ) =>
        {
            address_tuple(py, storage)
        }
        _ => Ok(py.None().into_bound(py)),
    }
}

/// The two ends of a connected AF_INET/AF_INET6 socket as the kernel gave
/// them (`getsockname`, and `accept4`'s address or `getpeername`), made
/// into the socket module's tuples only when read: a transport's extra
/// info often never is, and the two tuples cost ~1k instructions a
/// connection. Read when the connection is made, as asyncio reads them.
#[pyclass(frozen, module = "tokioloop._tokioloop", name = "SocketNames")]
pub struct SocketNames {
    local: Option<libc::sockaddr_storage>,
    peer: Option<libc::sockaddr_storage>,
}

impl SocketNames {
    /// The names of `fd`; `peer` when the caller already has it.
    pub fn of(fd: RawFd, peer: Option<libc::sockaddr_storage>) -> Self {
        SocketNames {
            local: raw_name(fd, libc::getsockname),
            peer: peer.or_else(|| raw_name(fd, libc::getpeername)),
        }
    }

    /// `sockname` as the socket module's `getsockname()` returns it, None
    /// where it would raise `OSError`.
    pub fn local<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        name_tuple(py, self.local.as_ref())
    }

    /// `peername`, likewise.
    pub fn peer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        name_tuple(py, self.peer.as_ref())
    }
}

#[pymethods]
impl SocketNames {
    /// `{"sockname": ..., "peername": ...}`: the extra info asyncio's
    /// transports take, for a transport class that wants a dict.
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item(intern!(py, "sockname"), self.local(py)?)?;
        dict.set_item(intern!(py, "peername"), self.peer(py)?)?;
        Ok(dict)
    }
}

#[cfg(test)]
mod tests {
    use super::ipv4_text;

    #[test]
    fn ipv4_text_matches_dotted_decimal() {
        let mut buf = [0u8; 15];
        for octets in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [255, 255, 255, 255],
            [10, 9, 100, 199],
            [1, 20, 200, 0],
        ] {
            let expected = std::net::Ipv4Addr::from(octets).to_string();
            assert_eq!(ipv4_text(octets, &mut buf), expected);
        }
    }
}
