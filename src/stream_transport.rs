//! `StreamTransport`: the native engine behind tokioloop's TCP and Unix
//! stream transports (`tokioloop._transports.SocketTransport`).
//!
//! It does what asyncio's `_SelectorSocketTransport` does on every event and
//! every `write()`, without Python frames: reads straight into a new `bytes`
//! (or into the protocol's `get_buffer()` for a `BufferedProtocol`) and hands
//! it to the protocol's cached bound method; `write()` sends inline and
//! buffers only the rest (keeping a reference to the caller's `bytes`, never
//! copying it), flushes the buffer with one `sendmsg` over all chunks, and
//! drives `pause_writing`/`resume_writing` at the water marks. The Python
//! class wraps it (users and asyncio's own code see an `asyncio.Transport`)
//! and keeps the cold paths: construction, `get_extra_info`, `repr`,
//! connection-lost bookkeeping and error reporting.
//!
//! The semantics, error messages and the order of protocol calls are those
//! of `_SelectorSocketTransport` on CPython 3.12/3.13. Protocol callbacks
//! run in a copy of the context the transport was created in, as asyncio's
//! reader callbacks do.
//!
//! Borrow discipline: the object is mutably borrowed only between Python
//! calls, never across one, since any protocol method may call back into the
//! transport (`write()` from `data_received`).

use std::collections::VecDeque;
use std::io;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::errors::os_error;
use crate::extra_info::ExtraInfo;
use crate::fd_watch::Direction;
use crate::loop_core::LoopCore;
use crate::native_io::{Attempt, NativeIo, Readiness};
use crate::pyrefs::refs;
use crate::sock_io::{recv_stream, send_chunks, send_some, ByteView, Chunk, ReadSizer};
use crate::spare_bytes::ReadBytes;
use crate::ssl_protocol::SslProtocolCore;
use crate::stream_owner::lose_connection;
use crate::transport_support::{in_context, Peers, ProtocolMethod, TransportState};

/// The protocol's read methods, looked up once per `set_protocol`.
enum Reader {
    Plain {
        data_received: Option<Py<PyAny>>,
    },
    Buffered {
        get_buffer: Option<Py<PyAny>>,
        buffer_updated: Option<Py<PyAny>>,
    },
    /// tokioloop's TLS protocol, whose native `get_buffer`/`buffer_updated`
    /// are called directly (`ssl_protocol`).
    Tls {
        protocol: Py<SslProtocolCore>,
    },
}

#[pyclass(module = "tokioloop._tokioloop", name = "StreamTransportCore")]
pub struct StreamTransport {
    base: TransportState,
    reader: Option<Reader>,
    buffer: VecDeque<Chunk>,
    buffered: usize,
    paused: bool,
    eof: bool,
    empty_waiter: Option<Py<PyAny>>,
    /// How the next read gets its `bytes` (see `ReadSizer`).
    sizer: ReadSizer,
    /// The Python transport's `_sock`, `_server` and `_loop`, kept here
    /// so that the native set-up and clean-up (`stream_owner`) reach them
    /// without Python's attribute protocol; the transport's properties of
    /// those names read and write them. `_loop` is the owner's view (None
    /// once the connection is lost), not the core's own `base.loop_`.
    pub(crate) owner_attrs: OwnerAttrs,
    /// The Python transport's `_extra` (see `extra_info`).
    pub(crate) extra: ExtraInfo,
}

/// See `StreamTransport::owner_attrs`.
#[derive(Default)]
pub(crate) struct OwnerAttrs {
    pub sock: Option<Py<PyAny>>,
    pub server: Option<Py<PyAny>>,
    pub loop_: Option<Py<PyAny>>,
}

/// What a read produced, handled after the borrow is released.
enum ReadOutcome {
    Nothing,
    Data(ReadBytes),
    Filled(usize),
    Eof,
    Failed(io::Error),
}

impl StreamTransport {
    fn replace_extra(slf: &Bound<'_, Self>, value: ExtraInfo) {
        let old = std::mem::replace(&mut slf.borrow_mut().extra, value);
        drop(old); // after the borrow: dropping may run Python code
    }

    /// What `is_closing()` returns (`transport_write::is_closing`).
    pub(crate) fn closing(&self) -> bool {
        self.base.closing
    }

    /// What `get_write_buffer_size()` returns.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// Called by the loop for a readiness event.
    pub fn on_ready(slf: &Bound<'_, Self>, direction: Direction) -> PyResult<()> {
        match direction {
            Direction::Read => Self::read_ready(slf),
            Direction::Write => Self::write_ready(slf),
        }
    }

    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (context, buffered) = {
            let this = slf.borrow();
            let Some(io) = &this.base.io else {
                return Ok(());
            };
            io.take_pending(Direction::Read);
            if !this.base.reading || this.base.conn_lost > 0 {
                return Ok(());
            }
            match &this.reader {
                Some(Reader::Plain { .. }) => (this.base.context.clone_ref(py), false),
                Some(Reader::Buffered { .. } | Reader::Tls { .. }) => {
                    (this.base.context.clone_ref(py), true)
                }
                None => return Ok(()),
            }
        };
        in_context(py, &context, || {
            if buffered {
                Self::read_into_buffer(slf)
            } else {
                let outcome = Self::read_bytes(slf);
                Self::after_read(slf, outcome)
            }
        })
    }

    fn read_bytes(slf: &Bound<'_, Self>) -> ReadOutcome {
        let py = slf.py();
        let mut guard = slf.borrow_mut();
        let this = &mut *guard;
        let Some(io) = &this.base.io else {
            return ReadOutcome::Nothing;
        };
        let (fd, mode) = (this.base.fd, this.sizer.mode());
        let spare = &this.base.loop_.get().spare_bytes;
        let attempt = io.attempt(Direction::Read, || {
            let (read, drained) = recv_stream(py, fd, mode, spare)?;
            // EOF: nothing more will come; leave readiness as it is.
            let readiness = if read.bytes.bind(py).as_bytes().is_empty() {
                Readiness::Unknown
            } else if drained {
                Readiness::Drained
            } else {
                Readiness::MoreLater
            };
            Ok((read, readiness))
        });
        match attempt {
            Attempt::NotReady => ReadOutcome::Nothing,
            Attempt::Done(Ok(read)) => {
                let n = read.bytes.bind(py).as_bytes().len();
                if n == 0 {
                    return ReadOutcome::Eof;
                }
                this.sizer.record(mode, n);
                ReadOutcome::Data(read)
            }
            Attempt::Done(Err(e)) => Self::read_error(e),
        }
    }

    fn read_error(e: io::Error) -> ReadOutcome {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => ReadOutcome::Nothing,
            _ => ReadOutcome::Failed(e),
        }
    }

    /// `_read_ready__get_buffer`: ask the protocol for a buffer, read into it.
    fn read_into_buffer(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let buf = {
            let this = slf.borrow();
            match &this.reader {
                Some(Reader::Buffered { get_buffer, .. }) => match this.method(py, get_buffer) {
                    Some(method) => Ok(method),
                    None => return Ok(()),
                },
                Some(Reader::Tls { protocol }) => Err(protocol.clone_ref(py)),
                _ => return Ok(()),
            }
        };
        let buf = match buf {
            Ok(get_buffer) => get_buffer
                .resolve(py, "get_buffer")
                .and_then(|m| m.call1((-1,))),
            Err(tls) => SslProtocolCore::transport_get_buffer(tls.bind(py)),
        };
        let view = buf
            .and_then(|buf| ByteView::new(&buf, true))
            .and_then(|view| {
                if view.len() == 0 {
                    Err(PyRuntimeError::new_err(
                        "get_buffer() returned an empty buffer",
                    ))
                } else {
                    Ok(view)
                }
            });
        let view = match view {
            Ok(view) => view,
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.get_buffer() call failed.",
                )
            }
        };
        let outcome = {
            let this = slf.borrow();
            match &this.base.io {
                None => ReadOutcome::Nothing,
                Some(io) => {
                    let fd = this.base.fd;
                    let (ptr, len) = view.raw_parts();
                    match io.attempt(Direction::Read, || {
                        // SAFETY: `ptr` is a writable buffer of `len` bytes
                        // held by `view` until after this call.
                        let n = unsafe { libc::recv(fd, ptr, len, libc::MSG_DONTWAIT) };
                        if n < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        let n = n as usize;
                        let readiness = match n {
                            0 => Readiness::Unknown,
                            n if n < len => Readiness::Drained,
                            _ => Readiness::MoreLater,
                        };
                        Ok((n, readiness))
                    }) {
                        Attempt::NotReady => ReadOutcome::Nothing,
                        Attempt::Done(Ok(0)) => ReadOutcome::Eof,
                        Attempt::Done(Ok(n)) => ReadOutcome::Filled(n),
                        Attempt::Done(Err(e)) => Self::read_error(e),
                    }
                }
            }
        };
        drop(view);
        Self::after_read(slf, outcome)
    }

    fn after_read(slf: &Bound<'_, Self>, outcome: ReadOutcome) -> PyResult<()> {
        let py = slf.py();
        match outcome {
            ReadOutcome::Nothing => Ok(()),
            ReadOutcome::Failed(e) => {
                Self::fatal_error(slf, os_error(e), "Fatal read error on socket transport")
            }
            ReadOutcome::Eof => Self::on_eof(slf),
            ReadOutcome::Data(read) => {
                let (method, loop_) = {
                    let this = slf.borrow();
                    let method = match &this.reader {
                        Some(Reader::Plain { data_received }) => this.method(py, data_received),
                        _ => None,
                    };
                    (method, this.base.loop_.clone_ref(py))
                };
                let Some(method) = method else {
                    return Ok(());
                };
                let result = method
                    .resolve(py, "data_received")
                    .and_then(|m| m.call1((&read.bytes,)));
                // The object is the loop's again if the protocol kept no
                // reference to it (see `spare_bytes`).
                loop_.get().spare_bytes.give_back(py, read);
                match result {
                    Ok(_) => Ok(()),
                    Err(err) => Self::fatal_error(
                        slf,
                        err,
                        "Fatal error: protocol.data_received() call failed.",
                    ),
                }
            }
            ReadOutcome::Filled(n) => {
                let method = {
                    let this = slf.borrow();
                    match &this.reader {
                        Some(Reader::Buffered { buffer_updated, .. }) => {
                            match this.method(py, buffer_updated) {
                                Some(method) => Ok(method),
                                None => return Ok(()),
                            }
                        }
                        Some(Reader::Tls { protocol }) => Err(protocol.clone_ref(py)),
                        _ => return Ok(()),
                    }
                };
                let result = match method {
                    Ok(method) => method
                        .resolve(py, "buffer_updated")
                        .and_then(|m| m.call1((n,)))
                        .map(drop),
                    Err(tls) => SslProtocolCore::transport_buffer_updated(tls.bind(py), n),
                };
                match result {
                    Ok(()) => Ok(()),
                    Err(err) => Self::fatal_error(
                        slf,
                        err,
                        "Fatal error: protocol.buffer_updated() call failed.",
                    ),
                }
            }
        }
    }

    /// `_read_ready__on_eof`.
    fn on_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let Some(protocol) = slf.borrow().base.protocol.as_ref().map(|p| p.clone_ref(py)) else {
            return Ok(());
        };
        let keep_open = match protocol
            .bind(py)
            .call_method0(intern!(py, "eof_received"))
            .and_then(|r| r.is_truthy())
        {
            Ok(keep_open) => keep_open,
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.eof_received() call failed.",
                )
            }
        };
        if keep_open {
            // The protocol may still write; nothing more can be read.
            slf.borrow_mut().base.reading = false;
            Ok(())
        } else {
            Self::close(slf)
        }
    }

    /// `_write_send`/`_write_sendmsg`: flush the buffer as far as the
    /// socket takes it.
    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let result = {
            let mut guard = slf.borrow_mut();
            let this = &mut *guard;
            let Some(io) = &this.base.io else {
                return Ok(());
            };
            io.take_pending(Direction::Write);
            if !this.base.writing || this.base.conn_lost > 0 {
                return Ok(());
            }
            if this.buffer.is_empty() {
                this.base.writing = false;
                return Ok(());
            }
            let fd = this.base.fd;
            let buffer = &this.buffer;
            let attempt = io.attempt(Direction::Write, || send_chunks(py, fd, buffer));
            match attempt {
                Attempt::NotReady => return Ok(()),
                Attempt::Done(Ok(n)) => {
                    this.consume(n);
                    if this.buffer.is_empty() {
                        // Before resume_writing() runs: a write() it makes
                        // must see no flush pending and watch again itself.
                        this.base.writing = false;
                    }
                    Ok(())
                }
                Attempt::Done(Err(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    return Ok(())
                }
                Attempt::Done(Err(e)) => {
                    this.base.writing = false;
                    this.buffer.clear();
                    this.buffered = 0;
                    Err(e)
                }
            }
        };
        if let Err(e) = result {
            let err = os_error(e);
            let exc = err.clone_ref(py).into_value(py);
            Self::fatal_error(slf, err, "Fatal write error on socket transport")?;
            let waiter = slf.borrow().empty_waiter.as_ref().map(|w| w.clone_ref(py));
            if let Some(waiter) = waiter {
                waiter
                    .bind(py)
                    .call_method1(intern!(py, "set_exception"), (exc,))?;
            }
            return Ok(());
        }
        Self::maybe_resume_protocol(slf)?;
        Self::after_flush(slf)
    }

    /// The buffer may be empty now: finish what waited for that.
    fn after_flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (waiter, closing, eof, owner) = {
            let mut this = slf.borrow_mut();
            if !this.buffer.is_empty() {
                return Ok(());
            }
            this.base.writing = false;
            (
                this.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                this.base.closing,
                this.eof,
                this.base.owner_or_none(py),
            )
        };
        if let Some(waiter) = waiter {
            waiter
                .bind(py)
                .call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        if closing {
            if !owner.is_none(py) {
                lose_connection(slf, &py.None().into_bound(py))?;
            }
        } else if eof {
            Self::shutdown_write(slf)?;
        }
        Ok(())
    }

    fn shutdown_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        let fd = slf.borrow().base.fd;
        // SAFETY: plain syscall on the transport's fd, which is open while
        // the transport is attached.
        if unsafe { libc::shutdown(fd, libc::SHUT_WR) } != 0 {
            return Err(os_error(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Drop `n` sent bytes from the front of the buffer.
    fn consume(&mut self, mut n: usize) {
        self.buffered -= n;
        while n > 0 {
            let Some(front) = self.buffer.front_mut() else {
                break;
            };
            let left = front.len - front.start;
            if left <= n {
                n -= left;
                self.buffer.pop_front();
            } else {
                front.start += n;
                n = 0;
            }
        }
    }

    fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let pause = {
            let mut this = slf.borrow_mut();
            let buffered = this.buffered;
            this.base.should_pause(buffered)
        };
        if pause {
            Self::peers(slf).flow_control("pause_writing")?;
        }
        Ok(())
    }

    fn maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let resume = {
            let mut this = slf.borrow_mut();
            let buffered = this.buffered;
            this.base.should_resume(buffered)
        };
        if resume {
            Self::peers(slf).flow_control("resume_writing")?;
        }
        Ok(())
    }

    /// For the connection loss (`stream_owner`): the Python transport
    /// (None once detached), whether the protocol is connected, and the
    /// protocol.
    pub(crate) fn loss_peers(&self, py: Python<'_>) -> Option<(Py<PyAny>, bool, Py<PyAny>)> {
        let owner = self.base.owner.as_ref()?.clone_ref(py);
        Some((
            owner,
            self.base.protocol_connected,
            self.base.protocol_or_none(py),
        ))
    }

    /// The loop, the Python transport and the protocol, for the cold paths
    /// in `transport_support`.
    fn peers<'py>(slf: &Bound<'py, Self>) -> Peers<'py> {
        slf.borrow().base.peers(slf.py())
    }

    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        Self::peers(slf).fatal_error(err, message)
    }

    /// `loop.call_soon(transport._call_connection_lost, exc)`, the native
    /// `_connection_lost` standing in for the Python method (see
    /// `stream_owner`).
    fn schedule_connection_lost(slf: &Bound<'_, Self>, exc: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let loop_ = {
            let this = slf.borrow();
            if this.base.owner.is_none() {
                return Ok(());
            }
            this.base.loop_.clone_ref(py)
        };
        let callback = slf.getattr(intern!(py, "_connection_lost"))?;
        LoopCore::call_soon_internal(loop_.bind(py), callback, PyTuple::new(py, [exc])?)
    }

    /// A cached read method of the protocol, to call once the borrow of
    /// the transport is over (see `ProtocolMethod`).
    fn method(&self, py: Python<'_>, cached: &Option<Py<PyAny>>) -> Option<ProtocolMethod> {
        ProtocolMethod::of(py, cached.as_ref(), self.base.protocol.as_ref())
    }

    fn set_protocol_inner(&mut self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = protocol.py();
        let buffered = protocol.is_instance(refs(py).buffered_protocol_type.bind(py))?;
        // A protocol without the method fails when data arrives, as on
        // asyncio (through `_fatal_error`), not here: a missing one is
        // looked up again then (`ProtocolMethod`).
        // Interned names: the type's method cache only keys on interned
        // strings, and a fresh one cost ~1k instructions a lookup.
        let lookup = |name: &Bound<'_, PyString>| protocol.getattr(name).ok().map(Bound::unbind);
        let tls = if buffered {
            SslProtocolCore::native_reader(protocol)?
        } else {
            None
        };
        self.reader = Some(if let Some(protocol) = tls {
            Reader::Tls { protocol }
        } else if buffered {
            Reader::Buffered {
                get_buffer: lookup(intern!(py, "get_buffer")),
                buffer_updated: lookup(intern!(py, "buffer_updated")),
            }
        } else {
            Reader::Plain {
                data_received: lookup(intern!(py, "data_received")),
            }
        });
        self.base.protocol = Some(protocol.clone().unbind());
        self.base.protocol_connected = true;
        Ok(())
    }
}

impl StreamTransport {
    /// `transport.write(data)`; called through `transport_write::write`, a
    /// plain `METH_O` method (see there).
    pub(crate) fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let is_bytes = data.is_instance_of::<PyBytes>();
        // SAFETY: type checks on a live object.
        let bytes_like = is_bytes
            || unsafe {
                ffi::PyByteArray_Check(data.as_ptr()) != 0
                    || ffi::PyMemoryView_Check(data.as_ptr()) != 0
            };
        if !bytes_like {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not '{}'",
                data.get_type().name()?
            )));
        }
        {
            let this = slf.borrow();
            if this.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call write() after write_eof()",
                ));
            }
            if this.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to write; sendfile is in progress",
                ));
            }
        }
        // A `bytes` is read in place; other bytes-like objects through the
        // buffer protocol.
        let view;
        let bytes = if is_bytes {
            // SAFETY: checked above to be a bytes instance.
            unsafe { data.cast_unchecked::<PyBytes>() }.as_bytes()
        } else {
            view = ByteView::new(data, false)?;
            view.as_slice()
        };
        if bytes.is_empty() {
            return Ok(());
        }
        let mut this = slf.borrow_mut();
        if this.base.drop_write_after_loss(py)? {
            return Ok(());
        }
        let mut sent = 0;
        if this.buffer.is_empty() {
            match send_some(this.base.fd, bytes) {
                Ok(n) => sent = n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    drop(this);
                    return Self::fatal_error(
                        slf,
                        os_error(e),
                        "Fatal write error on socket transport",
                    );
                }
            }
            if sent == bytes.len() {
                return Ok(());
            }
            this.base.watch(Direction::Write);
        }
        let chunk = if is_bytes {
            Chunk {
                data: data.cast::<PyBytes>()?.clone().unbind(),
                start: sent,
                len: bytes.len(),
            }
        } else {
            // A bytearray or memoryview may change after write() returns;
            // asyncio's buffer holds what it was at the call.
            Chunk {
                data: PyBytes::new(py, &bytes[sent..]).unbind(),
                start: 0,
                len: bytes.len() - sent,
            }
        };
        this.buffered += bytes.len() - sent;
        this.buffer.push_back(chunk);
        drop(this);
        Self::maybe_pause_protocol(slf)
    }
}

#[pymethods]
impl StreamTransport {
    /// Create the engine for `owner` (the Python transport) over the
    /// connected, non-blocking socket `fd` and put it on `loop`'s reactor.
    #[staticmethod]
    pub(crate) fn create<'py>(
        loop_: &Bound<'py, LoopCore>,
        owner: &Bound<'py, PyAny>,
        fd: i32,
        protocol: &Bound<'py, PyAny>,
        context: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        let py = loop_.py();
        let mut core = StreamTransport {
            base: TransportState::new(
                loop_.clone().unbind(),
                owner.clone().unbind(),
                context.unbind(),
                fd,
            ),
            reader: None,
            buffer: VecDeque::new(),
            buffered: 0,
            paused: false,
            eof: false,
            empty_waiter: None,
            sizer: ReadSizer::default(),
            owner_attrs: OwnerAttrs::default(),
            extra: ExtraInfo::Unset,
        };
        core.set_protocol_inner(protocol)?;
        let core = Bound::new(py, core)?;
        let (token, io) =
            loop_
                .get()
                .register_native(py, fd, NativeIo::Stream(core.clone().unbind()))?;
        {
            let mut this = core.borrow_mut();
            this.base.token = token;
            this.base.io = Some(io);
        }
        Ok(core)
    }

    /// Start reading, unless paused or closing (asyncio's `_add_reader`).
    fn _start_reading(&mut self) {
        if self.is_reading() {
            self.base.watch(Direction::Read);
        }
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let joined = || PyBytes::new(py, b"").call_method1("join", (list_of_data,));
        if !refs(py).writelines_checks_first {
            // Before 3.12 asyncio's transport inherits `WriteTransport`'s
            // writelines: join (its TypeError first), then `write()` with
            // write's own errors.
            return Self::write(slf, &joined()?);
        }
        {
            let this = slf.borrow();
            if this.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call writelines() after write_eof()",
                ));
            }
            if this.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to writelines; sendfile is in progress",
                ));
            }
        }
        // Truthiness, as asyncio's `if not list_of_data` (a generator is
        // true; it has no length).
        if !list_of_data.is_truthy()? {
            return Ok(());
        }
        // As CPython's fix for gh-136234 (3.12.1 and 3.13.0 raise
        // AttributeError here): a write after the connection is lost is
        // counted and warned about as write() does, and the list is not read.
        if slf.borrow_mut().base.drop_write_after_loss(py)? {
            return Ok(());
        }
        Self::write(slf, &joined()?)
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut this = slf.borrow_mut();
            if this.base.closing || this.eof {
                return Ok(());
            }
            this.eof = true;
            if !this.buffer.is_empty() {
                return Ok(());
            }
        }
        Self::shutdown_write(slf)
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    // `is_closing()` is a `METH_NOARGS` C method (`transport_write::install`).

    fn is_reading(&self) -> bool {
        !self.base.closing && !self.paused
    }

    fn pause_reading(&mut self) {
        if !self.is_reading() {
            return;
        }
        self.paused = true;
        self.base.reading = false;
    }

    fn resume_reading(&mut self) {
        if self.base.closing || !self.paused {
            return;
        }
        self.paused = false;
        self.base.watch(Direction::Read);
    }

    pub(crate) fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let lost_now = {
            let mut this = slf.borrow_mut();
            let empty = this.buffer.is_empty();
            this.base.begin_close(empty)
        };
        if lost_now {
            Self::schedule_connection_lost(slf, slf.py().None())?;
        }
        Ok(())
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::_force_close(slf, slf.py().None())
    }

    fn _force_close(slf: &Bound<'_, Self>, exc: Py<PyAny>) -> PyResult<()> {
        let dropped = {
            let mut this = slf.borrow_mut();
            if !this.base.begin_force_close() {
                return Ok(());
            }
            this.buffered = 0;
            std::mem::take(&mut this.buffer)
        };
        drop(dropped);
        Self::schedule_connection_lost(slf, exc)
    }

    /// Take the fd off the reactor and let go of the protocol and owner;
    /// the Python side closes the socket right after. Returns the sendfile
    /// empty waiter, if one is pending, for the Python side to fail once
    /// the clean-up is done (as asyncio's `_call_connection_lost` does).
    pub(crate) fn _detach(slf: &Bound<'_, Self>) -> Option<Py<PyAny>> {
        let py = slf.py();
        let (loop_, token, dropped, waiter) = {
            let mut this = slf.borrow_mut();
            this.buffered = 0;
            let dropped = (
                this.base.detach(),
                this.reader.take(),
                std::mem::take(&mut this.buffer),
            );
            let waiter = this.empty_waiter.as_ref().map(|w| w.clone_ref(py));
            (
                this.base.loop_.clone_ref(py),
                this.base.token,
                dropped,
                waiter,
            )
        };
        let registered = loop_.get().unregister_native(token);
        drop((dropped, registered));
        waiter
    }

    /// The owner's `_call_connection_lost(exc)` (`stream_owner`).
    fn _connection_lost(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        lose_connection(slf, exc)
    }

    /// Take the fd off the reactor while `loop.sendfile` drives the socket
    /// itself (it watches the fd with `add_writer`).
    fn _suspend_io(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let (loop_, token, io) = {
            let mut this = slf.borrow_mut();
            this.base.reading = false;
            this.base.writing = false;
            (
                this.base.loop_.clone_ref(py),
                this.base.token,
                this.base.io.take(),
            )
        };
        let registered = loop_.get().unregister_native(token);
        drop((io, registered));
    }

    /// Back on the reactor after `_suspend_io` (unless detached meanwhile).
    fn _resume_io(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd) = {
            let this = slf.borrow();
            if this.base.owner.is_none() || this.base.io.is_some() {
                return Ok(());
            }
            (this.base.loop_.clone_ref(py), this.base.fd)
        };
        let (token, io) =
            loop_
                .get()
                .register_native(py, fd, NativeIo::Stream(slf.clone().unbind()))?;
        let mut this = slf.borrow_mut();
        this.base.token = token;
        this.base.io = Some(io);
        Ok(())
    }

    fn get_write_buffer_size(&self) -> usize {
        self.buffered()
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        (self.base.low_water, self.base.high_water)
    }

    /// Store limits checked by the Python side, then pause if now above.
    fn _set_write_buffer_limits(slf: &Bound<'_, Self>, high: usize, low: usize) -> PyResult<()> {
        {
            let mut this = slf.borrow_mut();
            this.base.high_water = high;
            this.base.low_water = low;
        }
        Self::maybe_pause_protocol(slf)
    }

    fn set_protocol(&mut self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_protocol_inner(protocol)
    }

    fn get_protocol(&self, py: Python<'_>) -> Py<PyAny> {
        self.base.protocol_or_none(py)
    }

    #[getter]
    fn _protocol_connected(&self) -> bool {
        self.base.protocol_connected
    }

    #[getter]
    fn _protocol_paused(&self) -> bool {
        self.base.protocol_paused
    }

    #[getter]
    fn _closing(&self) -> bool {
        self.base.closing
    }

    #[getter]
    fn _paused(&self) -> bool {
        self.paused
    }

    #[getter]
    fn _eof(&self) -> bool {
        self.eof
    }

    #[getter]
    fn _conn_lost(&self) -> u32 {
        self.base.conn_lost
    }

    /// The transport's fd (its `_sock_fd`).
    #[getter(_fd)]
    pub(crate) fn fd(&self) -> i32 {
        self.base.fd
    }

    /// The Python transport's `_extra`, built on first read (see
    /// `extra_info`).
    #[getter(_extra)]
    fn extra(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (extra, built) = slf.borrow().extra.read(py)?;
        if built {
            Self::replace_extra(slf, ExtraInfo::Built(extra.clone().unbind()));
        }
        Ok(extra.unbind())
    }

    #[setter(_extra)]
    fn set_extra(slf: &Bound<'_, Self>, value: Option<Py<PyAny>>) {
        let value = value.map_or(ExtraInfo::Unset, ExtraInfo::Built);
        Self::replace_extra(slf, value);
    }

    #[getter(_owner_sock)]
    fn owner_sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.owner_attrs.sock.as_ref().map(|o| o.clone_ref(py))
    }

    #[setter(_owner_sock)]
    fn set_owner_sock(&mut self, value: Option<Py<PyAny>>) {
        self.owner_attrs.sock = value;
    }

    #[getter(_owner_server)]
    fn owner_server(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.owner_attrs.server.as_ref().map(|o| o.clone_ref(py))
    }

    #[setter(_owner_server)]
    fn set_owner_server(&mut self, value: Option<Py<PyAny>>) {
        self.owner_attrs.server = value;
    }

    #[getter(_owner_loop)]
    fn owner_loop(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.owner_attrs.loop_.as_ref().map(|o| o.clone_ref(py))
    }

    #[setter(_owner_loop)]
    fn set_owner_loop(&mut self, value: Option<Py<PyAny>>) {
        self.owner_attrs.loop_ = value;
    }

    /// `(reading, writing)`: whether the fd is polled for each, for repr.
    fn _polling(&self) -> (bool, bool) {
        (self.base.reading, self.base.writing)
    }

    #[getter(_empty_waiter)]
    fn get_empty_waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.empty_waiter.as_ref().map(|w| w.clone_ref(py))
    }

    #[setter(_empty_waiter)]
    fn set_empty_waiter(&mut self, waiter: Option<Py<PyAny>>) {
        self.empty_waiter = waiter;
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.base.traverse(&visit)?;
        match &self.reader {
            Some(Reader::Plain { data_received }) => visit.call(data_received)?,
            Some(Reader::Tls { protocol }) => visit.call(protocol)?,
            Some(Reader::Buffered {
                get_buffer,
                buffer_updated,
            }) => {
                visit.call(get_buffer)?;
                visit.call(buffer_updated)?;
            }
            None => {}
        }
        if let Some(w) = &self.empty_waiter {
            visit.call(w)?;
        }
        let attrs = &self.owner_attrs;
        for obj in [&attrs.sock, &attrs.server, &attrs.loop_]
            .into_iter()
            .flatten()
        {
            visit.call(obj)?;
        }
        self.extra.traverse(&visit)
    }

    fn __clear__(&mut self) {
        self.owner_attrs = OwnerAttrs::default();
        self.extra = ExtraInfo::Unset;
        self.base.owner = None;
        self.base.protocol = None;
        self.reader = None;
        self.empty_waiter = None;
    }
}
