"""Where `call_soon_threadsafe`'s time goes: each side alone, then both
together slice by slice.

The `call_soon_threadsafe` row of micro.py times two threads that take
turns on the GIL: a producer making N calls and the loop running them. Its
total mixes both sides' costs with how the GIL is handed over and with the
memory the first burst of handles needs. This script separates them, for
each loop, interleaved over rounds (fresh loop each time, as micro.py):

- ``split``: the producer makes N calls while the loop is not running, then
  the loop runs them all (ns per call for each side; ``consumer`` is the
  first drain, on a fresh loop, ``warm`` a second burst on the same loop).
- ``timeline``: the micro.py workload, with both sides noting the time every
  500 calls, printed as GIL slices: who held the GIL, how long, how many
  calls went through (the first slices of a fresh loop allocate every
  handle; later ones reuse them). Slice times run from a side's first note
  to its last, so they are a little short.
- ``faults``: minor page faults and ns per call of the micro.py workload
  after its warm-up, in a fresh interpreter per round.

    .venv/bin/python benches/threadsafe_split.py [split|timeline|faults]
        [--loops rloop,tokioloop] [--rounds 5] [--ctx]
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import json
import resource
import statistics
import subprocess
import sys
import threading
import time

from tokioloop import _microbench as mb

N = 50_000
TIMELINE_N = 100_000
STEP = 500


def split(loop_name: str, context: contextvars.Context | None) -> dict[str, float]:
    loop = mb.loop_factory(loop_name)()
    ran = 0

    def on_call():
        nonlocal ran
        ran += 1
        if ran % N == 0:
            loop.stop()

    def produce(out: dict[str, float], key: str) -> None:
        call = loop.call_soon_threadsafe
        t0 = time.perf_counter()
        if context is None:
            for _ in range(N):
                call(on_call)
        else:
            for _ in range(N):
                call(on_call, context=context)
        out[key] = time.perf_counter() - t0

    result: dict[str, float] = {}
    try:
        for suffix in ("", "_warm"):
            thread = threading.Thread(target=produce, args=(result, "producer" + suffix))
            thread.start()
            thread.join()
            t0 = time.perf_counter()
            loop.run_forever()
            result["consumer" + suffix] = time.perf_counter() - t0
    finally:
        loop.close()
    return {k: v / N * 1e9 for k, v in result.items()}


def timeline(loop_name: str, context: contextvars.Context | None) -> str:
    loop = mb.loop_factory(loop_name)()
    now = time.perf_counter
    consumed: list[tuple[float, str, int]] = []
    produced: list[tuple[float, str, int]] = []
    ran = 0

    def on_call():
        nonlocal ran
        ran += 1
        if ran % STEP == 0:
            consumed.append((now(), "C", ran))
        if ran == TIMELINE_N:
            loop.stop()

    def producer():
        call = loop.call_soon_threadsafe
        kwargs = {} if context is None else {"context": context}
        for i in range(TIMELINE_N):
            if i % STEP == 0:
                produced.append((now(), "P", i))
            call(on_call, **kwargs)
        produced.append((now(), "P", TIMELINE_N))

    thread = threading.Thread(target=producer)
    start = [0.0]

    def start_producer():
        start[0] = now()
        thread.start()

    try:
        loop.call_soon(start_producer)
        loop.run_forever()
        thread.join()
    finally:
        loop.close()
    slices: list[list] = []
    for t, who, count in sorted(produced + consumed):
        if slices and slices[-1][0] == who:
            slices[-1][2:] = [t, count]
        else:
            slices.append([who, t, t, count])
    total = consumed[-1][0] - start[0]
    # Each note counts that side's calls so far; a slice did the difference
    # from the same side's previous slice.
    done = {"P": 0, "C": 0}
    shown = []
    for who, begin, end, last in slices:
        shown.append(f"{who}{(end - begin) * 1e3:.1f}ms/{last - done[who]}")
        done[who] = last
    return f"{total / TIMELINE_N * 1e9:.0f} ns/call; slices: {' '.join(shown)}"


def faults_child(loop_name: str, ctx: bool) -> None:
    factory = mb.loop_factory(loop_name)
    workload = mb.WORKLOADS["call_soon_threadsafe_ctx" if ctx else "call_soon_threadsafe"]
    workload(factory, TIMELINE_N // 10)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    elapsed = workload(factory, TIMELINE_N)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps({"ns": elapsed / TIMELINE_N * 1e9, "faults": after - before}))


def faults(loop_name: str, ctx: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--faults-child", loop_name] + (["--ctx"] if ctx else [])
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="split", choices=("split", "timeline", "faults"))
    parser.add_argument("--loops", default="rloop,tokioloop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ctx", action="store_true", help="pass one context= to every call")
    parser.add_argument("--faults-child", metavar="LOOP", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.faults_child:
        faults_child(args.faults_child, args.ctx)
        return 0
    loops = args.loops.split(",")
    context = contextvars.copy_context() if args.ctx else None
    if args.mode == "timeline":
        for round_ in range(args.rounds):
            for name in loops:
                print(f"round {round_ + 1} {name:10s} {timeline(name, context)}", flush=True)
        return 0
    results: dict[str, list[dict[str, float]]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name in loops:
            one = split(name, context) if args.mode == "split" else faults(name, args.ctx)
            results[name].append(one)
    print(f"{args.mode}, medians of {args.rounds} rounds" + (" (context=)" if args.ctx else ""))
    for name in loops:
        keys = results[name][0].keys()
        cells = "  ".join(f"{k} {statistics.median(r[k] for r in results[name]):.0f}" for k in keys)
        print(f"  {name:10s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
