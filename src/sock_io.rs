//! Socket I/O for the native transports and `sock_*` waits, at the syscall
//! level: reading into new `bytes` objects (straight into the object, or
//! through a reused scratch buffer for small reads), contiguous views of
//! any bytes-like object, and sending one buffer or a queue of chunks with
//! a single `sendmsg`. No transport state lives here.

use std::collections::VecDeque;
use std::io;
use std::os::raw::c_int;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::native_io::Readiness;
use crate::spare_bytes::{ReadBytes, SpareBytes};

/// Flags of every send: no SIGPIPE for a closed peer (an EPIPE instead),
/// and no blocking even if the program made the socket blocking meanwhile
/// (the loop thread holds the GIL here; the receives pass MSG_DONTWAIT for
/// the same reason).
const SEND_FLAGS: c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;

/// Bytes asked of the kernel per read into a fresh `bytes`. Below glibc's
/// mmap threshold, so the object is carved from the heap and shrinking it
/// to the size received costs no syscall.
pub(crate) const READ_SIZE: usize = 64 * 1024;
/// asyncio's `max_size`: the most a `ReadMode::Sized` read takes at once.
const BIG_READ_SIZE: usize = 256 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Set by every send made on this thread (see `take_sent`).
    static SENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
/// iovecs per `sendmsg`, as asyncio caps them (`SC_IOV_MAX`, 1024 on Linux).
const MAX_IOV: usize = 1024;

extern "C" {
    // CPython's own resize for a fresh, unshared bytes object (what
    // `socket.recv` uses); pyo3-ffi keeps its declaration private.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> c_int;
}

/// Unsent bytes: a `bytes` object and how much of it has gone out.
pub(crate) struct Chunk {
    pub data: Py<PyBytes>,
    pub start: usize,
    pub len: usize,
}

/// Reads of at most this size go through the scratch buffer and are copied
/// into an exact-size `bytes`: for small messages a copy is cheaper than
/// carving a `READ_SIZE` object out of the heap and shrinking it (glibc's
/// malloc + realloc + free of the 64 KiB chunk cost about 700 instructions
/// per 1 KiB message, the copy about 50).
pub(crate) const SMALL_READ_SIZE: usize = 16 * 1024;
/// Consecutive small reads before a stream switches to small reads, so a
/// stream of large messages that sometimes arrive in pieces stays on
/// direct reads.
const SMALL_STREAK: u8 = 4;

/// How one read of a stream gets its `bytes`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ReadMode {
    /// Up to `SMALL_READ_SIZE` into the scratch buffer, then copied.
    Small,
    /// Up to `READ_SIZE` straight into a new `bytes`, shrunk to fit.
    Direct,
    /// Ask the kernel how much is queued (`FIONREAD`) and read all of it,
    /// up to `BIG_READ_SIZE`, straight into a `bytes` of that size: one
    /// `recv`, no copy and no oversized object to shrink (carving 256 KiB
    /// and shrinking it made glibc grow and trim its heap on every message).
    Sized,
}

/// Picks each read's [`ReadMode`] from the sizes of the reads before it.
#[derive(Default)]
pub(crate) struct ReadSizer {
    last: usize,
    last_mode: Option<ReadMode>,
    small_streak: u8,
}

impl ReadSizer {
    pub(crate) fn mode(&self) -> ReadMode {
        match self.last_mode {
            // A connection's first read takes everything queued, as
            // asyncio's first `recv(256 KiB)` does: a peer that sends
            // 100 KiB and closes gets one `data_received`, not two (a
            // server echoing the second chunk would find the peer gone and
            // see `EPIPE` where asyncio's sees EOF). One `FIONREAD` per
            // connection.
            None => ReadMode::Sized,
            // A direct read filled up: read the rest in one go.
            Some(ReadMode::Direct) if self.last >= READ_SIZE => ReadMode::Sized,
            // Large messages keep coming: read each whole, so a 100 KiB
            // message is one `recv`, one `data_received` and one `send`
            // (protocol 100 KiB echo, 16 connections: 34 -> 25 us/request).
            // A `StreamReader` too, though it copies every chunk into its
            // own buffer: with the heap tuned (`heap_tuning`) the whole
            // objects cost glibc nothing more, and a 64 KiB read plus the
            // rest cost a second `recv`, a second `data_received` and a
            // poll between them (streams 100 KiB echo, one connection:
            // 90 -> 80 us of CPU per request in alternated runs).
            Some(ReadMode::Sized) if self.last >= SMALL_READ_SIZE => ReadMode::Sized,
            // A small read filled up: more is waiting.
            Some(ReadMode::Small) if self.last >= SMALL_READ_SIZE => ReadMode::Direct,
            _ if self.small_streak >= SMALL_STREAK => ReadMode::Small,
            _ => ReadMode::Direct,
        }
    }

    pub(crate) fn record(&mut self, mode: ReadMode, n: usize) {
        self.small_streak = if n < SMALL_READ_SIZE {
            self.small_streak.saturating_add(1).min(SMALL_STREAK)
        } else {
            0
        };
        self.last = n;
        self.last_mode = Some(mode);
    }
}

/// One `recv` in `mode` into a `bytes` (a small read into the loop's
/// `spare` where it fits). Returns the object and whether the socket is now
/// drained (a short read).
pub(crate) fn recv_stream(
    py: Python<'_>,
    fd: i32,
    mode: ReadMode,
    spare: &SpareBytes,
) -> io::Result<(ReadBytes, bool)> {
    let capacity = match mode {
        ReadMode::Small => SMALL_READ_SIZE,
        ReadMode::Direct => READ_SIZE,
        // One byte more than what is queued, so reading all of it is a
        // short read (drained) and the transport does not read again just
        // to see `EAGAIN`. Nothing queued (EOF, or an error waiting) or no
        // answer: a small read finds out.
        ReadMode::Sized => match queued_bytes(fd) {
            Some(n) if n > 0 => (n + 1).min(BIG_READ_SIZE),
            _ => SMALL_READ_SIZE,
        },
    };
    let read = match mode {
        ReadMode::Small => recv_copied(py, fd, capacity, spare)?,
        ReadMode::Direct | ReadMode::Sized => {
            let bytes = recv_new_bytes(py, fd, capacity)?;
            // Shrunk by `realloc` to what came.
            let capacity = bytes.bind(py).as_bytes().len();
            ReadBytes { bytes, capacity }
        }
    };
    let drained = read.bytes.bind(py).as_bytes().len() < capacity;
    Ok((read, drained))
}

/// Bytes waiting in a stream socket's receive queue (`FIONREAD`), if the
/// kernel says.
fn queued_bytes(fd: i32) -> Option<usize> {
    let mut n: c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points to
    // a live local.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    (rc == 0 && n >= 0).then_some(n as usize)
}

/// `recv` of at most `size` through the scratch buffer, copied into the
/// `spare` object or a new `bytes`.
fn recv_copied(py: Python<'_>, fd: i32, size: usize, spare: &SpareBytes) -> io::Result<ReadBytes> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < size {
            scratch.resize(size, 0);
        }
        // SAFETY: the scratch buffer holds at least `size` writable bytes.
        let n = unsafe { libc::recv(fd, scratch.as_mut_ptr().cast(), size, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(spare.bytes_of(py, &scratch[..n as usize]))
    })
}

/// `socket.recv(size)`: a new `bytes` of at most `size`, filled by one
/// `recv` and shrunk to what came, with no copy.
pub(crate) fn recv_new_bytes(py: Python<'_>, fd: i32, size: usize) -> io::Result<Py<PyBytes>> {
    // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new, unshared,
    // uninitialised bytes object (or NULL); we fill it with recv and then
    // resize it while it is still unshared, which is what _PyBytes_Resize
    // requires. On failure the object is released and the error fetched.
    unsafe {
        let mut obj = ffi::PyBytes_FromStringAndSize(std::ptr::null(), size as ffi::Py_ssize_t);
        if obj.is_null() {
            PyErr::fetch(py);
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let buf = ffi::PyBytes_AsString(obj) as *mut libc::c_void;
        let n = libc::recv(fd, buf, size, libc::MSG_DONTWAIT);
        if n < 0 {
            let err = io::Error::last_os_error();
            ffi::Py_DECREF(obj);
            return Err(err);
        }
        let n = n as usize;
        if n != size && _PyBytes_Resize(&mut obj, n as ffi::Py_ssize_t) != 0 {
            PyErr::fetch(py);
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let bytes = Bound::from_owned_ptr(py, obj).cast_into_unchecked::<PyBytes>();
        Ok(bytes.unbind())
    }
}

/// A contiguous view of any bytes-like object (`PyBUF_SIMPLE`).
pub(crate) struct ByteView {
    view: ffi::Py_buffer,
}

impl ByteView {
    pub(crate) fn new(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Self> {
        // SAFETY: Py_buffer is plain data that PyObject_GetBuffer fills in;
        // on success it is released exactly once, in Drop.
        unsafe {
            let mut view: ffi::Py_buffer = std::mem::zeroed();
            let flags = if writable {
                ffi::PyBUF_WRITABLE
            } else {
                ffi::PyBUF_SIMPLE
            };
            if ffi::PyObject_GetBuffer(obj.as_ptr(), &mut view, flags) != 0 {
                return Err(PyErr::fetch(obj.py()));
            }
            Ok(ByteView { view })
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.view.len as usize
    }

    /// Pointer and length, for a syscall that fills a writable view.
    pub(crate) fn raw_parts(&self) -> (*mut libc::c_void, usize) {
        (self.view.buf, self.len())
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.view.len == 0 {
            return &[];
        }
        // SAFETY: the exporter guarantees `len` readable bytes at `buf` for
        // as long as the view is held.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.len()) }
    }
}

impl Drop for ByteView {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and
        // the GIL is held wherever a ByteView lives (it never leaves a call).
        unsafe { ffi::PyBuffer_Release(&mut self.view) }
    }
}

/// Records that this thread has just sent data (the stream and datagram
/// transports, `sock_sendall`). The peer may be watched by this very loop
/// (a client and its server in one process): the stock loop sees that data
/// in its next iteration's select, so the loop's next iteration polls
/// whatever the busy-poll pacing (see `take_sent`).
pub(crate) fn note_sent() {
    SENT.with(|sent| sent.set(true));
}

/// Whether this thread sent anything since the last call; clears the note.
pub(crate) fn take_sent() -> bool {
    SENT.with(|sent| sent.replace(false))
}

pub(crate) fn send_some(fd: i32, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a valid slice; MSG_NOSIGNAL turns a closed peer into
    // EPIPE instead of SIGPIPE.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), SEND_FLAGS) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        note_sent();
        Ok(n as usize)
    }
}

/// One `sendmsg` over the first `MAX_IOV` chunks. Returns bytes sent and
/// what that says about readiness: less than offered means the socket's
/// buffer is full; all of it with chunks left over (past `MAX_IOV`) means
/// go on next iteration.
pub(crate) fn send_chunks(
    py: Python<'_>,
    fd: i32,
    chunks: &VecDeque<Chunk>,
) -> io::Result<(usize, Readiness)> {
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(chunks.len().min(MAX_IOV));
    let mut offered = 0;
    for chunk in chunks.iter().take(MAX_IOV) {
        let bytes = &chunk.data.bind(py).as_bytes()[chunk.start..];
        offered += bytes.len();
        iov.push(libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        });
    }
    // SAFETY: msghdr is plain data; the iovecs point into bytes objects the
    // buffer keeps alive (and the GIL keeps unchanged) during the call.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        libc::sendmsg(fd, &msg, SEND_FLAGS)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        note_sent();
        let n = n as usize;
        let readiness = if n < offered {
            Readiness::Drained
        } else if chunks.len() > MAX_IOV {
            Readiness::MoreLater
        } else {
            Readiness::Unknown
        };
        Ok((n, readiness))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sizes: &[usize]) -> Vec<ReadMode> {
        let mut sizer = ReadSizer::default();
        sizes
            .iter()
            .map(|&n| {
                let mode = sizer.mode();
                let capacity = match mode {
                    ReadMode::Small => SMALL_READ_SIZE,
                    ReadMode::Direct => READ_SIZE,
                    ReadMode::Sized => BIG_READ_SIZE,
                };
                sizer.record(mode, n.min(capacity));
                mode
            })
            .collect()
    }

    #[test]
    fn small_messages_switch_to_small_reads_after_a_streak() {
        use ReadMode::*;
        assert_eq!(
            run(&[1024; 6]),
            [Sized, Direct, Direct, Direct, Small, Small]
        );
    }

    #[test]
    fn a_filled_small_read_continues_with_a_direct_one() {
        use ReadMode::*;
        let modes = run(&[1024, 1024, 1024, 1024, 100_000, 20_000, 1024]);
        assert_eq!(
            modes,
            [Sized, Direct, Direct, Direct, Small, Direct, Direct]
        );
    }

    #[test]
    fn large_messages_are_read_whole_until_small_ones_come_back() {
        use ReadMode::*;
        let modes = run(&[1024, 100_000, 36_000, 100_000, 300_000, 1024, 1024]);
        assert_eq!(modes, [Sized, Direct, Sized, Sized, Sized, Sized, Direct]);
    }

    #[test]
    fn a_connection_s_first_read_takes_everything_queued() {
        use ReadMode::*;
        assert_eq!(run(&[103_959, 1024, 1024]), [Sized, Sized, Direct]);
        assert_eq!(run(&[10]), [Sized]);
    }
}
