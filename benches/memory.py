"""Memory over a long run: does anything accumulate?

Each loop runs in its own interpreter for ``--rounds`` rounds of the same
mixed work, all on loopback in this process: connections to a protocol echo
server and to a streams echo server (a blocking client thread, one
connection after another), 50,000 ``call_later`` timers scheduled and
cancelled, 20,000 tasks gathered, executor round trips and ``sock_*`` calls
on a socket pair. After every round (and a ``gc.collect()``) it records

- RSS (``/proc/self/statm``),
- bytes in use by malloc (``mallinfo2``: small blocks plus mmapped ones;
  what native code holds, without the free memory glibc keeps),
- the arenas of Python's small-object allocator (1 MiB each), which it
  returns to the system only when they are completely empty,
- the number of objects the cyclic GC tracks.

A leak shows as a figure that keeps growing round after round; memory that
is reused shows as growth in the first rounds that then stops. The table
gives the first and last round's figures and the growth per round over
the second half of the run.

    .venv/bin/python benches/memory.py [--loops asyncio,uvloop,rloop,tokioloop]
        [--rounds 20] [--connections 3000]

Not a timing benchmark: the figures do not depend on machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import re
import socket
import subprocess
import sys
import tempfile

# The blocking client of the connection benchmark: one connection after
# another, a 100-byte echo each.
from churn import connect_many

LOOPS = ("asyncio", "uvloop", "rloop", "tokioloop")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def malloc_in_use() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def pymalloc_arenas() -> int:
    """Python's small-object allocator's arenas in use (1 MiB each on
    3.10+), read from ``sys._debugmallocstats()``, which writes to fd 2."""
    with tempfile.TemporaryFile() as report:
        saved = os.dup(2)
        os.dup2(report.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        report.seek(0)
        text = report.read().decode()
    found = re.search(r"# arenas allocated current\s*=\s*([\d,]+)", text)
    return int(found.group(1).replace(",", "")) if found else -1


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def echo_stream(reader, writer):
    while data := await reader.read(1000):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def one_round(ports: list[int], connections: int) -> None:
    loop = asyncio.get_running_loop()
    for port in ports:
        await loop.run_in_executor(None, connect_many, port, connections)
    timers = [loop.call_later(10, print) for _ in range(50_000)]
    for timer in timers:
        timer.cancel()
    del timers
    await asyncio.gather(*(asyncio.sleep(0) for _ in range(20_000)))
    for _ in range(200):
        await loop.run_in_executor(None, int)
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        for _ in range(2000):
            await loop.sock_sendall(a, b"y" * 10)
            await loop.sock_recv(b, 100)


async def soak(rounds: int, connections: int) -> list[dict]:
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    streams = await asyncio.start_server(echo_stream, "127.0.0.1", 0)
    ports = [s.sockets[0].getsockname()[1] for s in (server, streams)]
    samples = []
    for _ in range(rounds):
        await one_round(ports, connections)
        gc.collect()
        samples.append(
            {
                "rss": rss(),
                "malloc": malloc_in_use(),
                "arenas": pymalloc_arenas(),
                "objects": len(gc.get_objects()),
            }
        )
    for s in (server, streams):
        s.close()
        await s.wait_closed()
    return samples


def serve(loop_name: str, rounds: int, connections: int) -> None:
    """The child process: one loop, all rounds; prints JSON samples."""
    if loop_name == "asyncio":
        factory = asyncio.new_event_loop
    else:
        factory = __import__(loop_name).new_event_loop
    loop = factory()
    try:
        samples = loop.run_until_complete(soak(rounds, connections))
    finally:
        loop.close()
    print(json.dumps(samples))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=3000, help="per server per round")
    parser.add_argument("--serve", metavar="LOOP", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.rounds, args.connections)
        return 0

    rows = []
    for name in args.loops.split(","):
        print(f"{name}: {args.rounds} rounds ...", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--serve", name, "--rounds", str(args.rounds)]
        command += ["--connections", str(args.connections)]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            rows.append((name, None))
            continue
        rows.append((name, json.loads(done.stdout.strip().splitlines()[-1])))

    mib = 1024 * 1024
    print(f"Python {sys.version.split()[0]}; {args.rounds} rounds of: 2 x {args.connections:,}")
    print("connections, 50,000 timers, 20,000 tasks, 200 executor calls, 2,000 sock_* pairs\n")
    print(
        "| loop | RSS first MiB | RSS last MiB | RSS growth/round KiB "
        "| malloc first MiB | malloc last MiB | malloc growth/round KiB "
        "| pymalloc arenas first | pymalloc arenas last | GC objects first | GC objects last |"
    )
    print("|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name, samples in rows:
        if samples is None:
            print(f"| {name} | err | | | | | | | | | |")
            continue
        half = len(samples) // 2
        tail = samples[half:]
        per_round = max(len(tail) - 1, 1)

        def growth(key, tail=tail, per_round=per_round):
            return (tail[-1][key] - tail[0][key]) / per_round / 1024

        first, last = samples[0], samples[-1]
        print(
            f"| {name} | {first['rss'] / mib:.1f} | {last['rss'] / mib:.1f} | {growth('rss'):.0f} "
            f"| {first['malloc'] / mib:.2f} | {last['malloc'] / mib:.2f} | {growth('malloc'):.1f} "
            f"| {first['arenas']} | {last['arenas']} "
            f"| {first['objects']:,} | {last['objects']:,} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
