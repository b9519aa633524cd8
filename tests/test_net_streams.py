"""asyncio streams (open_connection/start_server) on top of the loop (differential)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket

import pytest
from loop_support import PY312, PY313
from net_support import (
    check_nobody_listening,
    iterations,
    needs_ipv6,
    nobody_listening,
    run,
    unix_path_fixture,  # noqa: F401  (provides the unix_path fixture)
)

MiB = 1024 * 1024


async def _echo_handler(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


# Server kinds: family and host (None: a Unix server on the unix_path).
_KINDS = {
    "ipv4": (socket.AF_INET, "127.0.0.1"),
    "ipv6": (socket.AF_INET6, "::1"),
    "unix": (socket.AF_UNIX, None),
}
ALL_KINDS = ["ipv4", pytest.param("ipv6", marks=needs_ipv6), "unix"]


async def _start(handler, kind="ipv4", unix_path=None, **kw):
    """start_server() on an ephemeral loopback port, or start_unix_server()."""
    host = _KINDS[kind][1]
    if host is None:
        return await asyncio.start_unix_server(handler, unix_path, **kw)
    return await asyncio.start_server(handler, host, 0, **kw)


@contextlib.asynccontextmanager
async def _connection(server, unix_path=None, **kw):
    """open_connection() to ``server`` (open_unix_connection() to ``unix_path``
    when given); yields ``(reader, writer)`` and closes the writer on exit."""
    if unix_path is None:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2], **kw)
    else:
        reader, writer = await asyncio.open_unix_connection(unix_path, **kw)
    try:
        yield reader, writer
    finally:
        writer.close()
        await writer.wait_closed()


async def _assert_stopped(server, addr):
    """``server`` no longer serves: no sockets, and ``addr`` refuses connections."""
    assert server.is_serving() is False
    assert server.sockets == ()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*addr)


async def _echo_roundtrip(reader, writer):
    writer.write(b"hello\n")
    await writer.drain()
    line = await reader.readline()
    writer.write(b"a" * 100_000 + b"\n")
    big = await reader.readexactly(100_001)
    writer.write_eof()
    rest = await reader.read()
    return line, big, rest


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_echo(loop, kind, unix_path):
    family, host = _KINDS[kind]
    path = unix_path if host is None else None

    async def main():
        async with await _start(_echo_handler, kind, path) as server:
            assert server.sockets[0].family == family
            addr = server.sockets[0].getsockname()
            if path is None:
                assert addr[0] == host and addr[1] > 0
            else:
                assert addr == path
            async with _connection(server, path) as (reader, writer):
                assert writer.get_extra_info("peername") == addr
                line, big, rest = await _echo_roundtrip(reader, writer)
        assert line == b"hello\n"
        assert big == b"a" * 100_000 + b"\n"
        assert rest == b""

    run(loop, main())


@nobody_listening
def test_open_connection_nobody_listening(loop, unix_path, kind, error):
    check_nobody_listening(
        loop, kind, error, unix_path, asyncio.open_connection, asyncio.open_unix_connection
    )


# --------------------------------------------------------------------------
# 64 MiB both ways
# --------------------------------------------------------------------------


def _chunks(seed: int, total: int, size: int = MiB):
    base = random.Random(seed).randbytes(size + 256)
    for i in range(total // size):
        yield base[i % 256 : i % 256 + size]


def _digest(seed: int, total: int) -> str:
    h = hashlib.sha256()
    for c in _chunks(seed, total):
        h.update(c)
    return h.hexdigest()


@pytest.mark.parametrize("kind", ["ipv4", "unix"], ids=["tcp", "unix"])
def test_64mib_both_ways(loop, kind, unix_path):
    total = 64 * MiB

    async def pump_out(writer, seed):
        for c in _chunks(seed, total):
            writer.write(c)
            await writer.drain()

    async def pump_in(reader):
        h = hashlib.sha256()
        n = 0
        while n < total:
            data = await reader.read(4 * MiB)
            if not data:
                break
            h.update(data)
            n += len(data)
        return n, h.hexdigest()

    server_result = {}

    async def handler(reader, writer):
        try:
            results = await asyncio.gather(pump_in(reader), pump_out(writer, 2))
            server_result["in"] = results[0]
            writer.write_eof()
            server_result["eof"] = await reader.read()
        finally:
            writer.close()

    async def main():
        path = unix_path if kind == "unix" else None
        server = await _start(handler, kind, path)
        async with server, _connection(server, path) as (reader, writer):
            got, _ = await asyncio.gather(pump_in(reader), pump_out(writer, 1))
            writer.write_eof()
            tail = await reader.read()
        return got, tail

    (n, digest), tail = run(loop, main(), timeout=30)
    assert n == total
    assert digest == _digest(2, total)
    assert tail == b""
    assert server_result["in"] == (total, _digest(1, total))
    assert server_result["eof"] == b""


# --------------------------------------------------------------------------
# StreamReader API on a real connection
# --------------------------------------------------------------------------


async def _one_shot_server(payload_chunks, delay=0.0):
    """Server that writes ``payload_chunks`` (with ``delay`` between) then closes."""

    async def handler(reader, writer):
        try:
            for c in payload_chunks:
                writer.write(c)
                await writer.drain()
                if delay:
                    await asyncio.sleep(delay)
        finally:
            writer.close()

    return await _start(handler)


def test_readline_readexactly_readuntil(loop):
    chunks = [b"line one\nline ", b"two\n", b"0123", b"456789", b"abc|def|", b"tail"]

    async def main():
        server = await _one_shot_server(chunks, delay=0.01)
        async with server, _connection(server) as (reader, _writer):
            out = [
                await reader.readline(),
                await reader.readline(),
                await reader.readexactly(7),
                await reader.readexactly(3),
                await reader.readuntil(b"|"),
                await reader.readuntil(b"|"),
            ]
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readexactly(10)
            out.append((info.value.partial, info.value.expected))
            out.append(await reader.readline())
            out.append(await reader.read())
            out.append(reader.at_eof())
        return out

    assert run(loop, main()) == [
        b"line one\n",
        b"line two\n",
        b"0123456",
        b"789",
        b"abc|",
        b"def|",
        (b"tail", 10),
        b"",
        b"",
        True,
    ]


def test_readline_partial_at_eof_and_readuntil_incomplete(loop):
    async def main():
        server = await _one_shot_server([b"no newline"])
        async with server, _connection(server) as (reader, _writer):
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readuntil(b"\n")
            partial = info.value.partial
            assert await reader.readline() == b""
        return partial

    assert run(loop, main()) == b"no newline"


def test_readline_limit(loop):
    async def main():
        server = await _one_shot_server([b"x" * 100 + b"\nok\n"])
        async with server, _connection(server, limit=16) as (reader, _writer):
            with pytest.raises(asyncio.LimitOverrunError):
                await reader.readuntil(b"\n")
            with pytest.raises(ValueError):
                await reader.readline()
            # readline() dropped the over-long line; the next one is fine.
            assert await reader.readline() == b"ok\n"

    run(loop, main())


# --------------------------------------------------------------------------
# drain / flow control
# --------------------------------------------------------------------------


def test_drain_flow_control_bounds_memory(loop):
    """A fast writer against a slow reader: the user-space write buffer is bounded
    by the high-water mark plus one chunk."""
    chunk = 64 * 1024
    total = 16 * MiB
    release = None

    async def handler(reader, writer):
        h = hashlib.sha256()
        n = 0
        try:
            await release  # do not read at first: the client must block in drain()
            while n < total:
                data = await reader.read(16 * 1024)
                if not data:
                    break
                h.update(data)
                n += len(data)
                await asyncio.sleep(0)
            writer.write(h.hexdigest().encode())
            await writer.drain()
        finally:
            writer.close()

    async def main():
        nonlocal release
        release = loop.create_future()
        server = await _start(handler)
        async with server, _connection(server) as (reader, writer):
            tr = writer.transport
            low, high = tr.get_write_buffer_limits()
            assert 0 <= low <= high
            bound = high + chunk
            data = random.Random(9).randbytes(total)
            max_seen = 0
            blocked = 0
            for off in range(0, total, chunk):
                writer.write(data[off : off + chunk])
                size = tr.get_write_buffer_size()
                max_seen = max(max_seen, size)
                assert size <= bound, (size, low, high)
                d = asyncio.ensure_future(writer.drain())
                await asyncio.sleep(0)
                if not d.done():
                    blocked += 1
                    if not release.done() and blocked == 1:
                        # The writer is stuck: let the reader go.
                        loop.call_later(0.05, release.set_result, None)
                await d
            if not release.done():
                release.set_result(None)
            writer.write_eof()
            digest = await reader.read()
        return digest, blocked, max_seen, high, hashlib.sha256(data).hexdigest()

    digest, blocked, max_seen, high, expected = run(loop, main(), timeout=20)
    assert digest == expected.encode()
    assert blocked >= 1  # drain() really waited
    assert max_seen > high  # the buffer did go past the high-water mark


def test_drain_with_custom_limits(loop):
    async def main():
        block = loop.create_future()

        async def handler(reader, writer):
            await block
            data = await reader.readexactly(4 * MiB)
            writer.write(hashlib.sha256(data).digest())
            await writer.drain()
            writer.close()

        server = await _start(handler)
        async with server, _connection(server) as (reader, writer):
            tr = writer.transport
            tr.set_write_buffer_limits(high=4096, low=1024)
            assert tr.get_write_buffer_limits() == (1024, 4096)
            payload = random.Random(4).randbytes(4 * MiB)
            chunk = 8192
            loop.call_later(0.05, block.set_result, None)
            for off in range(0, len(payload), chunk):
                writer.write(payload[off : off + chunk])
                assert tr.get_write_buffer_size() <= 4096 + chunk
                await writer.drain()
            digest = await reader.readexactly(32)
        assert digest == hashlib.sha256(payload).digest()

    run(loop, main(), timeout=15)


# --------------------------------------------------------------------------
# half-close, close
# --------------------------------------------------------------------------


def test_write_eof_half_close(loop):
    seen = {}

    async def handler(reader, writer):
        data = await reader.read()  # until EOF
        seen["data"] = data
        seen["at_eof"] = reader.at_eof()
        writer.write(b"reply:" + data)
        await writer.drain()
        writer.close()

    async def main():
        server = await _start(handler)
        async with server, _connection(server) as (reader, writer):
            assert writer.can_write_eof() is True
            writer.write(b"question")
            writer.write_eof()
            assert writer.is_closing() is False
            with pytest.raises(RuntimeError):
                writer.write(b"after eof")
            reply = await reader.read()
        return reply

    assert run(loop, main()) == b"reply:question"
    assert seen == {"data": b"question", "at_eof": True}


def test_writer_close_and_wait_closed(loop):
    server_saw = []

    async def handler(reader, writer):
        server_saw.append(await reader.read())
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await _start(handler)
        async with server:
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write(b"bye")
            assert writer.is_closing() is False
            writer.close()
            assert writer.is_closing() is True
            await writer.wait_closed()
            assert writer.transport.is_closing() is True
            # Closing twice is harmless.
            writer.close()
            await writer.wait_closed()
            assert await reader.read() == b""
            for _ in range(100):
                if server_saw:
                    break
                await asyncio.sleep(0.005)

    run(loop, main())
    assert server_saw == [b"bye"]


def test_server_close_with_live_client(loop):
    async def main():
        server = await _start(_echo_handler)
        addr = server.sockets[0].getsockname()
        reader, writer = await asyncio.open_connection(*addr)
        try:
            writer.write(b"before\n")
            assert await reader.readline() == b"before\n"
            server.close()
            # New connections are refused.
            await _assert_stopped(server, addr)
            # The live connection keeps working.
            writer.write(b"after\n")
            assert await reader.readline() == b"after\n"
            waiter = asyncio.ensure_future(server.wait_closed())
            await asyncio.sleep(0.05)
            if PY312:
                # 3.12+: wait_closed() waits for the active connections.
                assert not waiter.done()
            else:
                assert waiter.done()
        finally:
            writer.close()
            await writer.wait_closed()
        await waiter

    run(loop, main())


def test_async_with_server(loop):
    async def main():
        server = await _start(_echo_handler)
        async with server as s:
            assert s is server
            assert server.is_serving() is True
            addr = server.sockets[0].getsockname()
        await _assert_stopped(server, addr)

    run(loop, main())


def test_serve_forever_cancellation(loop):
    async def main():
        server = await _start(_echo_handler, start_serving=False)
        addr = server.sockets[0].getsockname()
        task = asyncio.ensure_future(server.serve_forever())
        await iterations(3)
        assert server.is_serving() is True
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(b"x\n")
        assert await reader.readline() == b"x\n"
        writer.close()
        await writer.wait_closed()
        # A second serve_forever() is refused while one is running.
        with pytest.raises(RuntimeError):
            await server.serve_forever()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait_closed()
        await _assert_stopped(server, addr)

    run(loop, main())


def test_server_sockets_and_start_serving(loop):
    async def main():
        server = await _start(_echo_handler, start_serving=False)
        async with server:
            socks = server.sockets
            assert isinstance(socks, tuple)
            assert len(socks) == 1
            s = socks[0]
            assert s.family == socket.AF_INET
            assert s.type == socket.SOCK_STREAM
            host, port = s.getsockname()
            assert host == "127.0.0.1" and port != 0
            assert server.is_serving() is False
            assert server.get_loop() is loop
            # Bound but not yet listening.
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(host, port)
            await server.start_serving()
            assert server.is_serving() is True
            await server.start_serving()  # idempotent
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"served\n")
            assert await reader.readline() == b"served\n"
            writer.close()
            await writer.wait_closed()
        assert server.is_serving() is False

    run(loop, main())


def test_start_server_port_in_use(loop):
    async def main():
        server = await _start(_echo_handler)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(OSError) as info:
                await asyncio.start_server(_echo_handler, "127.0.0.1", port, reuse_address=False)
            import errno

            assert info.value.errno == errno.EADDRINUSE
            assert type(info.value) is OSError

    run(loop, main())


@pytest.mark.skipif(not PY313, reason="Server.close_clients/abort_clients are 3.13+")
@pytest.mark.parametrize("method", ["close_clients", "abort_clients"])
def test_close_and_abort_clients(loop, method):
    async def main():
        server = await _start(_echo_handler)
        addr = server.sockets[0].getsockname()
        conns = [await asyncio.open_connection(*addr) for _ in range(3)]
        try:
            for r, w in conns:
                w.write(b"ping\n")
                assert await r.readline() == b"ping\n"
            server.close()
            waiter = asyncio.ensure_future(server.wait_closed())
            await asyncio.sleep(0.02)
            assert not waiter.done()
            getattr(server, method)()
            await waiter
            for r, _ in conns:
                if method == "close_clients":
                    assert await r.read() == b""
                else:
                    try:
                        tail = await r.read()
                    except ConnectionResetError:
                        tail = b""
                    assert tail == b""
        finally:
            for _, w in conns:
                w.close()
                try:
                    await w.wait_closed()
                except ConnectionError:
                    pass

    run(loop, main())


def test_many_concurrent_clients(loop):
    async def client(addr, i):
        reader, writer = await asyncio.open_connection(*addr)
        try:
            msg = f"client {i}\n".encode() * 50
            writer.write(msg)
            await writer.drain()
            return await reader.readexactly(len(msg)) == msg
        finally:
            writer.close()
            await writer.wait_closed()

    async def main():
        server = await _start(_echo_handler)
        async with server:
            addr = server.sockets[0].getsockname()
            return await asyncio.gather(*(client(addr, i) for i in range(50)))

    assert run(loop, main()) == [True] * 50
