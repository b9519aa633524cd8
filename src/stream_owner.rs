//! The Python stream transport (`_transports.SocketTransport`) set up and
//! torn down natively: the body of its `__init__` ([`_init_stream_owner`])
//! and its `_call_connection_lost` ([`lose_connection`]).
//!
//! Both run once per connection. As Python they were five frames (the
//! constructor's two helpers, the start, the connection loss and its
//! socket close), and a Python frame costs about 650 instructions before it
//! does anything: a server that accepts, echoes 100 bytes and closes spent
//! about 50k instructions per connection against rloop's 24k
//! (`benches/churn.py`). The steps, their order and their errors are those
//! of the Python code they replace, itself asyncio's
//! `_SelectorSocketTransport.__init__` and `_call_connection_lost`.

use pyo3::exceptions::PyConnectionError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

use crate::extra_info::ExtraInfo;
use crate::loop_core::LoopCore;
use crate::pyrefs::refs;
use crate::socket_fields;
use crate::stream_transport::StreamTransport;
use crate::transport_map::TransportMap;

/// `SocketTransport.__init__(loop, sock, protocol, waiter, extra, server)`
/// for `owner`: the extra info, the native core, the server's attach,
/// `TCP_NODELAY`, then registration with the loop and the first callbacks
/// (`connection_made`, the first read, the waiter's result).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn _init_stream_owner<'py>(
    owner: &Bound<'py, PyAny>,
    loop_: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    waiter: &Bound<'py, PyAny>,
    extra: &Bound<'py, PyAny>,
    server: &Bound<'py, PyAny>,
) -> PyResult<()> {
    init_stream_owner(owner, loop_, sock, protocol, (waiter, None), extra, server)
}

/// `_init_stream_owner`, with the waiter's result: `None` unless given
/// (`connect_op` resolves its future with the transport and protocol).
#[allow(clippy::too_many_arguments)]
fn init_stream_owner<'py>(
    owner: &Bound<'py, PyAny>,
    loop_: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    waiter: (&Bound<'py, PyAny>, Option<Bound<'py, PyAny>>),
    extra: &Bound<'py, PyAny>,
    server: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let py = owner.py();
    let extra = ExtraInfo::new(sock, extra)?;
    let fd = fd_of(sock)?;
    let context = copy_context(py)?;
    let core = StreamTransport::create(loop_, owner, fd, protocol, context)?;
    {
        let mut this = core.borrow_mut();
        this.extra = extra;
        this.owner_attrs.sock = Some(sock.clone().unbind());
        this.owner_attrs.server = Some(server.clone().unbind()).filter(|s| !s.is_none(py));
        this.owner_attrs.loop_ = Some(loop_.clone().into_any().unbind());
    }
    // The transport's `_sock`, `_loop`, `_server` and `_sock_fd` read the
    // core from here on; `__repr__` and `__del__` read them, also of a
    // transport whose construction fails below (as asyncio's, it then
    // warns "unclosed transport" when collected and closes the socket).
    owner.setattr(intern!(py, "_core"), &core)?;
    if let Err(err) = attach_and_set_nodelay(owner, sock, server) {
        // Off the reactor: asyncio's transport would not be watching yet.
        drop(StreamTransport::_detach(&core));
        return Err(err);
    }
    start(owner, loop_, fd, &core, protocol, waiter)
}

/// The fd of `sock`, read from the C object for a plain `socket.socket`.
fn fd_of(sock: &Bound<'_, PyAny>) -> PyResult<i32> {
    let py = sock.py();
    if sock.get_type().is(refs(py).socket_type.bind(py)) {
        Ok(socket_fields::of(sock)?.fd)
    } else {
        sock.call_method0(intern!(py, "fileno"))?.extract()
    }
}

fn copy_context(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: the GIL is held; returns a new reference or NULL with an
    // exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyContext_CopyCurrent()) }
}

/// The server's attach (it fails if the server was closed meanwhile, as in
/// asyncio), then asyncio's `base_events._set_nodelay`: natively for a
/// plain `socket.socket`, whose family, type and protocol are read from
/// the C object as its own getters read them (no enum conversions).
fn attach_and_set_nodelay(
    owner: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    server: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = owner.py();
    let r = refs(py);
    if !server.is_none() {
        if r.server_tracks_transports {
            server.call_method1(intern!(py, "_attach"), (owner,))?;
        } else {
            server.call_method0(intern!(py, "_attach"))?;
        }
    }
    if !sock.get_type().is(r.socket_type.bind(py)) {
        r.set_nodelay.bind(py).call1((sock,))?;
        return Ok(());
    }
    let kind = socket_fields::kind_of(sock)?;
    let inet = kind.family == libc::AF_INET || kind.family == libc::AF_INET6;
    if inet && kind.sock_type == libc::SOCK_STREAM && kind.proto == libc::IPPROTO_TCP {
        // `sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)` without its
        // argument parsing (~1k instructions a connection), and the same
        // OSError if it fails.
        let fd = socket_fields::of(sock)?.fd;
        if fd < 0 {
            // A closed socket: its own method's error.
            sock.call_method1(
                intern!(py, "setsockopt"),
                (libc::IPPROTO_TCP, libc::TCP_NODELAY, 1),
            )?;
            return Ok(());
        }
        // SAFETY: `fd` is the open fd of `sock`, which outlives the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        socket2::SockRef::from(&fd)
            .set_tcp_nodelay(true)
            .map_err(crate::errors::os_error)?;
    }
    Ok(())
}

/// `_NativeTransport._start`: register with the loop, schedule
/// `connection_made`, the first read once it has run, and the waiter's
/// result, as asyncio's transports do.
fn start<'py>(
    owner: &Bound<'py, PyAny>,
    loop_: &Bound<'py, LoopCore>,
    fd: i32,
    core: &Bound<'py, StreamTransport>,
    protocol: &Bound<'py, PyAny>,
    (waiter, result): (&Bound<'py, PyAny>, Option<Bound<'py, PyAny>>),
) -> PyResult<()> {
    let py = owner.py();
    let transports = loop_.get().transports(py)?;
    match transports.cast::<TransportMap>() {
        Ok(map) => map.get().insert(py, i64::from(fd), owner)?,
        Err(_) => transports.set_item(fd, owner)?,
    }
    let connection_made = protocol.getattr(intern!(py, "connection_made"))?;
    LoopCore::call_soon_internal(loop_, connection_made, PyTuple::new(py, [owner])?)?;
    // The class's method descriptor with the core as its argument: no
    // bound method to build per connection.
    LoopCore::call_soon_internal(
        loop_,
        start_reading_method(py)?.clone(),
        PyTuple::new(py, [core])?,
    )?;
    if !waiter.is_none() {
        let set_result = refs(py).set_result_unless_cancelled.bind(py).clone();
        let result = result.unwrap_or_else(|| py.None().into_bound(py));
        LoopCore::call_soon_internal(loop_, set_result, PyTuple::new(py, [waiter, &result])?)?;
    }
    Ok(())
}

/// `SocketTransport._call_connection_lost(exc)` for the transport `core`
/// drives: `protocol.connection_lost(exc)` if the protocol was connected,
/// then, whatever it did, asyncio's clean-up: off the reactor before the fd
/// number can be reused, the socket closed (a plain `socket.socket` without
/// `close()`'s two frames), the loop's map and the server let go, and a
/// sendfile waiting for the buffer to drain failed. Nothing to do once done.
pub fn lose_connection(core: &Bound<'_, StreamTransport>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = core.py();
    let (owner, connected, protocol) = {
        let this = core.borrow();
        if this.owner_attrs.sock.is_none() {
            return Ok(());
        }
        let Some(peers) = this.loss_peers(py) else {
            return Ok(());
        };
        peers
    };
    let lost = if connected {
        protocol
            .bind(py)
            .call_method1(intern!(py, "connection_lost"), (exc,))
            .map(drop)
    } else {
        Ok(())
    };
    // The clean-up's own error, if any, replaces the protocol's (a
    // `finally` that raises).
    clean_up(core, owner.bind(py))?;
    lost
}

fn clean_up(core: &Bound<'_, StreamTransport>, owner: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = owner.py();
    let r = refs(py);
    let fd = core.borrow().fd();
    let empty_waiter = StreamTransport::_detach(core);
    // The owner's view of the loop, sock and server, let go of here.
    let (loop_, sock, server) = {
        let mut this = core.borrow_mut();
        let attrs = &mut this.owner_attrs;
        (attrs.loop_.take(), attrs.sock.take(), attrs.server.take())
    };
    if let Some(loop_) = loop_ {
        // asyncio's map drops the entry when the transport dies (a weak
        // value); ours drops it now. A map put in its place is left alone.
        let transports = loop_
            .bind(py)
            .cast::<LoopCore>()
            .ok()
            .map(|l| l.get().transports(py));
        if let Some(Ok(transports)) = transports {
            if let Ok(map) = transports.cast::<TransportMap>() {
                map.get().discard(py, i64::from(fd), owner);
            }
        }
    }
    if let Some(sock) = sock {
        let sock = sock.bind(py);
        if sock.get_type().is(r.socket_type.bind(py)) {
            sock.setattr(intern!(py, "_closed"), true)?;
            let io_refs: isize = sock.getattr(intern!(py, "_io_refs"))?.extract()?;
            if io_refs <= 0 {
                r.socket_base_close.bind(py).call1((sock,))?;
            }
        } else {
            sock.call_method0(intern!(py, "close"))?;
        }
    }
    if let Some(server) = server {
        let server = server.bind(py);
        if r.server_tracks_transports {
            server.call_method1(intern!(py, "_detach"), (owner,))?;
        } else {
            server.call_method0(intern!(py, "_detach"))?;
        }
    }
    if let Some(waiter) = empty_waiter {
        let err = PyConnectionError::new_err("Connection is closed by peer");
        waiter
            .bind(py)
            .call_method1(intern!(py, "set_exception"), (err.into_value(py),))?;
    }
    Ok(())
}

/// `Loop._accept_plain(protocol_factory, conn, extra, server)` for a TCP
/// connection the native accept loop took (`conn` is a plain
/// `socket.socket`) on a loop whose `_make_socket_transport` is its own:
/// the protocol made and the transport built one iteration after the
/// accept, as in asyncio, without the two Python frames (`_accept_plain`,
/// `SocketTransport.__init__`). An error goes to the loop's
/// `_accept_plain_failed`, which reports it as asyncio does (only in debug
/// mode); `KeyboardInterrupt` and `SystemExit` stop the loop.
pub fn accept_plain<'py>(
    loop_: &Bound<'py, LoopCore>,
    protocol_factory: &Bound<'py, PyAny>,
    conn: &Bound<'py, PyAny>,
    extra: &Bound<'py, PyAny>,
    server: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let py = loop_.py();
    let mut protocol = None;
    let built = (|| {
        let made = protocol_factory.call0()?;
        let made = protocol.insert(made);
        let none = py.None().into_bound(py);
        new_socket_transport(loop_, conn, made, &none, extra, server, false).map(drop)
    })();
    match built {
        Ok(()) => Ok(()),
        Err(err) if crate::transport_support::is_fatal(py, &err) => Err(err),
        Err(err) => {
            let protocol = protocol.unwrap_or_else(|| py.None().into_bound(py));
            loop_.call_method1(
                intern!(py, "_accept_plain_failed"),
                (err.into_value(py), protocol),
            )?;
            Ok(())
        }
    }
}

/// A `SocketTransport` for `sock`, exactly a `socket.socket`:
/// `_make_socket_transport` without its Python frames (the fd check, the
/// class's choice, `__init__`), for the loop's own connections (accepted
/// or connected). asyncio's check that no live transport has the fd, then
/// what `SocketTransport.__init__` does. With `pair`, the waiter's result
/// is `(transport, protocol)`, what `create_connection` returns.
pub fn new_socket_transport<'py>(
    loop_: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    waiter: &Bound<'py, PyAny>,
    extra: &Bound<'py, PyAny>,
    server: &Bound<'py, PyAny>,
    pair: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = loop_.py();
    let fd = socket_fields::of(sock)?.fd;
    crate::transport_map::ensure_fd_no_transport(loop_, fd, sock)?;
    let owner = refs(py)
        .object_new
        .bind(py)
        .call1((socket_transport_type(py)?,))?;
    let result = if pair {
        Some(PyTuple::new(py, [&owner, protocol])?.into_any())
    } else {
        None
    };
    init_stream_owner(
        &owner,
        loop_,
        sock,
        protocol,
        (waiter, result),
        extra,
        server,
    )?;
    Ok(owner)
}

/// `StreamTransport._start_reading`, the unbound method.
fn start_reading_method(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static METHOD: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    METHOD
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.get_type::<StreamTransport>()
                    .getattr("_start_reading")?
                    .unbind(),
            )
        })
        .map(|m| m.bind(py))
}

/// `tokioloop._transports.SocketTransport`, imported on first use (that
/// module imports this one).
fn socket_transport_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    TYPE.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("tokioloop._transports")?
                .getattr("SocketTransport")?
                .unbind(),
        )
    })
    .map(|t| t.bind(py))
}
