"""pyzmq's asyncio sockets (``zmq.asyncio``) on tokioloop, beside stock asyncio.

pyzmq drives its sockets through ``add_reader`` on the ZeroMQ socket's
notification fd, which is edge-triggered: it becomes readable when the
socket's events change and stays so until ``zmq.EVENTS`` is read. So this
exercises the loop's fd watchers with an fd that is not a plain socket,
and timers beside them (``Poller.poll`` timeouts). Every scenario returns
its observations; the tokioloop run must match the stock one. Loopback
TCP and ``ipc://`` (Unix sockets) only.
"""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest

zmq = pytest.importorskip("zmq")
zmq_asyncio = pytest.importorskip("zmq.asyncio")

from integration_support import run

KINDS = ("asyncio", "tokioloop")


def endpoint(transport, directory):
    if transport == "tcp":
        return "tcp://127.0.0.1:*"
    return f"ipc://{os.path.join(directory, 'zmq.sock')}"


async def req_rep(transport, directory, count=500):
    ctx = zmq_asyncio.Context()
    rep = ctx.socket(zmq.REP)
    req = ctx.socket(zmq.REQ)
    try:
        rep.bind(endpoint(transport, directory))
        req.connect(rep.getsockopt(zmq.LAST_ENDPOINT).decode())

        async def serve():
            for _ in range(count):
                parts = await rep.recv_multipart()
                await rep.send_multipart([*parts, b"ok"])

        server = asyncio.ensure_future(serve())
        replies = []
        for i in range(count):
            await req.send_multipart([b"n", str(i).encode()])
            replies.append(await req.recv_multipart())
        await server
        return replies == [[b"n", str(i).encode(), b"ok"] for i in range(count)]
    finally:
        req.close(linger=0)
        rep.close(linger=0)
        ctx.term()


async def push_pull_and_poll(transport, directory):
    ctx = zmq_asyncio.Context()
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    seen = {}
    try:
        pull.bind(endpoint(transport, directory))
        push.connect(pull.getsockopt(zmq.LAST_ENDPOINT).decode())
        # A burst larger than one notification (below the send high-water
        # mark of 1000, as nothing reads meanwhile): the reader keeps going.
        for i in range(500):
            await push.send(b"%d" % i)
        got = [await pull.recv() for _ in range(500)]
        seen["burst"] = got == [b"%d" % i for i in range(500)]

        poller = zmq_asyncio.Poller()
        poller.register(pull, zmq.POLLIN)
        seen["poll nothing"] = await poller.poll(timeout=30)
        await push.send(b"late")
        seen["poll ready"] = [(s is pull, e) for s, e in await poller.poll(timeout=5000)]
        seen["late"] = await pull.recv()

        # A receive cancelled while waiting leaves the socket usable.
        waiting = asyncio.ensure_future(pull.recv())
        await asyncio.sleep(0.01)
        waiting.cancel()
        try:
            await waiting
        except asyncio.CancelledError:
            seen["cancelled"] = True
        await push.send(b"after")
        seen["after"] = await asyncio.wait_for(pull.recv(), 5)

        # Several receivers waiting at once, served in order.
        receivers = [asyncio.ensure_future(pull.recv()) for _ in range(3)]
        await asyncio.sleep(0.01)
        for i in range(3):
            await push.send(b"r%d" % i)
        seen["waiting receivers"] = await asyncio.gather(*receivers)
        return seen
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_req_rep(transport):
    with tempfile.TemporaryDirectory(prefix="tlzmq-", dir="/tmp") as directory:
        results = {kind: run(req_rep, transport, directory, kind=kind) for kind in KINDS}
    assert results == {"asyncio": True, "tokioloop": True}


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_push_pull_poller_and_cancellation(transport):
    with tempfile.TemporaryDirectory(prefix="tlzmq-", dir="/tmp") as directory:
        results = {kind: run(push_pull_and_poll, transport, directory, kind=kind) for kind in KINDS}
    expected = {
        "burst": True,
        "poll nothing": [],
        "poll ready": [(True, zmq.POLLIN)],
        "late": b"late",
        "cancelled": True,
        "after": b"after",
        "waiting receivers": [b"r0", b"r1", b"r2"],
    }
    assert results["asyncio"] == expected
    assert results["tokioloop"] == expected
