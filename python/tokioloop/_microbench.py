"""Micro-benchmark workloads for event loops, and a subprocess runner for them.

Shared by ``python -m tokioloop`` (short built-in benchmark) and
``benches/micro.py`` (full run), so both measure exactly the same thing.

Each workload is ``workload(loop_factory, n) -> seconds``: it builds a loop
from the factory, runs the workload, closes the loop and returns only the
``time.perf_counter`` time of the measured part.

``run_matrix`` runs every (loop, workload) cell in a fresh child interpreter
(this file executed by path with ``--one LOOP WORKLOAD N``) so that one
loop's allocator state, GC history or crash cannot affect another, and it
interleaves the loops round by round so that machine noise is spread across
all of them instead of hitting whichever loop happened to run during a
burst.  This module must stay importable without the tokioloop extension:
benches/micro.py loads it by path from a checkout.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import gc
import importlib
import json
import os
import platform
import random
import site
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

LOOP_NAMES = ("asyncio", "uvloop", "rloop", "tokioloop")
# Also accepted by name, not run by default: rsloop (Rust, io_uring), whose
# wheels need a recent glibc (benches/build_rsloop.sh builds it from source).
EXTRA_LOOPS = ("rsloop",)
KNOWN_LOOPS = LOOP_NAMES + EXTRA_LOOPS
BASELINE = "asyncio"
RIVALS = ("uvloop", "rloop")
TARGET = "tokioloop"

# Seconds one child interpreter may take (warm-up + measured run) before it
# is killed and the cell is reported as "err".
CELL_TIMEOUT = 120.0

# Callbacks/tasks queued per loop iteration.  A server's ready queue holds
# tens to hundreds of handles, not a million, and per-iteration costs (the
# I/O poll, timer processing) belong in the measurement.
BATCH = 100


def _now() -> float:
    return time.perf_counter()


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------


def bench_call_soon(loop_factory: LoopFactory, n: int) -> float:
    """n call_soon callbacks, queued BATCH at a time by a self-rescheduling feeder."""
    loop = loop_factory()
    remaining = n
    t = [0.0, 0.0]

    def noop():
        pass

    def feeder():
        nonlocal remaining
        k = min(BATCH, remaining)
        remaining -= k
        call_soon = loop.call_soon
        for _ in range(k):
            call_soon(noop)
        call_soon(feeder if remaining else finish)

    def start():
        t[0] = _now()
        feeder()

    def finish():
        t[1] = _now()
        loop.stop()

    try:
        loop.call_soon(start)
        loop.run_forever()
    finally:
        loop.close()
    return t[1] - t[0]


def bench_call_later(loop_factory: LoopFactory, n: int) -> float:
    """n call_later timers with seeded random delays in [0, 10 ms), until all fired."""
    rng = random.Random(20240601)
    delays = [rng.random() * 0.010 for _ in range(n)]
    loop = loop_factory()
    fired = 0
    t = [0.0, 0.0]

    def on_timer():
        nonlocal fired
        fired += 1
        if fired == n:
            t[1] = _now()
            loop.stop()

    def start():
        t[0] = _now()
        call_later = loop.call_later
        for d in delays:
            call_later(d, on_timer)

    try:
        loop.call_soon(start)
        loop.run_forever()
    finally:
        loop.close()
    return t[1] - t[0]


def bench_create_task(loop_factory: LoopFactory, n: int) -> float:
    """n create_task(coro()) of a coroutine that returns at once, each awaited."""

    async def coro():
        return None

    async def main():
        create_task = loop.create_task
        t0 = _now()
        remaining = n
        while remaining:
            k = min(BATCH, remaining)
            remaining -= k
            tasks = [create_task(coro()) for _ in range(k)]
            for task in tasks:
                await task
        return _now() - t0

    loop = loop_factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def bench_gather_sleep0(loop_factory: LoopFactory, n: int) -> float:
    """One asyncio.gather over n asyncio.sleep(0) coroutines."""

    async def main():
        t0 = _now()
        await asyncio.gather(*[asyncio.sleep(0) for _ in range(n)])
        return _now() - t0

    loop = loop_factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def bench_future_chain(loop_factory: LoopFactory, n: int) -> float:
    """n sequential create_future, set_result via call_soon, await round trips."""

    async def main():
        create_future = loop.create_future
        call_soon = loop.call_soon
        t0 = _now()
        for _ in range(n):
            fut = create_future()
            call_soon(fut.set_result, None)
            await fut
        return _now() - t0

    loop = loop_factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def bench_call_soon_threadsafe(
    loop_factory: LoopFactory, n: int, context: contextvars.Context | None = None
) -> float:
    """Another thread makes n call_soon_threadsafe calls; the loop counts them all in."""
    loop = loop_factory()
    arrived = 0
    t = [0.0, 0.0]

    def on_call():
        nonlocal arrived
        arrived += 1
        if arrived == n:
            t[1] = _now()
            loop.stop()

    def producer():
        call_soon_threadsafe = loop.call_soon_threadsafe
        if context is None:
            for _ in range(n):
                call_soon_threadsafe(on_call)
        else:
            for _ in range(n):
                call_soon_threadsafe(on_call, context=context)

    # Daemon so that a loop which loses calls shows up as a timeout in the
    # parent instead of an interpreter that never exits.
    thread = threading.Thread(target=producer, daemon=True)

    def start():
        t[0] = _now()
        thread.start()

    try:
        loop.call_soon(start)
        loop.run_forever()
        thread.join()
    finally:
        loop.close()
    return t[1] - t[0]


def bench_call_soon_threadsafe_ctx(loop_factory: LoopFactory, n: int) -> float:
    """call_soon_threadsafe with one given context: no per-call context copy.

    asyncio (and uvloop and tokioloop) run a callback scheduled without
    `context=` in a copy of the caller's context, made per call; rloop's
    call_soon_threadsafe skips that copy (its callbacks share one context,
    so a variable set by one is seen by the next). Passing a context makes
    every loop do the same work.
    """
    return bench_call_soon_threadsafe(loop_factory, n, contextvars.copy_context())


def bench_run_in_executor(loop_factory: LoopFactory, n: int) -> float:
    """n sequential `await loop.run_in_executor(None, f)` round trips."""

    def work():
        return None

    async def main():
        run_in_executor = loop.run_in_executor
        # Spin up the default executor's first worker outside the timing.
        await run_in_executor(None, work)
        t0 = _now()
        for _ in range(n):
            await run_in_executor(None, work)
        elapsed = _now() - t0
        shutdown = getattr(loop, "shutdown_default_executor", None)
        if shutdown is not None:
            await shutdown()
        return elapsed

    loop = loop_factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def bench_add_reader_pingpong(loop_factory: LoopFactory, n: int) -> float:
    """n one-byte round trips over a socketpair whose two ends are watched
    with add_reader (the pattern of libraries that drive their own sockets,
    such as psycopg, pyzmq or pycares): the fd-watcher dispatch path."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def main():
        done = loop.create_future()
        count = 0

        def echo():
            data = a.recv(64)
            if data:
                a.send(data)

        def answer():
            nonlocal count
            b.recv(64)
            count += 1
            if count == n:
                done.set_result(None)
            else:
                b.send(b"x")

        loop.add_reader(a.fileno(), echo)
        loop.add_reader(b.fileno(), answer)
        t0 = _now()
        b.send(b"x")
        await done
        elapsed = _now() - t0
        loop.remove_reader(a.fileno())
        loop.remove_reader(b.fileno())
        return elapsed

    loop = loop_factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()
        a.close()
        b.close()


def bench_tcp_echo(loop_factory: LoopFactory, n: int) -> float:
    """n 1 KiB request/echo round trips over loopback TCP between a client
    and a server protocol on the same loop (8 connections in flight): the
    transports' read and write paths plus the loop's I/O dispatch."""
    conns = 8
    payload = b"x" * 1024

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    class Client(asyncio.Protocol):
        def __init__(self, quota, done):
            self.quota = quota
            self.done = done
            self.pending = 0

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.pending -= len(data)
            if self.pending > 0:
                return
            self.quota -= 1
            if self.quota == 0:
                self.done.set_result(None)
            else:
                self.send()

        def send(self):
            self.pending = len(payload)
            self.transport.write(payload)

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        clients = []
        for _ in range(conns):
            done = loop.create_future()
            _, proto = await loop.create_connection(
                lambda d=done: Client(n // conns, d), host, port
            )
            clients.append(proto)
        t0 = _now()
        for c in clients:
            c.send()
        await asyncio.gather(*(c.done for c in clients))
        elapsed = _now() - t0
        for c in clients:
            c.transport.close()
        server.close()
        await server.wait_closed()
        return elapsed

    loop = loop_factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


WORKLOADS: dict[str, Callable[[LoopFactory, int], float]] = {
    "call_soon": bench_call_soon,
    "call_later": bench_call_later,
    "create_task": bench_create_task,
    "gather_sleep0": bench_gather_sleep0,
    "future_chain": bench_future_chain,
    "call_soon_threadsafe": bench_call_soon_threadsafe,
    "call_soon_threadsafe_ctx": bench_call_soon_threadsafe_ctx,
    "run_in_executor": bench_run_in_executor,
    "tcp_echo": bench_tcp_echo,
    "add_reader_pingpong": bench_add_reader_pingpong,
}

# Operation counts for benches/micro.py.
FULL_SIZES = {
    "call_soon": 1_000_000,
    "call_later": 100_000,
    "create_task": 100_000,
    "gather_sleep0": 10_000,
    "future_chain": 100_000,
    "call_soon_threadsafe": 100_000,
    "call_soon_threadsafe_ctx": 100_000,
    "run_in_executor": 10_000,
    "tcp_echo": 80_000,
    "add_reader_pingpong": 100_000,
}

# Used by `python -m tokioloop` and `micro.py --quick`; sized so that four
# loops x ten workloads x three rounds stay well under a minute on 2 cores.
QUICK_SIZES = {
    "call_soon": 400_000,
    # Timers need enough volume that the 10 ms spread of delays is not the
    # whole measurement on fast loops.
    "call_later": 50_000,
    "create_task": 40_000,
    "gather_sleep0": 10_000,
    "future_chain": 40_000,
    "call_soon_threadsafe": 40_000,
    "call_soon_threadsafe_ctx": 40_000,
    "run_in_executor": 4_000,
    "tcp_echo": 24_000,
    "add_reader_pingpong": 40_000,
}


# --------------------------------------------------------------------------
# Loops
# --------------------------------------------------------------------------


def loop_factory(name: str) -> LoopFactory:
    """Import loop implementation `name` and return its new_event_loop."""
    if name not in KNOWN_LOOPS:
        known = ", ".join(KNOWN_LOOPS)
        raise ValueError(f"unknown loop {name!r}; choose from {known}")
    return importlib.import_module(name).new_event_loop


def _loop_version(name: str) -> str:
    if name == "asyncio":
        return f"CPython {platform.python_version()}"
    try:
        from importlib.metadata import version

        return version(name)
    except ImportError:  # incl. PackageNotFoundError: e.g. a bare checkout on sys.path
        return str(getattr(sys.modules.get(name), "__version__", "?"))


# --------------------------------------------------------------------------
# Child side: one measurement per interpreter
# --------------------------------------------------------------------------


def measure_one(loop: str, workload: str, n: int) -> dict:
    """Warm up, then time one workload run in this process; returns ns per op."""
    factory = loop_factory(loop)
    func = WORKLOADS[workload]
    # A short throw-away run first, so lazy imports, first-use allocations
    # and code-object warm-up are not billed to the measured run.
    func(factory, max(1, n // 10))
    gc.collect()
    elapsed = func(factory, n)
    return {"elapsed": elapsed, "n": n, "ns_per_op": elapsed * 1e9 / n}


def _child_main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        # Run by path, sys.path[0] is the package directory; drop it so its
        # modules cannot shadow top-level ones.
        del sys.path[0]
    if len(argv) == 4 and argv[0] == "--one":
        result = measure_one(argv[1], argv[2], int(argv[3]))
    elif len(argv) == 2 and argv[0] == "--check":
        loop_factory(argv[1])().close()
        result = {"version": _loop_version(argv[1])}
    else:
        print(
            "usage: _microbench.py --one LOOP WORKLOAD N | --check LOOP\n"
            "(internal protocol of run_matrix; use benches/micro.py or python -m tokioloop)",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    # The answer is out; do not let a slow or hanging interpreter teardown
    # (leftover executor threads, finalizers) turn it into a timeout.
    os._exit(0)


# --------------------------------------------------------------------------
# Parent side: the matrix runner
# --------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # asyncio debug / dev mode slow the loops by very different amounts.
    for var in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE"):
        env.pop(var, None)
    # The child runs this file by path, so the caller's cwd and sys.path
    # tweaks are not on its path.  Prepend the directory holding this package
    # so the child measures the same tokioloop that sits next to this file;
    # but never a site-packages dir, which must not go ahead of the stdlib.
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    site_dirs = {os.path.abspath(d) for d in [*site.getsitepackages(), site.getusersitepackages()]}
    if pkg_parent not in site_dirs:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_parent, env.get("PYTHONPATH")]))
    return env


def _run_child(args: list[str], timeout: float) -> tuple[dict | None, str | None]:
    """Run this file in a child interpreter; return (parsed JSON, None) or (None, error)."""
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    try:
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=timeout, env=_child_env()
        )
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout:g}s"
    except OSError as exc:
        return None, f"cannot start child: {exc}"
    if proc.returncode == 0:
        lines = proc.stdout.strip().splitlines()
        try:
            return json.loads(lines[-1]), None
        except (IndexError, ValueError):
            return None, f"unparseable child output: {proc.stdout[-200:]!r}"
    err_lines = proc.stderr.strip().splitlines()
    reason = err_lines[-1] if err_lines else f"exit status {proc.returncode}"
    return None, reason[:200]


def check_loop(name: str, timeout: float = 60.0) -> tuple[str | None, str | None]:
    """Return (version, None) if loop `name` imports and builds a loop, else (None, reason)."""
    result, error = _run_child(["--check", name], timeout)
    return (result["version"], None) if result else (None, error)


def run_cell(
    loop: str, workload: str, n: int, timeout: float = CELL_TIMEOUT
) -> tuple[float | None, str | None]:
    """Measure one cell in a fresh interpreter; return (ns_per_op, None) or (None, error)."""
    result, error = _run_child(["--one", loop, workload, str(n)], timeout)
    return (result["ns_per_op"], None) if result else (None, error)


def run_matrix(
    loops: list[str],
    workloads: list[str],
    sizes: dict[str, int],
    rounds: int,
    progress: Callable[[int, int, str, str, int], None] | None = None,
    timeout: float = CELL_TIMEOUT,
) -> dict:
    """Measure every (loop, workload) cell `rounds` times, each in its own interpreter.

    Loops that cannot be imported are skipped and listed under "skipped".
    `progress(done, total, loop, workload, round)` is called before each cell.
    The result is a plain JSON-serialisable dict; see format_table.
    """
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s): {', '.join(unknown)}")
    versions: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name in loops:
        version, reason = check_loop(name)
        if version is None:
            skipped[name] = reason or "not importable"
        else:
            versions[name] = version
    active = [name for name in loops if name in versions]

    samples = {w: {name: [] for name in active} for w in workloads}
    errors: dict[str, dict[str, list[str]]] = {}
    total = rounds * len(workloads) * len(active)
    done = 0
    for rnd in range(1, rounds + 1):
        for w in workloads:
            for name in active:
                if progress is not None:
                    progress(done, total, name, w, rnd)
                ns, error = run_cell(name, w, sizes[w], timeout)
                samples[w][name].append(ns)
                if error is not None:
                    errors.setdefault(w, {}).setdefault(name, []).append(error)
                done += 1
    if progress is not None:
        progress(done, total, "", "", rounds)

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "rounds": rounds,
        "loops": active,
        "versions": versions,
        "skipped": skipped,
        "workloads": list(workloads),
        "sizes": {w: sizes[w] for w in workloads},
        "samples": samples,
        "medians": {w: {name: _median(samples[w][name]) for name in active} for w in workloads},
        "errors": errors,
    }


def _median(values: list[float | None]) -> float | None:
    ok = [v for v in values if v is not None]
    return statistics.median(ok) if ok else None


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def _fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "err"
    return f"{ns:,.0f}" if ns >= 100 else f"{ns:.1f}"


def _fmt_ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den == 0:
        return "n/a"
    return f"{num / den:.2f}"


def format_table(results: dict, target: str = TARGET) -> str:
    """Render results as a markdown table: median ns/op per loop, then target's ratios.

    Ratios are time ratios (target ns/op divided by the other's), so below
    1.00 means `target` is faster.
    """
    loops = results["loops"]
    medians = results["medians"]
    rivals = [r for r in RIVALS if r in loops and r != target]
    best_label = f"{target}/best({','.join(RIVALS)})"
    header = ["workload", "n", *(f"{name} ns/op" for name in loops)]
    header += [f"{target}/{BASELINE}", best_label]

    rows = []
    for w in results["workloads"]:
        cell = medians[w]
        mine = cell.get(target)
        rival_values = [cell[r] for r in rivals if cell.get(r) is not None]
        best = min(rival_values) if rival_values else None
        row = [w, f"{results['sizes'][w]:,}", *(_fmt_ns(cell[name]) for name in loops)]
        row += [_fmt_ratio(mine, cell.get(BASELINE)), _fmt_ratio(mine, best)]
        rows.append(row)

    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)]
        return "| " + " | ".join(padded) + " |"

    # Left-align the workload names, right-align the numbers.
    rule = [":" + "-" * (widths[0] + 1)] + ["-" * (w + 1) + ":" for w in widths[1:]]
    out = [line(header), "|" + "|".join(rule) + "|", *(line(r) for r in rows)]

    notes = [
        f"Median of {results['rounds']} round(s), each cell in a fresh interpreter; ratios "
        + f"below 1.00 mean {target} is faster."
    ]
    if target not in loops:
        notes.append(f"{target} was not measured, so its ratio columns are n/a.")
    for name, reason in results["skipped"].items():
        notes.append(f"skipped {name}: {reason}")
    for w, per_loop in results["errors"].items():
        for name, errs in per_loop.items():
            notes.append(f"{w} on {name}: {len(errs)} failed run(s), e.g. {errs[0]}")
    return "\n".join(out) + "\n\n" + "\n".join(f"- {n}" for n in notes)


class Progress:
    """A `progress` callback for run_matrix that writes to a stream (stderr).

    On a terminal it redraws one line (`[12/48] tokioloop call_soon round 2`);
    otherwise, e.g. in CI logs, it prints one line per cell.
    """

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = 0

    def __call__(self, done: int, total: int, loop: str, workload: str, rnd: int) -> None:
        if done >= total:
            text = f"[{done}/{total}] done"
        else:
            text = f"[{done + 1}/{total}] {loop} {workload} round {rnd}"
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
            if done >= total:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
