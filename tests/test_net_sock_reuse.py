"""sock_recv / sock_recv_into / sock_sendall and the fd afterwards
(differential): a socket used with the sock_* methods must stay usable with
every other API (add_reader, transports, another sock_* call), a closed
socket's fd number must serve a new socket, and errors must be asyncio's.
See test_net_sock_waits.py for what happens while a call waits."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket

import pytest
from net_support import (
    close_then_new_pair,
    iterations,
    nb_socketpair,
    run,
    set_linger_zero,
    tcp_listener,
)


class _Collect(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.got = asyncio.Event()

    def data_received(self, data):
        self.data += data
        self.got.set()


async def _tcp_pair(loop):
    """A connected pair of non-blocking TCP sockets."""
    lsock = tcp_listener()
    try:
        client = socket.socket()
        client.setblocking(False)
        await loop.sock_connect(client, lsock.getsockname())
        server, _ = await loop.sock_accept(lsock)
        server.setblocking(False)
        return client, server
    finally:
        lsock.close()


def test_cancelled_recv_then_same_socket_reused(loop):
    async def main():
        a, b = nb_socketpair()
        try:
            results = []
            for _ in range(3):
                task = asyncio.ensure_future(loop.sock_recv(a, 16))
                await iterations(2)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                results.append(task.cancelled())
            later = asyncio.ensure_future(loop.sock_recv(a, 16))
            await iterations(2)
            b.send(b"after")
            results.append(await later)
            # And the reverse direction still works on the same socket.
            await loop.sock_sendall(a, b"back")
            results.append(await loop.sock_recv(b, 16))
            return results
        finally:
            a.close()
            b.close()

    assert run(loop, main()) == [True, True, True, b"after", b"back"]


@pytest.mark.parametrize("then", ["sock_recv", "add_reader", "transport"])
def test_closed_after_wait_fd_reused_by_new_socket(loop, then):
    async def main():
        a, b = nb_socketpair()
        fd = a.fileno()
        # A completed wait, then close.
        waiter = asyncio.ensure_future(loop.sock_recv(a, 16))
        await iterations(2)
        b.send(b"one")
        first = await waiter
        c, d = close_then_new_pair(a, b)
        try:
            reused = c.fileno() == fd
            if then == "sock_recv":
                later = asyncio.ensure_future(loop.sock_recv(c, 16))
                await iterations(2)
                d.send(b"two")
                second = await later
            elif then == "add_reader":
                got = loop.create_future()
                loop.add_reader(c, lambda: got.done() or got.set_result(c.recv(16)))
                await iterations(2)
                d.send(b"two")
                second = await got
                assert loop.remove_reader(c)
            else:
                proto = _Collect()
                tr, _ = await loop.connect_accepted_socket(lambda: proto, c)
                d.send(b"two")
                await asyncio.wait_for(proto.got.wait(), 5)
                second = bytes(proto.data)
                tr.close()
                await iterations(2)
            return reused, first, second
        finally:
            c.close()
            d.close()

    assert run(loop, main()) == (True, b"one", b"two")


@pytest.mark.parametrize("how", ["connect_accepted_socket", "create_connection"])
def test_transport_on_socket_used_with_sock_recv(loop, how):
    async def main():
        client, server = await _tcp_pair(loop)
        try:
            # Both directions once with sock_*, with a wait on each side.
            waiter = asyncio.ensure_future(loop.sock_recv(server, 16))
            await iterations(2)
            await loop.sock_sendall(client, b"ping")
            got = [await waiter]
            await loop.sock_sendall(server, b"pong")
            got.append(await loop.sock_recv(client, 16))
            proto = _Collect()
            if how == "connect_accepted_socket":
                tr, _ = await loop.connect_accepted_socket(lambda: proto, server)
                await loop.sock_sendall(client, b"via transport")
            else:
                tr, _ = await loop.create_connection(lambda: proto, sock=client)
                await loop.sock_sendall(server, b"via transport")
            await asyncio.wait_for(proto.got.wait(), 5)
            got.append(bytes(proto.data))
            tr.close()
            await iterations(2)
            return got
        finally:
            client.close()
            server.close()

    assert run(loop, main()) == [b"ping", b"pong", b"via transport"]


def test_add_reader_on_socket_used_with_sock_recv(loop):
    async def main():
        a, b = nb_socketpair()
        try:
            waiter = asyncio.ensure_future(loop.sock_recv(a, 16))
            await iterations(2)
            b.send(b"one")
            got = [await waiter]
            fired = loop.create_future()
            loop.add_reader(a, lambda: fired.done() or fired.set_result(a.recv(16)))
            b.send(b"two")
            got.append(await fired)
            got.append(loop.remove_reader(a))
            # sock_recv works again once the reader is gone.
            waiter = asyncio.ensure_future(loop.sock_recv(a, 16))
            await iterations(2)
            b.send(b"three")
            got.append(await waiter)
            return got
        finally:
            a.close()
            b.close()

    assert run(loop, main()) == [b"one", b"two", True, b"three"]


def test_add_writer_while_sock_recv_waits(loop):
    async def main():
        a, b = nb_socketpair()
        try:
            waiter = asyncio.ensure_future(loop.sock_recv(a, 16))
            await iterations(2)
            writable = loop.create_future()
            loop.add_writer(a, lambda: writable.done() or writable.set_result(True))
            await writable
            removed = loop.remove_writer(a)
            b.send(b"data")
            return removed, await waiter
        finally:
            a.close()
            b.close()

    assert run(loop, main()) == (True, b"data")


def test_remove_reader_while_sock_recv_waits(loop):
    async def main():
        a, b = nb_socketpair()
        try:
            waiter = asyncio.ensure_future(loop.sock_recv(a, 16))
            await iterations(2)
            removed = loop.remove_reader(a)
            b.send(b"data")
            await iterations(4)
            pending = not waiter.done()
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            # The data is still there for the next call.
            return removed, pending, await loop.sock_recv(a, 16)
        finally:
            a.close()
            b.close()

    assert run(loop, main()) == (True, True, b"data")


def test_second_sock_recv_replaces_the_first(loop):
    async def main():
        a, b = nb_socketpair()
        try:
            first = asyncio.ensure_future(loop.sock_recv(a, 16))
            await iterations(2)
            second = asyncio.ensure_future(loop.sock_recv(a, 16))
            await iterations(2)
            b.send(b"data")
            got = await second
            await iterations(4)
            first_pending = not first.done()
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            # Cancelling the replaced call must not disturb the next one.
            third = asyncio.ensure_future(loop.sock_recv(a, 16))
            await iterations(2)
            b.send(b"more")
            return got, first_pending, await third
        finally:
            a.close()
            b.close()

    assert run(loop, main()) == (b"data", True, b"more")


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into", "sock_sendall"])
def test_closed_socket_raises_ebadf(loop, method):
    async def main():
        a, b = nb_socketpair()
        a.close()
        try:
            arg = {"sock_recv": 16, "sock_recv_into": bytearray(16), "sock_sendall": b"x"}
            try:
                await getattr(loop, method)(a, arg[method])
            except OSError as exc:
                return type(exc), exc.errno, str(exc)
            return None
        finally:
            b.close()

    assert run(loop, main()) == (OSError, errno.EBADF, "[Errno 9] Bad file descriptor")


@pytest.mark.parametrize("waiting", [False, True])
def test_peer_reset_raises_connection_reset(loop, waiting):
    async def main():
        client, server = await _tcp_pair(loop)
        try:
            set_linger_zero(client)
            if waiting:
                task = asyncio.ensure_future(loop.sock_recv(server, 16))
                await iterations(2)
                client.close()
            else:
                client.close()
                await asyncio.sleep(0.05)
                task = asyncio.ensure_future(loop.sock_recv(server, 16))
            try:
                await task
            except OSError as exc:
                return type(exc), exc.errno
            return None
        finally:
            server.close()

    assert run(loop, main()) == (ConnectionResetError, errno.ECONNRESET)


@pytest.mark.parametrize("kind", ["bytearray", "memoryview"])
@pytest.mark.parametrize("waiting", [False, True])
def test_sock_recv_into_buffers(loop, kind, waiting):
    async def main():
        a, b = nb_socketpair()
        try:
            storage = bytearray(b"." * 12)
            buf = storage if kind == "bytearray" else memoryview(storage)[2:10]
            if waiting:
                task = asyncio.ensure_future(loop.sock_recv_into(a, buf))
                await iterations(2)
                b.send(b"0123456789abcdef")
                n = await task
            else:
                b.send(b"0123456789abcdef")
                n = await loop.sock_recv_into(a, buf)
            return n, bytes(storage)
        finally:
            a.close()
            b.close()

    expected = {
        "bytearray": (12, b"0123456789ab"),
        "memoryview": (8, b"..01234567.."),
    }
    assert run(loop, main()) == expected[kind]


def test_sock_recv_into_readonly_buffer_is_rejected(loop):
    async def main():
        a, b = nb_socketpair()
        try:
            b.send(b"x")
            try:
                await loop.sock_recv_into(a, b"immutable")
            except TypeError as exc:
                return str(exc)
            return None
        finally:
            a.close()
            b.close()

    assert "bytes" in run(loop, main())


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
def test_sock_sendall_large_then_cancel_midway(loop, kind):
    size = 16 * 1024 * 1024
    raw = bytes(range(256)) * (size // 256)
    data = {"bytes": raw, "bytearray": bytearray(raw), "memoryview": memoryview(raw)}[kind]

    async def main():
        a, b = nb_socketpair()
        try:
            sender = asyncio.ensure_future(loop.sock_sendall(a, data))
            received = bytearray()
            while len(received) < 1024 * 1024:
                received += await loop.sock_recv(b, 65536)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            # Whatever went out before the cancel arrives intact and in order.
            b.setblocking(True)
            b.settimeout(0.2)
            try:
                while chunk := b.recv(1 << 20):
                    received += chunk
            except TimeoutError:
                pass
            intact = bytes(received) == raw[: len(received)]
            await loop.sock_sendall(a, b"tail")
            b.settimeout(5)
            return sender.cancelled(), intact, len(received) < size, b.recv(16)
        finally:
            a.close()
            b.close()

    assert run(loop, main(), timeout=30) == (True, True, True, b"tail")


def test_socket_subclass_and_timeout_socket(loop):
    class Sub(socket.socket):
        pass

    async def main():
        a, b = nb_socketpair()
        sub = Sub(fileno=a.detach())
        sub.setblocking(False)
        try:
            waiter = asyncio.ensure_future(loop.sock_recv(sub, 16))
            await iterations(2)
            b.send(b"sub")
            got = [await waiter]
            # A socket with a timeout and data ready: asyncio's own path.
            b.settimeout(1.0)
            await loop.sock_sendall(sub, b"timeout")
            got.append(await loop.sock_recv(b, 16))
            return got
        finally:
            sub.close()
            b.close()

    assert run(loop, main()) == [b"sub", b"timeout"]


@pytest.mark.parametrize("method", ["sock_recv", "sock_sendall"])
def test_blocking_socket_rejected_in_debug_mode(loop, method):
    async def main():
        a, b = nb_socketpair()
        a.setblocking(True)
        try:
            arg = 16 if method == "sock_recv" else b"x"
            try:
                await getattr(loop, method)(a, arg)
            except ValueError as exc:
                return str(exc)
            return None
        finally:
            a.close()
            b.close()

    loop.set_debug(True)
    assert run(loop, main()) == "the socket must be non-blocking"


@pytest.mark.parametrize("how", ["detach", "collect"])
def test_same_fd_new_socket_object(loop, how):
    """The fd stays open but its socket object changes (detach and wrap
    again), or the object is collected and the number reused."""

    async def main():
        gc.collect()  # no garbage socket may free a lower fd number later
        a, b = nb_socketpair()
        try:
            waiter = asyncio.ensure_future(loop.sock_recv(a, 16))
            await iterations(2)
            b.send(b"one")
            got = [await waiter]
            fd = a.fileno()
            if how == "detach":
                c = socket.socket(fileno=a.detach())
            else:
                a.close()
                del a
                gc.collect()
                c, d = nb_socketpair()
                b.close()
                b = d
            c.setblocking(False)
            try:
                waiter = asyncio.ensure_future(loop.sock_recv(c, 16))
                await iterations(2)
                b.send(b"two")
                got.append(await waiter)
                got.append(c.fileno() == fd)
            finally:
                c.close()
            return got
        finally:
            b.close()

    assert run(loop, main()) == [b"one", b"two", True]


@pytest.mark.parametrize("second", ["same", "wrapped"])
def test_recv_and_sendall_wait_at_once(loop, second):
    """A read and a write waiting on one fd together, through the same socket
    object or a second object wrapping the same fd."""
    payload = bytes(range(256)) * (8 * 1024 * 1024 // 256)

    async def main():
        a, b = nb_socketpair()
        other = a if second == "same" else socket.socket(fileno=a.fileno())
        other.setblocking(False)
        try:
            reader = asyncio.ensure_future(loop.sock_recv(a, 16))
            sender = asyncio.ensure_future(loop.sock_sendall(other, payload))
            await iterations(3)
            assert not reader.done() and not sender.done()
            received = bytearray()
            while len(received) < len(payload):
                received += await loop.sock_recv(b, 1 << 20)
            await sender
            await loop.sock_sendall(b, b"reply")
            return await reader, bytes(received) == payload
        finally:
            if other is not a:
                other.detach()
            a.close()
            b.close()

    assert run(loop, main(), timeout=30) == (b"reply", True)


def test_many_sockets_closed_after_a_wait_do_not_grow_memory(loop):
    """Each socket waits once and is closed without telling the loop; the
    loop's bookkeeping for it must go away (a registration kept by the
    reactor after its socket closed once cost ~430 bytes per socket)."""

    async def churn(n):
        for _ in range(n):
            a, b = nb_socketpair()
            waiter = asyncio.ensure_future(loop.sock_recv(a, 16))
            await asyncio.sleep(0)
            b.send(b"x")
            await waiter
            a.close()
            b.close()

    def rss_kib():
        gc.collect()
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)

    async def main():
        await churn(5000)  # warm-up: allocator arenas, caches
        before = rss_kib()
        await churn(20000)
        return rss_kib() - before

    # 20,000 leaked registrations would be ~8 MiB.
    assert run(loop, main(), timeout=60) < 3 * 1024


def test_add_writer_replaces_a_waiting_sock_sendall(loop):
    """asyncio: the new writer replaces sock_sendall's, whose future then
    never completes; reading still works on the same socket."""

    async def main():
        a, b = nb_socketpair()
        try:
            sender = asyncio.ensure_future(loop.sock_sendall(a, b"x" * (16 * 1024 * 1024)))
            await iterations(3)
            writable = loop.create_future()
            loop.add_writer(a, lambda: writable.done() or writable.set_result(True))
            # Make room so the writer fires.
            b.setblocking(True)
            b.settimeout(0.2)
            try:
                while b.recv(1 << 20):
                    pass
            except TimeoutError:
                pass
            fired = await asyncio.wait_for(writable, 5)
            removed = loop.remove_writer(a)
            await iterations(4)
            pending = not sender.done()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            b.setblocking(False)
            b.send(b"back")
            return fired, removed, pending, await loop.sock_recv(a, 16)
        finally:
            a.close()
            b.close()

    assert run(loop, main()) == (True, True, True, b"back")
