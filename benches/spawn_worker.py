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
import sys
import time
from functools import partial

from _closed_loop import LOOPS, Phase, measure, run_worker


async def _spawner(command: str, phase: Phase) -> None:
    while phase.name != "stop":
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(command)
        rc = await proc.wait()
        phase.record(time.perf_counter() - t0, None if rc == 0 else f"{command} exited {rc}")


async def measure_spawns(command: str, concurrency: int, warmup: float, duration: float) -> dict:
    # Waiting for the spawns in flight reaps their children: nothing leaks.
    run = await measure(partial(_spawner, command), concurrency, warmup, duration, "spawns")
    return {
        "concurrency": concurrency,
        "spawns": run["count"],
        "failures": run["failures"],
        "first_error": run["first_error"],
        "elapsed_s": run["elapsed_s"],
        "rate": run["rate"],
        "p50_us": run["p50_us"],
        "p99_us": run["p99_us"],
        "cpu_us_per_spawn": run["cpu_us_per_op"],
        "children_cpu_us_per_spawn": run["children_cpu_us_per_op"],
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
    run_worker(
        args.loop,
        lambda: measure_spawns(args.command, args.concurrency, args.warmup, args.duration),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
