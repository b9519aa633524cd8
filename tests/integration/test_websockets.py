"""websockets (the asyncio implementation) with server and client both on
tokioloop."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest

websockets = pytest.importorskip("websockets")
pytest.importorskip("websockets.asyncio.server")
trustme = pytest.importorskip("trustme")

from integration_support import (
    assert_running_tokioloop,
    assert_tokioloop_info,
    run,
    running_loop_info,
)
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


async def handler(ws):
    await ws.send(json.dumps(running_loop_info()))
    async for message in ws:
        if message == "close":
            await ws.close(code=4002, reason="done")
            return
        if isinstance(message, str):
            await ws.send("echo:" + message)
        else:
            await ws.send(message[::-1])


def start(**kwargs):
    return serve(handler, "127.0.0.1", 0, max_size=8 << 20, **kwargs)


def port_of(server):
    return server.sockets[0].getsockname()[1]


def test_echo_text_and_binary():
    async def main():
        async with start() as server, connect(f"ws://127.0.0.1:{port_of(server)}") as ws:
            assert_tokioloop_info(json.loads(await ws.recv()))
            for i in range(100):
                await ws.send(f"m{i}")
                assert await ws.recv() == f"echo:m{i}"
            await ws.send(b"\x00\x01\x02")
            assert await ws.recv() == b"\x02\x01\x00"
            await ws.send("close")
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 4002
            assert info.value.rcvd.reason == "done"

    run(main)


def test_large_messages_and_fragments():
    async def main():
        async with (
            start() as server,
            connect(f"ws://127.0.0.1:{port_of(server)}", max_size=8 << 20) as ws,
        ):
            await ws.recv()
            big = bytes(range(256)) * (4 * 4096)  # 4 MiB
            await ws.send(big)
            assert await ws.recv() == big[::-1]

            # A fragmented text message (sent as an async iterator).
            async def parts():
                for i in range(50):
                    yield f"part{i};"

            await ws.send(parts())
            assert await ws.recv() == "echo:" + "".join(f"part{i};" for i in range(50))

    run(main)


def test_many_concurrent_clients_and_ping():
    async def client(port, n):
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.recv()
            latency = await asyncio.wait_for(await ws.ping(), 5)
            assert latency is None or latency >= 0
            for i in range(10):
                await ws.send(f"{n}-{i}")
                assert await ws.recv() == f"echo:{n}-{i}"
            return n

    async def main():
        async with start() as server:
            port = port_of(server)
            done = await asyncio.gather(*(client(port, n) for n in range(30)))
            assert sorted(done) == list(range(30))
            assert_running_tokioloop()

    run(main)


def test_server_shutdown_closes_clients():
    async def main():
        server = await start()
        port = port_of(server)
        ws = await connect(f"ws://127.0.0.1:{port}")
        await ws.recv()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd.code == 1001  # going away

    run(main)


def test_wss_with_trustme():
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def main():
        async with start(ssl=server_ctx) as server:
            uri = f"wss://localhost:{port_of(server)}"
            async with connect(uri, ssl=client_ctx) as ws:
                assert_tokioloop_info(json.loads(await ws.recv()))
                await ws.send("secure")
                assert await ws.recv() == "echo:secure"

    run(main)
