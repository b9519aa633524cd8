"""aiohttp server and client on tokioloop.

The server is ``web.run_app(app, sock=..., loop=tokioloop.new_event_loop())``
in a child process (the inherited listening socket avoids any port race);
the clients are ``aiohttp.ClientSession`` under ``tokioloop.run``.  Handlers
report their loop, so a fallback to another loop fails the tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import ssl
import sys
import threading

import pytest

aiohttp = pytest.importorskip("aiohttp")
trustme = pytest.importorskip("trustme")

from aiohttp import web
from integration_support import (
    APPS,
    ServerProcess,
    assert_running_tokioloop,
    assert_tokioloop_info,
    child_env,
    http_request,
    listening_socket,
    run,
)


def start_server(kind="tokioloop"):
    sock = listening_socket()
    port = sock.getsockname()[1]
    srv = ServerProcess(
        [sys.executable, APPS / "aiohttp_app.py", sock.fileno(), kind],
        env=child_env(),
        pass_fds=[sock.fileno()],
    )
    srv.__enter__()
    sock.close()  # the child owns the listening socket now
    srv.port = port
    return srv


@pytest.fixture(scope="module")
def server():
    srv = start_server()
    try:
        srv.wait_http(srv.port, "/loop")
        yield srv
    finally:
        srv.__exit__(None, None, None)


def url(server, path):
    return f"http://127.0.0.1:{server.port}{path}"


def test_run_app_and_client_session_on_tokioloop(server):
    async def main():
        async with (
            aiohttp.ClientSession() as session,
            session.get(url(server, "/loop")) as resp,
        ):
            assert resp.status == 200
            data = await resp.json()
        assert_tokioloop_info(data["loop"])
        assert data["secure"] is False

    run(main)
    assert "HOOK startup tokioloop" in server.output()


def test_connection_pool_limit_and_reuse(server):
    async def fetch(session, path):
        async with session.get(url(server, path)) as resp:
            assert resp.status == 200
            return await resp.json()

    async def main():
        connector = aiohttp.TCPConnector(limit=2)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(url(server, "/reset")) as resp:
                await resp.read()
            first = await asyncio.gather(*(fetch(session, "/slow") for _ in range(20)))
            second = await asyncio.gather(*(fetch(session, "/slow") for _ in range(20)))
        return first, second

    first, second = run(main)
    ports_first = {r["port"] for r in first}
    ports_second = {r["port"] for r in second}
    # Never more than two connections at once, and they are kept alive and
    # reused: the second batch rides on the first batch's connections.
    assert len(ports_first) <= 2, ports_first
    assert ports_second <= ports_first, (ports_first, ports_second)
    assert max(r["max_in_flight"] for r in first + second) == 2
    for r in first + second:
        assert_tokioloop_info(r["loop"])


def test_large_post_and_chunked_stream(server):
    async def main():
        body = bytes(range(256)) * (16 * 1024)  # 4 MiB
        async with aiohttp.ClientSession() as session:
            async with session.post(url(server, "/echo"), data=body) as resp:
                assert resp.status == 200
                assert resp.headers["X-Length"] == str(len(body))
                assert await resp.read() == body[::-1]
            async with session.get(url(server, "/stream?chunks=50")) as resp:
                assert resp.headers.get("Transfer-Encoding") == "chunked"
                received = b""
                async for piece in resp.content.iter_any():
                    received += piece
        lines = received.decode().splitlines()
        assert lines[:50] == [f"chunk {i}" for i in range(50)]
        assert lines[50] == "end tokioloop._loop"

    run(main)


def test_file_response_and_range(server, tmp_path):
    """web.FileResponse (loop.sendfile on the server side) and a Range request."""
    data = os.urandom(8 << 20)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)

    async def main():
        async with aiohttp.ClientSession() as session:
            async with session.get(url(server, "/file"), params={"path": str(path)}) as resp:
                assert resp.status == 200
                body = await resp.read()
            assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
            async with session.get(
                url(server, "/file"),
                params={"path": str(path)},
                headers={"Range": "bytes=1000-1999"},
            ) as resp:
                assert resp.status == 206
                assert await resp.read() == data[1000:2000]

    run(main)


def test_slow_reader_flow_control(server):
    """A client that reads slowly makes the server's transport pause and resume."""
    size = 16 << 20

    async def main():
        async with (
            aiohttp.ClientSession() as session,
            session.get(url(server, "/big"), params={"size": size}) as resp,
        ):
            got = 0
            while chunk := await resp.content.read(256 * 1024):
                got += len(chunk)
                if got < (4 << 20):
                    await asyncio.sleep(0.01)  # let the server's buffers fill
        assert got == size

    run(main)


def test_chunked_upload_from_async_generator(server):
    async def body():
        for i in range(200):
            yield bytes([i % 256]) * 10_000

    async def main():
        async with (
            aiohttp.ClientSession() as session,
            session.post(url(server, "/echo"), data=body()) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["X-Length"] == str(200 * 10_000)
            await resp.read()

    run(main)


def test_websocket(server):
    async def main():
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url(server, "/ws")) as ws,
        ):
            hello = await ws.receive_json(timeout=10)
            assert_tokioloop_info(hello["loop"])
            for i in range(20):
                await ws.send_str(f"m{i}")
                assert await ws.receive_str(timeout=10) == f"echo:m{i}"
            await ws.send_bytes(b"abc" * 100_000)
            assert await ws.receive_bytes(timeout=10) == (b"abc" * 100_000)[::-1]
            await ws.send_str("close")
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert msg.data == 4001

    run(main)


def test_client_timeout_then_reuse(server):
    async def main():
        async with aiohttp.ClientSession() as session:
            start = asyncio.get_running_loop().time()
            with pytest.raises(asyncio.TimeoutError):
                async with session.get(
                    url(server, "/sleep?seconds=5"), timeout=aiohttp.ClientTimeout(total=0.2)
                ) as resp:
                    await resp.read()
            assert asyncio.get_running_loop().time() - start < 2
            async with session.get(url(server, "/loop")) as resp:
                assert resp.status == 200

    run(main)


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls():
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


def test_tls_request_to_local_tls_server(tls):
    """An aiohttp TLS server (SockSite) and a ClientSession on one tokioloop."""
    from aiohttp_app import make_app

    server_ctx, client_ctx = tls

    async def main():
        runner = web.AppRunner(make_app())
        await runner.setup()
        sock = listening_socket()
        port = sock.getsockname()[1]
        site = web.SockSite(runner, sock, ssl_context=server_ctx)
        await site.start()
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"https://127.0.0.1:{port}/loop", ssl=client_ctx) as resp:
                    assert resp.status == 200
                    data = await resp.json()
                assert data["secure"] is True
                assert_tokioloop_info(data["loop"])
                # Sequential requests share one pooled TLS connection.
                ports = set()
                for _ in range(20):
                    async with session.get(
                        f"https://localhost:{port}/slow?seconds=0", ssl=client_ctx
                    ) as resp:
                        assert resp.status == 200
                        ports.add((await resp.json())["port"])
                assert len(ports) == 1, ports
                # A client that does not trust the CA refuses the server.
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    async with session.get(
                        f"https://127.0.0.1:{port}/loop", ssl=ssl.create_default_context()
                    ):
                        pass
        finally:
            await runner.cleanup()
        assert_running_tokioloop()

    run(main)


# ---------------------------------------------------------------- shutdown


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("kind", ["asyncio", "tokioloop"])
def test_run_app_graceful_shutdown_on_signal(kind, sig):
    """run_app's signal handlers (loop.add_signal_handler) stop it gracefully."""
    srv = start_server(kind)
    try:
        srv.wait_http(srv.port, "/loop")
        in_flight = []
        t = threading.Thread(
            target=lambda: in_flight.append(
                http_request(srv.port, "/sleep?seconds=0.5&tag=inflight")[0]
            )
        )
        t.start()
        srv.wait_output("SLEEPING inflight")
        rc = srv.signal_and_wait(sig)
        t.join(10)
        out = srv.output()
    finally:
        srv.__exit__(None, None, None)
    module = "tokioloop" if kind == "tokioloop" else "asyncio"
    assert rc == 0, out
    assert in_flight == [200], out
    for hook in ("startup", "shutdown", "cleanup"):
        assert f"HOOK {hook} {module}" in out, out
    assert "EXITED run_app" in out, out
