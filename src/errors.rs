//! Turning Rust I/O errors into the exceptions asyncio code expects.
//!
//! pyo3's stock conversion keeps only the message; asyncio (and user code)
//! switch on `errno`, so an OS error is raised the way Python's own socket
//! calls raise it: `OSError(errno, strerror)`, which Python maps to the
//! right subclass (ConnectionResetError, BlockingIOError, ...).

use pyo3::exceptions::PyOSError;
use pyo3::PyErr;
use std::io;

pub fn os_error(err: io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => {
            // SAFETY: strerror returns a pointer to a static or thread-local
            // NUL-terminated string.
            let text = unsafe { std::ffi::CStr::from_ptr(libc::strerror(errno)) }
                .to_string_lossy()
                .into_owned();
            PyOSError::new_err((errno, text))
        }
        None => PyErr::from(err),
    }
}
