"""Closed-loop measurement on one event loop, shared by the worker scripts
of benches/net.py (`spawn_worker.py`, `http_client_worker.py`).

N workers repeat one operation in a loop (each starts its next operation
as soon as the previous one is done). After a warm-up, the operations that
complete during DURATION seconds are counted, with the CPU time of this
process (utime+stime of all its threads, from getrusage) and of its reaped
children over the same window. ``run_worker`` is the scripts' ``main``: it
builds the loop, runs the measurement and prints its JSON report.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import os
import resource
import time
from collections.abc import Awaitable, Callable

LOOPS = ("asyncio", "uvloop", "rloop", "tokioloop", "rsloop")


def _cpu_us(who: int) -> float:
    usage = resource.getrusage(who)
    return (usage.ru_utime + usage.ru_stime) * 1e6


def _percentile_us(sorted_s: list[float], pct: float) -> float | None:
    """Nearest-rank percentile, like the echo client's."""
    if not sorted_s:
        return None
    rank = math.ceil(len(sorted_s) * pct / 100)
    return sorted_s[max(1, min(len(sorted_s), rank)) - 1] * 1e6


class Phase:
    """Shared state of the run: 'warmup' -> 'measure' -> 'stop'."""

    def __init__(self) -> None:
        self.name = "warmup"
        self.latencies: list[float] = []
        self.failures = 0
        self.first_error: str | None = None

    def record(self, took: float, error: str | None = None) -> None:
        """One operation that took `took` seconds; counted only while measuring."""
        if self.name != "measure":
            return
        if error is None:
            self.latencies.append(took)
        else:
            self.failures += 1
            self.first_error = self.first_error or error


async def measure(
    worker: Callable[[Phase], Awaitable[None]],
    concurrency: int,
    warmup: float,
    duration: float,
    what: str,
) -> dict:
    """Run `concurrency` copies of `worker(phase)` (each loops until the
    phase is 'stop'); the counts, latencies and CPU of the measured window.
    `what` names the operations in the error raised if workers hang."""
    phase = Phase()
    workers = [asyncio.ensure_future(worker(phase)) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    phase.name = "measure"
    t0 = time.perf_counter()
    cpu0 = _cpu_us(resource.RUSAGE_SELF)
    kids0 = _cpu_us(resource.RUSAGE_CHILDREN)
    await asyncio.sleep(duration)
    phase.name = "stop"
    elapsed = time.perf_counter() - t0
    cpu = _cpu_us(resource.RUSAGE_SELF) - cpu0
    kids = _cpu_us(resource.RUSAGE_CHILDREN) - kids0
    count = len(phase.latencies)
    # Let the operations in flight finish (nothing leaks past the run).
    done, pending = await asyncio.wait(workers, timeout=10)
    for task in done:
        if task.exception() is not None:
            raise task.exception()
    if pending:
        raise RuntimeError(f"{len(pending)} {what} still running 10 s after the run")
    lat = sorted(phase.latencies)
    return {
        "count": count,
        "failures": phase.failures,
        "first_error": phase.first_error,
        "elapsed_s": round(elapsed, 3),
        "rate": count / elapsed,
        "p50_us": _percentile_us(lat, 50),
        "p99_us": _percentile_us(lat, 99),
        "cpu_us_per_op": cpu / count if count else None,
        "children_cpu_us_per_op": kids / count if count else None,
    }


def run_worker(loop_name: str, main: Callable[[], Awaitable[dict]]) -> None:
    """Run `main()` on a new loop of `loop_name`, print its report as JSON
    and exit without the loop/interpreter teardown (not measured, as in
    echo_servers.py)."""
    loop = importlib.import_module(loop_name).new_event_loop()
    asyncio.set_event_loop(loop)
    report = loop.run_until_complete(main())
    print(json.dumps(report), flush=True)
    os._exit(0)
