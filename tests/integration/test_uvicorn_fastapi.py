"""uvicorn + FastAPI served on tokioloop.

uvicorn (>= 0.36) takes ``--loop module:callable`` and uses the callable as
its loop factory, so ``--loop tokioloop:new_event_loop`` runs the server on
tokioloop.  Every endpoint reports the loop its handler ran on, and the tests
assert it is tokioloop: a silent fallback to asyncio or uvloop fails them.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
import sys
import threading
import time
import uuid

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
websockets = pytest.importorskip("websockets")
pytest.importorskip("websockets.sync.client")

from integration_support import (
    UVICORN_LOOP,
    ServerProcess,
    assert_running_tokioloop,
    assert_tokioloop_info,
    free_port,
    http_request,
    listening_socket,
    run,
)
from websockets.asyncio.client import connect as ws_connect_async
from websockets.sync.client import connect as ws_connect_sync


def uvicorn_args(port, *, loop="tokioloop", http_impl="auto", extra=()):
    options = (
        f"--host 127.0.0.1 --port {port} --loop {UVICORN_LOOP[loop]} --http {http_impl}"
        " --lifespan on --timeout-graceful-shutdown 5 --log-level info"
    )
    return [sys.executable, "-m", "uvicorn", "fastapi_app:app", *options.split(), *extra]


@pytest.fixture(
    scope="module",
    params=[("httptools", "websockets"), ("h11", "websockets-sansio")],
    ids=["httptools", "h11"],
)
def server(request):
    """One uvicorn process per HTTP (and WebSocket) implementation, on tokioloop."""
    port = free_port()
    http_impl, ws_impl = request.param
    extra = ["--ws", ws_impl, "--timeout-keep-alive", "1"]
    with ServerProcess(uvicorn_args(port, http_impl=http_impl, extra=extra)) as srv:
        srv.wait_http(port, "/loop")
        srv.port = port
        yield srv


def get_json(port, path):
    status, _, body = http_request(port, path)
    assert status == 200, body
    return json.loads(body)


def test_cli_loop_is_tokioloop(server):
    data = get_json(server.port, "/loop")
    assert_tokioloop_info(data["loop"])
    # The lifespan ran on the same kind of loop as the handlers.
    assert_tokioloop_info(data["lifespan_loop"])
    assert "LIFESPAN startup tokioloop" in server.output()


def test_post_large_body(server):
    body = b"x" * (1 << 20)
    status, _, resp = http_request(server.port, "/echo", method="POST", body=body)
    assert status == 200
    data = json.loads(resp)
    assert data["length"] == len(body)
    assert_tokioloop_info(data["loop"])


def test_keep_alive_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        ports = set()
        for _ in range(30):
            conn.request("GET", "/peer")
            resp = conn.getresponse()
            assert resp.status == 200
            ports.add(json.loads(resp.read())["port"])
        assert len(ports) == 1, "one keep-alive connection carried every request"
    finally:
        conn.close()


def test_concurrent_requests(server):
    results = []

    def worker():
        results.append(http_request(server.port, "/sleep?seconds=0.4")[0])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    elapsed = time.monotonic() - start
    assert results == [200] * 8
    # Served concurrently by the one loop, not one after the other (3.2 s).
    assert elapsed < 2.5, elapsed


def test_pipelined_requests(server):
    """Ten requests in one write; uvicorn answers them in order."""
    request = b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(request * 10)
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b"HTTP/1.1 200") < 10 or not data.endswith(b"}"):
            assert time.monotonic() < deadline, data
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 10


def test_large_download_slow_reader(server):
    """A slowly read 16 MiB streaming response: transport pause/resume."""
    size = 16 << 20
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        conn.request("GET", f"/big?size={size}")
        resp = conn.getresponse()
        assert resp.status == 200
        got = 0
        while chunk := resp.read(256 * 1024):
            got += len(chunk)
            if got < (4 << 20):
                time.sleep(0.01)
    finally:
        conn.close()
    assert got == size


def test_keep_alive_timeout_closes_idle_connection(server):
    """--timeout-keep-alive 1: the server closes an idle connection (a timer
    closing a transport)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        start = time.monotonic()
        assert s.recv(65536) == b""  # EOF: closed by the server
        assert 0.5 < time.monotonic() - start < 5


def test_sync_endpoint_runs_in_threadpool(server):
    data = get_json(server.port, "/sync")
    assert data["main"] is False


def test_streaming_response(server):
    token = uuid.uuid4().hex
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", f"/stream?token={token}&chunks=5")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("transfer-encoding") == "chunked"
        # The first chunk arrives while the handler is still waiting for
        # /release: the response really is streamed.
        assert resp.read1() == b"first\n"
        assert http_request(server.port, f"/release?token={token}")[0] == 200
        rest = resp.read()
    finally:
        conn.close()
    lines = rest.decode().splitlines()
    assert lines[:5] == [f"chunk {i}" for i in range(5)]
    assert lines[5].startswith("last tokioloop"), lines


def test_websocket_sync_client(server):
    with ws_connect_sync(f"ws://127.0.0.1:{server.port}/ws", open_timeout=10) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert_tokioloop_info(hello["loop"])
        for i in range(20):
            ws.send(f"m{i}")
            assert ws.recv(timeout=10) == f"echo:m{i}"
        ws.send(b"\x01\x02\x03")
        assert ws.recv(timeout=10) == b"\x03\x02\x01"
        ws.send("close")
        with pytest.raises(websockets.ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd.code == 4000


def test_websocket_async_client_on_tokioloop(server):
    async def main():
        async with ws_connect_async(f"ws://127.0.0.1:{server.port}/ws") as ws:
            hello = json.loads(await ws.recv())
            assert_tokioloop_info(hello["loop"])
            big = bytes(range(256)) * 4096  # 1 MiB, several frames' worth of reads
            await ws.send(big)
            assert await ws.recv() == big[::-1]
            ws_texts = [f"t{i}" for i in range(50)]
            for t in ws_texts:
                await ws.send(t)
            assert [await ws.recv() for _ in ws_texts] == [f"echo:{t}" for t in ws_texts]

    run(main)


def test_httpx_async_client_streams(server):
    async def main():
        token = uuid.uuid4().hex
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client,
            client.stream("GET", "/stream", params={"token": token}) as resp,
        ):
            chunks = resp.aiter_raw()
            assert await chunks.__anext__() == b"first\n"
            await client.get("/release", params={"token": token})
            rest = b"".join([c async for c in chunks])
        assert rest.decode().splitlines()[-1].startswith("last tokioloop")

    run(main)


# ---------------------------------------------------------------- shutdown

# What uvicorn does after a graceful shutdown: it restores the signal's
# previous handler and raises the signal again, so SIGINT ends in the
# KeyboardInterrupt its CLI catches (exit 0) and SIGTERM in the default
# action (killed by SIGTERM).  The "asyncio" params check that this is the
# stock loop's behaviour too.
EXPECTED_RC = {signal.SIGINT: 0, signal.SIGTERM: -signal.SIGTERM}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("kind", ["asyncio", "tokioloop"])
def test_graceful_shutdown_on_signal(kind, sig):
    port = free_port()
    with ServerProcess(uvicorn_args(port, loop=kind)) as srv:
        srv.wait_http(port, "/loop")
        info = get_json(port, "/loop")["loop"]
        if kind == "tokioloop":
            assert_tokioloop_info(info)
        else:
            assert not info["is_tokioloop"]

        # A request in flight when the signal arrives still gets its answer.
        in_flight = []
        t = threading.Thread(
            target=lambda: in_flight.append(
                http_request(port, "/sleep?seconds=0.5&tag=inflight")[0]
            )
        )
        t.start()
        srv.wait_output("SLEEPING inflight")
        rc = srv.signal_and_wait(sig)
        t.join(10)
        out = srv.output()

    assert in_flight == [200], out
    module = "tokioloop" if kind == "tokioloop" else "asyncio"
    assert f"LIFESPAN shutdown {module}" in out, out
    assert "Finished server process" in out, out
    assert rc == EXPECTED_RC[sig], out


def test_multiple_workers():
    """``--workers 2``: uvicorn's supervisor spawns workers that each build
    their loop from the same ``--loop`` factory."""
    port = free_port()
    with ServerProcess(uvicorn_args(port, extra=["--workers", "2"])) as srv:
        srv.wait_http(port, "/loop")
        pids = set()
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            data = get_json(port, "/loop")
            assert_tokioloop_info(data["loop"])
            pids.add(data["pid"])
        assert len(pids) == 2, srv.output()
        rc = srv.signal_and_wait(signal.SIGINT)
        out = srv.output()
    assert rc == 0, out
    assert out.count("LIFESPAN shutdown tokioloop") == 2, out


# ---------------------------------------------------------------- in-process


def test_server_serve_in_process():
    """``uvicorn.Server(config).serve()`` under ``tokioloop.run``."""
    import fastapi_app

    fastapi_app.EVENTS.clear()

    async def main():
        sock = listening_socket()
        port = sock.getsockname()[1]
        config = uvicorn.Config(fastapi_app.app, lifespan="on", log_level="warning")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        deadline = time.monotonic() + 10
        while not server.started:
            assert not serving.done(), serving
            assert time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.01)
        assert_running_tokioloop()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                resp = await client.get("/loop")
                assert resp.status_code == 200
                assert_tokioloop_info(resp.json()["loop"])
                results = await asyncio.gather(
                    *(client.get("/sleep", params={"seconds": 0.05}) for _ in range(10))
                )
                assert [r.status_code for r in results] == [200] * 10
            async with ws_connect_async(f"ws://127.0.0.1:{port}/ws") as ws:
                assert_tokioloop_info(json.loads(await ws.recv())["loop"])
                await ws.send("hi")
                assert await ws.recv() == "echo:hi"
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 10)
        sock.close()

    run(main)
    names = [name for name, _ in fastapi_app.EVENTS]
    assert names == ["startup", "shutdown"]
    for _, info in fastapi_app.EVENTS:
        assert_tokioloop_info(info)
