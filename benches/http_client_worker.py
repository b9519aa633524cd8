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
import sys
import time
from functools import partial

import aiohttp
from _closed_loop import LOOPS, Phase, measure, run_worker


async def _requester(session: aiohttp.ClientSession, url: str, phase: Phase) -> None:
    while phase.name != "stop":
        t0 = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
            status = response.status
        phase.record(time.perf_counter() - t0, None if status == 200 else f"HTTP {status}")


async def measure_requests(url: str, conns: int, warmup: float, duration: float) -> dict:
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:
        requester = partial(_requester, session, url)
        run = await measure(requester, conns, warmup, duration, "requests")
    return {
        "conns": conns,
        "requests": run["count"],
        "failures": run["failures"],
        "first_error": run["first_error"],
        "elapsed_s": run["elapsed_s"],
        "rps": run["rate"],
        "p50_us": run["p50_us"],
        "p99_us": run["p99_us"],
        "cpu_us_per_req": run["cpu_us_per_op"],
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
    run_worker(
        args.loop, lambda: measure_requests(args.url, args.conns, args.warmup, args.duration)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
