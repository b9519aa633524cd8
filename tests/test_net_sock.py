"""loop.sock_* low-level socket methods (differential)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import io
import os
import random
import socket
import subprocess
import sys

import pytest
from loop_support import PY311, pytest_in_child
from net_support import (
    iterations,
    needs_ipv6,
    nobody_listening,
    run,
    sock_pair_fixture,  # noqa: F401  (provides the sock_pair fixture)
    tcp_listener,
    unix_path_fixture,  # noqa: F401  (provides the unix_path fixture)
    unused_address,
    watch_once,
)

needs_py311 = pytest.mark.skipif(not PY311, reason="sock_recvfrom & co. are 3.11+")


def _payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


# Stream socket kinds: family and listening address (None: the unix_path).
_STREAM_KINDS = {
    "tcp": (socket.AF_INET, "127.0.0.1"),
    "tcp6": (socket.AF_INET6, "::1"),
    "unix": (socket.AF_UNIX, None),
}
TCP_AND_UNIX = pytest.mark.parametrize("kind", ["tcp", "unix"])


@contextlib.asynccontextmanager
async def _connected(loop, kind="tcp", unix_path=None, *, lsock=None, address=None):
    """Yield ``(client, server-side, accept address)``: connected non-blocking
    stream sockets of ``kind`` made with sock_connect/sock_accept, closed on exit.

    The client connects to ``address`` (default: the listener's own address).
    The listening socket is made here and closed once it has accepted, unless
    the caller passes its own ``lsock``."""
    family, host = _STREAM_KINDS[kind]
    own_lsock = lsock is None
    if own_lsock and host is None:
        lsock = socket.socket(family, socket.SOCK_STREAM)
        lsock.bind(unix_path)
        lsock.listen(4)
        lsock.setblocking(False)
    elif own_lsock:
        lsock = tcp_listener(host, family)
    if address is None:
        address = lsock.getsockname()[:2] if host else unix_path
    client = socket.socket(family, socket.SOCK_STREAM)
    conn = None
    try:
        client.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(lsock))
        assert await loop.sock_connect(client, address) is None
        conn, addr = await accept
        if own_lsock:
            lsock.close()
        yield client, conn, addr
    finally:
        if own_lsock:
            lsock.close()
        client.close()
        if conn is not None:
            conn.close()


# --------------------------------------------------------------------------
# connect / accept
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", pytest.param("tcp6", marks=needs_ipv6), "unix"])
def test_sock_connect_accept(loop, kind, unix_path):
    family, host = _STREAM_KINDS[kind]

    async def main():
        async with _connected(loop, kind, unix_path) as (client, conn, addr):
            # The accepted socket is handed back non-blocking.
            assert conn.gettimeout() == 0
            assert conn.family == family
            assert conn.type == socket.SOCK_STREAM
            if host is None:
                assert client.getpeername() == unix_path
                # An unbound client has an empty address.
                assert addr in ("", b"")
            else:
                assert addr == client.getsockname()
                assert addr[0] == host
                assert conn.getpeername() == client.getsockname()
                assert client.getpeername() == conn.getsockname()
            await loop.sock_sendall(client, kind.encode() + b"!")
            assert await loop.sock_recv(conn, 10) == kind.encode() + b"!"

    run(loop, main())


def test_sock_connect_resolves_hostname(loop):
    async def main():
        with contextlib.closing(tcp_listener()) as lsock:
            port = lsock.getsockname()[1]
            address = ("localhost", port)
            async with _connected(loop, lsock=lsock, address=address) as (client, _conn, _):
                assert client.getpeername() == ("127.0.0.1", port)

    run(loop, main())


def test_sock_connect_socket_subclass_and_hostname(loop):
    # A socket.socket subclass takes asyncio's own sock_connect on tokioloop
    # (its family/type properties may be overridden); the family it reports
    # is what the hostname is resolved for.
    class MySocket(socket.socket):
        pass

    async def main():
        with contextlib.closing(tcp_listener()) as lsock:
            port = lsock.getsockname()[1]
            client = MySocket(socket.AF_INET, socket.SOCK_STREAM)
            client.setblocking(False)
            try:
                assert await loop.sock_connect(client, ("localhost", port)) is None
                conn, _ = lsock.accept()
                conn.close()
                return client.getpeername()
            finally:
                client.close()

    assert run(loop, main())[0] == "127.0.0.1"


@pytest.mark.parametrize("address", [42, None, ("a", "b", "c")])
def test_sock_connect_bad_unix_address_raises_like_asyncio(loop, address):
    # The address goes to the socket's connect as given (no resolution for
    # AF_UNIX), so its errors are the socket module's: TypeError here.
    async def main():
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            with pytest.raises(TypeError):
                await loop.sock_connect(client, address)
            return client.fileno() != -1
        finally:
            client.close()

    assert run(loop, main()) is True


def test_sock_connect_refused_error_matches_asyncio(loop_factory):
    # The exception a refused TCP connect raises (type, errno, message),
    # compared with stock asyncio's: asyncio's reads SO_ERROR in its
    # writer callback ("Connect call failed (host, port)"), tokioloop's in
    # its native waiter.
    def outcome(factory):
        lp = factory()
        address = unused_address("tcp", None)

        async def main():
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setblocking(False)
            try:
                await lp.sock_connect(client, address)
            except OSError as exc:
                return type(exc), exc.errno, str(exc).replace(str(address[1]), "PORT")
            finally:
                client.close()

        try:
            return run(lp, main())
        finally:
            lp.close()

    got = outcome(loop_factory)
    assert got == outcome(asyncio.new_event_loop)
    assert got[0] is ConnectionRefusedError


def test_sock_connect_with_a_timeout_socket_outside_debug(loop):
    # Not in debug mode, a socket with a timeout is connected as asyncio
    # connects it (a blocking connect within the timeout), and a refused
    # one raises connect's own error.
    async def main():
        with contextlib.closing(tcp_listener()) as lsock:
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.settimeout(5)
            try:
                await loop.sock_connect(client, lsock.getsockname())
                connected = client.getpeername() == lsock.getsockname()
            finally:
                client.close()
        refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        refused.settimeout(5)
        try:
            await loop.sock_connect(refused, unused_address("tcp", None))
        except OSError as exc:
            return connected, type(exc), exc.errno
        finally:
            refused.close()

    assert run(loop, main()) == (True, ConnectionRefusedError, errno.ECONNREFUSED)


def test_sock_connect_cancelled_leaves_the_socket_usable(loop):
    # Cancelling a sock_connect that is waiting stops the wait; the
    # connection completes anyway (as on asyncio), and the fd is free for
    # the next call.
    async def main():
        with contextlib.closing(tcp_listener()) as lsock:
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setblocking(False)
            try:
                task = loop.create_task(loop.sock_connect(client, lsock.getsockname()))
                await asyncio.sleep(0)  # the task now waits for writability
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    cancelled = True
                else:
                    cancelled = False  # it finished before the cancel
                # No writer is left registered for the fd by the cancelled wait.
                still_watched = loop.remove_writer(client.fileno())
                conn, _ = lsock.accept()
                with conn:
                    await loop.sock_sendall(client, b"after")
                    conn.settimeout(5)
                    got = conn.recv(10)
                    conn.sendall(b"back")
                    reply = await asyncio.wait_for(loop.sock_recv(client, 10), 5)
                    return cancelled, still_watched, got, reply
            finally:
                client.close()

    _, still_watched, got, reply = run(loop, main())
    assert (still_watched, got, reply) == (False, b"after", b"back")


@nobody_listening
def test_sock_connect_nobody_listening(loop, unix_path, kind, error):
    family, _ = _STREAM_KINDS[kind]
    address = unused_address(kind, unix_path)

    async def main():
        client = socket.socket(family, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            with pytest.raises(error):
                await loop.sock_connect(client, address)
        finally:
            client.close()

    run(loop, main())


def test_sock_accept_cancel_then_accept(loop):
    async def main():
        with contextlib.closing(tcp_listener()) as lsock:
            t = asyncio.ensure_future(loop.sock_accept(lsock))
            await iterations(3)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            # The listener still accepts.
            async with _connected(loop, lsock=lsock) as (client, conn, addr):
                assert addr == client.getsockname()
                assert conn.getpeername() == client.getsockname()

    run(loop, main())


# --------------------------------------------------------------------------
# sendall / recv / recv_into
# --------------------------------------------------------------------------


@TCP_AND_UNIX
def test_sock_sendall_recv_large(loop, kind, unix_path):
    data = _payload(4 * 1024 * 1024)

    async def reader(sock, n):
        h = hashlib.sha256()
        got = 0
        while got < n:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, "early EOF"
            h.update(chunk)
            got += len(chunk)
        return got, h.hexdigest()

    async def main():
        async with _connected(loop, kind, unix_path) as (client, conn, _):
            rtask = asyncio.ensure_future(reader(conn, len(data)))
            assert await loop.sock_sendall(client, data) is None
            got, digest = await rtask
            assert got == len(data)
            assert digest == hashlib.sha256(data).hexdigest()
            # And the other direction, with a memoryview.
            rtask = asyncio.ensure_future(reader(client, len(data)))
            await loop.sock_sendall(conn, memoryview(data))
            got, digest = await rtask
            assert digest == hashlib.sha256(data).hexdigest()

    run(loop, main())


def test_sock_sendall_empty(loop, sock_pair):
    a, b = sock_pair

    async def main():
        assert await loop.sock_sendall(a, b"") is None
        await loop.sock_sendall(a, b"x")
        assert await loop.sock_recv(b, 10) == b"x"

    run(loop, main())


@TCP_AND_UNIX
def test_sock_recv_into(loop, kind, unix_path):
    async def main():
        async with _connected(loop, kind, unix_path) as (client, conn, _):
            buf = bytearray(10)
            t = asyncio.ensure_future(loop.sock_recv_into(conn, buf))
            await iterations(3)
            assert not t.done()
            await loop.sock_sendall(client, b"abc")
            n = await t
            assert n == 3
            assert bytes(buf) == b"abc" + b"\0" * 7
            # Into a memoryview slice.
            await loop.sock_sendall(client, b"0123456789XYZ")
            view = memoryview(buf)[2:6]
            n = await loop.sock_recv_into(conn, view)
            assert n == 4
            assert bytes(buf) == b"ab0123" + b"\0" * 4
            rest = await loop.sock_recv(conn, 100)
            assert rest == b"456789XYZ"

    run(loop, main())


def test_sock_recv_waits_for_data(loop, sock_pair):
    a, b = sock_pair

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(a, 100))
        await iterations(5)
        assert not t.done()
        b.send(b"later")
        return await t

    assert run(loop, main()) == b"later"


def test_sock_recv_respects_size(loop, sock_pair):
    a, b = sock_pair

    async def main():
        b.send(b"0123456789")
        first = await loop.sock_recv(a, 4)
        second = await loop.sock_recv(a, 100)
        return first, second

    assert run(loop, main()) == (b"0123", b"456789")


@TCP_AND_UNIX
def test_sock_recv_eof(loop, kind, unix_path):
    async def main():
        async with _connected(loop, kind, unix_path) as (client, conn, _):
            t = asyncio.ensure_future(loop.sock_recv(conn, 100))
            await iterations(3)
            await loop.sock_sendall(client, b"last")
            assert await t == b"last"
            t = asyncio.ensure_future(loop.sock_recv(conn, 100))
            await iterations(3)
            client.close()
            assert await t == b""
            # Stays at EOF.
            assert await loop.sock_recv(conn, 100) == b""
            buf = bytearray(4)
            assert await loop.sock_recv_into(conn, buf) == 0

    run(loop, main())


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into"])
def test_cancel_pending_recv_leaves_socket_usable(loop, sock_pair, method):
    a, b = sock_pair
    buf = bytearray(100)
    calls = {
        "sock_recv": lambda: loop.sock_recv(a, 100),
        "sock_recv_into": lambda: loop.sock_recv_into(a, buf),
    }

    async def main():
        t = asyncio.ensure_future(calls[method]())
        await iterations(3)
        assert not t.done()
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert t.cancelled()
        b.send(b"after cancel")
        # The data was not consumed by the cancelled call.
        got = await calls[method]()
        return got if method == "sock_recv" else bytes(buf[:got])

    assert run(loop, main()) == b"after cancel"


def test_sock_recv_with_wait_for_timeout(loop, sock_pair):
    a, b = sock_pair

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv(a, 10), 0.05)
        b.send(b"ok")
        return await loop.sock_recv(a, 10)

    assert run(loop, main()) == b"ok"


def test_sock_sendall_slow_reader(loop, sock_pair):
    """sock_sendall waits for the peer to make room (kernel buffer full)."""
    a, b = sock_pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    data = _payload(2 * 1024 * 1024, seed=7)

    async def main():
        t = asyncio.ensure_future(loop.sock_sendall(a, data))
        await asyncio.sleep(0.02)
        assert not t.done()  # 2 MiB do not fit in the socket buffers
        h = hashlib.sha256()
        got = 0
        while got < len(data):
            chunk = await loop.sock_recv(b, 4096)
            h.update(chunk)
            got += len(chunk)
        await t
        return h.hexdigest()

    assert run(loop, main()) == hashlib.sha256(data).hexdigest()


def test_sock_sendall_to_closed_peer(loop):
    async def main():
        async with _connected(loop) as (client, conn, _):
            conn.close()
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                for _ in range(100):
                    await loop.sock_sendall(client, b"x" * 65536)
                    await asyncio.sleep(0.001)

    run(loop, main())


def test_sock_recv_on_closed_socket(loop, sock_pair):
    a, _ = sock_pair
    a.close()

    async def main():
        with pytest.raises(OSError):
            await loop.sock_recv(a, 10)

    run(loop, main())


# --------------------------------------------------------------------------
# non-blocking check (only enforced in debug mode, as in asyncio)
def test_timeout_changes_are_seen_by_the_next_call(loop):
    # The timeout is read at each call (tokioloop reads it from the socket
    # object itself): the same socket is accepted, refused, and accepted
    # again as it is switched, down to a timeout of one nanosecond.
    loop.set_debug(True)
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def main():
        outcomes = []
        for timeout in (0.0, 0.5, 1e-9, None, 0, 0.0):
            a.settimeout(timeout)
            b.send(b"x")
            try:
                outcomes.append(await loop.sock_recv(a, 1))
            except ValueError as e:
                outcomes.append(str(e))
                a.setblocking(False)
                assert await loop.sock_recv(a, 1) == b"x"
        return outcomes

    try:
        refused = "the socket must be non-blocking"
        assert run(loop, main()) == [b"x", refused, refused, refused, b"x", b"x"]
    finally:
        a.close()
        b.close()


def test_tokioloop_reads_socket_fields_on_this_python():
    # The layout check (src/socket_fields.rs) passes on every CPython we
    # support, so sock_* calls read the fd and timeout without calling
    # fileno() and gettimeout().
    from tokioloop import _tokioloop

    assert _tokioloop._reads_socket_fields()


@pytest.mark.timeout(300)
def test_tokioloop_network_tests_pass_reading_sockets_through_their_methods():
    # Where the layout check fails, sockets are read through their Python
    # methods and properties (fileno(), gettimeout(), family, type, proto):
    # the sock_* calls, the native accept round and new transports. No
    # supported CPython takes that path, so TOKIOLOOP_SOCKET_FIELDS_BY_METHODS
    # forces it, for these files' tests in a fresh interpreter.
    env = dict(os.environ, TOKIOLOOP_SOCKET_FIELDS_BY_METHODS="1")
    probe = "from tokioloop import _tokioloop; print(_tokioloop._reads_socket_fields())"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
    files = ["test_net_sock.py", "test_net_transport.py", "test_net_connect.py"]
    pytest_in_child(
        files,
        env,
        280,
        "-k",
        "tokioloop and not reads_socket_fields and not reading_sockets_through",
    )


# --------------------------------------------------------------------------


def _blocking_calls(loop, s):
    return {
        "sock_recv": lambda: loop.sock_recv(s, 1),
        "sock_recv_into": lambda: loop.sock_recv_into(s, bytearray(1)),
        "sock_sendall": lambda: loop.sock_sendall(s, b"x"),
        "sock_connect": lambda: loop.sock_connect(s, ("127.0.0.1", 1)),
        "sock_accept": lambda: loop.sock_accept(s),
        "sock_sendfile": lambda: loop.sock_sendfile(s, io.BytesIO(b"x")),
    }


@pytest.mark.parametrize(
    "method",
    [
        "sock_recv",
        "sock_recv_into",
        "sock_sendall",
        "sock_connect",
        "sock_accept",
        "sock_sendfile",
    ],
)
def test_blocking_socket_rejected_in_debug(loop, method):
    loop.set_debug(True)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    assert s.gettimeout() is None  # blocking

    async def main():
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            await _blocking_calls(loop, s)[method]()

    try:
        run(loop, main())
    finally:
        s.close()


@needs_py311
@pytest.mark.parametrize("method", ["sock_recvfrom", "sock_recvfrom_into", "sock_sendto"])
def test_blocking_udp_socket_rejected_in_debug(loop, method):
    loop.set_debug(True)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    calls = {
        "sock_recvfrom": lambda: loop.sock_recvfrom(s, 10),
        "sock_recvfrom_into": lambda: loop.sock_recvfrom_into(s, bytearray(10)),
        "sock_sendto": lambda: loop.sock_sendto(s, b"x", ("127.0.0.1", 9)),
    }

    async def main():
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            await calls[method]()

    try:
        run(loop, main())
    finally:
        s.close()


def test_socket_with_timeout_rejected_in_debug(loop):
    loop.set_debug(True)
    a, b = socket.socketpair()
    a.settimeout(1.0)

    async def main():
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            await loop.sock_recv(a, 1)

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------
# UDP: sock_recvfrom / sock_recvfrom_into / sock_sendto (3.11+)
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _udp_sockets(family=socket.AF_INET, host="127.0.0.1"):
    """Two bound non-blocking UDP sockets, closed on exit."""
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for s in (a, b):
            s.bind((host, 0))
            s.setblocking(False)
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def udp_pair():
    with _udp_sockets() as pair:
        yield pair


@needs_py311
@pytest.mark.parametrize(
    "family,host",
    [
        (socket.AF_INET, "127.0.0.1"),
        pytest.param(socket.AF_INET6, "::1", marks=needs_ipv6),
    ],
    ids=["ipv4", "ipv6"],
)
def test_sock_sendto_recvfrom(loop, family, host):
    async def main(a, b):
        t = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
        await iterations(3)
        assert not t.done()
        n = await loop.sock_sendto(a, b"dgram-1", b.getsockname())
        assert n == 7
        data, addr = await t
        assert data == b"dgram-1"
        assert addr == a.getsockname()
        # Datagram boundaries are preserved.
        await loop.sock_sendto(a, b"one", b.getsockname())
        await loop.sock_sendto(a, b"two", b.getsockname())
        assert (await loop.sock_recvfrom(b, 100))[0] == b"one"
        assert (await loop.sock_recvfrom(b, 100))[0] == b"two"
        # A short buffer truncates the datagram.
        await loop.sock_sendto(a, b"0123456789", b.getsockname())
        assert await loop.sock_recvfrom(b, 4) == (b"0123", a.getsockname())

    with _udp_sockets(family, host) as (a, b):
        run(loop, main(a, b))


@needs_py311
def test_sock_recvfrom_into(loop, udp_pair):
    a, b = udp_pair

    async def main():
        buf = bytearray(16)
        t = asyncio.ensure_future(loop.sock_recvfrom_into(b, buf))
        await iterations(3)
        await loop.sock_sendto(a, b"hello", b.getsockname())
        n, addr = await t
        assert (n, addr) == (5, a.getsockname())
        assert bytes(buf[:5]) == b"hello"
        # nbytes limits the read.
        await loop.sock_sendto(a, b"abcdefgh", b.getsockname())
        n, addr = await loop.sock_recvfrom_into(b, buf, 3)
        assert n == 3
        assert bytes(buf[:5]) == b"abclo"

    run(loop, main())


@needs_py311
def test_cancel_pending_sock_recvfrom(loop, udp_pair):
    a, b = udp_pair

    async def main():
        t = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
        await iterations(3)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await loop.sock_sendto(a, b"kept", b.getsockname())
        return await loop.sock_recvfrom(b, 100)

    assert run(loop, main()) == (b"kept", a.getsockname())


# --------------------------------------------------------------------------
# sock_sendfile
# --------------------------------------------------------------------------


async def _recv_exactly(loop, sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            break
        out += chunk
    return bytes(out)


@pytest.fixture
def data_file(tmp_path):
    data = _payload(1024 * 1024 + 123, seed=3)
    p = tmp_path / "payload.bin"
    p.write_bytes(data)
    return p, data


@pytest.mark.parametrize(
    "kind,source,offset,count",
    [
        ("tcp", "file", 0, None),
        ("tcp", "file", 100, 1000),
        ("unix", "file", 0, None),
        # Not a regular file: the read/send fallback.
        ("tcp", "bytesio", 0, None),
        ("tcp", "bytesio", 10, None),
        ("tcp", "bytesio", 5, 20),
    ],
    ids=[
        "tcp-file",
        "tcp-file-range",
        "unix-file",
        "tcp-bytesio",
        "tcp-bytesio-offset",
        "tcp-bytesio-range",
    ],
)
def test_sock_sendfile(loop, data_file, unix_path, kind, source, offset, count):
    path, data = data_file
    expected = data[offset : None if count is None else offset + count]
    # The defaults are passed implicitly, as most callers do.
    args = () if (offset, count) == (0, None) else (offset, count)

    async def main(f):
        async with _connected(loop, kind, unix_path) as (client, conn, _):
            rtask = asyncio.ensure_future(_recv_exactly(loop, conn, len(expected)))
            sent = await loop.sock_sendfile(client, f, *args)
            assert sent == len(expected)
            assert await rtask == expected
            assert f.tell() == offset + len(expected)

    if source == "file":
        with open(path, "rb") as f:
            run(loop, main(f))
    else:
        run(loop, main(io.BytesIO(data)))


def test_sock_sendfile_no_fallback_non_regular_file(loop):
    async def main():
        async with _connected(loop) as (client, _conn, _):
            f = io.BytesIO(b"data")
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sock_sendfile(client, f, fallback=False)
            assert f.tell() == 0

    run(loop, main())


def test_sock_sendfile_empty_file(loop, tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")

    async def main(f):
        async with _connected(loop) as (client, _conn, _):
            assert await loop.sock_sendfile(client, f) == 0

    with open(p, "rb") as f:
        run(loop, main(f))


def test_sock_sendfile_bad_arguments(loop, data_file, tmp_path):
    path, _ = data_file
    tpath = tmp_path / "text.txt"
    tpath.write_text("text")

    async def main(f, tf):
        async with _connected(loop) as (client, _conn, _):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.setblocking(False)
            try:
                with pytest.raises(ValueError, match="only SOCK_STREAM"):
                    await loop.sock_sendfile(udp, f)
                with pytest.raises(ValueError, match="count must be a positive integer"):
                    await loop.sock_sendfile(client, f, 0, 0)
                with pytest.raises(TypeError, match="count must be a positive integer"):
                    await loop.sock_sendfile(client, f, 0, "1")
                with pytest.raises(ValueError, match="offset must be a non-negative integer"):
                    await loop.sock_sendfile(client, f, -1)
                with pytest.raises(TypeError, match="offset must be a non-negative integer"):
                    await loop.sock_sendfile(client, f, "0")
                with pytest.raises(ValueError, match="binary mode"):
                    await loop.sock_sendfile(client, tf)
                assert f.tell() == 0
            finally:
                udp.close()

    with open(path, "rb") as f, open(tpath) as tf:
        run(loop, main(f, tf))


def test_fd_number_reuse_after_sock_recv(loop, sock_pair):
    """The loop must not keep a stale registration for a socket closed after
    sock_* use: a new file put on the same fd number is watched normally."""
    a, b = sock_pair

    async def main():
        b.send(b"x")
        assert await loop.sock_recv(a, 1) == b"x"
        t = asyncio.ensure_future(loop.sock_recv(a, 1))
        await iterations(3)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    run(loop, main())
    fd = a.fileno()
    a.close()
    b.close()
    r, w = os.pipe()
    try:
        os.dup2(r, fd)
        os.set_blocking(fd, False)
        got = watch_once(
            loop, "reader", fd, lambda: os.read(fd, 10), trigger=lambda: os.write(w, b"new")
        )
        assert got == [b"new", True]
    finally:
        for x in {fd, r, w}:
            os.close(x)
