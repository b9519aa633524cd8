//! `SSLProtocolCore`: the native hot paths of tokioloop's TLS protocol
//! (`tokioloop._sslproto.SSLProtocol`, Python 3.11+).
//!
//! The Python class subclasses asyncio's own `sslproto.SSLProtocol` with this
//! class first in its MRO, so asyncio's Python code keeps the whole state
//! machine (handshake, shutdown, timeouts, errors, flow-control callbacks)
//! and this file only replaces the per-record work of the `WRAPPED` state:
//!
//! - `get_buffer`/`buffer_updated`: ciphertext from the socket transport
//!   into the incoming `MemoryBIO`, then `SSLObject.read` until the BIO is
//!   drained, one `data_received` with all the plaintext, and the outgoing
//!   BIO flushed to the transport (asyncio's `_do_read` / `_do_read__copied`
//!   / `_process_outgoing` / `_control_*`);
//! - `_tl_write`: `_SSLProtocolTransport.write` → `SSLObject.write` →
//!   outgoing BIO → `transport.write` (`_write_appdata` / `_do_write`).
//!
//! The socket transport (`stream_transport`) calls `get_buffer` and
//! `buffer_updated` here directly, without going through Python, when the
//! protocol's class keeps them; the app transport's `write` is bound to
//! `_tl_write` per instance (python/tokioloop/_sslproto.py).
//!
//! All protocol state stays in the Python object's attributes, where
//! asyncio's code reads and writes it; this code reads the same attributes.
//! The ones used on every record are `__slots__` of the Python subclass
//! (`Slot`, `SLOT_NAMES`), read here at their offsets in the object.
//! Whenever the state is not `WRAPPED`, or anything unusual is going on
//! (reading paused, a `BufferedProtocol` app, a write backlog, a custom
//! `SSLContext.sslobject_class`, a flow-control mark crossed), the call goes
//! to asyncio's Python method instead, so behaviour is asyncio's by
//! construction. The TLS work itself is the user's `ssl.SSLContext` through
//! `ssl.SSLObject`: this file calls the C methods of `SSLObject._sslobj`
//! directly (skipping `SSLObject`'s one-line Python wrappers) and
//! `MemoryBIO.pending`'s C getter, decrypts the plaintext straight into the
//! `bytes` object handed to `data_received` (sized from the incoming BIO,
//! shrunk to fit), and stops reading when neither the incoming BIO nor
//! OpenSSL holds any more bytes (where asyncio reads once more to get an
//! `SSLWantReadError` raised).

use std::ffi::CStr;
use std::os::raw::c_int;
use std::sync::OnceLock;

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PySlice, PyString, PyTuple};

extern "C" {
    // CPython's own resize for a fresh, unshared bytes object (what
    // `socket.recv` uses); pyo3-ffi keeps its declaration private.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> c_int;
    // The MRO lookup behind attribute access (borrowed result, no exception
    // on a miss); exported by every CPython, declared privately by pyo3-ffi.
    fn _PyType_Lookup(tp: *mut ffi::PyTypeObject, name: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// asyncio's message for errors in the data paths of `SSLProtocol`.
const FATAL_MESSAGE: &str = "Fatal error on SSL protocol";
/// The most plaintext one TLS record carries: what OpenSSL may hold from a
/// record whose start it already took out of the incoming BIO.
const MAX_RECORD: usize = 16 * 1024;
/// The smallest plaintext `bytes` allocated (at least 2: sizes 0 and 1 are
/// shared singletons, which `_PyBytes_Resize` must not touch).
const MIN_PLAINTEXT: usize = 1024;

/// The attributes of asyncio's `SSLProtocol` that its hot paths (Python and
/// native) read and write, kept in `__slots__` of our subclass
/// (`SSLProtocolCore._tl_slots`, python/tokioloop/_sslproto.py) instead of
/// the instance dict. The native code reads them at their offsets in the
/// object; Python code gets CPython's member descriptors (`LOAD_ATTR_SLOT`).
///
/// `AppTransport`, `Incoming`, `Outgoing` and `SslObj` are slots for the
/// sake of asyncio's Python code; the native paths use the objects cached
/// in `Fast`.
#[derive(Clone, Copy)]
#[allow(dead_code)]
enum Slot {
    State,
    AppTransport,
    SslBuffer,
    SslBufferView,
    Incoming,
    Outgoing,
    SslObj,
    Transport,
    AppProtocol,
    AppReadingPaused,
    AppProtocolIsBuffer,
    WriteBacklog,
    WriteBufferSize,
    SslWritingPaused,
    AppWritingPaused,
    SslReadingPaused,
    OutgoingHighWater,
    OutgoingLowWater,
    IncomingHighWater,
    IncomingLowWater,
}

/// The names of the `Slot`s, in order.
const SLOT_NAMES: [&str; 20] = [
    "_state",
    "_app_transport",
    "_ssl_buffer",
    "_ssl_buffer_view",
    "_incoming",
    "_outgoing",
    "_sslobj",
    "_transport",
    "_app_protocol",
    "_app_reading_paused",
    "_app_protocol_is_buffer",
    "_write_backlog",
    "_write_buffer_size",
    "_ssl_writing_paused",
    "_app_writing_paused",
    "_ssl_reading_paused",
    "_outgoing_high_water",
    "_outgoing_low_water",
    "_incoming_high_water",
    "_incoming_low_water",
];

/// asyncio's objects the native paths compare with or fall back to.
struct SslRefs {
    /// `sslproto.SSLProtocolState.WRAPPED`.
    wrapped: Py<PyAny>,
    /// `sslproto.SSLAgainErrors`: `(SSLWantReadError, SSLSyscallError)`.
    again_errors: Py<PyAny>,
    base_get_buffer: Py<PyAny>,
    base_buffer_updated: Py<PyAny>,
    /// `ssl.SSLObject`'s own `read`/`write`/`pending` functions: a subclass
    /// that overrides any of them keeps asyncio's Python paths.
    sslobject_methods: [Py<PyAny>; 3],
}

static REFS: PyOnceLock<SslRefs> = PyOnceLock::new();

fn ssl_refs(py: Python<'_>) -> PyResult<&SslRefs> {
    REFS.get_or_try_init(py, || {
        let sslproto = py.import("asyncio.sslproto")?;
        let base = sslproto.getattr("SSLProtocol")?;
        let sslobject = py.import("ssl")?.getattr("SSLObject")?;
        let method = |name: &str| -> PyResult<Py<PyAny>> { Ok(sslobject.getattr(name)?.unbind()) };
        Ok(SslRefs {
            wrapped: sslproto
                .getattr("SSLProtocolState")?
                .getattr("WRAPPED")?
                .unbind(),
            again_errors: sslproto.getattr("SSLAgainErrors")?.unbind(),
            base_get_buffer: base.getattr("get_buffer")?.unbind(),
            base_buffer_updated: base.getattr("buffer_updated")?.unbind(),
            sslobject_methods: [method("read")?, method("write")?, method("pending")?],
        })
    })
}

/// What `_tl_init` caches: objects asyncio's `SSLProtocol` creates once in
/// `__init__` and never replaces, and where the slots are.
struct Fast {
    /// Byte offset of each `Slot` in the instance (a `T_OBJECT_EX` member
    /// of its type: a `PyObject *`, NULL while unset).
    offsets: [isize; SLOT_NAMES.len()],
    /// `self.max_size` (a class attribute asyncio never changes).
    max_size: i64,
    /// `self._incoming.write`, and the BIO itself for `.pending`.
    incoming: Py<PyAny>,
    incoming_write: Py<PyAny>,
    outgoing: Py<PyAny>,
    outgoing_read: Py<PyAny>,
    /// The C getter of `ssl.MemoryBIO.pending` (both BIOs are exactly
    /// `ssl.MemoryBIO`, checked in `_tl_init`).
    bio_pending: BioPending,
    /// The C methods of `self._sslobj._sslobj`.
    read: Py<PyAny>,
    write: Py<PyAny>,
    pending: Py<PyAny>,
}

#[pyclass(
    frozen,
    subclass,
    module = "tokioloop._tokioloop",
    name = "SSLProtocolCore"
)]
pub struct SslProtocolCore {
    /// Unset (every call goes to asyncio's code) until `_tl_init` ran, and
    /// for good when the `SSLObject` class overrides its data methods or a
    /// subclass replaces a slot.
    fast: OnceLock<Fast>,
}

/// A C getter of a built-in type's attribute, and its closure.
struct BioPending {
    get: ffi::getter,
    /// `PyGetSetDef.closure`, kept as an address (it is static data of the
    /// `_ssl` module, or NULL).
    closure: usize,
}

impl BioPending {
    /// The getter named `name` in `tp_getset` of `tp`.
    ///
    /// # Safety
    /// `tp` must be a live, ready type object.
    unsafe fn find(tp: *mut ffi::PyTypeObject, name: &CStr) -> Option<Self> {
        // SAFETY: a ready type's `tp_getset` is NULL or an array ended by an
        // entry with a NULL name, all static data of the type's module.
        unsafe {
            let mut def = (*tp).tp_getset;
            while !def.is_null() && !(*def).name.is_null() {
                if CStr::from_ptr((*def).name) == name {
                    let get = (*def).get?;
                    return Some(BioPending {
                        get,
                        closure: (*def).closure as usize,
                    });
                }
                def = def.add(1);
            }
            None
        }
    }

    /// `bio.pending` for a `MemoryBIO`.
    fn call(&self, bio: &Bound<'_, PyAny>) -> PyResult<i64> {
        let py = bio.py();
        // SAFETY: `bio` is an `ssl.MemoryBIO` (checked when `Fast` was
        // made), the type this getter belongs to; the getter returns a new
        // reference or NULL with an exception set.
        let value = unsafe {
            let raw = (self.get)(bio.as_ptr(), self.closure as *mut std::ffi::c_void);
            Bound::from_owned_ptr_or_err(py, raw)?
        };
        value.extract()
    }
}

impl Fast {
    /// `getattr(self, name)` for one of the slots: read at its offset, or,
    /// when unset, `getattr` itself (for its `AttributeError`).
    fn attr<'py>(&self, me: &Bound<'py, PyAny>, slot: Slot) -> PyResult<Bound<'py, PyAny>> {
        let index = slot as usize;
        // SAFETY: `me` is the instance `_tl_init` found these offsets on: each
        // is a `T_OBJECT_EX` member of its type (a `__class__` assignment can
        // only switch to a type with the same slots), so the address holds a
        // `PyObject *` that is NULL or a strong reference the object owns.
        let raw = unsafe {
            *me.as_ptr()
                .cast::<u8>()
                .offset(self.offsets[index])
                .cast::<*mut ffi::PyObject>()
        };
        if raw.is_null() {
            return me.getattr(SLOT_NAMES[index]);
        }
        // SAFETY: a live object (see above); we take a new reference.
        Ok(unsafe { Bound::from_borrowed_ptr(me.py(), raw) })
    }

    fn flag(&self, me: &Bound<'_, PyAny>, slot: Slot) -> PyResult<bool> {
        self.attr(me, slot)?.is_truthy()
    }

    fn int_attr(&self, me: &Bound<'_, PyAny>, slot: Slot) -> Option<i64> {
        self.attr(me, slot).ok()?.extract::<i64>().ok()
    }

    fn incoming_pending(&self, py: Python<'_>) -> PyResult<i64> {
        self.bio_pending.call(self.incoming.bind(py))
    }

    fn outgoing_pending(&self, py: Python<'_>) -> PyResult<i64> {
        self.bio_pending.call(self.outgoing.bind(py))
    }
}

/// The offset of the `T_OBJECT_EX` member `name` of `tp` (found along its
/// MRO), if that is what the attribute is.
fn member_offset(tp: &Bound<'_, pyo3::types::PyType>, name: &str) -> PyResult<Option<isize>> {
    let py = tp.py();
    let name = PyString::new(py, name);
    // SAFETY: `_PyType_Lookup` returns a borrowed reference (or NULL, with no
    // exception set) that the type's MRO keeps alive while we look at it; a
    // member descriptor's `d_member` points at the type's static or
    // heap-allocated member table, alive as long as the type.
    unsafe {
        let descr = _PyType_Lookup(tp.as_type_ptr(), name.as_ptr());
        if descr.is_null() || ffi::Py_TYPE(descr) != std::ptr::addr_of_mut!(ffi::PyMemberDescr_Type)
        {
            return Ok(None);
        }
        // pyo3-ffi declares `d_member` with the wrong pointee type before
        // 3.11; it is a `PyMemberDef *` on every version.
        let member = (*descr.cast::<ffi::PyMemberDescrObject>())
            .d_member
            .cast::<ffi::PyMemberDef>();
        if (*member).type_code != ffi::Py_T_OBJECT_EX || (*member).flags & ffi::Py_READONLY != 0 {
            return Ok(None);
        }
        Ok(Some((*member).offset))
    }
}

/// A `memoryview` over `len` bytes at `ptr`, lent to a C method for one
/// call.
///
/// # Safety
/// The memory must stay valid (and, if `writable`, writable) for as long as
/// the view is alive, which callers make sure of by passing it only to C
/// code that does not keep it.
unsafe fn raw_view<'py>(
    py: Python<'py>,
    ptr: *mut u8,
    len: usize,
    writable: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let flags = if writable {
        ffi::PyBUF_WRITE
    } else {
        ffi::PyBUF_READ
    };
    // SAFETY: see the function's contract; the result is a new reference or
    // NULL with an exception set.
    unsafe {
        let view = ffi::PyMemoryView_FromMemory(ptr.cast(), len as ffi::Py_ssize_t, flags);
        Bound::from_owned_ptr_or_err(py, view)
    }
}

/// asyncio's `except Exception as ex: self._fatal_error(ex, ...)`; other
/// exceptions (`KeyboardInterrupt`, `CancelledError`, ...) propagate.
fn fatal_or_raise(me: &Bound<'_, PyAny>, err: PyErr) -> PyResult<()> {
    let py = me.py();
    if !err.is_instance_of::<PyException>(py) {
        return Err(err);
    }
    me.call_method1(
        intern!(py, "_fatal_error"),
        (err.into_value(py), FATAL_MESSAGE),
    )?;
    Ok(())
}

impl SslProtocolCore {
    fn fast_state<'a>(slf: &'a Bound<'_, Self>) -> PyResult<Option<&'a Fast>> {
        let py = slf.py();
        let Some(fast) = slf.get().fast.get() else {
            return Ok(None);
        };
        let state = fast.attr(slf.as_any(), Slot::State)?;
        if state.is(ssl_refs(py)?.wrapped.bind(py)) {
            Ok(Some(fast))
        } else {
            Ok(None)
        }
    }

    /// `_do_read` in the `WRAPPED` state.
    fn do_read(slf: &Bound<'_, Self>, fast: &Fast) -> PyResult<()> {
        let py = slf.py();
        let me = slf.as_any();
        if fast.flag(me, Slot::AppReadingPaused)? || fast.flag(me, Slot::AppProtocolIsBuffer)? {
            me.call_method0(intern!(py, "_do_read"))?;
            return Ok(());
        }
        match Self::read_and_flush(slf, fast) {
            Ok(()) => Ok(()),
            Err(err) => fatal_or_raise(me, err),
        }
    }

    /// The body of `_do_read`'s `try` for a plain (non-buffered) app
    /// protocol whose reading is not paused.
    fn read_and_flush(slf: &Bound<'_, Self>, fast: &Fast) -> PyResult<()> {
        let py = slf.py();
        let me = slf.as_any();
        let (data, eof) = Self::read_plaintext(py, fast)?;
        if let Some(data) = data {
            fast.attr(me, Slot::AppProtocol)?
                .call_method1(intern!(py, "data_received"), (data,))?;
        }
        if eof {
            // close_notify
            me.call_method0(intern!(py, "_call_eof_received"))?;
            me.call_method0(intern!(py, "_start_shutdown"))?;
        }
        if fast.flag(me, Slot::WriteBacklog)? {
            me.call_method0(intern!(py, "_do_write"))?;
        } else {
            Self::process_outgoing(slf, fast)?;
        }
        Self::control_ssl_reading(slf, fast)
    }

    /// `_do_read__copied` up to the `data_received` call: all the plaintext
    /// there is, decrypted straight into the `bytes` object handed to
    /// `data_received`, and whether the peer sent close_notify.
    ///
    /// The object is sized for what the incoming BIO holds (plaintext is
    /// never longer than its ciphertext) and shrunk to fit at the end; it
    /// grows when OpenSSL turns out to hold more (a record whose start an
    /// earlier call took out of the BIO).
    fn read_plaintext<'py>(
        py: Python<'py>,
        fast: &Fast,
    ) -> PyResult<(Option<Bound<'py, PyBytes>>, bool)> {
        let again = ssl_refs(py)?.again_errors.bind(py);
        let (read, pending) = (fast.read.bind(py), fast.pending.bind(py));
        let mut out = Plaintext::new(py, fast.incoming_pending(py)?.max(0) as usize)?;
        let mut eof = false;
        // The last read filled all the room it was given, so OpenSSL may
        // still hold plaintext of that record (otherwise the record was
        // used up: SSL_read returns data from one record per call).
        let mut filled_room = false;
        loop {
            if out.filled > 0 {
                // Nothing left in the BIO nor inside OpenSSL: the next read
                // could only raise SSLWantReadError, which ends asyncio's loop.
                let in_bio = fast.incoming_pending(py)?.max(0) as usize;
                let in_ssl = if filled_room {
                    pending.call0()?.extract::<i64>()?.max(0) as usize
                } else {
                    0
                };
                if in_bio == 0 && in_ssl == 0 {
                    break;
                }
                if out.room() == 0 {
                    out.grow(py, in_bio + in_ssl.max(MAX_RECORD))?;
                }
            }
            let room = out.room();
            // SAFETY: the range is the unwritten tail of `out`'s unshared
            // bytes object, which stays alive and is not resized while the
            // view exists; the view is only lent to `_sslobj.read`, which
            // keeps no reference to it.
            let view = unsafe { raw_view(py, out.tail(), room, true)? };
            match read.call1((room, view)) {
                Ok(count) => {
                    let count: usize = count.extract()?;
                    if count == 0 {
                        eof = true;
                        break;
                    }
                    out.filled += count.min(room);
                    filled_room = count >= room;
                }
                Err(err) if err.is_instance(py, again) => break,
                Err(err) => return Err(err),
            }
        }
        Ok((out.finish(py)?, eof))
    }

    /// `_process_outgoing`.
    fn process_outgoing(slf: &Bound<'_, Self>, fast: &Fast) -> PyResult<()> {
        let py = slf.py();
        let me = slf.as_any();
        let mut pending = fast.outgoing_pending(py)?;
        if pending > 0 && !fast.flag(me, Slot::SslWritingPaused)? {
            let data = fast.outgoing_read.bind(py).call0()?;
            fast.attr(me, Slot::Transport)?
                .call_method1(intern!(py, "write"), (data,))?;
            // transport.write() ran other code: ask again.
            pending = fast.outgoing_pending(py)?;
        }
        Self::control_app_writing(slf, fast, pending)
    }

    /// `_control_app_writing` (`outgoing` is what the outgoing BIO holds):
    /// asyncio's method runs only when a mark is crossed (or a value is not
    /// a plain int).
    fn control_app_writing(slf: &Bound<'_, Self>, fast: &Fast, outgoing: i64) -> PyResult<()> {
        let py = slf.py();
        let me = slf.as_any();
        let paused = fast.flag(me, Slot::AppWritingPaused)?;
        let call = match fast.int_attr(me, Slot::WriteBufferSize) {
            None => true,
            Some(buffered) => {
                let size = outgoing + buffered;
                if paused {
                    fast.int_attr(me, Slot::OutgoingLowWater)
                        .is_none_or(|low| size <= low)
                } else {
                    fast.int_attr(me, Slot::OutgoingHighWater)
                        .is_none_or(|high| size >= high)
                }
            }
        };
        if call {
            me.call_method0(intern!(py, "_control_app_writing"))?;
        }
        Ok(())
    }

    /// `_control_ssl_reading`, the same way.
    fn control_ssl_reading(slf: &Bound<'_, Self>, fast: &Fast) -> PyResult<()> {
        let py = slf.py();
        let me = slf.as_any();
        let paused = fast.flag(me, Slot::SslReadingPaused)?;
        let size = fast.incoming_pending(py)?;
        let call = if paused {
            fast.int_attr(me, Slot::IncomingLowWater)
                .is_none_or(|low| size <= low)
        } else {
            fast.int_attr(me, Slot::IncomingHighWater)
                .is_none_or(|high| size >= high)
        };
        if call {
            me.call_method0(intern!(py, "_control_ssl_reading"))?;
        }
        Ok(())
    }

    /// `_write_appdata((data,))` when the state is `WRAPPED` and nothing is
    /// waiting in the backlog: `data` goes straight into `SSLObject.write`,
    /// and only joins the backlog if that raises (as asyncio's would hold it).
    fn write_wrapped(slf: &Bound<'_, Self>, fast: &Fast, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.as_any();
        let len = data.len()?;
        let backlog_add = |item: &Bound<'_, PyAny>, size: usize| -> PyResult<()> {
            fast.attr(me, Slot::WriteBacklog)?
                .call_method1(intern!(py, "append"), (item,))?;
            let total = fast.attr(me, Slot::WriteBufferSize)?.add(size)?;
            me.setattr(intern!(py, "_write_buffer_size"), total)
        };
        match fast.write.bind(py).call1((data,)) {
            Ok(count) => {
                let count: usize = count.extract()?;
                if count < len {
                    let rest = data.get_item(PySlice::new(py, count as isize, isize::MAX, 1))?;
                    backlog_add(&rest, len - count)?;
                }
            }
            Err(err) => {
                backlog_add(data, len)?;
                if !err.is_instance(py, ssl_refs(py)?.again_errors.bind(py)) {
                    return fatal_or_raise(me, err);
                }
            }
        }
        match Self::process_outgoing(slf, fast) {
            Ok(()) => Ok(()),
            Err(err) => fatal_or_raise(me, err),
        }
    }
}

/// The `bytes` object plaintext is decrypted into: fresh and unshared until
/// `finish` hands it out, so it may be written and resized in place.
struct Plaintext {
    /// An owned reference (never NULL).
    obj: *mut ffi::PyObject,
    size: usize,
    filled: usize,
}

impl Plaintext {
    fn new(py: Python<'_>, size: usize) -> PyResult<Self> {
        let size = size.max(MIN_PLAINTEXT);
        // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new, unshared,
        // uninitialised bytes object for n >= 2, or NULL with an exception.
        let obj =
            unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), size as ffi::Py_ssize_t) };
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(Plaintext {
            obj,
            size,
            filled: 0,
        })
    }

    fn room(&self) -> usize {
        self.size - self.filled
    }

    /// The first unwritten byte.
    fn tail(&self) -> *mut u8 {
        // SAFETY: `obj` is a live bytes object of `size` bytes and
        // `filled <= size`.
        unsafe {
            ffi::PyBytes_AS_STRING(self.obj)
                .cast_mut()
                .cast::<u8>()
                .add(self.filled)
        }
    }

    /// Make room for `more` bytes after what is filled.
    fn grow(&mut self, py: Python<'_>, more: usize) -> PyResult<()> {
        self.resize(py, self.filled + more.max(MIN_PLAINTEXT))
    }

    fn resize(&mut self, py: Python<'_>, size: usize) -> PyResult<()> {
        // SAFETY: `obj` is unshared (no other reference was ever made), which
        // is what `_PyBytes_Resize` requires; on failure it releases the
        // object and sets `obj` to NULL, which `Drop` then skips.
        if unsafe { _PyBytes_Resize(&mut self.obj, size as ffi::Py_ssize_t) } != 0 {
            self.obj = std::ptr::null_mut();
            return Err(PyErr::fetch(py));
        }
        self.size = size;
        Ok(())
    }

    /// The plaintext, shrunk to fit, or `None` if there is none.
    fn finish(mut self, py: Python<'_>) -> PyResult<Option<Bound<'_, PyBytes>>> {
        if self.filled == 0 {
            return Ok(None);
        }
        if self.filled != self.size {
            self.resize(py, self.filled)?;
        }
        let obj = std::mem::replace(&mut self.obj, std::ptr::null_mut());
        // SAFETY: `obj` is our owned reference to a bytes object, handed over.
        Ok(Some(unsafe {
            Bound::from_owned_ptr(py, obj).cast_into_unchecked::<PyBytes>()
        }))
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        if !self.obj.is_null() {
            // SAFETY: an owned reference, released once; a `Plaintext` only
            // lives inside a call holding the GIL.
            unsafe { ffi::Py_DECREF(self.obj) };
        }
    }
}

/// Direct calls from the socket transport (`stream_transport`), for a
/// protocol whose class keeps the native `get_buffer`/`buffer_updated`.
impl SslProtocolCore {
    /// `protocol` itself when it is one of ours and its class does not
    /// override the two read methods.
    pub fn native_reader(protocol: &Bound<'_, PyAny>) -> PyResult<Option<Py<Self>>> {
        let py = protocol.py();
        let Ok(core) = protocol.cast::<Self>() else {
            return Ok(None);
        };
        let ours = py.get_type::<Self>();
        let cls = protocol.get_type();
        let own = protocol.getattr(intern!(py, "__dict__")).ok();
        for name in [intern!(py, "get_buffer"), intern!(py, "buffer_updated")] {
            if !cls.getattr(name)?.is(ours.getattr(name)?) {
                return Ok(None);
            }
            if let Some(own) = &own {
                if own.contains(name)? {
                    return Ok(None);
                }
            }
        }
        Ok(Some(core.clone().unbind()))
    }

    /// `protocol.get_buffer(-1)`.
    pub fn transport_get_buffer<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let n = (-1i64).into_pyobject(slf.py())?.into_any();
        Ok(Self::get_buffer(slf, &n)?.into_bound(slf.py()))
    }

    /// `protocol.buffer_updated(n)`.
    pub fn transport_buffer_updated(slf: &Bound<'_, Self>, n: usize) -> PyResult<()> {
        let n = n.into_pyobject(slf.py())?.into_any();
        Self::buffer_updated(slf, &n)
    }
}

#[pymethods]
impl SslProtocolCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        SslProtocolCore {
            fast: OnceLock::new(),
        }
    }

    /// The names asyncio's `SSLProtocol` attributes our subclass keeps in
    /// `__slots__` (python/tokioloop/_sslproto.py).
    #[classattr]
    fn _tl_slots(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        PyTuple::new(py, SLOT_NAMES)
    }

    /// Cache the BIOs and the `SSLObject`'s C methods once asyncio's
    /// `__init__` has made them, and find the slots. Returns whether the
    /// native paths are on.
    fn _tl_init(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let refs = ssl_refs(py)?;
        let me = slf.as_any();
        let mut offsets = [0isize; SLOT_NAMES.len()];
        let tp = me.get_type();
        for (offset, name) in offsets.iter_mut().zip(SLOT_NAMES) {
            match member_offset(&tp, name)? {
                Some(found) => *offset = found,
                // A subclass made it something else: asyncio's paths only.
                None => return Ok(false),
            }
        }
        let sslobj = me.getattr("_sslobj")?;
        let cls = sslobj.get_type();
        for (name, own) in ["read", "write", "pending"]
            .into_iter()
            .zip(&refs.sslobject_methods)
        {
            if !cls.getattr(name)?.is(own.bind(py)) {
                return Ok(false);
            }
        }
        let inner = sslobj.getattr("_sslobj")?;
        let incoming = me.getattr("_incoming")?;
        let outgoing = me.getattr("_outgoing")?;
        let bio_type = py.import("ssl")?.getattr("MemoryBIO")?;
        if !incoming.get_type().is(&bio_type) || !outgoing.get_type().is(&bio_type) {
            return Ok(false);
        }
        let bio_type = bio_type.cast_into::<pyo3::types::PyType>()?;
        // SAFETY: a live, ready type object.
        let Some(bio_pending) = (unsafe { BioPending::find(bio_type.as_type_ptr(), c"pending") })
        else {
            return Ok(false);
        };
        let fast = Fast {
            offsets,
            max_size: me.getattr("max_size")?.extract()?,
            incoming_write: incoming.getattr("write")?.unbind(),
            incoming: incoming.unbind(),
            outgoing_read: outgoing.getattr("read")?.unbind(),
            outgoing: outgoing.unbind(),
            bio_pending,
            read: inner.getattr("read")?.unbind(),
            write: inner.getattr("write")?.unbind(),
            pending: inner.getattr("pending")?.unbind(),
        };
        Ok(slf.get().fast.set(fast).is_ok())
    }

    /// asyncio's `get_buffer`: the reused `_ssl_buffer_view`.
    fn get_buffer(slf: &Bound<'_, Self>, n: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.as_any();
        if let (Some(fast), Ok(n)) = (slf.get().fast.get(), n.extract::<i64>()) {
            let want = if n <= 0 || n > fast.max_size {
                fast.max_size
            } else {
                n
            };
            let have = fast.attr(me, Slot::SslBuffer)?.len()?;
            if have as i64 >= want {
                return Ok(fast.attr(me, Slot::SslBufferView)?.unbind());
            }
        }
        Ok(ssl_refs(py)?
            .base_get_buffer
            .bind(py)
            .call1((me, n))?
            .unbind())
    }

    /// asyncio's `buffer_updated`, with the `WRAPPED` state's `_do_read`
    /// native.
    fn buffer_updated(slf: &Bound<'_, Self>, nbytes: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.as_any();
        let fast = match (Self::fast_state(slf)?, nbytes.extract::<isize>()) {
            (Some(fast), Ok(n)) if n >= 0 => (fast, n),
            _ => {
                ssl_refs(py)?
                    .base_buffer_updated
                    .bind(py)
                    .call1((me, nbytes))?;
                return Ok(());
            }
        };
        let (fast, n) = fast;
        // `self._incoming.write(self._ssl_buffer_view[:nbytes])`, the view
        // made straight over the bytearray `_ssl_buffer_view` shows.
        let buffer = fast.attr(me, Slot::SslBuffer)?;
        let buffer = buffer.cast::<PyByteArray>()?;
        let n = (n as usize).min(buffer.len());
        // SAFETY: `n` is within the bytearray, which `buffer` keeps alive and
        // which cannot be resized while `_ssl_buffer_view` exports it; the
        // view is only lent to `MemoryBIO.write`, which copies and keeps no
        // reference.
        let chunk = unsafe { raw_view(py, buffer.data(), n, false)? };
        fast.incoming_write.bind(py).call1((chunk,))?;
        // The state cannot have changed: writing to a MemoryBIO runs no
        // Python code.
        Self::do_read(slf, fast)
    }

    /// `_SSLProtocolTransport.write(app_transport, data)` for our app
    /// transport, whose `_ssl_protocol` is this protocol.
    fn _tl_write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let is_bytes = data.is_instance_of::<PyBytes>();
        // SAFETY: type checks on a live object.
        let (is_bytearray, is_view) = unsafe {
            (
                ffi::PyByteArray_Check(data.as_ptr()) != 0,
                ffi::PyMemoryView_Check(data.as_ptr()) != 0,
            )
        };
        if !(is_bytes || is_bytearray || is_view) {
            return Err(PyTypeError::new_err(format!(
                "data: expecting a bytes-like instance, got {}",
                data.get_type().name()?
            )));
        }
        if !data.is_truthy()? {
            return Ok(());
        }
        let me = slf.as_any();
        if !is_view {
            if let Some(fast) = Self::fast_state(slf)? {
                if !fast.flag(me, Slot::WriteBacklog)? {
                    return Self::write_wrapped(slf, fast, data);
                }
            }
        }
        me.call_method1(intern!(py, "_write_appdata"), ((data,),))?;
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(fast) = self.fast.get() {
            for obj in [
                &fast.incoming,
                &fast.incoming_write,
                &fast.outgoing,
                &fast.outgoing_read,
                &fast.read,
                &fast.write,
                &fast.pending,
            ] {
                visit.call(obj)?;
            }
        }
        Ok(())
    }
}
