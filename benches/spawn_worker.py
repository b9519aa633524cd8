"""Subprocess spawn rate on one event loop: one measurement of benches/net.py --spawn.

Usage: python benches/spawn_worker.py --loop LOOP [--concurrency N]
                                      [--warmup SECS] [--duration SECS] [--command true]

N workers each run ``await asyncio.create_subprocess_exec(COMMAND)`` then
``await proc.wait()`` in a loop (closed loop: a worker starts its next spawn
as soon as the previous child has been reaped).  After the warm-up, spawns
that complete during DURATION seconds are counted.  Prints one JSON object:
spawns, spawns/s, p50/p99 latency of one spawn + wait (µs), and CPU µs per
spawn of this process (utime+stime of all its threads, from getrusage, so
child watcher threads count) and of the reaped children.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import os
import resource
import sys
import time

LOOPS = ("asyncio", "uvloop", "rloop", "tokioloop")


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


async def _spawner(command: str, phase: Phase) -> None:
    while phase.name != "stop":
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(command)
        rc = await proc.wait()
        took = time.perf_counter() - t0
        if phase.name != "measure":
            continue
        if rc == 0:
            phase.latencies.append(took)
        else:
            phase.failures += 1
            phase.first_error = phase.first_error or f"{command} exited {rc}"


async def measure(command: str, concurrency: int, warmup: float, duration: float) -> dict:
    phase = Phase()
    workers = [asyncio.ensure_future(_spawner(command, phase)) for _ in range(concurrency)]
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
    # Let the spawns in flight finish (their children are reaped, nothing leaks).
    done, pending = await asyncio.wait(workers, timeout=10)
    for task in done:
        if task.exception() is not None:
            raise task.exception()
    if pending:
        raise RuntimeError(f"{len(pending)} spawns still running 10 s after the run")
    lat = sorted(phase.latencies)
    return {
        "concurrency": concurrency,
        "spawns": count,
        "failures": phase.failures,
        "first_error": phase.first_error,
        "elapsed_s": round(elapsed, 3),
        "rate": count / elapsed,
        "p50_us": _percentile_us(lat, 50),
        "p99_us": _percentile_us(lat, 99),
        "cpu_us_per_spawn": cpu / count if count else None,
        "children_cpu_us_per_spawn": kids / count if count else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=LOOPS, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--command", default="true", help="program to spawn (no arguments)")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0:
        parser.error("--concurrency and --duration must be positive")

    loop = importlib.import_module(args.loop).new_event_loop()
    asyncio.set_event_loop(loop)
    report = loop.run_until_complete(
        measure(args.command, args.concurrency, args.warmup, args.duration)
    )
    print(json.dumps(report), flush=True)
    # As in echo_servers.py: the loop/interpreter teardown is not measured.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
