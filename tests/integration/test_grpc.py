"""gRPC's asyncio API (``grpc.aio``) on tokioloop, beside stock asyncio.

grpc.aio runs gRPC's C core beside the event loop: a poller thread waits on
the core's completion queue and hands finished operations to the loop
through a socket it watches with ``add_reader``, and the loop's tasks then
resume. So this exercises fd watchers fed by another thread, with tasks,
timers (deadlines) and cancellation around them. Services are generic
handlers on raw bytes (no protobuf). Every scenario returns its
observations; the tokioloop run must match the stock one. Loopback TCP and
Unix sockets only.
"""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc.aio")

from integration_support import run

KINDS = ("asyncio", "tokioloop")


async def reverse(request, context):
    return request[::-1]


async def fail(request, context):
    if request == b"abort":
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not you")
    raise ValueError("handler failed")


async def slow(request, context):
    await asyncio.sleep(float(request))
    return b"late"


async def countdown(request, context):
    for i in range(int(request), 0, -1):
        yield b"%d" % i


async def upper(request_iterator, context):
    async for message in request_iterator:
        yield message.upper()


async def total(request_iterator, context):
    return b"%d" % sum([len(m) async for m in request_iterator])


HANDLERS = grpc.method_handlers_generic_handler(
    "test.Svc",
    {
        "Reverse": grpc.unary_unary_rpc_method_handler(reverse),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Countdown": grpc.unary_stream_rpc_method_handler(countdown),
        "Upper": grpc.stream_stream_rpc_method_handler(upper),
        "Total": grpc.stream_unary_rpc_method_handler(total),
    },
)


async def serve_and_call(address):
    """Start a server on ``address`` (``host:0`` or ``unix:path``), make
    calls of every shape and of the usual failures, and return what the
    client saw."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((HANDLERS,))
    port = server.add_insecure_port(address)
    target = address.replace(":0", f":{port}")
    await server.start()
    seen = {}
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary("/test.Svc/Reverse")
            replies = [await call(b"%d-abc" % i) for i in range(200)]
            seen["unary"] = replies == [(b"%d-abc" % i)[::-1] for i in range(200)]
            # Many calls in flight at once on one channel.
            together = await asyncio.gather(*(call(b"x%d" % i) for i in range(50)))
            seen["concurrent"] = together == [(b"x%d" % i)[::-1] for i in range(50)]

            countdown_call = channel.unary_stream("/test.Svc/Countdown")
            seen["server stream"] = [m async for m in countdown_call(b"5")]

            async def messages():
                for word in (b"a", b"bc", b"def"):
                    yield word

            upper_call = channel.stream_stream("/test.Svc/Upper")
            seen["bidi stream"] = [m async for m in upper_call(messages())]
            seen["client stream"] = await channel.stream_unary("/test.Svc/Total")(messages())

            for request in (b"raise", b"abort"):
                try:
                    await channel.unary_unary("/test.Svc/Fail")(request)
                except grpc.aio.AioRpcError as error:
                    seen[f"fail {request.decode()}"] = (error.code(), error.details())
            try:
                await channel.unary_unary("/test.Svc/Missing")(b"")
            except grpc.aio.AioRpcError as error:
                seen["missing"] = error.code()
            try:
                await channel.unary_unary("/test.Svc/Slow")(b"5", timeout=0.1)
            except grpc.aio.AioRpcError as error:
                seen["deadline"] = error.code()

            # A call cancelled by the client while the server works on it.
            pending = channel.unary_unary("/test.Svc/Slow")(b"5")
            await asyncio.sleep(0.05)
            pending.cancel()
            try:
                await pending
            except asyncio.CancelledError:
                seen["cancelled"] = (pending.cancelled(), await pending.code())
            # The channel still works afterwards.
            seen["after"] = await call(b"ok")
    finally:
        await server.stop(None)
    return seen


EXPECTED = {
    "unary": True,
    "concurrent": True,
    "server stream": [b"5", b"4", b"3", b"2", b"1"],
    "bidi stream": [b"A", b"BC", b"DEF"],
    "client stream": b"6",
    "fail raise": (grpc.StatusCode.UNKNOWN, "Unexpected <class 'ValueError'>: handler failed"),
    "fail abort": (grpc.StatusCode.PERMISSION_DENIED, "not you"),
    "missing": grpc.StatusCode.UNIMPLEMENTED,
    "deadline": grpc.StatusCode.DEADLINE_EXCEEDED,
    "cancelled": (True, grpc.StatusCode.CANCELLED),
    "after": b"ko",
}


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_calls_of_every_shape(transport):
    with tempfile.TemporaryDirectory(prefix="tlgrpc-", dir="/tmp") as directory:
        if transport == "tcp":
            address = "127.0.0.1:0"
        else:
            address = f"unix:{os.path.join(directory, 'grpc.sock')}"
        results = {kind: run(serve_and_call, address, kind=kind) for kind in KINDS}
    assert results["asyncio"] == EXPECTED
    assert results["tokioloop"] == EXPECTED
