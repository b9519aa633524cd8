"""pytest-asyncio 1.x on tokioloop through the ``event_loop_policy`` fixture.

Overriding ``event_loop_policy`` is how pytest-asyncio 1.0-1.3 documents
running tests on another loop (1.4 still honours it but deprecates it in
favour of the ``pytest_asyncio_loop_factories`` hook, which
``pytest_asyncio_hook/`` covers).  Every test asserts it runs on tokioloop.
"""

from __future__ import annotations

import asyncio

import pytest

pytest_asyncio = pytest.importorskip("pytest_asyncio")

import tokioloop
from integration_support import assert_running_tokioloop

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings(
        'ignore:Overriding the "event_loop_policy" fixture is deprecated'
        ":pytest.PytestDeprecationWarning"
    ),
]


@pytest.fixture(scope="module")
def event_loop_policy():
    return tokioloop.EventLoopPolicy()


@pytest_asyncio.fixture
async def echo_server():
    """An asyncio streams echo server, set up on the test's tokioloop loop."""
    assert_running_tokioloop()
    handlers = []

    async def handle(reader, writer):
        handlers.append(asyncio.current_task())
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    # Let the handlers finish: one still running when the loop closes is
    # cancelled, which 3.11's streams log as an error.
    await asyncio.wait_for(asyncio.gather(*handlers), 10)
    server.close()
    await server.wait_closed()


async def test_sleep_runs_on_tokioloop():
    assert_running_tokioloop()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(0.05)
    assert loop.time() - start >= 0.04


async def test_tasks_and_gather():
    assert_running_tokioloop()

    async def square(i):
        await asyncio.sleep(0.001 * (10 - i))
        return i * i

    tasks = [asyncio.create_task(square(i)) for i in range(10)]
    assert await asyncio.gather(*tasks) == [i * i for i in range(10)]
    # Cancellation and timeouts.
    slow = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.sleep(10), 0.01)


async def test_socket_echo(echo_server):
    assert_running_tokioloop()
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server)
    payload = bytes(range(256)) * 1024
    writer.write(payload)
    await writer.drain()
    received = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    assert received == payload
    writer.close()
    await writer.wait_closed()


async def test_to_thread_returns_to_tokioloop():
    import threading

    name = await asyncio.to_thread(lambda: threading.current_thread().name)
    assert name != threading.main_thread().name
    assert_running_tokioloop()


_module_loops = []


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scoped_loop_first():
    assert_running_tokioloop()
    _module_loops.append(asyncio.get_running_loop())


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scoped_loop_second():
    assert_running_tokioloop()
    assert _module_loops == [asyncio.get_running_loop()]
