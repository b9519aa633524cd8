"""``tokioloop.Loop``: the event loop class users get.

The class is the native ``LoopCore`` (ready queue, timers, fd readiness on
tokio's reactor, the run loop: everything on the per-callback path) combined
with asyncio's Unix loop class for the parts asyncio writes in Python:
exception handling, executors, async generator hooks, ``run_until_complete``,
signal handlers, the network helpers, and the pipe and subprocess
transports, which run over the native ``_add_reader``/``_add_writer``.
Socket transports are tokioloop's own (``_transports``, native cores).
``LoopCore`` comes first in the MRO, so its methods win; asyncio's selector
and self-pipe are never created.

This file holds only the glue: construction without a selector,
``run_forever``'s set-up and clean-up, ``close``, and the small view of the
native fd registry that asyncio's transport code reads as ``loop._selector``.
"""

from __future__ import annotations

import errno
import gc
import inspect
import ipaddress
import os
import selectors
import signal
import socket
import sys
import threading
import warnings
import weakref
from asyncio import base_events, constants, events, futures, selector_events, trsock, unix_events
from asyncio.exceptions import CancelledError
from asyncio.log import logger

try:
    import ssl
except ImportError:  # pragma: no cover
    ssl = None

from . import _child_watch, _transports
from ._tokioloop import LoopCore, SocketNames, TransportMap, _numeric_host_info, _readable

_Future = futures.Future
# The C socket type's own getters: plain ints, where socket.socket's
# `family`/`type` properties build an enum member on every read.
_raw_family = socket.socket.__mro__[1].family.__get__
_raw_type = socket.socket.__mro__[1].type.__get__
_SOCKET_CLASS = _transports._SOCKET_CLASS
_INET_FAMILIES = _transports._INET_FAMILIES
_SelectorLoop = selector_events.BaseSelectorEventLoop
# connect() errnos that mean "in progress": BlockingIOError's, and EINTR.
_CONNECT_PENDING = frozenset(
    (errno.EAGAIN, errno.EALREADY, errno.EWOULDBLOCK, errno.EINPROGRESS, errno.EINTR)
)
_SOCK_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
_CREATE_CONNECTION_PARAMS = inspect.signature(_SelectorLoop.create_connection).parameters
# create_connection's keywords past local_addr on the running Python (all
# default to None); any other value takes asyncio's method.
_CONNECTION_OPTIONS = frozenset(
    name
    for name, param in _CREATE_CONNECTION_PARAMS.items()
    if param.kind is inspect.Parameter.KEYWORD_ONLY
    and name not in ("ssl", "family", "proto", "flags", "sock", "local_addr", "all_errors")
)
_HAS_ALL_ERRORS = "all_errors" in _CREATE_CONNECTION_PARAMS


def _only_default_options(options):
    """True when create_connection's other keywords are all at their
    defaults (``all_errors`` may be either: it only shapes the error). An
    unknown keyword is not, so asyncio's method raises its TypeError."""
    for name, value in options.items():
        if name == "all_errors" and _HAS_ALL_ERRORS:
            continue
        if name not in _CONNECTION_OPTIONS or value is not None:
            return False
    return True


class _WakeupSocket:
    """Stands in for asyncio's self-pipe socket in the inherited signal code,
    which only asks it for ``fileno()``."""

    __slots__ = ("_fd",)

    def __init__(self, fd):
        self._fd = fd

    def fileno(self):
        return self._fd

    def close(self):
        pass


class _SelectorView:
    """The read-only part of a selector that asyncio's transport code and
    tests use (``get_key``, ``get_map``), answered from the native fd
    registry."""

    def __init__(self, loop):
        self._loop = weakref.ref(loop)

    def get_key(self, fileobj):
        loop = self._loop()
        if loop is None:
            fd = selectors._fileobj_to_fd(fileobj)
            key = None
        else:
            # By number, or by the object once it has none (a closed socket).
            fd = loop._watched_fd(fileobj)
            key = loop._fd_key(fd)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        events_mask, reader, writer = key
        return selectors.SelectorKey(fileobj, fd, events_mask, (reader, writer))

    def get_map(self):
        return _KeyMap(self)

    def close(self):
        pass


class _KeyMap:
    def __init__(self, view):
        self._view = view

    def get(self, fileobj, default=None):
        try:
            return self._view.get_key(fileobj)
        except (KeyError, ValueError):
            return default

    def __getitem__(self, fileobj):
        return self._view.get_key(fileobj)

    def __contains__(self, fileobj):
        return self.get(fileobj) is not None


def _is_numeric_host(host):
    if host is None:
        return True
    if not isinstance(host, str) or "%" in host:
        return False  # bytes, and IPv6 scope ids, take the usual path
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_numeric_port(port):
    if port is None or (isinstance(port, int) and not isinstance(port, bool)):
        return True
    return isinstance(port, (str, bytes)) and port.isdigit()


def _in_main_thread():
    return threading.current_thread() is threading.main_thread()


# Stopped loops holding timers hidden from the cyclic GC: timers scheduled
# while a loop runs are hidden while they wait (it keeps the GC from
# traversing a backlog of them again and again), so a timer kept by an
# object in a cycle through a dropped, unclosed loop would keep the whole
# cycle alive. A full collection first shows the GC those a stopped loop
# still holds (LoopCore._expose_hidden_timers).
_loops_hiding_timers = weakref.WeakSet()


def _expose_hidden_timers(phase, info):
    if phase == "start" and info["generation"] == 2 and _loops_hiding_timers:
        for loop in list(_loops_hiding_timers):
            if not loop.is_running():
                _loops_hiding_timers.discard(loop)
                loop._expose_hidden_timers()


gc.callbacks.append(_expose_hidden_timers)


class Loop(LoopCore, unix_events._UnixSelectorEventLoop):
    """An asyncio event loop driven by tokio. Create it with
    ``tokioloop.new_event_loop()``."""

    # Whether _accept_plain (and _connect_numeric) build transports
    # without _make_socket_transport: not in a subclass that overrides it,
    # which sees every transport as on asyncio's loop.
    _accepts_inline = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._accepts_inline = cls._make_socket_transport is Loop._make_socket_transport

    def __init__(self):
        # Not the selector loop's __init__: it would build a selector and a
        # self-pipe, and the native core replaces both.
        base_events.BaseEventLoop.__init__(self)
        self._selector = _SelectorView(self)
        # asyncio's WeakValueDictionary, natively (src/transport_map.rs).
        self._transports = TransportMap()
        self._signal_handlers = {}
        self._unix_server_sockets = {}
        self._ssock = None
        self._csock = _WakeupSocket(self._signal_wakeup_fd())
        # The native wake-up socket counts as the loop's internal fd, as the
        # self-pipe does for asyncio's selector loop.
        self._internal_fds += 1
        self._old_agen_hooks = None
        # The process's wakeup fd before run_forever installed ours.
        self._saved_wakeup_fd = None
        # Children waited for through pidfds (3.10/3.11, see _child_watch).
        self._child_waits = _child_watch.PidfdWaits(self)

    # -- running ---------------------------------------------------------

    def run_forever(self):
        """Run until stop() is called."""
        self._run_forever_setup()
        try:
            self._run()
        finally:
            self._run_forever_cleanup()

    def _run_forever_setup(self):
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        self._old_agen_hooks = sys.get_asyncgen_hooks()
        self._thread_id = threading.get_ident()
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook,
            finalizer=self._asyncgen_finalizer_hook,
        )
        events._set_running_loop(self)
        self._install_signal_wakeup()

    def _run_forever_cleanup(self):
        self._stopping = False
        self._thread_id = None
        events._set_running_loop(None)
        self._set_coroutine_origin_tracking(False)
        if self._old_agen_hooks is not None:
            sys.set_asyncgen_hooks(*self._old_agen_hooks)
            self._old_agen_hooks = None
        self._restore_signal_wakeup()
        if self._timers_hidden():
            _loops_hiding_timers.add(self)

    def _install_signal_wakeup(self):
        # A signal must wake a parked loop (Ctrl+C while idle), and Python
        # only signals the main thread, through the wakeup fd.
        if not _in_main_thread():
            return
        try:
            self._saved_wakeup_fd = signal.set_wakeup_fd(self._signal_wakeup_fd())
        except (ValueError, OSError):
            self._saved_wakeup_fd = None

    def _restore_signal_wakeup(self):
        saved, self._saved_wakeup_fd = self._saved_wakeup_fd, None
        if saved is None or not _in_main_thread():
            return
        if self._signal_handlers:
            # add_signal_handler's registration outlives this run.
            return
        try:
            signal.set_wakeup_fd(saved)
        except (ValueError, OSError):
            pass

    # Kept in the class: an unclosed loop may be closed by its __del__ at
    # interpreter shutdown, when this module's globals are already None.
    _base_close = base_events.BaseEventLoop.close

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        elif self._signal_handlers:
            warnings.warn(
                f"Closing the loop {self!r} on interpreter shutdown "
                f"stage, skipping signal handlers removal",
                ResourceWarning,
                source=self,
            )
            self._signal_handlers.clear()
        self._base_close()
        self._child_waits.close()
        self._close_native()
        self._internal_fds -= 1
        self._csock = None
        # As the selector loop drops its selector: transports' reprs read it.
        self._selector = None

    def _make_self_pipe(self):
        # The native wake-up replaces asyncio's self-pipe.
        pass

    def _close_self_pipe(self):
        pass

    def _read_from_self(self):
        pass

    def _process_events(self, event_list):
        raise RuntimeError("tokioloop dispatches fd events natively")

    # -- transports ------------------------------------------------------

    def _start_serving(
        self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *timeouts
    ):
        """asyncio's, but a plain TCP listener (a ``socket.socket``, no TLS)
        gets the native round as its reader callback
        (``LoopCore._accept_inet_round``): ``_accept_connection`` below
        without its frame, which falls back to it in debug mode."""
        if not sslcontext and type(sock) is socket.socket and _raw_family(sock) in _INET_FAMILIES:
            on_accept = self._accept_plain_native if self._accepts_inline else self._accept_plain
            self._add_reader(
                sock.fileno(),
                self._accept_inet_round,
                protocol_factory,
                sock,
                server,
                backlog,
                on_accept,
            )
            return
        _SelectorLoop._start_serving(
            self, protocol_factory, sock, sslcontext, server, backlog, *timeouts
        )

    def _accept_connection(
        self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *timeouts
    ):
        """asyncio's accept loop (selector_events, 3.10-3.13), cheaper for a
        plain ``socket.socket`` listener whose round is not native (see
        ``_start_serving``: TLS, other families, debug mode).
        ``socket.accept()`` builds the new socket from ``self.family`` and
        ``self.type``, two enum conversions per connection, and checks the
        default timeout only for ``setblocking(False)`` to override it right
        after. Here the socket is the same (family, type, proto, fd;
        non-blocking) but made from the C type's getters. A TCP connection
        is accepted natively, non-blocking (no ``ioctl``), and an empty
        queue ends the round without a ``BlockingIOError``
        (``_accept_inet``, src/accept.rs). Other families use the C type's
        ``_accept``, with a poll(2) before each accept after the first.
        Errors, debug logging and the retry after EMFILE & co. are asyncio's
        (``_accept_failed``); TLS connections get asyncio's
        ``_accept_connection2`` task, plain ones ``_accept_plain``. Socket
        subclasses (their ``accept`` may be overridden) take asyncio's
        method."""
        if type(sock) is not socket.socket:
            return _SelectorLoop._accept_connection(
                self, protocol_factory, sock, sslcontext, server, backlog, *timeouts
            )
        family = _raw_family(sock)
        kind = _raw_type(sock)
        proto = sock.proto
        fileno = sock.fileno()
        inet = family in _INET_FAMILIES
        for i in range(backlog):
            try:
                if inet:
                    # Accepted non-blocking (no ioctl), None when the queue
                    # is empty (no BlockingIOError), see src/accept.rs.
                    # SOCK_NONBLOCK in the type tells the socket object it
                    # is non-blocking; its `type` does not keep the flag.
                    accepted = self._accept_inet(fileno)
                    if accepted is None:
                        return None
                    fd, addr, sockname = accepted
                    conn = socket.socket(family, kind | _SOCK_NONBLOCK, proto, fd)
                    extra = {"peername": addr, "sockname": sockname}
                else:
                    # After the first, look before accepting: an accept that
                    # finds the queue empty raises BlockingIOError, and
                    # making that exception costs ~10x a poll(2).
                    if i and not _readable(fileno):
                        return None
                    fd, addr = sock._accept()
                    conn = socket.socket(family, kind, proto, fd)
                    conn.setblocking(False)
                    extra = {"peername": addr}
                if self._debug:
                    logger.debug("%r got a new connection from %r: %r", server, addr, conn)
            except OSError as exc:
                if self._accept_failed(
                    exc, protocol_factory, sock, sslcontext, server, backlog, timeouts
                ):
                    return None
            else:
                if sslcontext:
                    accept = self._accept_connection2(
                        protocol_factory, conn, extra, sslcontext, server, *timeouts
                    )
                    self.create_task(accept)
                else:
                    self.call_soon(self._accept_plain, protocol_factory, conn, extra, server)

    def _accept_failed(self, exc, protocol_factory, sock, sslcontext, server, backlog, timeouts):
        """asyncio's handling of an accept error: True when it ends the
        round (an empty queue, a signal, an aborted connection); for a lack
        of resources (EMFILE & co.), reported and the listener rested, as
        asyncio does, and the round goes on; anything else raised (the
        loop's handler logs it)."""
        if isinstance(exc, (BlockingIOError, InterruptedError, ConnectionAbortedError)):
            return True
        # There's nowhere to send the error, so just log it.
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            # Linux keeps reporting the fd as ready: remove the reader for a
            # while, as asyncio does.
            self.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": exc,
                    "socket": trsock.TransportSocket(sock),
                }
            )
            self._remove_reader(sock.fileno())
            self.call_later(
                constants.ACCEPT_RETRY_DELAY,
                self._start_serving,
                protocol_factory,
                sock,
                sslcontext,
                server,
                backlog,
                *timeouts,
            )
            return False
        raise exc

    def _accept_plain(self, protocol_factory, conn, extra, server):
        """``_accept_connection2`` for a connection without TLS, as a
        callback instead of a task (~20k instructions less per connection,
        as uvloop does): the protocol is made and the transport built one
        iteration after the accept, as in asyncio. The task's only other
        work is awaiting the transport's waiter, which fails only if the
        task is cancelled; the transport then schedules connection_made
        itself. Errors are reported as asyncio reports them: only in debug
        mode."""
        protocol = None
        try:
            protocol = protocol_factory()
            if self._accepts_inline and type(conn) is _SOCKET_CLASS:
                self._new_socket_transport(conn, protocol, None, extra, server)
            else:
                if type(extra) is SocketNames:  # from the native accept loop
                    extra = extra.as_dict()
                self._make_socket_transport(conn, protocol, extra=extra, server=server)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 (asyncio catches everything here)
            self._accept_plain_failed(exc, protocol)

    def _accept_plain_failed(self, exc, protocol):
        """How ``_accept_plain`` (and its native twin, for connections the
        native accept loop took: src/stream_owner.rs) report an error:
        asyncio's ``_accept_connection2`` logs it in debug mode only."""
        if self._debug:
            context = {
                "message": "Error on transport creation for incoming connection",
                "exception": exc,
            }
            if protocol is not None:
                context["protocol"] = protocol
            self.call_exception_handler(context)

    def _ensure_fd_no_transport(self, fd):
        """asyncio's check, with a lookup that answers None instead of
        raising KeyError for a free fd (every new transport asks)."""
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                # This code matches selectors._fileobj_to_fd function.
                raise ValueError(f"Invalid file object: {fd!r}") from None
        transport = self._transports.get(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        self._ensure_fd_no_transport(sock)
        transport_class = _transports.stream_transport_class(sock)
        return transport_class(self, sock, protocol, waiter, extra, server)

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        self._ensure_fd_no_transport(sock)
        return _transports.DatagramSocketTransport(self, sock, protocol, address, waiter, extra)

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        # 3.10/3.11: a pidfd per child instead of asyncio's default thread
        # per child (see _child_watch); 3.12+ and chosen watchers: asyncio's.
        if not _child_watch.use_pidfd():
            return await unix_events._UnixSelectorEventLoop._make_subprocess_transport(
                self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra, **kwargs
            )
        return await _child_watch.make_subprocess_transport(
            self,
            self._child_waits,
            protocol,
            args,
            shell,
            stdin,
            stdout,
            stderr,
            bufsize,
            extra,
            **kwargs,
        )

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        **timeouts,
    ):
        # **timeouts: ssl_handshake_timeout, and ssl_shutdown_timeout on 3.11+.
        return _transports.make_ssl_transport(
            self,
            rawsock,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            extra,
            server,
            timeouts,
        )

    if _transports._NATIVE_SSL:
        # 3.10 keeps asyncio's start_tls and SSLProtocol as they are.

        async def start_tls(
            self,
            transport,
            protocol,
            sslcontext,
            *,
            server_side=False,
            server_hostname=None,
            ssl_handshake_timeout=None,
            ssl_shutdown_timeout=None,
        ):
            """Upgrade transport to TLS.

            Return a new transport that *protocol* should start using
            immediately.
            """
            # asyncio's (identical on 3.11 to 3.13), with our TLS protocol class.
            if ssl is None:
                raise RuntimeError("Python ssl module is not available")

            if not isinstance(sslcontext, ssl.SSLContext):
                raise TypeError(
                    f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
                )

            if not getattr(transport, "_start_tls_compatible", False):
                raise TypeError(f"transport {transport!r} is not supported by start_tls()")

            waiter = self.create_future()
            ssl_protocol = _transports.ssl_protocol_class()(
                self,
                protocol,
                sslcontext,
                waiter,
                server_side,
                server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
                call_connection_made=False,
            )

            # Pause early so that "ssl_protocol.data_received()" doesn't
            # have a chance to get called before "ssl_protocol.connection_made()".
            transport.pause_reading()

            transport.set_protocol(ssl_protocol)
            conmade_cb = self.call_soon(ssl_protocol.connection_made, transport)
            resume_cb = self.call_soon(transport.resume_reading)

            try:
                await waiter
            except BaseException:
                transport.close()
                conmade_cb.cancel()
                resume_cb.cancel()
                raise

            return ssl_protocol._app_transport

    async def _sendfile_native(self, transp, file, offset, count):
        if not isinstance(transp, _transports.SocketTransport):
            return await super()._sendfile_native(transp, file, offset, count)
        # asyncio's, plus taking the transport's fd off the native reactor
        # while sock_sendfile watches it with add_writer.
        del self._transports[transp._sock_fd]
        resume_reading = transp.is_reading()
        transp.pause_reading()
        await transp._make_empty_waiter()
        transp._core._suspend_io()
        try:
            return await self.sock_sendfile(transp._sock, file, offset, count, fallback=False)
        finally:
            transp._core._resume_io()
            transp._reset_empty_waiter()
            if resume_reading:
                transp.resume_reading()
            self._transports[transp._sock_fd] = transp

    # -- sock_* ----------------------------------------------------------
    # One native call does asyncio's prologue and, if the socket is not
    # ready, registers a native waiter (src/sock_ops.rs); it answers
    # NotImplemented for what only asyncio's own method handles exactly
    # (socket subclasses, sockets with a timeout, odd arguments). The
    # cancellation clean-up runs where asyncio's done callback would.

    async def sock_recv(self, sock, n):
        fut = self._sock_recv_start(sock, n)
        if fut.__class__ is _Future:
            try:
                return await fut
            except CancelledError:
                self._sock_wait_cancelled(fut)
                raise
        if fut is NotImplemented:
            return await _SelectorLoop.sock_recv(self, sock, n)
        return fut

    async def sock_recv_into(self, sock, buf):
        fut = self._sock_recv_into_start(sock, buf)
        if fut.__class__ is _Future:
            try:
                return await fut
            except CancelledError:
                self._sock_wait_cancelled(fut)
                raise
        if fut is NotImplemented:
            return await _SelectorLoop.sock_recv_into(self, sock, buf)
        return fut

    async def sock_sendall(self, sock, data):
        fut = self._sock_sendall_start(sock, data)
        if fut is None:
            return None
        if fut is NotImplemented:
            return await _SelectorLoop.sock_sendall(self, sock, data)
        try:
            return await fut
        except CancelledError:
            self._sock_wait_cancelled(fut)
            raise

    async def create_connection(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        ssl=None,
        family=0,
        proto=0,
        flags=0,
        sock=None,
        local_addr=None,
        **options,
    ):
        """asyncio's ``create_connection``; a plain TCP connection to a
        numeric host (``"127.0.0.1"``, ``"::1"``: one address, no lookup)
        takes ``_connect_numeric``, which does the same steps in one frame.
        Everything else, and debug mode, is asyncio's method."""
        if (
            (ssl is None or ssl is False)
            and sock is None
            and local_addr is None
            and isinstance(host, str)
            and not self._debug
            and (not options or _only_default_options(options))
        ):
            # asyncio's own check for "already an IP address" (with the
            # same port, family and proto rules), natively for a str host
            # and an int port (src/numeric_host.rs); flags only matter to
            # getaddrinfo, which a numeric host never reaches.
            info = _numeric_host_info(host, port, family, proto)
            if info is NotImplemented:
                info = base_events._ipaddr_info(host, port, family, socket.SOCK_STREAM, proto)
            if info is not None:
                all_errors = options.get("all_errors", False)
                if socket.socket is not _SOCKET_CLASS or not self._accepts_inline:
                    # A patched socket.socket (AsyncSSH's tests) or a
                    # subclass's _make_socket_transport: called as asyncio would.
                    return await self._connect_numeric(protocol_factory, info, all_errors)
                # The rest natively: socket, connect, protocol, transport
                # (src/connect_op.rs).
                family, kind, proto, _, address = info
                op = self._connect_start(protocol_factory, family, kind, proto, address, all_errors)
                try:
                    return await op.future
                except CancelledError:
                    op.cancel()
                    raise
                finally:
                    # A failure's traceback holds this frame: not the op,
                    # nor through it the future that holds the exception.
                    op = None
        return await _SelectorLoop.create_connection(
            self,
            protocol_factory,
            host,
            port,
            ssl=ssl,
            family=family,
            proto=proto,
            flags=flags,
            sock=sock,
            local_addr=local_addr,
            **options,
        )

    create_connection.__signature__ = inspect.signature(_SelectorLoop.create_connection)

    async def _connect_numeric(self, protocol_factory, info, all_errors):
        """``create_connection``'s path where ``socket.socket`` is patched
        or a subclass overrides ``_make_socket_transport`` (otherwise the
        same steps are native: ``_connect_start``). What asyncio's
        ``create_connection``, ``_connect_sock``, ``sock_connect`` and
        ``_create_connection_transport`` do for one resolved address,
        without their frames, the two re-resolutions of the address and the
        error-list bookkeeping: a non-blocking socket
        made as such (no ``ioctl``), ``connect_ex``, the native wait for a
        connect in progress, then the transport and its waiter. A failure
        raises what asyncio raises for a single address: the ``OSError``
        itself, or with ``all_errors`` an ``ExceptionGroup`` of it. As in
        asyncio, the socket is closed when the connect fails or is
        cancelled, and the transport when the waiter is cancelled."""
        family, kind, proto, _, address = info
        failure = None
        try:
            if socket.socket is _SOCKET_CLASS:
                sock = self._new_socket(family, kind | _SOCK_NONBLOCK, proto)
            else:  # patched (AsyncSSH's tests do): asyncio calls the patch
                sock = socket.socket(family, kind | _SOCK_NONBLOCK, proto)
        except OSError as exc:
            failure = exc
        else:
            try:
                if not _SOCK_NONBLOCK:
                    sock.setblocking(False)
                await self._connect_plain(sock, address)
            except OSError as exc:
                sock.close()
                failure = exc
            except BaseException:
                sock.close()
                raise
        if failure is not None:
            # Raised outside the handlers, as asyncio raises it after its
            # loop over addresses (no implicit __context__ on the group).
            if all_errors:
                failure = ExceptionGroup("create_connection failed", [failure])  # noqa: F821 (3.12+, where all_errors exists)
            try:
                raise failure
            finally:
                failure = None
        protocol = protocol_factory()
        waiter = self.create_future()
        # Both ends read natively now, formatted when first read
        # (src/inet_address.rs, src/extra_info.rs).
        names = self._socket_names(sock.fileno())
        if self._accepts_inline and type(sock) is _SOCKET_CLASS:
            transport = self._new_socket_transport(sock, protocol, waiter, names)
        else:
            transport = self._make_socket_transport(sock, protocol, waiter, extra=names.as_dict())
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def sock_connect(self, sock, address):
        """asyncio's ``sock_connect`` with, for a plain ``socket.socket``:
        the family and type read as ints (the ``socket.socket`` properties
        build an enum member on every read, three per call); the connect
        made with ``connect_ex``, so a connect in progress is an errno, not
        a ``BlockingIOError`` to build and catch; and the wait for
        writability a native waiter (``_sock_connect_wait``,
        src/sock_ops.rs) that reads ``SO_ERROR`` and resolves the future as
        asyncio's ``_sock_connect_cb`` would. Errors are raised as
        ``connect`` raises them: ``OSError(errno, strerror)`` picks the
        same subclass. Socket subclasses, and sockets that are not
        non-blocking (asyncio's debug-mode error, or a connect that blocks
        or times out as ``connect`` does), take asyncio's method."""
        if type(sock) is not socket.socket or sock.gettimeout() != 0:
            return await _SelectorLoop.sock_connect(self, sock, address)
        # An exact socket.socket is no ssl.SSLSocket: asyncio's
        # _check_ssl_socket has nothing to reject.
        family = _raw_family(sock)
        if family == socket.AF_INET or (base_events._HAS_IPv6 and family == socket.AF_INET6):
            resolved = await self._ensure_resolved(
                address, family=family, type=_raw_type(sock), proto=sock.proto, loop=self
            )
            _, _, _, _, address = resolved[0]
        await self._connect_plain(sock, address)

    async def _connect_plain(self, sock, address):
        """The connect of ``sock_connect`` and ``_connect_numeric``, for a
        plain non-blocking ``socket.socket`` and a resolved address:
        ``connect_ex``, then for a connect in progress the native wait for
        writability (``_sock_connect_wait``), cancelled as asyncio's
        done callback would."""
        err = sock.connect_ex(address)
        if err == 0:
            return
        if err not in _CONNECT_PENDING:
            raise OSError(err, os.strerror(err))
        # A plain non-blocking socket with an open fd: always a future here.
        fut = self._sock_connect_wait(sock, address)
        try:
            await fut
        except CancelledError:
            self._sock_wait_cancelled(fut)
            raise
        finally:
            # As asyncio's sock_connect: a failed connect's exception holds
            # this frame (its traceback), and the frame the future holding it.
            fut = None

    # -- DNS -------------------------------------------------------------

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        # A numeric host and port need no lookup: libc answers at once, so
        # skip the executor round trip (a thread hop per connection). The
        # result and errors are libc's, exactly as asyncio's executor call.
        if not self._debug and _is_numeric_host(host) and _is_numeric_port(port):
            self._check_closed()
            return socket.getaddrinfo(host, port, family, type, proto, flags)
        return await unix_events._UnixSelectorEventLoop.getaddrinfo(
            self, host, port, family=family, type=type, proto=proto, flags=flags
        )

    async def getnameinfo(self, sockaddr, flags=0):
        # Numeric host and service: libc formats the address without any
        # lookup, so skip the executor round trip, as getaddrinfo does.
        if (
            not self._debug
            and isinstance(flags, int)
            and flags & socket.NI_NUMERICHOST
            and flags & socket.NI_NUMERICSERV
        ):
            self._check_closed()
            return socket.getnameinfo(sockaddr, flags)
        return await unix_events._UnixSelectorEventLoop.getnameinfo(self, sockaddr, flags)

    # -- signals ---------------------------------------------------------

    def remove_signal_handler(self, sig):
        removed = unix_events._UnixSelectorEventLoop.remove_signal_handler(self, sig)
        if removed and not self._signal_handlers and self.is_running() and _in_main_thread():
            # asyncio cleared the wakeup fd with its last handler; a running
            # loop still needs it for Ctrl+C.
            try:
                signal.set_wakeup_fd(self._signal_wakeup_fd())
            except (ValueError, OSError):
                pass
        return removed
