//! asyncio's `base_events._ipaddr_info` for `create_connection`'s common
//! case, natively: is the host already an IP address, so that no lookup is
//! needed?
//!
//! A client connection to a numeric host (`"127.0.0.1"`, `"::1"`) asks it
//! once, and as Python it is a frame with a dozen checks and up to two
//! `socket.inet_pton` calls (~4k instructions of a connection's ~76k,
//! `benches/churn.py --client`). Here: a `str` host, an `int` or None port,
//! family 0/AF_INET/AF_INET6 and protocol 0/TCP, with glibc's `inet_pton`
//! deciding, as Python's socket module does. Anything else is left to
//! asyncio's function (`NotImplemented`).

use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString, PyTuple};
use pyo3::IntoPyObjectExt;

// Not in the libc crate; glibc's, the function Python's socket module uses.
extern "C" {
    fn inet_pton(af: libc::c_int, src: *const libc::c_char, dst: *mut libc::c_void) -> libc::c_int;
}

/// The first of `families` whose `inet_pton` accepts `host`, as
/// `_ipaddr_info` tries them; None for a host with a zone index (`%`,
/// which Linux's `inet_pton` does not take) or that is not an address.
pub fn numeric_family(host: &str, families: &[i32]) -> Option<i32> {
    if host.contains('%') {
        return None;
    }
    let text = CString::new(host).ok()?;
    let mut buf = [0u8; 16];
    families.iter().copied().find(|&af| {
        // SAFETY: `text` is NUL-terminated and `buf` holds an in6_addr.
        unsafe { inet_pton(af, text.as_ptr(), buf.as_mut_ptr().cast()) == 1 }
    })
}

/// `_ipaddr_info(host, port, family, SOCK_STREAM, proto)`: the address info
/// tuple of a numeric host, None when it needs a lookup, `NotImplemented`
/// for what only asyncio's function decides (other types of host or port,
/// other families or protocols, a NUL in the host).
#[pyfunction]
pub fn _numeric_host_info<'py>(
    host: &Bound<'py, PyAny>,
    port: &Bound<'py, PyAny>,
    family: &Bound<'py, PyAny>,
    proto: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = host.py();
    let not_here = || Ok(py.NotImplemented().into_bound(py));
    let (Ok(host_str), true) = (
        host.cast_exact::<PyString>(),
        port.is_none() || port.is_exact_instance_of::<PyInt>(),
    ) else {
        return not_here();
    };
    let (Ok(family), Ok(proto)) = (family.extract::<i64>(), proto.extract::<i64>()) else {
        return not_here();
    };
    let families: &[i32] = match family {
        0 => &[libc::AF_INET, libc::AF_INET6],
        f if f == i64::from(libc::AF_INET) => &[libc::AF_INET],
        f if f == i64::from(libc::AF_INET6) => &[libc::AF_INET6],
        _ => return not_here(),
    };
    if proto != 0 && proto != i64::from(libc::IPPROTO_TCP) {
        return not_here();
    }
    let text = host_str.to_str()?;
    if text.contains('\0') {
        return not_here(); // the socket module's ValueError
    }
    let port = if port.is_none() {
        0.into_bound_py_any(py)?
    } else {
        port.clone()
    };
    let Some(af) = numeric_family(text, families) else {
        return Ok(py.None().into_bound(py));
    };
    let address = if af == libc::AF_INET6 {
        PyTuple::new(
            py,
            [
                host.clone(),
                port,
                0.into_bound_py_any(py)?,
                0.into_bound_py_any(py)?,
            ],
        )?
    } else {
        PyTuple::new(py, [host.clone(), port])?
    };
    PyTuple::new(
        py,
        [
            af.into_bound_py_any(py)?,
            libc::SOCK_STREAM.into_bound_py_any(py)?,
            libc::IPPROTO_TCP.into_bound_py_any(py)?,
            "".into_bound_py_any(py)?,
            address.into_any(),
        ],
    )
    .map(Bound::into_any)
}

#[cfg(test)]
mod tests {
    use super::numeric_family;

    const BOTH: &[i32] = &[libc::AF_INET, libc::AF_INET6];

    #[test]
    fn addresses_are_numeric_in_their_family() {
        assert_eq!(numeric_family("127.0.0.1", BOTH), Some(libc::AF_INET));
        assert_eq!(numeric_family("::1", BOTH), Some(libc::AF_INET6));
        assert_eq!(
            numeric_family("::ffff:10.0.0.1", BOTH),
            Some(libc::AF_INET6)
        );
        assert_eq!(numeric_family("127.0.0.1", &[libc::AF_INET6]), None);
    }

    #[test]
    fn names_and_odd_forms_are_not() {
        for host in [
            "localhost",
            "",
            "1.2.3",
            "01.2.3.4",
            "1.2.3.4 ",
            "::1%lo",
            "1.2.3.4\0",
        ] {
            assert_eq!(numeric_family(host, BOTH), None, "{host:?}");
        }
    }
}
