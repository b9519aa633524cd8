"""TLS echo round trips in one process, for instruction counts under callgrind.

A TLS echo server and a TLS client run on one loop over loopback; the
client sends SIZE bytes, waits for the whole echo, and repeats N times (env
``N``), R times (env ``R``), printing the process CPU time per round trip.
STYLE ``protocol`` (the default) makes both ends ``asyncio.Protocol``s;
``streams`` makes them asyncio streams (``start_server`` with a
``read(65536)``/``write``/``drain`` echo handler, as ``echo_servers.py``'s
``streams`` style, and a client that writes, drains and
``readexactly(SIZE)``). Under callgrind, the difference between two runs
with different ``N`` is the cost of ``N2 - N1`` round trips at both ends,
without start-up and handshakes::

    for n in 200 1200; do
      N=$n R=1 valgrind --tool=callgrind --callgrind-out-file=cg.$n.out \\
          .venv/bin/python benches/tls_roundtrip.py tokioloop 1024
    done   # then (total of cg.1200.out - total of cg.200.out) / 1000

LOOP is asyncio, uvloop or tokioloop; SIZE defaults to 1024::

    python benches/tls_roundtrip.py LOOP [SIZE [STYLE]]
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time

import trustme

LOOP = sys.argv[1] if len(sys.argv) > 1 else "tokioloop"
SIZE = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
STYLE = sys.argv[3] if len(sys.argv) > 3 else "protocol"
PAYLOAD = b"x" * SIZE


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Client(asyncio.Protocol):
    def __init__(self):
        self.got = 0
        self.left = 0
        self.done = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.got += len(data)
        if self.got >= SIZE:
            self.got = 0
            self.left -= 1
            if self.left:
                self.transport.write(PAYLOAD)
            else:
                self.done.set_result(None)


async def stream_echo(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def streams_rounds(server_ctx, client_ctx, n, rounds):
    server = await asyncio.start_server(stream_echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
    )
    results = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            writer.write(PAYLOAD)
            await writer.drain()
            await reader.readexactly(SIZE)
        results.append((time.process_time() - start) / n * 1e6)
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return results


async def main():
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    n = int(os.environ.get("N", "4000" if SIZE < 10000 else "400"))
    rounds = int(os.environ.get("R", "7"))
    if STYLE == "streams":
        results = await streams_rounds(server_ctx, client_ctx, n, rounds)
    else:
        results = await protocol_rounds(server_ctx, client_ctx, n, rounds)
    results.sort()
    print(
        f"{LOOP} {STYLE} {SIZE} B: CPU µs per round trip, "
        f"min {results[0]:.1f}, median {results[len(results) // 2]:.1f}"
    )


async def protocol_rounds(server_ctx, client_ctx, n, rounds):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    transport, client = await loop.create_connection(
        Client, "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
    )
    results = []
    for _ in range(rounds):
        client.left = n
        client.done = loop.create_future()
        start = time.process_time()
        transport.write(PAYLOAD)
        await client.done
        results.append((time.process_time() - start) / n * 1e6)
    transport.close()
    server.close()
    await server.wait_closed()
    return results


if LOOP == "tokioloop":
    import tokioloop

    tokioloop.run(main())
elif LOOP == "uvloop":
    import uvloop

    uvloop.run(main())
else:
    asyncio.run(main())
