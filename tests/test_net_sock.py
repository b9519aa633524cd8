"""loop.sock_* low-level socket methods (differential)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import socket

import pytest
from loop_support import PY311
from net_support import (
    HAS_IPV6,
    closed_port,
    iterations,
    nb_socketpair,
    run,
    tcp_listener,
    unix_path_fixture,  # noqa: F401  (provides the unix_path fixture)
)

needs_py311 = pytest.mark.skipif(not PY311, reason="sock_recvfrom & co. are 3.11+")


def _payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


async def _tcp_connected_pair(loop, family=socket.AF_INET, host="127.0.0.1"):
    """(client, server-side) connected non-blocking TCP sockets via sock_*."""
    lsock = tcp_listener(host, family)
    try:
        client = socket.socket(family, socket.SOCK_STREAM)
        client.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(lsock))
        await loop.sock_connect(client, lsock.getsockname()[:2])
        conn, addr = await accept
        return client, conn, addr
    finally:
        lsock.close()


async def _unix_connected_pair(loop, path):
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(4)
    lsock.setblocking(False)
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(lsock))
        await loop.sock_connect(client, path)
        conn, addr = await accept
        return client, conn, addr
    finally:
        lsock.close()


# --------------------------------------------------------------------------
# connect / accept
# --------------------------------------------------------------------------


def test_sock_connect_accept_tcp(loop):
    async def main():
        client, conn, addr = await _tcp_connected_pair(loop)
        try:
            assert addr == client.getsockname()
            assert conn.getpeername() == client.getsockname()
            assert client.getpeername() == conn.getsockname()
            # The accepted socket is handed back non-blocking.
            assert conn.gettimeout() == 0
            assert conn.family == socket.AF_INET
            assert conn.type == socket.SOCK_STREAM
        finally:
            client.close()
            conn.close()

    run(loop, main())


@pytest.mark.skipif(not HAS_IPV6, reason="::1 is not available")
def test_sock_connect_accept_tcp6(loop):
    async def main():
        client, conn, addr = await _tcp_connected_pair(loop, socket.AF_INET6, "::1")
        try:
            assert addr == client.getsockname()
            assert addr[0] == "::1"
            await loop.sock_sendall(client, b"v6")
            assert await loop.sock_recv(conn, 10) == b"v6"
        finally:
            client.close()
            conn.close()

    run(loop, main())


def test_sock_connect_accept_unix(loop, unix_path):
    async def main():
        client, conn, addr = await _unix_connected_pair(loop, unix_path)
        try:
            assert conn.gettimeout() == 0
            assert client.getpeername() == unix_path
            # An unbound client has an empty address.
            assert addr in ("", b"")
            await loop.sock_sendall(client, b"unix!")
            assert await loop.sock_recv(conn, 10) == b"unix!"
        finally:
            client.close()
            conn.close()

    run(loop, main())


def test_sock_connect_resolves_hostname(loop):
    lsock = tcp_listener()

    async def main():
        port = lsock.getsockname()[1]
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            accept = asyncio.ensure_future(loop.sock_accept(lsock))
            assert await loop.sock_connect(client, ("localhost", port)) is None
            conn, _addr = await accept
            conn.close()
            assert client.getpeername() == ("127.0.0.1", port)
        finally:
            client.close()

    try:
        run(loop, main())
    finally:
        lsock.close()


def test_sock_connect_refused(loop):
    port = closed_port()

    async def main():
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(client, ("127.0.0.1", port))
        finally:
            client.close()

    run(loop, main())


def test_sock_connect_unix_missing_path(loop, unix_path):
    async def main():
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            with pytest.raises(FileNotFoundError):
                await loop.sock_connect(client, unix_path)
        finally:
            client.close()

    run(loop, main())


def test_sock_accept_cancel_then_accept(loop):
    lsock = tcp_listener()

    async def main():
        t = asyncio.ensure_future(loop.sock_accept(lsock))
        await iterations(3)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        client = socket.socket()
        client.setblocking(False)
        try:
            accept = asyncio.ensure_future(loop.sock_accept(lsock))
            await loop.sock_connect(client, lsock.getsockname())
            conn, _ = await accept
            conn.close()
        finally:
            client.close()

    try:
        run(loop, main())
    finally:
        lsock.close()


# --------------------------------------------------------------------------
# sendall / recv / recv_into
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
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
        if kind == "tcp":
            client, conn, _ = await _tcp_connected_pair(loop)
        else:
            client, conn, _ = await _unix_connected_pair(loop, unix_path)
        try:
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
        finally:
            client.close()
            conn.close()

    run(loop, main())


def test_sock_sendall_empty(loop):
    a, b = nb_socketpair()

    async def main():
        assert await loop.sock_sendall(a, b"") is None
        await loop.sock_sendall(a, b"x")
        assert await loop.sock_recv(b, 10) == b"x"

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_sock_recv_into(loop, kind, unix_path):
    async def main():
        if kind == "tcp":
            client, conn, _ = await _tcp_connected_pair(loop)
        else:
            client, conn, _ = await _unix_connected_pair(loop, unix_path)
        try:
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
        finally:
            client.close()
            conn.close()

    run(loop, main())


def test_sock_recv_waits_for_data(loop):
    a, b = nb_socketpair()

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(a, 100))
        await iterations(5)
        assert not t.done()
        b.send(b"later")
        return await t

    try:
        assert run(loop, main()) == b"later"
    finally:
        a.close()
        b.close()


def test_sock_recv_respects_size(loop):
    a, b = nb_socketpair()

    async def main():
        b.send(b"0123456789")
        first = await loop.sock_recv(a, 4)
        second = await loop.sock_recv(a, 100)
        return first, second

    try:
        assert run(loop, main()) == (b"0123", b"456789")
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_sock_recv_eof(loop, kind, unix_path):
    async def main():
        if kind == "tcp":
            client, conn, _ = await _tcp_connected_pair(loop)
        else:
            client, conn, _ = await _unix_connected_pair(loop, unix_path)
        try:
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
        finally:
            client.close()
            conn.close()

    run(loop, main())


def test_cancel_pending_sock_recv_leaves_socket_usable(loop):
    a, b = nb_socketpair()

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(a, 100))
        await iterations(3)
        assert not t.done()
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert t.cancelled()
        b.send(b"after cancel")
        # The data was not consumed by the cancelled call.
        return await loop.sock_recv(a, 100)

    try:
        assert run(loop, main()) == b"after cancel"
    finally:
        a.close()
        b.close()


def test_cancel_pending_sock_recv_into_leaves_socket_usable(loop):
    a, b = nb_socketpair()

    async def main():
        buf = bytearray(100)
        t = asyncio.ensure_future(loop.sock_recv_into(a, buf))
        await iterations(3)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        b.send(b"data")
        n = await loop.sock_recv_into(a, buf)
        return bytes(buf[:n])

    try:
        assert run(loop, main()) == b"data"
    finally:
        a.close()
        b.close()


def test_sock_recv_with_wait_for_timeout(loop):
    a, b = nb_socketpair()

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv(a, 10), 0.05)
        b.send(b"ok")
        return await loop.sock_recv(a, 10)

    try:
        assert run(loop, main()) == b"ok"
    finally:
        a.close()
        b.close()


def test_sock_sendall_slow_reader(loop):
    """sock_sendall waits for the peer to make room (kernel buffer full)."""
    a, b = nb_socketpair()
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

    try:
        assert run(loop, main()) == hashlib.sha256(data).hexdigest()
    finally:
        a.close()
        b.close()


def test_sock_sendall_to_closed_peer(loop):
    async def main():
        client, conn, _ = await _tcp_connected_pair(loop)
        try:
            conn.close()
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                for _ in range(100):
                    await loop.sock_sendall(client, b"x" * 65536)
                    await asyncio.sleep(0.001)
        finally:
            client.close()

    run(loop, main())


def test_sock_recv_on_closed_socket(loop):
    a, b = nb_socketpair()
    a.close()

    async def main():
        with pytest.raises(OSError):
            await loop.sock_recv(a, 10)

    try:
        run(loop, main())
    finally:
        b.close()


# --------------------------------------------------------------------------
# non-blocking check (only enforced in debug mode, as in asyncio)
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


def _udp_pair(family=socket.AF_INET, host="127.0.0.1"):
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind((host, 0))
        s.setblocking(False)
    return a, b


@needs_py311
def test_sock_sendto_recvfrom(loop):
    a, b = _udp_pair()

    async def main():
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

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()


@needs_py311
def test_sock_recvfrom_into(loop):
    a, b = _udp_pair()

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

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()


@needs_py311
@pytest.mark.skipif(not HAS_IPV6, reason="::1 is not available")
def test_sock_sendto_recvfrom_ipv6(loop):
    a, b = _udp_pair(socket.AF_INET6, "::1")

    async def main():
        await loop.sock_sendto(a, b"v6", b.getsockname())
        data, addr = await loop.sock_recvfrom(b, 100)
        assert data == b"v6"
        assert addr[:2] == a.getsockname()[:2]

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()


@needs_py311
def test_cancel_pending_sock_recvfrom(loop):
    a, b = _udp_pair()

    async def main():
        t = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
        await iterations(3)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await loop.sock_sendto(a, b"kept", b.getsockname())
        return await loop.sock_recvfrom(b, 100)

    try:
        assert run(loop, main()) == (b"kept", a.getsockname())
    finally:
        a.close()
        b.close()


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


def test_sock_sendfile_regular_file(loop, data_file):
    path, data = data_file

    async def main(f):
        client, conn, _ = await _tcp_connected_pair(loop)
        try:
            rtask = asyncio.ensure_future(_recv_exactly(loop, conn, len(data)))
            sent = await loop.sock_sendfile(client, f)
            assert sent == len(data)
            assert await rtask == data
            assert f.tell() == len(data)
        finally:
            client.close()
            conn.close()

    with open(path, "rb") as f:
        run(loop, main(f))


def test_sock_sendfile_offset_count(loop, data_file):
    path, data = data_file

    async def main(f):
        client, conn, _ = await _tcp_connected_pair(loop)
        try:
            rtask = asyncio.ensure_future(_recv_exactly(loop, conn, 1000))
            sent = await loop.sock_sendfile(client, f, 100, 1000)
            assert sent == 1000
            assert await rtask == data[100:1100]
            assert f.tell() == 1100
        finally:
            client.close()
            conn.close()

    with open(path, "rb") as f:
        run(loop, main(f))


@pytest.mark.parametrize("offset,count", [(0, None), (10, None), (5, 20)])
def test_sock_sendfile_fallback_non_regular_file(loop, offset, count):
    data = _payload(300_000, seed=5)
    expected = data[offset : None if count is None else offset + count]

    async def main():
        client, conn, _ = await _tcp_connected_pair(loop)
        try:
            f = io.BytesIO(data)
            rtask = asyncio.ensure_future(_recv_exactly(loop, conn, len(expected)))
            sent = await loop.sock_sendfile(client, f, offset, count)
            assert sent == len(expected)
            assert await rtask == expected
            assert f.tell() == offset + len(expected)
        finally:
            client.close()
            conn.close()

    run(loop, main())


def test_sock_sendfile_no_fallback_non_regular_file(loop):
    async def main():
        client, conn, _ = await _tcp_connected_pair(loop)
        try:
            f = io.BytesIO(b"data")
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sock_sendfile(client, f, fallback=False)
            assert f.tell() == 0
        finally:
            client.close()
            conn.close()

    run(loop, main())


def test_sock_sendfile_empty_file(loop, tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")

    async def main(f):
        client, conn, _ = await _tcp_connected_pair(loop)
        try:
            assert await loop.sock_sendfile(client, f) == 0
        finally:
            client.close()
            conn.close()

    with open(p, "rb") as f:
        run(loop, main(f))


def test_sock_sendfile_bad_arguments(loop, data_file, tmp_path):
    path, _ = data_file
    tpath = tmp_path / "text.txt"
    tpath.write_text("text")

    async def main(f, tf):
        client, conn, _ = await _tcp_connected_pair(loop)
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
            client.close()
            conn.close()

    with open(path, "rb") as f, open(tpath) as tf:
        run(loop, main(f, tf))


def test_sock_sendfile_over_unix(loop, data_file, unix_path):
    path, data = data_file

    async def main(f):
        client, conn, _ = await _unix_connected_pair(loop, unix_path)
        try:
            rtask = asyncio.ensure_future(_recv_exactly(loop, conn, len(data)))
            assert await loop.sock_sendfile(client, f) == len(data)
            assert hashlib.sha256(await rtask).digest() == hashlib.sha256(data).digest()
        finally:
            client.close()
            conn.close()

    with open(path, "rb") as f:
        run(loop, main(f))


def test_fd_number_reuse_after_sock_recv(loop):
    """The loop must not keep a stale registration for a socket closed after
    sock_* use: a new file put on the same fd number is watched normally."""
    a, b = nb_socketpair()

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
        got = []

        async def watch():
            done = loop.create_future()

            def cb():
                got.append(os.read(fd, 10))
                done.set_result(None)

            loop.add_reader(fd, cb)
            os.write(w, b"new")
            await done
            assert loop.remove_reader(fd) is True

        run(loop, watch())
        assert got == [b"new"]
    finally:
        for x in {fd, r, w}:
            os.close(x)
