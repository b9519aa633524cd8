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
//! Whenever the state is not `WRAPPED`, or anything unusual is going on
//! (reading paused, a `BufferedProtocol` app, a write backlog, a custom
//! `SSLContext.sslobject_class`, a flow-control mark crossed), the call goes
//! to asyncio's Python method instead, so behaviour is asyncio's by
//! construction. The TLS work itself is the user's `ssl.SSLContext` through
//! `ssl.SSLObject`: this file calls the C methods of `SSLObject._sslobj`
//! directly (skipping `SSLObject`'s one-line Python wrappers), reads the
//! plaintext into asyncio's own 256 KiB `_ssl_buffer` instead of a fresh
//! 256 KiB `bytes` per record, and stops reading when neither the incoming
//! BIO nor OpenSSL holds any more bytes (where asyncio reads once more to
//! get an `SSLWantReadError` raised).

use std::sync::OnceLock;

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PySlice, PyString, PyTuple};

/// asyncio's message for errors in the data paths of `SSLProtocol`.
const FATAL_MESSAGE: &str = "Fatal error on SSL protocol";
/// Read at an offset into `_ssl_buffer` only while this much room is left
/// (more than one TLS record); otherwise spill what was read into a `Vec`.
const MIN_ROOM: usize = 32 * 1024;

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
/// `__init__` and never replaces.
struct Fast {
    /// The instance `__dict__`, where asyncio's code keeps every attribute
    /// read here (none of them is a descriptor on the class), looked up
    /// directly instead of through `getattr`.
    dict: Py<PyDict>,
    /// `self.max_size` (a class attribute asyncio never changes).
    max_size: i64,
    /// `self._incoming.write`, and the BIO itself for `.pending`.
    incoming: Py<PyAny>,
    incoming_write: Py<PyAny>,
    outgoing: Py<PyAny>,
    outgoing_read: Py<PyAny>,
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
    /// for good when the `SSLObject` class overrides its data methods.
    fast: OnceLock<Fast>,
}

impl Fast {
    /// `getattr(self, name)` for an attribute asyncio keeps in the
    /// instance dict; `getattr` itself when it is not there (its error).
    fn attr<'py>(
        &self,
        me: &Bound<'py, PyAny>,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.dict.bind(me.py()).get_item(name)? {
            Some(value) => Ok(value),
            None => me.getattr(name),
        }
    }

    fn flag(&self, me: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<bool> {
        self.attr(me, name)?.is_truthy()
    }

    fn int_attr(&self, me: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> Option<i64> {
        self.attr(me, name).ok()?.extract::<i64>().ok()
    }
}

fn bio_pending(bio: &Bound<'_, PyAny>) -> PyResult<i64> {
    bio.getattr(intern!(bio.py(), "pending"))?.extract()
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
        let state = fast.attr(slf.as_any(), intern!(py, "_state"))?;
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
        if fast.flag(me, intern!(py, "_app_reading_paused"))?
            || fast.flag(me, intern!(py, "_app_protocol_is_buffer"))?
        {
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
        let (data, eof) = Self::read_copied(slf, fast)?;
        if let Some(data) = data {
            fast.attr(me, intern!(py, "_app_protocol"))?
                .call_method1(intern!(py, "data_received"), (data,))?;
        }
        if eof {
            // close_notify
            me.call_method0(intern!(py, "_call_eof_received"))?;
            me.call_method0(intern!(py, "_start_shutdown"))?;
        }
        if fast.flag(me, intern!(py, "_write_backlog"))? {
            me.call_method0(intern!(py, "_do_write"))?;
        } else {
            Self::process_outgoing(slf, fast)?;
        }
        Self::control_ssl_reading(slf, fast)
    }

    /// `_do_read__copied` up to the `data_received` call: all the plaintext
    /// there is, and whether the peer sent close_notify.
    fn read_copied(slf: &Bound<'_, Self>, fast: &Fast) -> PyResult<(Option<Py<PyBytes>>, bool)> {
        let py = slf.py();
        let me = slf.as_any();
        let buffer = fast.attr(me, intern!(py, "_ssl_buffer"))?;
        let buffer = buffer.cast::<PyByteArray>()?;
        let view = fast.attr(me, intern!(py, "_ssl_buffer_view"))?;
        let capacity = buffer.len();
        let again = ssl_refs(py)?.again_errors.bind(py);
        let incoming = fast.incoming.bind(py);
        let (read, pending) = (fast.read.bind(py), fast.pending.bind(py));
        let mut filled = 0usize;
        let mut spill: Option<Vec<u8>> = None;
        let mut any = false;
        let mut eof = false;
        // The last read filled all the room it was given, so OpenSSL may
        // still hold plaintext of that record (otherwise the record was
        // used up: SSL_read returns data from one record per call).
        let mut filled_room = false;
        loop {
            if any {
                // Nothing left in the BIO nor inside OpenSSL: the next read
                // could only raise SSLWantReadError, which ends asyncio's loop.
                if bio_pending(incoming)? == 0
                    && (!filled_room || pending.call0()?.extract::<i64>()? == 0)
                {
                    break;
                }
                if capacity - filled < MIN_ROOM {
                    // SAFETY: no Python code runs between this borrow of the
                    // bytearray's storage and the copy out of it.
                    let head = unsafe { &buffer.as_bytes()[..filled] };
                    spill.get_or_insert_with(Vec::new).extend_from_slice(head);
                    filled = 0;
                }
            }
            let room = capacity - filled;
            let result = if filled == 0 {
                read.call1((room, &view))
            } else {
                // SAFETY: `filled < capacity`, so the range is inside the
                // bytearray, which `buffer` keeps alive and which cannot be
                // resized while `_ssl_buffer_view` exports it; the view is
                // only lent to `_sslobj.read`, which keeps no reference.
                let rest = unsafe { raw_view(py, buffer.data().add(filled), room, true)? };
                read.call1((room, rest))
            };
            match result {
                Ok(count) => {
                    let count: usize = count.extract()?;
                    if count == 0 {
                        eof = true;
                        break;
                    }
                    filled += count;
                    filled_room = count >= room;
                    any = true;
                }
                Err(err) if err.is_instance(py, again) => break,
                Err(err) => return Err(err),
            }
        }
        if !any {
            return Ok((None, eof));
        }
        // SAFETY: as above, the storage is read before any Python code runs.
        let head = unsafe { &buffer.as_bytes()[..filled] };
        let data = match spill {
            None => PyBytes::new(py, head),
            Some(mut all) => {
                all.extend_from_slice(head);
                PyBytes::new(py, &all)
            }
        };
        Ok((Some(data.unbind()), eof))
    }

    /// `_process_outgoing`.
    fn process_outgoing(slf: &Bound<'_, Self>, fast: &Fast) -> PyResult<()> {
        let py = slf.py();
        let me = slf.as_any();
        let outgoing = fast.outgoing.bind(py);
        let mut pending = bio_pending(outgoing)?;
        if pending > 0 && !fast.flag(me, intern!(py, "_ssl_writing_paused"))? {
            let data = fast.outgoing_read.bind(py).call0()?;
            fast.attr(me, intern!(py, "_transport"))?
                .call_method1(intern!(py, "write"), (data,))?;
            // transport.write() ran other code: ask again.
            pending = bio_pending(outgoing)?;
        }
        Self::control_app_writing(slf, fast, pending)
    }

    /// `_control_app_writing` (`outgoing` is what the outgoing BIO holds):
    /// asyncio's method runs only when a mark is crossed (or a value is not
    /// a plain int).
    fn control_app_writing(slf: &Bound<'_, Self>, fast: &Fast, outgoing: i64) -> PyResult<()> {
        let py = slf.py();
        let me = slf.as_any();
        let paused = fast.flag(me, intern!(py, "_app_writing_paused"))?;
        let call = match fast.int_attr(me, intern!(py, "_write_buffer_size")) {
            None => true,
            Some(buffered) => {
                let size = outgoing + buffered;
                if paused {
                    fast.int_attr(me, intern!(py, "_outgoing_low_water"))
                        .is_none_or(|low| size <= low)
                } else {
                    fast.int_attr(me, intern!(py, "_outgoing_high_water"))
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
        let paused = fast.flag(me, intern!(py, "_ssl_reading_paused"))?;
        let size = bio_pending(fast.incoming.bind(py))?;
        let call = if paused {
            fast.int_attr(me, intern!(py, "_incoming_low_water"))
                .is_none_or(|low| size <= low)
        } else {
            fast.int_attr(me, intern!(py, "_incoming_high_water"))
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
            fast.attr(me, intern!(py, "_write_backlog"))?
                .call_method1(intern!(py, "append"), (item,))?;
            let total = fast
                .attr(me, intern!(py, "_write_buffer_size"))?
                .add(size)?;
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

    /// Cache the BIOs and the `SSLObject`'s C methods once asyncio's
    /// `__init__` has made them. Returns whether the native paths are on.
    fn _tl_init(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let refs = ssl_refs(py)?;
        let me = slf.as_any();
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
        let fast = Fast {
            dict: me.getattr("__dict__")?.cast_into::<PyDict>()?.unbind(),
            max_size: me.getattr("max_size")?.extract()?,
            incoming_write: incoming.getattr("write")?.unbind(),
            incoming: incoming.unbind(),
            outgoing_read: outgoing.getattr("read")?.unbind(),
            outgoing: outgoing.unbind(),
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
            let have = fast.attr(me, intern!(py, "_ssl_buffer"))?.len()?;
            if have as i64 >= want {
                return Ok(fast.attr(me, intern!(py, "_ssl_buffer_view"))?.unbind());
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
        let buffer = fast.attr(me, intern!(py, "_ssl_buffer"))?;
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
                if !fast.flag(me, intern!(py, "_write_backlog"))? {
                    return Self::write_wrapped(slf, fast, data);
                }
            }
        }
        me.call_method1(intern!(py, "_write_appdata"), ((data,),))?;
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(fast) = self.fast.get() {
            visit.call(&fast.dict)?;
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
