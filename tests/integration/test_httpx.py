"""httpx.AsyncClient on tokioloop against uvicorn + FastAPI on tokioloop,
over plain HTTP and over TLS (uvicorn ``--ssl-*`` with a trustme CA)."""

from __future__ import annotations

import asyncio
import ssl
import sys
import uuid

import pytest

httpx = pytest.importorskip("httpx")
trustme = pytest.importorskip("trustme")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from integration_support import (
    UVICORN_LOOP,
    ServerProcess,
    assert_running_tokioloop,
    assert_tokioloop_info,
    free_port,
    run,
)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module", params=["http", "https"])
def server(request, ca, tmp_path_factory):
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "fastapi_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--loop",
        UVICORN_LOOP["tokioloop"],
        "--log-level",
        "warning",
    ]
    verify = True
    if request.param == "https":
        pem = tmp_path_factory.mktemp("tls") / "server.pem"
        ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(pem)
        args += ["--ssl-keyfile", pem, "--ssl-certfile", pem]
        verify = ssl.create_default_context()
        ca.configure_trust(verify)
    with ServerProcess(args) as srv:
        srv.wait_tcp(port)
        srv.base_url = f"{request.param}://127.0.0.1:{port}"
        srv.verify = verify
        yield srv


def client(server, **kwargs):
    return httpx.AsyncClient(base_url=server.base_url, verify=server.verify, **kwargs)


def test_get_and_post(server):
    async def main():
        async with client(server) as c:
            r = await c.get("/loop")
            assert r.status_code == 200
            assert r.http_version == "HTTP/1.1"
            assert_tokioloop_info(r.json()["loop"])
            r = await c.post("/echo", content=b"hello" * 100_000)
            assert r.json()["length"] == 500_000
            r = await c.get("/missing")
            assert r.status_code == 404

    run(main)


def test_connection_pool_limits_and_reuse(server):
    async def main():
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
        async with client(server, limits=limits) as c:
            first = await asyncio.gather(*(c.get("/peer") for _ in range(20)))
            second = await asyncio.gather(*(c.get("/peer") for _ in range(20)))
        return [r.json()["port"] for r in first], [r.json()["port"] for r in second]

    first, second = run(main)
    assert len(set(first)) <= 2, first
    assert set(second) <= set(first), (first, second)


def test_read_timeout_then_reuse(server):
    async def main():
        async with client(server) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.get("/sleep", params={"seconds": 1.5}, timeout=0.2)
            r = await c.get("/loop")
            assert r.status_code == 200
            assert_running_tokioloop()

    run(main)


def test_streaming_download(server):
    async def main():
        token = uuid.uuid4().hex
        async with (
            client(server) as c,
            c.stream("GET", "/stream", params={"token": token, "chunks": 100}) as r,
        ):
            lines = r.aiter_lines()
            assert await lines.__anext__() == "first"
            await c.get("/release", params={"token": token})
            rest = [line async for line in lines]
        assert rest[:100] == [f"chunk {i}" for i in range(100)]
        assert rest[100].startswith("last tokioloop")

    run(main)
