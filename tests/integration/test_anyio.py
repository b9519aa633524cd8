"""anyio's asyncio backend on tokioloop.

Two documented ways: ``anyio.run(..., backend="asyncio",
backend_options={"loop_factory": tokioloop.new_event_loop})`` and, for
anyio's pytest plugin, an ``anyio_backend`` fixture returning the same
backend options.  Every scenario asserts it runs on tokioloop.
"""

from __future__ import annotations

import os
import signal
import ssl
import sys
import threading
import time

import pytest

anyio = pytest.importorskip("anyio")
trustme = pytest.importorskip("trustme")

import tokioloop
from anyio.streams.tls import TLSListener, TLSStream
from integration_support import assert_running_tokioloop

BACKEND_OPTIONS = {"loop_factory": tokioloop.new_event_loop}


def anyio_run(fn, *args):
    async def main():
        assert_running_tokioloop()
        with anyio.fail_after(30):
            return await fn(*args)

    return anyio.run(main, backend="asyncio", backend_options=BACKEND_OPTIONS)


def test_task_group_and_cancel_scopes():
    async def main():
        results = []

        async def worker(i, task_status=anyio.TASK_STATUS_IGNORED):
            task_status.started(i)
            await anyio.sleep(0.001 * i)
            results.append(i)

        async with anyio.create_task_group() as tg:
            assert await tg.start(worker, 99) == 99
            for i in range(20):
                tg.start_soon(worker, i)
        assert sorted(results) == [*range(20), 99]

        with anyio.move_on_after(0.05) as scope:
            await anyio.sleep(10)
        assert scope.cancelled_caught

        with pytest.raises(TimeoutError), anyio.fail_after(0.05):
            await anyio.sleep(10)

        # An error in one child cancels its siblings.
        cancelled = []

        async def sleeper():
            try:
                await anyio.sleep(10)
            except anyio.get_cancelled_exc_class():
                cancelled.append(True)
                raise

        async def boom():
            await anyio.sleep(0.01)
            raise ValueError("boom")

        with pytest.raises(BaseException) as info:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sleeper)
                tg.start_soon(boom)
        assert "boom" in repr(info.value)
        assert cancelled == [True]
        assert_running_tokioloop()

    anyio_run(main)


def test_tcp_streams_plain_and_tls():
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def echo(stream):
        async with stream:
            async for chunk in stream:
                await stream.send(chunk)

    async def round_trip(stream, payload):
        async with stream:
            received = bytearray()

            async def reader():
                while len(received) < len(payload):
                    received.extend(await stream.receive())

            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                for i in range(0, len(payload), 65536):
                    await stream.send(payload[i : i + 65536])
            return bytes(received)

    async def main():
        payload = os.urandom(1 << 20)
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tls_listener = TLSListener(
            await anyio.create_tcp_listener(local_host="127.0.0.1"), server_ctx
        )
        tls_port = tls_listener.listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, echo)
            tg.start_soon(tls_listener.serve, echo)
            plain = await anyio.connect_tcp("127.0.0.1", port)
            assert await round_trip(plain, payload) == payload
            secure = await anyio.connect_tcp(
                "localhost", tls_port, ssl_context=client_ctx, tls_standard_compatible=False
            )
            assert isinstance(secure, TLSStream)
            assert secure.extra(anyio.streams.tls.TLSAttribute.tls_version).startswith("TLS")
            assert await round_trip(secure, payload) == payload
            tg.cancel_scope.cancel()
        assert_running_tokioloop()

    anyio_run(main)


def test_udp_socket():
    async def main():
        async with (
            await anyio.create_udp_socket(local_host="127.0.0.1") as server,
            await anyio.create_udp_socket(local_host="127.0.0.1") as client,
        ):
            port = server.extra(anyio.abc.SocketAttribute.local_port)
            await client.sendto(b"ping", "127.0.0.1", port)
            data, addr = await server.receive()
            assert data == b"ping"
            await server.sendto(b"pong", *addr)
            assert (await client.receive())[0] == b"pong"

    anyio_run(main)


def test_to_thread_and_from_thread():
    async def main():
        loop_thread = threading.current_thread()

        async def on_loop(x):
            assert_running_tokioloop()
            assert threading.current_thread() is loop_thread
            await anyio.sleep(0.001)
            return x * 2

        def in_thread(x):
            assert threading.current_thread() is not loop_thread
            time.sleep(0.01)
            return anyio.from_thread.run(on_loop, x) + anyio.from_thread.run_sync(lambda: 1)

        results = []
        limiter = anyio.CapacityLimiter(4)

        async def one(i):
            results.append(await anyio.to_thread.run_sync(in_thread, i, limiter=limiter))

        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(one, i)
        assert sorted(results) == [i * 2 + 1 for i in range(16)]

        path = anyio.Path(os.devnull)
        assert await path.exists()

    anyio_run(main)


def test_memory_streams_and_sync_primitives():
    async def main():
        send, receive = anyio.create_memory_object_stream[int](max_buffer_size=5)
        event = anyio.Event()
        total = []

        async def producer():
            async with send:
                for i in range(100):
                    await send.send(i)
            event.set()

        async def consumer():
            async with receive:
                async for item in receive:
                    total.append(item)

        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            tg.start_soon(consumer)
        await event.wait()
        assert total == list(range(100))

    anyio_run(main)


def test_run_process():
    async def main():
        result = await anyio.run_process(
            [sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"],
            input=b"hello from tokioloop",
        )
        assert result.returncode == 0
        assert result.stdout.strip() == b"HELLO FROM TOKIOLOOP"

    anyio_run(main)


def test_signal_receiver():
    async def main():
        with anyio.open_signal_receiver(signal.SIGUSR1) as signals:
            os.kill(os.getpid(), signal.SIGUSR1)
            with anyio.fail_after(5):
                async for signum in signals:
                    assert signum == signal.SIGUSR1
                    break

    anyio_run(main)


# ------------------------------------------------ anyio's own pytest plugin


@pytest.fixture
def anyio_backend():
    return "asyncio", BACKEND_OPTIONS


@pytest.mark.anyio
async def test_pytest_plugin_runs_on_tokioloop():
    assert_running_tokioloop()
    with anyio.fail_after(5):
        await anyio.sleep(0.01)


@pytest.fixture
async def anyio_listener(anyio_backend):
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener:
        yield listener


@pytest.mark.anyio
async def test_pytest_plugin_async_fixture(anyio_listener):
    assert_running_tokioloop()
    port = anyio_listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream):
        async with stream:
            await stream.send(b"hi:" + await stream.receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio_listener.serve, handle)
        with anyio.fail_after(5):
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await client.send(b"there")
                assert await client.receive() == b"hi:there"
        tg.cancel_scope.cancel()
