"""tokioloop's socket transports: streams (TCP and Unix) and datagrams (UDP
and Unix datagram sockets).

``SocketTransport`` is what ``create_connection``, ``create_server``,
``create_unix_connection``/``create_unix_server``, ``connect_accepted_socket``
and TLS (under ``_sslproto.SSLProtocol`` on 3.11+, asyncio's ``SSLProtocol`` on 3.10) hand to protocols;
``DatagramSocketTransport`` is what ``create_datagram_endpoint`` hands out.
Both are real asyncio transports (``isinstance`` checks hold) and behave as
asyncio's ``_SelectorSocketTransport``/``_SelectorDatagramTransport`` do, but
their per-event and per-write work is the native ``StreamTransportCore`` /
``DatagramTransportCore``. These classes hold the cold paths: ``repr``,
error reporting, and for datagrams construction and the connection-lost
bookkeeping, each copied from asyncio's own. A stream transport's
construction and connection loss, once per connection, are native
(src/stream_owner.rs), and its ``_sock``, ``_server``, ``_loop`` and
``_sock_fd`` live in its core.

The methods protocols call per message (``write``, ``is_closing``,
``get_write_buffer_size``) call native code directly, with no Python frame in
between: ``SocketTransport``'s are native method descriptors that find the
core in the ``_core`` slot (``transport_write.rs``), which CPython's
specialising interpreter turns into a direct C call;
``DatagramSocketTransport`` binds the core's methods as instance attributes.
"""

from __future__ import annotations

import contextvars
import operator
import socket
import sys
import warnings
from asyncio import constants, selector_events, transports, trsock
from asyncio.log import logger

from ._tokioloop import (
    DatagramTransportCore,
    _init_stream_owner,
    _install_core_forwarders,
    _set_result_unless_cancelled,
)

# Server._attach/_detach take the transport from 3.13 on.
_SERVER_TRACKS_TRANSPORTS = sys.version_info >= (3, 13)
_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# 3.11 rewrote asyncio's SSLProtocol (the design _sslproto builds on).
_NATIVE_SSL = sys.version_info >= (3, 11)


# socket.socket.close() without its two Python frames (close, _real_close),
# for a plain socket.socket; see _call_connection_lost.
_socket_close = socket.socket.__mro__[1].close


# The socket methods asyncio's stream transport calls on the socket it is
# given. tokioloop's stream transport reads and writes the fd natively, so a
# socket whose class overrides one of these (to count, log or shape its
# traffic) gets asyncio's own transport class instead, which calls them.
# (The datagram transport calls the socket's own recvfrom/send/sendto.)
_STREAM_IO = ("recv", "recv_into", "send", "sendmsg")
# The class itself, taken at import: tests patch the module attribute
# `socket.socket` with a factory function (AsyncSSH's TUN/TAP tests do), and
# the sockets made before or around that are still of this class.
_SOCKET_CLASS = socket.socket


def stream_transport_class(sock):
    """The transport class for the stream socket ``sock``: ours, or
    asyncio's for a socket whose class overrides its I/O methods."""
    kind = type(sock)
    if kind is not _SOCKET_CLASS and any(
        getattr(kind, name, None) is not getattr(_SOCKET_CLASS, name) for name in _STREAM_IO
    ):
        return selector_events._SelectorSocketTransport
    return SocketTransport


# `trsock.TransportSocket(sock)` without its `__init__` frame (see
# _NativeTransport._init_common): made with `object.__new__`, then the one
# slot that `__init__` sets (the same on 3.10-3.13).
_new_object = object.__new__
_TransportSocket = trsock.TransportSocket


class _NativeTransport(transports._FlowControlMixin):
    """What both socket transports share: extra info, state read back from
    the native core, close/abort, error reporting, connection loss, repr.

    A ``_FlowControlMixin`` because asyncio's own code checks for it (the
    sendfile fallback); the flow-control state lives in the native core, and
    the properties below shadow the mixin's slots."""

    # Read by __del__ even when __init__ failed early.
    _sock = None
    _server = None

    def _init_common(self, loop, sock, extra):
        """BaseTransport.__init__, not _FlowControlMixin's (the native core
        keeps the limits), plus the loop and the fd, which it returns. The
        datagram transport's: SocketTransport's is native, as are its
        ``_start`` and ``_call_connection_lost`` (src/stream_owner.rs). The
        loop passes the names it already has (a native accept or connect
        read them without the socket module's printf)."""
        extra = {} if extra is None else extra
        transport_socket = _new_object(_TransportSocket)
        transport_socket._sock = sock
        extra["socket"] = transport_socket
        if "sockname" not in extra:
            try:
                extra["sockname"] = sock.getsockname()
            except OSError:
                extra["sockname"] = None
        if "peername" not in extra:
            try:
                extra["peername"] = sock.getpeername()
            except OSError:
                extra["peername"] = None
        self._extra = extra
        self._loop = loop
        self._sock_fd = fd = sock.fileno()
        return fd

    def _start(self, loop, fd, core, protocol, waiter):
        """Register with the loop, schedule connection_made and the first
        read, as asyncio's transports do."""
        loop._transports[fd] = self
        loop.call_soon(protocol.connection_made, self)
        # Reading starts once connection_made() has run, as in asyncio.
        loop.call_soon(core._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    # -- state asyncio's own code and tests read ---------------------------

    @property
    def _protocol(self):
        return self._core.get_protocol()

    @property
    def _protocol_connected(self):
        return self._core._protocol_connected

    @property
    def _protocol_paused(self):
        return self._core._protocol_paused

    @property
    def _high_water(self):
        return self._core.get_write_buffer_limits()[1]

    @property
    def _low_water(self):
        return self._core.get_write_buffer_limits()[0]

    @property
    def _closing(self):
        return self._core._closing

    @property
    def _conn_lost(self):
        return self._core._conn_lost

    # -- the transport API (hot methods are bound in _start) ---------------

    def is_closing(self):
        return self._core.is_closing()

    def get_write_buffer_size(self):
        return self._core.get_write_buffer_size()

    def set_protocol(self, protocol):
        self._core.set_protocol(protocol)

    def get_protocol(self):
        return self._core.get_protocol()

    def close(self):
        self._core.close()

    def abort(self):
        self._core.abort()

    def get_write_buffer_limits(self):
        return self._core.get_write_buffer_limits()

    def set_write_buffer_limits(self, high=None, low=None):
        # asyncio's _FlowControlMixin._set_write_buffer_limits.
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._core._set_write_buffer_limits(high, low)

    # -- internals asyncio's loop code calls ------------------------------

    def _force_close(self, exc):
        self._core._force_close(exc)

    def _fatal_error(self, exc, message="Fatal error on transport"):
        if isinstance(exc, OSError):
            if self._loop is not None and self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        elif self._loop is not None:
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _call_connection_lost(self, exc):
        sock = self._sock
        if sock is None:
            return
        core = self._core
        try:
            if core._protocol_connected:
                core.get_protocol().connection_lost(exc)
        finally:
            # asyncio's clean-up. Off the reactor before the fd number can
            # be reused, then the socket (a plain socket.socket closed
            # without close()'s two frames), the loop's map and the server
            # let go.
            empty_waiter = core._detach()
            self._loop._transports.discard(self._sock_fd, self)
            if type(sock) is socket.socket:
                sock._closed = True
                if sock._io_refs <= 0:
                    _socket_close(sock)
            else:
                sock.close()
            self._sock = None
            self._loop = None
            server = self._server
            if server is not None:
                if _SERVER_TRACKS_TRANSPORTS:
                    server._detach(self)
                else:
                    server._detach()
                self._server = None
            # A sendfile waiting for the buffer to drain (stream transports).
            if empty_waiter is not None:
                empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))

    def __repr__(self):
        info = [self.__class__.__name__]
        if getattr(self, "_sock", None) is None:
            info.append("closed")
        elif self._core._closing:
            info.append("closing")
        # (A SocketTransport without a core has neither: see __del__.)
        info.append(f"fd={getattr(self, '_sock_fd', -1)}")
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            reading, writing = self._core._polling()
            info.append("read=polling" if reading else "read=idle")
            state = "polling" if writing else "idle"
            info.append(f"write=<{state}, bufsize={self._core.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        # getattr: a SocketTransport whose construction failed before its
        # core was made has no `_sock` at all (see _core_attribute).
        if getattr(self, "_sock", None) is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()
            self._sock = None
            # As asyncio's: only 3.13+ lets the server go here.
            if _SERVER_TRACKS_TRANSPORTS and self._server is not None:
                self._server._detach(self)


def _core_attribute(name, read_only=False):
    """A property of SocketTransport that is the core's attribute ``name``:
    the native set-up and clean-up (src/stream_owner.rs) reach the
    transport's socket, server, loop and fd there without Python's
    attribute protocol. Reading costs no Python frame (``attrgetter`` is
    C); writing, which only ``__del__`` and asyncio-internal code do, does.
    Without a core (its construction failed first), AttributeError."""
    get = operator.attrgetter(f"_core.{name}")
    if read_only:
        return property(get)

    def set_(self, value):
        setattr(self._core, name, value)

    return property(get, set_)


class SocketTransport(_NativeTransport, transports.Transport):
    """A connected stream socket, driven by tokioloop's native engine."""

    # The core in a slot: the native `write`, `is_closing` and
    # `get_write_buffer_size` installed below read it at a fixed offset.
    __slots__ = ("_core",)

    _sock = _core_attribute("_owner_sock")
    _server = _core_attribute("_owner_server")
    _loop = _core_attribute("_owner_loop")
    _sock_fd = _core_attribute("_fd", read_only=True)
    # Built on first read for the loop's own connections (src/extra_info.rs).
    _extra = _core_attribute("_extra")

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        # All native (src/stream_owner.rs): this runs once per connection
        # (benches/churn.py), and each Python helper frame cost ~650
        # instructions.
        _init_stream_owner(self, loop, sock, protocol, waiter, extra, server)

    def _call_connection_lost(self, exc):
        # Native (src/stream_owner.rs); the core schedules it directly.
        self._core._connection_lost(exc)

    @property
    def _paused(self):
        return self._core._paused

    @property
    def _eof(self):
        return self._core._eof

    @property
    def _empty_waiter(self):
        return self._core._empty_waiter

    def writelines(self, list_of_data):
        self._core.writelines(list_of_data)

    def is_reading(self):
        return self._core.is_reading()

    def pause_reading(self):
        self._core.pause_reading()

    def resume_reading(self):
        self._core.resume_reading()

    def write_eof(self):
        self._core.write_eof()

    def can_write_eof(self):
        return True

    def _make_empty_waiter(self):
        if self._core._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        waiter = self._loop.create_future()
        self._core._empty_waiter = waiter
        if not self._core.get_write_buffer_size():
            waiter.set_result(None)
        return waiter

    def _reset_empty_waiter(self):
        self._core._empty_waiter = None


# `write`, `is_closing`, `get_write_buffer_size`, `close`: native, reading
# `_core`; `__del__` too, which calls _NativeTransport.__del__ only for a
# transport that still holds its socket (never closed).
_install_core_forwarders(SocketTransport, _NativeTransport.__del__)


class DatagramSocketTransport(_NativeTransport, transports.DatagramTransport):
    """A datagram socket (UDP, Unix datagram), driven by tokioloop's native
    engine."""

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        fd = self._init_common(loop, sock, extra)
        core = DatagramTransportCore.create(
            loop,
            self,
            sock,
            protocol,
            address,
            bool(self._extra["peername"]),
            sock.family in _INET_FAMILIES,
            contextvars.copy_context(),
        )
        self._core = core  # first, as in SocketTransport
        self._sock = sock
        # Bound per instance, so that the call is the native method with no
        # Python frame.
        self.sendto = core.sendto
        self.is_closing = core.is_closing
        self.get_write_buffer_size = core.get_write_buffer_size
        self._start(loop, fd, core, protocol, waiter)

    @property
    def _address(self):
        return self._core._address

    def sendto(self, data, addr=None):
        self._core.sendto(data, addr)


def ssl_protocol_class():
    """The TLS protocol class: ours (asyncio's with native data paths,
    ``_sslproto``) on Python 3.11+, asyncio's own on 3.10."""
    if _NATIVE_SSL:
        from ._sslproto import SSLProtocol
    else:
        from asyncio.sslproto import SSLProtocol
    return SSLProtocol


def make_ssl_transport(
    loop,
    rawsock,
    protocol,
    sslcontext,
    waiter,
    server_side,
    server_hostname,
    extra,
    server,
    timeouts,
):
    """asyncio's ``_make_ssl_transport`` with our socket transport under
    the TLS protocol (``ssl_protocol_class()``)."""
    loop._ensure_fd_no_transport(rawsock)
    ssl_protocol = ssl_protocol_class()(
        loop, protocol, sslcontext, waiter, server_side, server_hostname, **timeouts
    )
    stream_transport_class(rawsock)(loop, rawsock, ssl_protocol, extra=extra, server=server)
    return ssl_protocol._app_transport


__all__ = [
    "DatagramSocketTransport",
    "SocketTransport",
    "make_ssl_transport",
    "stream_transport_class",
]
