//! `DatagramTransport`: the native engine behind tokioloop's UDP and Unix
//! datagram transport (`tokioloop._transports.DatagramSocketTransport`).
//!
//! It replaces the per-datagram Python work of asyncio's
//! `_SelectorDatagramTransport` (`_read_ready`, `sendto`, `_sendto_ready`):
//! readiness comes straight from the reactor, datagrams go to the protocol's
//! cached `datagram_received`, `sendto` tries the socket inline and buffers
//! only what would block, and flow control follows the water marks. The
//! socket calls themselves are the Python socket object's own C methods
//! (`recvfrom`, `send`, `sendto`), bound once, so addresses are parsed and
//! formatted exactly as Python does for every family.
//!
//! Semantics follow the running CPython: up to 3.12 empty datagrams are
//! dropped and only payload bytes count in the write buffer; 3.13+ sends
//! them and counts 8 header bytes per datagram.

use std::collections::VecDeque;
use std::io;

use pyo3::exceptions::{
    PyBlockingIOError, PyInterruptedError, PyOSError, PyTypeError, PyValueError,
};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::{PyBytes, PyTuple};

use crate::fd_watch::Direction;
use crate::loop_core::LoopCore;
use crate::native_io::{Attempt, NativeIo, Readiness};
use crate::sock_io::{self, ByteView};
use crate::transport_support::{in_context, is_fatal, Peers, ProtocolMethod, TransportState};

/// The largest UDP payload over IPv4/IPv6: a bigger receive buffer buys
/// nothing for inet sockets, and a 256 KiB `bytes` per datagram would be
/// mmapped.
const INET_MAX_DATAGRAM: usize = 65536;
/// asyncio's `max_size`, for the other families (Unix datagram sockets).
const MAX_SIZE: usize = 256 * 1024;

#[pyclass(module = "tokioloop._tokioloop", name = "DatagramTransportCore")]
pub struct DatagramTransport {
    base: TransportState,
    datagram_received: Option<Py<PyAny>>,
    /// `sock.recvfrom`, `sock.send`, `sock.sendto`, bound once.
    recvfrom: Py<PyAny>,
    send: Py<PyAny>,
    sendto_sock: Py<PyAny>,
    max_size: usize,
    /// The remote address of a connected endpoint (`remote_addr`).
    address: Option<Py<PyAny>>,
    /// The socket has a peer (`get_extra_info('peername')` is set): `send`.
    connected: bool,
    buffer: VecDeque<(Py<PyBytes>, Py<PyAny>)>,
    buffer_size: usize,
    /// 3.13+: empty datagrams are sent and each buffered one counts 8 bytes.
    modern: bool,
}

/// A Python call's error as an `io::Error` when it means "try later", so
/// `IoRegistration::attempt` handles readiness; otherwise kept for Python.
fn split_would_block(py: Python<'_>, err: PyErr) -> io::Result<PyErr> {
    if err.is_instance_of::<PyBlockingIOError>(py) {
        Err(io::ErrorKind::WouldBlock.into())
    } else if err.is_instance_of::<PyInterruptedError>(py) {
        Err(io::ErrorKind::Interrupted.into())
    } else {
        Ok(err)
    }
}

/// Whether another datagram is queued on `fd`, without taking it.
fn datagram_pending(fd: i32) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte buffer for a peek that removes nothing.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n >= 0
}

/// What one read produced, handled after the borrow is released.
enum ReadOutcome {
    Nothing,
    Datagram(Py<PyAny>),
    Failed(PyErr),
}

impl DatagramTransport {
    fn peers<'py>(slf: &Bound<'py, Self>) -> Peers<'py> {
        slf.borrow().base.peers(slf.py())
    }

    pub fn on_ready(slf: &Bound<'_, Self>, direction: Direction) -> PyResult<()> {
        match direction {
            Direction::Read => Self::read_ready(slf),
            Direction::Write => Self::write_ready(slf),
        }
    }

    /// A failure in a protocol callback run from an event: reported as
    /// asyncio reports an exception escaping its reader callback.
    fn report_callback_error(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        if is_fatal(slf.py(), &err) {
            return Err(err);
        }
        Self::peers(slf).report(
            "Exception in callback DatagramSocketTransport._read_ready()",
            err,
        )
    }

    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        if let Some(io) = &slf.borrow().base.io {
            io.take_pending(Direction::Read);
        }
        Self::read_once(slf, false)
    }

    /// One `recvfrom` if reading: when the reactor says the fd is readable,
    /// or (`error_edge`) after an error edge, when the pending socket error
    /// is what recvfrom will raise.
    fn read_once(slf: &Bound<'_, Self>, error_edge: bool) -> PyResult<()> {
        let py = slf.py();
        let context = {
            let this = slf.borrow();
            if this.base.io.is_none() || !this.base.reading || this.base.conn_lost > 0 {
                return Ok(());
            }
            this.base.context.clone_ref(py)
        };
        in_context(py, &context, || {
            let outcome = {
                let this = slf.borrow();
                let Some(io) = &this.base.io else {
                    return Ok(());
                };
                let (fd, max_size) = (this.base.fd, this.max_size);
                let recvfrom = this.recvfrom.bind(py);
                let op = || match recvfrom.call1((max_size,)) {
                    Ok(pair) => {
                        let readiness = if datagram_pending(fd) {
                            Readiness::MoreLater
                        } else {
                            Readiness::Drained
                        };
                        Ok((Ok(pair.unbind()), readiness))
                    }
                    Err(err) => Ok((Err(split_would_block(py, err)?), Readiness::MoreLater)),
                };
                let attempt = if error_edge {
                    Attempt::Done(op().map(|(result, _)| result))
                } else {
                    io.attempt(Direction::Read, op)
                };
                match attempt {
                    Attempt::NotReady | Attempt::Done(Err(_)) => ReadOutcome::Nothing,
                    Attempt::Done(Ok(Ok(pair))) => ReadOutcome::Datagram(pair),
                    Attempt::Done(Ok(Err(err))) => ReadOutcome::Failed(err),
                }
            };
            Self::after_read(slf, outcome)
        })
    }

    fn after_read(slf: &Bound<'_, Self>, outcome: ReadOutcome) -> PyResult<()> {
        let py = slf.py();
        match outcome {
            ReadOutcome::Nothing => Ok(()),
            ReadOutcome::Datagram(pair) => {
                let method = {
                    let this = slf.borrow();
                    ProtocolMethod::of(
                        py,
                        this.datagram_received.as_ref(),
                        this.base.protocol.as_ref(),
                    )
                };
                let Some(method) = method else {
                    return Ok(());
                };
                let result = method.resolve(py, "datagram_received").and_then(|m| {
                    let pair = pair.bind(py).cast::<PyTuple>()?;
                    m.call1(pair.clone())
                });
                match result {
                    Ok(_) => Ok(()),
                    Err(err) => Self::report_callback_error(slf, err),
                }
            }
            ReadOutcome::Failed(err) if err.is_instance_of::<PyOSError>(py) => {
                match Self::error_received(slf, err) {
                    Ok(()) => Ok(()),
                    Err(err) => Self::report_callback_error(slf, err),
                }
            }
            ReadOutcome::Failed(err) => {
                Self::peers(slf).fatal_error(err, "Fatal read error on datagram transport")
            }
        }
    }

    fn error_received(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        let protocol = slf.borrow().base.protocol.as_ref().map(|p| p.clone_ref(py));
        if let Some(protocol) = protocol {
            protocol
                .bind(py)
                .call_method1("error_received", (err.into_value(py),))?;
        }
        Ok(())
    }

    /// One `send`/`sendto` of a datagram through the Python socket.
    fn send_one(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        addr: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if self.connected {
            self.send.bind(py).call1((data,))?;
        } else {
            self.sendto_sock.bind(py).call1((data, addr))?;
        }
        sock_io::note_sent();
        Ok(())
    }

    fn header(&self) -> usize {
        if self.modern {
            8
        } else {
            0
        }
    }

    /// `_sendto_ready`: flush buffered datagrams while the socket takes them.
    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut this = slf.borrow_mut();
            let Some(io) = &this.base.io else {
                return Ok(());
            };
            io.take_pending(Direction::Write);
            if !this.base.writing {
                // A connected socket's ICMP error arrives as EPOLLERR alone,
                // which only the write side hears: the reader's recvfrom
                // then raises it, as it does under a selector.
                let error = this.connected && io.take_error_edge();
                drop(this);
                if error {
                    Self::read_once(slf, true)?;
                }
                return Ok(());
            }
            if this.buffer.is_empty() {
                this.base.writing = false;
                return Ok(());
            }
        }
        loop {
            let failure = {
                let mut guard = slf.borrow_mut();
                let this = &mut *guard;
                let Some((data, addr)) = this.buffer.pop_front() else {
                    // Before resume_writing() runs: a sendto() it makes must
                    // see no flush pending and watch again itself.
                    this.base.writing = false;
                    break;
                };
                let len = data.bind(py).as_bytes().len() + this.header();
                this.buffer_size -= len;
                let Some(io) = &this.base.io else {
                    return Ok(());
                };
                let attempt = io.attempt(Direction::Write, || {
                    match this.send_one(py, data.bind(py).as_any(), addr.bind(py)) {
                        Ok(()) => Ok((None, Readiness::Unknown)),
                        Err(err) => Ok((Some(split_would_block(py, err)?), Readiness::Unknown)),
                    }
                });
                match attempt {
                    Attempt::Done(Ok(None)) => None,
                    Attempt::Done(Ok(Some(err))) => Some(err),
                    Attempt::NotReady | Attempt::Done(Err(_)) => {
                        // Try again later (the waker is armed).
                        this.buffer.push_front((data, addr));
                        this.buffer_size += len;
                        return Ok(());
                    }
                }
            };
            if let Some(err) = failure {
                if err.is_instance_of::<PyOSError>(py) {
                    return match Self::error_received(slf, err) {
                        Ok(()) => Ok(()),
                        Err(err) => Self::report_callback_error(slf, err),
                    };
                }
                return Self::peers(slf)
                    .fatal_error(err, "Fatal write error on datagram transport");
            }
        }
        Self::maybe_resume_protocol(slf)?;
        let (empty, closing) = {
            let mut this = slf.borrow_mut();
            let empty = this.buffer.is_empty();
            if empty {
                this.base.writing = false;
            }
            (empty, this.base.closing)
        };
        if empty && closing {
            let owner = Self::peers(slf).owner;
            owner.call_method1("_call_connection_lost", (py.None(),))?;
        }
        Ok(())
    }

    fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let pause = {
            let mut this = slf.borrow_mut();
            let buffered = this.buffer_size;
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
            let buffered = this.buffer_size;
            this.base.should_resume(buffered)
        };
        if resume {
            Self::peers(slf).flow_control("resume_writing")?;
        }
        Ok(())
    }

    fn set_protocol_inner(&mut self, protocol: &Bound<'_, PyAny>) {
        self.datagram_received = protocol
            .getattr(intern!(protocol.py(), "datagram_received"))
            .ok()
            .map(Bound::unbind);
        self.base.protocol = Some(protocol.clone().unbind());
        self.base.protocol_connected = true;
    }
}

#[pymethods]
impl DatagramTransport {
    /// The engine for `owner` (the Python transport) over the non-blocking
    /// datagram socket `sock`, put on `loop`'s reactor.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    fn create<'py>(
        loop_: &Bound<'py, LoopCore>,
        owner: &Bound<'py, PyAny>,
        sock: &Bound<'py, PyAny>,
        protocol: &Bound<'py, PyAny>,
        address: Option<Bound<'py, PyAny>>,
        connected: bool,
        inet: bool,
        context: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        let py = loop_.py();
        let fd: i32 = sock.call_method0("fileno")?.extract()?;
        let mut core = DatagramTransport {
            base: TransportState::new(
                loop_.clone().unbind(),
                owner.clone().unbind(),
                context.unbind(),
                fd,
            ),
            datagram_received: None,
            recvfrom: sock.getattr("recvfrom")?.unbind(),
            send: sock.getattr("send")?.unbind(),
            sendto_sock: sock.getattr("sendto")?.unbind(),
            max_size: if inet { INET_MAX_DATAGRAM } else { MAX_SIZE },
            address: address.map(Bound::unbind),
            connected,
            buffer: VecDeque::new(),
            buffer_size: 0,
            modern: py.version_info() >= (3, 13),
        };
        core.set_protocol_inner(protocol);
        let core = Bound::new(py, core)?;
        let (token, io) =
            loop_
                .get()
                .register_native(py, fd, NativeIo::Datagram(core.clone().unbind()))?;
        {
            let mut this = core.borrow_mut();
            this.base.token = token;
            this.base.io = Some(io);
        }
        Ok(core)
    }

    /// Start reading, unless closing (asyncio's `_add_reader`).
    fn _start_reading(&mut self) {
        if !self.base.closing && !self.base.reading {
            self.base.watch(Direction::Read);
            if let (true, Some(io)) = (self.connected, &self.base.io) {
                // Arm the write waker too, for error edges (without
                // claiming a flush is pending).
                io.watch(Direction::Write);
            }
        }
    }

    #[pyo3(signature = (data, addr=None))]
    fn sendto(
        slf: &Bound<'_, Self>,
        data: &Bound<'_, PyAny>,
        addr: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        // SAFETY: type checks on a live object.
        let bytes_like = data.is_instance_of::<PyBytes>()
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
        let (modern, address) = {
            let this = slf.borrow();
            (this.modern, this.address.as_ref().map(|a| a.clone_ref(py)))
        };
        if !modern && !data.is_truthy()? {
            return Ok(());
        }
        let mut addr = addr.unwrap_or_else(|| py.None().into_bound(py));
        if let Some(address) = address.filter(|a| a.bind(py).is_truthy().unwrap_or(true)) {
            let address = address.into_bound(py);
            if !addr.is_none() && !addr.eq(&address)? {
                return Err(PyValueError::new_err(format!(
                    "Invalid address: must be None or {}",
                    address.str()?
                )));
            }
            addr = address;
            // As asyncio: only a connected endpoint counts writes after loss
            // (read now: comparing the addresses may have run Python code).
            let lost = slf.borrow().base.conn_lost != 0;
            if lost && slf.borrow_mut().base.drop_write_after_loss(py)? {
                return Ok(());
            }
        }
        if slf.borrow().buffer.is_empty() {
            let sent = slf.borrow().send_one(py, data, &addr);
            match sent {
                Ok(()) => return Ok(()),
                Err(err) => match split_would_block(py, err) {
                    Err(_) => {
                        slf.borrow_mut().base.watch(Direction::Write);
                    }
                    Ok(err) if err.is_instance_of::<PyOSError>(py) => {
                        return Self::error_received(slf, err);
                    }
                    Ok(err) if is_fatal(py, &err) => return Err(err),
                    Ok(err) => {
                        return Self::peers(slf)
                            .fatal_error(err, "Fatal write error on datagram transport");
                    }
                },
            }
        }
        // What is buffered must not change under us.
        let copy = PyBytes::new(py, ByteView::new(data, false)?.as_slice());
        {
            let mut this = slf.borrow_mut();
            this.buffer_size += copy.as_bytes().len() + this.header();
            this.buffer.push_back((copy.unbind(), addr.unbind()));
        }
        Self::maybe_pause_protocol(slf)
    }

    fn is_closing(&self) -> bool {
        self.base.closing
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let lost_now = {
            let mut this = slf.borrow_mut();
            let empty = this.buffer.is_empty();
            this.base.begin_close(empty)
        };
        if lost_now {
            Self::peers(slf).schedule_connection_lost(slf.py().None())?;
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
            this.buffer_size = 0;
            std::mem::take(&mut this.buffer)
        };
        drop(dropped);
        Self::peers(slf).schedule_connection_lost(exc)
    }

    /// Off the reactor, protocol and owner released; the Python side closes
    /// the socket right after. Returns None, as the stream core's does when
    /// no sendfile is waiting (datagram transports have no empty waiter).
    fn _detach(slf: &Bound<'_, Self>) -> Option<Py<PyAny>> {
        let py = slf.py();
        let (loop_, token, dropped) = {
            let mut this = slf.borrow_mut();
            this.buffer_size = 0;
            let dropped = (
                this.base.detach(),
                this.datagram_received.take(),
                std::mem::take(&mut this.buffer),
            );
            (this.base.loop_.clone_ref(py), this.base.token, dropped)
        };
        let registered = loop_.get().unregister_native(token);
        drop((dropped, registered));
        None
    }

    fn get_write_buffer_size(&self) -> usize {
        self.buffer_size
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        (self.base.low_water, self.base.high_water)
    }

    fn _set_write_buffer_limits(slf: &Bound<'_, Self>, high: usize, low: usize) -> PyResult<()> {
        {
            let mut this = slf.borrow_mut();
            this.base.high_water = high;
            this.base.low_water = low;
        }
        Self::maybe_pause_protocol(slf)
    }

    fn set_protocol(&mut self, protocol: &Bound<'_, PyAny>) {
        self.set_protocol_inner(protocol);
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
    fn _conn_lost(&self) -> u32 {
        self.base.conn_lost
    }

    #[getter]
    fn _address(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.address.as_ref().map(|a| a.clone_ref(py))
    }

    fn _polling(&self) -> (bool, bool) {
        (self.base.reading, self.base.writing)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.base.traverse(&visit)?;
        visit.call(&self.recvfrom)?;
        visit.call(&self.send)?;
        visit.call(&self.sendto_sock)?;
        for obj in [&self.datagram_received, &self.address]
            .into_iter()
            .flatten()
        {
            visit.call(obj)?;
        }
        for (_, addr) in &self.buffer {
            visit.call(addr)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.base.owner = None;
        self.base.protocol = None;
        self.datagram_received = None;
        self.buffer.clear();
    }
}
