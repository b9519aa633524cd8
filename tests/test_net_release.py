"""What served connections leave behind: nothing (differential).

Each scenario serves a batch of connections (or datagram endpoints, or
``sock_*`` calls), closes everything, and checks that every transport,
protocol and stream object it saw is freed by the cyclic GC, and that the
loop's transport map is empty. On tokioloop the native registries are
checked too (``Loop._io_counts``: fds watched by callbacks, native I/O
objects, waiting ``sock_*`` calls, kept ``sock_*`` registrations), as are
the queued callbacks and timers: a native core that kept a reference, or
whose traversal hid one from the GC, would keep the whole connection alive
for the life of the loop.

The same scenarios run on stock asyncio, where they must pass as well.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
import weakref

import pytest
from net_support import run, unix_path_fixture  # noqa: F401  (provides unix_path)
from tls_support import SERVER_HOSTNAME, tls_fixture  # noqa: F401  (provides tls)

CONNECTIONS = 20
MESSAGE = b"x" * 1000


class Tracked:
    """Weak references to everything a scenario wants freed."""

    def __init__(self):
        self.refs = []

    def add(self, *objects):
        self.refs.extend(weakref.ref(obj) for obj in objects)

    def alive(self):
        return [ref() for ref in self.refs if ref() is not None]


def assert_nothing_left(loop, tracked, kept_sock_watches=0):
    """Everything tracked is freed, the loop maps no transport, and on
    tokioloop its native registries and queues are empty but for
    ``kept_sock_watches`` registrations of ``sock_*`` sockets (see
    test_sock_calls_leave_no_waits)."""
    for _ in range(3):
        gc.collect()
    alive = tracked.alive()
    assert alive == [], f"{len(alive)} objects still alive, e.g. {alive[:3]!r}"
    assert len(tracked.refs) > 0
    assert len(loop._transports) == 0
    if hasattr(loop, "_io_counts"):
        watched, natives, waits, sock_watches = loop._io_counts()
        assert (watched, waits) == (0, 0)
        assert natives == sock_watches <= kept_sock_watches
        # The scenario's last callbacks may still be queued; run them.
        loop.run_until_complete(asyncio.sleep(0))
        assert loop._native_counts() == (0, 0)


class Echo(asyncio.Protocol):
    """Echoes, closes on EOF; records itself and its transport."""

    def __init__(self, tracked, closed):
        self.tracked = tracked
        self.closed = closed

    def connection_made(self, transport):
        self.transport = transport
        self.tracked.add(self, transport)

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return False  # close

    def connection_lost(self, exc):
        self.closed.append(exc)


class Client(asyncio.Protocol):
    """Sends MESSAGE, waits for the echo, then closes."""

    def __init__(self, tracked, loop):
        self.tracked = tracked
        self.got = bytearray()
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.tracked.add(self, transport)
        transport.write(MESSAGE)

    def data_received(self, data):
        self.got += data
        if len(self.got) == len(MESSAGE):
            self.transport.close()

    def connection_lost(self, exc):
        self.done.set_result(exc)


async def _wait_for(predicate):
    while not predicate():
        await asyncio.sleep(0.001)


async def _serve_protocol(loop, tracked, create_server, connect):
    closed = []
    server = await create_server(lambda: Echo(tracked, closed))
    tracked.add(server)
    for _ in range(CONNECTIONS):
        _, client = await connect(lambda: Client(tracked, loop), server)
        assert await client.done is None
        assert bytes(client.got) == MESSAGE
    await _wait_for(lambda: len(closed) == CONNECTIONS)
    assert closed == [None] * CONNECTIONS
    server.close()
    await server.wait_closed()


def _tcp_server(loop):
    return lambda factory: loop.create_server(factory, "127.0.0.1", 0)


def _tcp_connect(loop, ssl=None):
    def connect(factory, server):
        host, port = server.sockets[0].getsockname()[:2]
        if ssl is None:
            return loop.create_connection(factory, host, port)
        return loop.create_connection(factory, host, port, ssl=ssl, server_hostname=SERVER_HOSTNAME)

    return connect


def test_tcp_protocol_connections_are_freed(loop):
    tracked = Tracked()
    run(loop, _serve_protocol(loop, tracked, _tcp_server(loop), _tcp_connect(loop)))
    assert_nothing_left(loop, tracked)


def test_unix_protocol_connections_are_freed(loop, unix_path):
    tracked = Tracked()

    def create_server(factory):
        return loop.create_unix_server(factory, unix_path)

    def connect(factory, server):
        return loop.create_unix_connection(factory, unix_path)

    run(loop, _serve_protocol(loop, tracked, create_server, connect))
    assert_nothing_left(loop, tracked)


def test_tls_connections_are_freed(loop, tls):
    tracked = Tracked()
    server_ctx = tls.server_context()

    def create_server(factory):
        return loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx)

    connect = _tcp_connect(loop, ssl=tls.client_context())
    run(loop, _serve_protocol(loop, tracked, create_server, connect), timeout=20)
    assert_nothing_left(loop, tracked)


def test_stream_connections_are_freed(loop):
    tracked = Tracked()

    async def handle(reader, writer):
        tracked.add(reader, writer, writer.transport)
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def scenario():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for _ in range(CONNECTIONS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            tracked.add(reader, writer, writer.transport)
            writer.write(MESSAGE)
            writer.write_eof()
            assert await reader.read() == MESSAGE
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, scenario())
    assert_nothing_left(loop, tracked)


class Failing(Echo):
    """A protocol whose data_received raises: the transport is closed and
    the error reported (asyncio's "Fatal error: protocol.data_received()
    call failed.")."""

    def data_received(self, data):
        raise ZeroDivisionError("from data_received")


def test_connections_closed_by_errors_and_aborts_are_freed(loop):
    tracked = Tracked()
    reported = []
    loop.set_exception_handler(lambda lp, context: reported.append(context["exception"]))

    async def scenario():
        closed = []
        failing = await loop.create_server(lambda: Failing(tracked, closed), "127.0.0.1", 0)
        echo = await loop.create_server(lambda: Echo(tracked, closed), "127.0.0.1", 0)
        for i in range(CONNECTIONS):
            server = failing if i % 2 else echo
            host, port = server.sockets[0].getsockname()
            transport, client = await loop.create_connection(
                lambda: Client(tracked, loop), host, port
            )
            if server is echo:
                # Abort before the echo can come back: an RST for the
                # server side, no close handshake.
                transport.abort()
            await client.done
        await _wait_for(lambda: len(closed) == CONNECTIONS)
        for server in (failing, echo):
            server.close()
            await server.wait_closed()
        # The reports hold the exceptions, whose tracebacks hold frames of
        # the protocols: drop them before counting.
        errors = [type(exc) for exc in reported]
        reported.clear()
        return errors

    errors = run(loop, scenario())
    assert errors == [ZeroDivisionError] * (CONNECTIONS // 2)
    assert_nothing_left(loop, tracked)


def test_datagram_endpoints_are_freed(loop):
    tracked = Tracked()

    class Datagrams(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = loop.create_future()
            self.lost = loop.create_future()
            tracked.add(self)

        def connection_made(self, transport):
            tracked.add(transport)

        def datagram_received(self, data, addr):
            if not self.got.done():
                self.got.set_result(data)

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def scenario():
        for _ in range(CONNECTIONS):
            receiver, rp = await loop.create_datagram_endpoint(
                Datagrams, local_addr=("127.0.0.1", 0)
            )
            sender, sp = await loop.create_datagram_endpoint(
                Datagrams, remote_addr=receiver.get_extra_info("sockname")
            )
            sender.sendto(b"ping")
            assert await rp.got == b"ping"
            sender.close()
            receiver.close()
            assert await sp.lost is None
            assert await rp.lost is None

    run(loop, scenario())
    assert_nothing_left(loop, tracked)


def test_sock_calls_leave_no_waits(loop):
    """No waiting call is left, and no registration per connection.

    tokioloop keeps a socket's registration between ``sock_*`` calls (see
    src/sock_watch.rs) and, since it cannot see a socket close, until its
    fd number is used again; so what may be left is at most one
    registration per fd number the scenario used, however many sockets
    had it."""
    tracked = Tracked()
    fds = set()

    async def scenario():
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(CONNECTIONS)
            listener.setblocking(False)
            for _ in range(CONNECTIONS):
                client = socket.socket()
                client.setblocking(False)
                tracked.add(client)
                await loop.sock_connect(client, listener.getsockname())
                conn, _ = await loop.sock_accept(listener)
                tracked.add(conn)
                fds.update((client.fileno(), conn.fileno()))
                with client, conn:
                    await loop.sock_sendall(client, MESSAGE)
                    got = b""
                    while len(got) < len(MESSAGE):
                        got += await loop.sock_recv(conn, 4096)
                    assert got == MESSAGE
                    # A receive that waits, cancelled: its registration
                    # goes with it.
                    waiting = loop.create_task(loop.sock_recv(conn, 1))
                    await asyncio.sleep(0.001)
                    waiting.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await waiting

    run(loop, scenario())
    assert len(fds) < CONNECTIONS
    assert_nothing_left(loop, tracked, kept_sock_watches=len(fds))


def test_subprocess_transports_are_freed(loop):
    tracked = Tracked()

    async def scenario():
        for _ in range(5):
            proc = await asyncio.create_subprocess_exec(
                "cat",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            tracked.add(proc, proc._transport, proc._protocol)
            for pipe in (0, 1):
                tracked.add(proc._transport.get_pipe_transport(pipe))
            out, _ = await proc.communicate(MESSAGE)
            assert out == MESSAGE
            assert proc.returncode == 0

    run(loop, scenario(), timeout=20)
    assert_nothing_left(loop, tracked)


def test_removed_readers_and_writers_leave_nothing(loop):
    tracked = Tracked()

    class Callback:
        def __init__(self, fired):
            self.fired = fired
            tracked.add(self)

        def __call__(self):
            if not self.fired.done():
                self.fired.set_result(None)

    async def scenario():
        for _ in range(CONNECTIONS):
            a, b = socket.socketpair()
            with a, b:
                a.setblocking(False)
                readable, writable = loop.create_future(), loop.create_future()
                loop.add_reader(a, Callback(readable))
                loop.add_writer(a, Callback(writable))
                b.send(b"x")
                await readable
                await writable
                assert loop.remove_reader(a)
                assert loop.remove_writer(a)

    run(loop, scenario())
    assert_nothing_left(loop, tracked)


def test_transports_left_open_at_loop_close_are_freed(loop_factory):
    """A loop closed under open connections keeps none of them alive: once
    the program drops them, they are freed. (Their "unclosed transport"
    warnings and closed sockets: test_net_transport.py.)"""
    tracked = Tracked()
    loop = loop_factory()

    async def scenario():
        closed = []
        server = await loop.create_server(lambda: Echo(tracked, closed), "127.0.0.1", 0)
        connect = _tcp_connect(loop)
        for _ in range(5):
            # A client that says nothing: both ends stay open.
            await connect(lambda: Echo(tracked, closed), server)
        # Both ends of 5 connections made: 10 protocols, 10 transports.
        await _wait_for(lambda: len(tracked.refs) == 20)
        server.close()
        assert closed == []

    try:
        run(loop, scenario())
    finally:
        loop.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for _ in range(3):
            gc.collect()
    assert tracked.alive() == []
