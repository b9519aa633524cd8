"""The waiting half of sock_recv / sock_recv_into / sock_sendall
(differential): what happens to the fd registration when a waiting call
completes, fails or is cancelled, and that a reused fd number still works.
The plain behaviour of every sock_* method is in test_net_sock.py."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import pytest
from net_support import close_then_new_pair, iterations, nb_socketpair, run


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into"])
def test_cancelled_wait_then_close_then_fd_reused(loop, method):
    async def main():
        a, b = nb_socketpair()
        fd = a.fileno()
        buf = bytearray(16)
        arg = 16 if method == "sock_recv" else buf
        task = asyncio.ensure_future(getattr(loop, method)(a, arg))
        await iterations(2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # The next socket gets the same fd number: it must not inherit a
        # stale registration.
        c, d = close_then_new_pair(a, b)
        try:
            reused = c.fileno() == fd
            later = asyncio.ensure_future(loop.sock_recv(c, 16))
            await iterations(2)
            d.send(b"fresh")
            return reused, await later, task.cancelled()
        finally:
            c.close()
            d.close()

    reused, data, cancelled = run(loop, main())
    assert (data, cancelled) == (b"fresh", True)
    assert reused  # otherwise the test did not test what it says


def test_sendall_large_payload_waits_for_a_slow_reader(loop):
    payload = os.urandom(8 * 1024 * 1024)

    async def main():
        a, b = nb_socketpair()
        try:
            sender = asyncio.ensure_future(loop.sock_sendall(a, payload))
            received = bytearray()
            while len(received) < len(payload):
                await asyncio.sleep(0.001)
                received += await loop.sock_recv(b, 65536)
            await sender
            return hashlib.sha256(received).hexdigest()
        finally:
            a.close()
            b.close()

    assert run(loop, main(), timeout=30) == hashlib.sha256(payload).hexdigest()


def test_cancelled_sendall_leaves_socket_usable(loop):
    async def main():
        a, b = nb_socketpair()
        try:
            sender = asyncio.ensure_future(loop.sock_sendall(a, b"x" * (16 * 1024 * 1024)))
            await iterations(3)
            assert not sender.done()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            # Drain what the cancelled call got out, then the socket works.
            b.setblocking(True)
            b.settimeout(0.2)
            drained = 0
            try:
                while chunk := b.recv(1 << 20):
                    drained += len(chunk)
            except TimeoutError:
                pass
            await loop.sock_sendall(a, b"after")
            b.settimeout(5)
            tail = b.recv(16)
            return sender.cancelled(), 0 < drained < 16 * 1024 * 1024, tail
        finally:
            a.close()
            b.close()

    assert run(loop, main()) == (True, True, b"after")


def test_waiting_recv_sees_peer_reset(loop):
    async def main():
        a, b = nb_socketpair()
        try:
            task = asyncio.ensure_future(loop.sock_recv(a, 16))
            await iterations(2)
            b.close()
            return await task
        finally:
            a.close()

    # A Unix socketpair reports the peer's close as EOF.
    assert run(loop, main()) == b""


def test_waiting_sendall_sees_broken_pipe(loop):
    async def main():
        a, b = nb_socketpair()
        try:
            task = asyncio.ensure_future(loop.sock_sendall(a, b"x" * (16 * 1024 * 1024)))
            await iterations(3)
            b.close()
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                await task
            return True
        finally:
            a.close()

    assert run(loop, main())


def test_many_concurrent_waits(loop):
    async def main():
        pairs = [nb_socketpair() for _ in range(64)]
        try:
            tasks = [asyncio.ensure_future(loop.sock_recv(a, 100)) for a, _ in pairs]
            await iterations(2)
            for i, (_, b) in enumerate(reversed(pairs)):
                b.send(str(i).encode())
            return await asyncio.gather(*tasks)
        finally:
            for a, b in pairs:
                a.close()
                b.close()

    assert run(loop, main()) == [str(63 - i).encode() for i in range(64)]


def test_short_send_retry_comes_after_the_iteration_s_callbacks(loop):
    # A sock_sendall whose first send was short registers a writer in
    # asyncio, so its retry runs with the next poll's events: after the
    # callbacks queued meanwhile. Here the main task resumes (sleep(0))
    # and its own sock_sendall gets its data out first; the first call,
    # its writer replaced, never completes (asyncio's add_writer rule).
    async def main():
        a, b = nb_socketpair()
        try:
            big = asyncio.ensure_future(loop.sock_sendall(a, b"B" * 3_000_000))
            drained = asyncio.ensure_future(loop.sock_recv(b, 1 << 20))
            await asyncio.sleep(0)
            first = await drained
            await asyncio.wait_for(loop.sock_sendall(a, b"s" * 2000), 5)
            await iterations(3)
            big_done = big.done()
            big.cancel()
            await asyncio.gather(big, return_exceptions=True)
            # What reached the peer after the first read: the rest of the
            # big send's first chunk is not interleaved with "s".
            received = b""
            while True:
                try:
                    received += b.recv(1 << 20)
                except BlockingIOError:
                    break
            return set(first), big_done, received.count(b"s"), received.index(b"s")
        finally:
            a.close()
            b.close()

    first, big_done, small, at = run(loop, main())
    assert first == {ord("B")}
    assert big_done is False
    assert small == 2000
    assert at == 0


def test_sendall_waiting_on_a_full_buffer_fails_only_once_writable(loop):
    # The socket's own write side is shut while its sock_sendall waits for
    # room: asyncio's writer fires only once the socket is writable, and
    # the send then fails with EPIPE; nothing happens before.
    async def main():
        a, b = nb_socketpair()
        try:
            b.send(b"p" * 10)  # `a` is readable; its waiting call is a send
            big = asyncio.ensure_future(loop.sock_sendall(a, b"B" * 3_000_000))
            await asyncio.sleep(0)
            await loop.sock_recv(b, 100)
            a.shutdown(socket.SHUT_WR)
            await asyncio.sleep(0.05)
            pending_after_shutdown = not big.done()
            while True:  # the peer drains the buffer: `a` turns writable
                try:
                    if not b.recv(1 << 20):
                        break
                except BlockingIOError:
                    await asyncio.sleep(0.01)
                    if big.done():
                        break
            error = await asyncio.wait_for(asyncio.gather(big, return_exceptions=True), 5)
            return pending_after_shutdown, type(error[0])
        finally:
            a.close()
            b.close()

    assert run(loop, main()) == (True, BrokenPipeError)
