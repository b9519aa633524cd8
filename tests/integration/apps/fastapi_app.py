"""The FastAPI app the uvicorn and httpx tests serve.

Every endpoint that answers with JSON includes ``loop``: the type of the loop
the handler runs on (``integration_support.running_loop_info``), so the tests
can assert that uvicorn really served it on tokioloop.  Lifespan events are
printed (``LIFESPAN startup <loop module>``) and recorded in ``EVENTS`` for
in-process servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, StreamingResponse
from integration_support import running_loop_info

#: Lifespan events seen by this process, for in-process servers.
EVENTS: list[tuple[str, dict]] = []

# /stream waits on an event that /release sets, so a test can prove the first
# chunk reached it before the handler finished.  Keyed by a token per test.
_releases: dict[str, asyncio.Event] = {}


def _lifespan_event(name: str) -> None:
    info = running_loop_info()
    EVENTS.append((name, info))
    print(f"LIFESPAN {name} {info['module']}.{info['name']}", flush=True)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    _lifespan_event("startup")
    app.state.started_on = running_loop_info()
    yield
    _lifespan_event("shutdown")


app = FastAPI(lifespan=lifespan)


@app.get("/loop")
async def loop_endpoint(request: Request):
    return {
        "loop": running_loop_info(),
        "lifespan_loop": request.app.state.started_on,
        "pid": os.getpid(),
    }


@app.get("/peer")
async def peer(request: Request):
    # The client's port tells the test which pooled connection carried it.
    return {"port": request.client.port, "loop": running_loop_info()}


@app.post("/echo")
async def echo(request: Request):
    body = await request.body()
    return {"length": len(body), "text": body.decode("latin-1")[:64], "loop": running_loop_info()}


@app.get("/sleep")
async def sleep(seconds: float = 0.1, tag: str = ""):
    if tag:  # the shutdown tests wait for this line before they send a signal
        print(f"SLEEPING {tag}", flush=True)
    await asyncio.sleep(seconds)
    return {"slept": seconds, "loop": running_loop_info()}


@app.get("/sync")
def sync_endpoint():
    # A plain ``def`` endpoint: FastAPI runs it in anyio's worker threads.
    return {
        "thread": threading.current_thread().name,
        "main": threading.current_thread() is threading.main_thread(),
    }


@app.get("/stream")
async def stream(token: str, chunks: int = 5):
    release = _releases.setdefault(token, asyncio.Event())

    async def body():
        yield b"first\n"
        await asyncio.wait_for(release.wait(), 10)
        for i in range(chunks):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0)
        info = running_loop_info()
        yield f"last {info['module']}\n".encode()
        _releases.pop(token, None)

    return StreamingResponse(body(), media_type="text/plain")


@app.get("/big")
async def big(size: int):
    block = bytes(range(256)) * 256

    async def body():
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            sent += len(piece)
            yield piece

    return StreamingResponse(
        body(), media_type="application/octet-stream", headers={"Content-Length": str(size)}
    )


@app.get("/release", response_class=PlainTextResponse)
async def release(token: str):
    _releases.setdefault(token, asyncio.Event()).set()
    return "released"


@app.websocket("/ws")
async def ws_echo(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_json({"loop": running_loop_info()})
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                if message["text"] == "close":
                    await websocket.close(code=4000, reason="asked to close")
                    return
                await websocket.send_text("echo:" + message["text"])
            else:
                await websocket.send_bytes(message["bytes"][::-1])
    except WebSocketDisconnect:
        return
