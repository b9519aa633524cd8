"""Hello-world HTTP servers for `benches/net.py --http`, on any event loop.

Usage: python benches/http_servers.py --loop LOOP --app aiohttp|fastapi --port PORT

- aiohttp: ``web.run_app`` on a loop made by LOOP's new_event_loop, no
  access log.
- fastapi: FastAPI app served by uvicorn with the httptools parser.  uvicorn
  builds the loop itself from its ``loop`` setting: "asyncio" and "uvloop" are
  its built-in names, and any other value is imported as a
  ``module:callable`` loop factory (uvicorn >= 0.36), so rloop and tokioloop
  are passed as "rloop:new_event_loop" and "tokioloop:new_event_loop".

Both answer ``GET /`` with a 13-byte text/plain "Hello, World!".  When
listening, print ``ready 127.0.0.1:PORT LOOP_CLASS`` on stdout, where
LOOP_CLASS is the module-qualified class of the running loop, so the runner
can check that the server really runs on the loop it asked for.  Both
frameworks stop on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys

LOOPS = ("asyncio", "uvloop", "rloop", "tokioloop", "rsloop")
APPS = ("aiohttp", "fastapi")
HOST = "127.0.0.1"
BODY = "Hello, World!"

# uvicorn's `loop` setting for each of our loop names.
UVICORN_LOOPS = {
    "asyncio": "asyncio",
    "uvloop": "uvloop",
    "rloop": "rloop:new_event_loop",
    "tokioloop": "tokioloop:new_event_loop",
    "rsloop": "rsloop:new_event_loop",
}


def announce(port: int) -> None:
    loop = asyncio.get_running_loop()
    cls = type(loop)
    print(f"ready {HOST}:{port} {cls.__module__}.{cls.__qualname__}", flush=True)


def run_aiohttp(loop_name: str, port: int) -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=BODY)

    app = web.Application()
    app.router.add_get("/", hello)
    loop = importlib.import_module(loop_name).new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(
        app,
        host=HOST,
        port=port,
        loop=loop,
        access_log=None,
        # run_app calls print(banner) once every site is listening, from
        # inside the running loop: the right moment to say "ready".
        print=lambda _banner: announce(port),
    )


def run_fastapi(loop_name: str, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()

    @app.get("/", response_class=PlainTextResponse)
    async def hello() -> str:
        return BODY

    class ReadyServer(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # False when binding failed; uvicorn then exits
                announce(port)

    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        loop=UVICORN_LOOPS[loop_name],
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    ReadyServer(config).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=LOOPS, required=True)
    parser.add_argument("--app", choices=APPS, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.app == "aiohttp":
        run_aiohttp(args.loop, args.port)
    else:
        run_fastapi(args.loop, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
