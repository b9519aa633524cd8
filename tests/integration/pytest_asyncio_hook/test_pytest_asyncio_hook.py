"""pytest-asyncio on tokioloop through the ``pytest_asyncio_loop_factories``
hook (pytest-asyncio >= 1.4; see this directory's conftest.py)."""

from __future__ import annotations

import asyncio

import pytest

pytest_asyncio = pytest.importorskip("pytest_asyncio")

import tokioloop
from integration_support import assert_running_tokioloop

_version = tuple(int(p) for p in pytest_asyncio.__version__.split(".")[:2] if p.isdigit())
if _version < (1, 4):
    pytest.skip(
        "pytest_asyncio_loop_factories needs pytest-asyncio >= 1.4", allow_module_level=True
    )


@pytest_asyncio.fixture
async def queue_pair():
    assert_running_tokioloop()
    return asyncio.Queue(), asyncio.Queue()


@pytest.mark.asyncio
async def test_hook_loop_is_tokioloop():
    assert_running_tokioloop()
    assert isinstance(asyncio.get_running_loop(), tokioloop.Loop)


@pytest.mark.asyncio
async def test_async_fixture_shares_the_loop(queue_pair):
    inbox, outbox = queue_pair

    async def worker():
        while (item := await inbox.get()) is not None:
            await outbox.put(item * 2)

    task = asyncio.create_task(worker())
    for i in range(100):
        inbox.put_nowait(i)
    inbox.put_nowait(None)
    await asyncio.wait_for(task, 5)
    assert [outbox.get_nowait() for _ in range(100)] == [i * 2 for i in range(100)]


@pytest.mark.asyncio
async def test_udp_round_trip():
    assert_running_tokioloop()
    loop = asyncio.get_running_loop()
    received = loop.create_future()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data.upper(), addr)

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            received.set_result(data)

    server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port = server.get_extra_info("sockname")[1]
    client, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    try:
        client.sendto(b"ping")
        assert await asyncio.wait_for(received, 5) == b"PING"
    finally:
        client.close()
        server.close()


@pytest.mark.asyncio(loop_factories=["tokioloop"])
async def test_marker_selects_the_tokioloop_factory():
    assert_running_tokioloop()
