"""aiohttp client requests on one event loop: one measurement of benches/net.py --client.

Usage: python benches/http_client_worker.py --loop LOOP --url URL [--conns N]
                                            [--warmup SECS] [--duration SECS]

N workers share one ``aiohttp.ClientSession`` (keep-alive connections, at
most N) and each runs ``async with session.get(URL) as r: await r.read()``
in a loop (closed loop: a worker sends its next request as soon as the
previous response is read), the way a scraper or an API client works.
After the warm-up, requests that complete during DURATION seconds are
counted. Prints one JSON object: requests, requests/s, p50/p99 latency of
one request (µs) and CPU µs per request of this process (utime+stime of
all its threads, from getrusage, so DNS or executor threads would count).
The server is the same for every loop (net.py starts it), so the client's
own CPU per request is what ranks the loops.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import resource
import sys
import time

import aiohttp

# The same phases, CPU reading and percentiles as the spawn benchmark.
from spawn_worker import LOOPS, Phase, _cpu_us, _percentile_us


async def _requester(session: aiohttp.ClientSession, url: str, phase: Phase) -> None:
    while phase.name != "stop":
        t0 = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
            status = response.status
        took = time.perf_counter() - t0
        if phase.name != "measure":
            continue
        if status == 200:
            phase.latencies.append(took)
        else:
            phase.failures += 1
            phase.first_error = phase.first_error or f"HTTP {status}"


async def measure(url: str, conns: int, warmup: float, duration: float) -> dict:
    phase = Phase()
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:
        workers = [asyncio.ensure_future(_requester(session, url, phase)) for _ in range(conns)]
        await asyncio.sleep(warmup)
        phase.name = "measure"
        t0 = time.perf_counter()
        cpu0 = _cpu_us(resource.RUSAGE_SELF)
        await asyncio.sleep(duration)
        phase.name = "stop"
        elapsed = time.perf_counter() - t0
        cpu = _cpu_us(resource.RUSAGE_SELF) - cpu0
        count = len(phase.latencies)
        done, pending = await asyncio.wait(workers, timeout=10)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
        if pending:
            raise RuntimeError(f"{len(pending)} requests still running 10 s after the run")
    lat = sorted(phase.latencies)
    return {
        "conns": conns,
        "requests": count,
        "failures": phase.failures,
        "first_error": phase.first_error,
        "elapsed_s": round(elapsed, 3),
        "rps": count / elapsed,
        "p50_us": _percentile_us(lat, 50),
        "p99_us": _percentile_us(lat, 99),
        "cpu_us_per_req": cpu / count if count else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=LOOPS, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.conns < 1 or args.duration <= 0:
        parser.error("--conns and --duration must be positive")

    loop = importlib.import_module(args.loop).new_event_loop()
    asyncio.set_event_loop(loop)
    report = loop.run_until_complete(measure(args.url, args.conns, args.warmup, args.duration))
    print(json.dumps(report), flush=True)
    # As in echo_servers.py: the loop/interpreter teardown is not measured.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
