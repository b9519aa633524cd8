"""The aiohttp app the aiohttp tests serve.

Run as ``python aiohttp_app.py FD KIND``: serves the inherited listening
socket ``FD`` with ``web.run_app(..., loop=<a new KIND loop>)``, KIND being
``tokioloop`` or ``asyncio`` (the stock reference).  Handlers report the loop
they run on; the app's startup/shutdown/cleanup hooks print ``HOOK <name>
<loop module>`` lines.  ``make_app()`` is also used in-process.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from aiohttp import WSMsgType, web
from integration_support import LOOP_FACTORIES, running_loop_info

EVENTS = web.AppKey("events", list)
STATE = web.AppKey("state", dict)


def _hook(name):
    async def hook(app):
        info = running_loop_info()
        app[EVENTS].append((name, info))
        print(f"HOOK {name} {info['module']}", flush=True)

    return hook


async def loop_handler(request):
    return web.json_response({"loop": running_loop_info(), "secure": request.secure})


async def slow(request):
    """Reports the client's port and the most requests seen in flight at once."""
    state = request.app[STATE]
    state["in_flight"] += 1
    state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
    try:
        await asyncio.sleep(float(request.query.get("seconds", "0.02")))
    finally:
        state["in_flight"] -= 1
    peer = request.transport.get_extra_info("peername")
    return web.json_response(
        {"port": peer[1], "max_in_flight": state["max_in_flight"], "loop": running_loop_info()}
    )


async def reset(request):
    request.app[STATE].update(in_flight=0, max_in_flight=0)
    return web.Response(text="ok")


async def echo(request):
    body = await request.read()
    return web.Response(body=body[::-1], headers={"X-Length": str(len(body))})


async def stream(request):
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(int(request.query.get("chunks", "10"))):
        await resp.write(f"chunk {i}\n".encode())
        await asyncio.sleep(0.005)
    await resp.write_eof(f"end {running_loop_info()['module']}\n".encode())
    return resp


async def sleep(request):
    if tag := request.query.get("tag"):  # the shutdown tests wait for this line
        print(f"SLEEPING {tag}", flush=True)
    await asyncio.sleep(float(request.query.get("seconds", "1")))
    return web.Response(text="slept")


async def file_handler(request):
    # FileResponse sends with loop.sendfile() where it can.
    return web.FileResponse(request.query["path"])


async def big(request):
    """``size`` bytes in 64 KiB writes, each awaiting drain (flow control)."""
    size = int(request.query["size"])
    resp = web.StreamResponse(headers={"Content-Length": str(size)})
    await resp.prepare(request)
    block = bytes(range(256)) * 256
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        await resp.write(piece)
        sent += len(piece)
    await resp.write_eof()
    return resp


async def ws_handler(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json({"loop": running_loop_info()})
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            if msg.data == "close":
                await ws.close(code=4001, message=b"bye")
            else:
                await ws.send_str("echo:" + msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    return ws


def make_app() -> web.Application:
    app = web.Application(client_max_size=8 << 20)
    app[EVENTS] = []
    app[STATE] = {"in_flight": 0, "max_in_flight": 0}
    app.on_startup.append(_hook("startup"))
    app.on_shutdown.append(_hook("shutdown"))
    app.on_cleanup.append(_hook("cleanup"))
    app.router.add_get("/loop", loop_handler)
    app.router.add_get("/slow", slow)
    app.router.add_get("/reset", reset)
    app.router.add_post("/echo", echo)
    app.router.add_get("/stream", stream)
    app.router.add_get("/sleep", sleep)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/file", file_handler)
    app.router.add_get("/big", big)
    return app


def main(argv):
    fd, kind = int(argv[1]), argv[2]
    sock = socket.socket(fileno=fd)
    loop = LOOP_FACTORIES[kind]()
    web.run_app(
        make_app(),
        sock=sock,
        loop=loop,
        print=None,
        shutdown_timeout=5,
        handle_signals=True,
        access_log=None,
    )
    print("EXITED run_app", flush=True)


if __name__ == "__main__":
    main(sys.argv)
