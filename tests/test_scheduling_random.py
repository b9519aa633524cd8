"""Randomised differential test of the order in which a loop runs things.

Each seed generates a program: callbacks that, when they run, schedule more
work of random kinds (``call_soon`` with and without a context,
``call_soon_threadsafe`` from the loop thread, ``call_at`` with deadlines
already past, ``call_later(0)``, far-future timers, tasks that step through
``sleep(0)``, futures resolved by a callback) and cancel work scheduled
earlier. The same program runs on stock asyncio and on tokioloop, and the
traces (which callback ran, which cancel happened, in what order) must be
identical.

Nothing here depends on the clock: the past deadlines are all distinct and
all due at once, ``call_later(0)`` deadlines come after every past one, and
far-future timers are always cancelled before they fire. So a difference is
a difference in scheduling semantics: FIFO order of the ready queue, due
timers joining the batch after the callbacks already queued, ordering of
due timers by deadline, a callback scheduled during a batch waiting for the
next iteration, cancellation, or a reused handle that comes back to life.
Half of the handles are kept (and may be cancelled later) and half are
dropped at once, so tokioloop's handle reuse is exercised beside live
references to handles it must not reuse. A few seeds run in debug mode.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random

import pytest
from loop_support import get_factory

KINDS = (
    "soon",
    "soon",
    "soon_ctx",
    "threadsafe",
    "at_past",
    "at_past",
    "later_zero",
    "at_future",
    "task",
    "future",
)
# Callbacks (and tasks, futures) one program makes in all.
BUDGET = 300


def run_program(kind: str, seed: int, debug: bool = False) -> list:
    rng = random.Random(seed)
    loop = get_factory(kind)()
    loop.set_debug(debug)
    trace: list = []
    held: dict[int, asyncio.Handle] = {}
    far_future: list[asyncio.TimerHandle] = []
    ids = itertools.count(1)
    budget = [BUDGET]
    # Scheduled work that has neither run nor been cancelled; the program
    # stops when it reaches zero.
    pending = [0]
    base = loop.time()
    offsets: set[int] = set()

    def past_deadline() -> float:
        while True:
            offset = rng.randrange(1, 1_000_000)
            if offset not in offsets:
                offsets.add(offset)
                return base - offset * 1e-6

    def finish_one() -> None:
        pending[0] -= 1
        if pending[0] == 0:
            for timer in far_future:
                timer.cancel()
            loop.stop()

    def callback(i: int) -> None:
        trace.append(i)
        held.pop(i, None)
        for _ in range(rng.randrange(1, 4)):
            if budget[0] > 0:
                schedule(rng.choice(KINDS))
        if held and rng.random() < 0.3:
            victim = rng.choice(sorted(held))
            handle = held.pop(victim)
            if not handle.cancelled():
                handle.cancel()
                trace.append(("cancel", victim))
                finish_one()
        finish_one()

    async def stepper(i: int, steps: int) -> None:
        for step in range(steps):
            trace.append((i, step))
            await asyncio.sleep(0)
        trace.append((i, "done"))
        finish_one()

    def on_done(fut: asyncio.Future) -> None:
        trace.append(("future", fut.result()))
        finish_one()

    def schedule(what: str) -> None:
        i = next(ids)
        budget[0] -= 1
        if what == "at_future":
            far_future.append(loop.call_at(base + 1000 + i, callback, i))
            return
        pending[0] += 1
        if what == "task":
            loop.create_task(stepper(i, rng.randrange(0, 4)))
            return
        if what == "future":
            fut = loop.create_future()
            fut.add_done_callback(on_done)
            loop.call_soon(fut.set_result, i)
            return
        if what == "soon":
            handle = loop.call_soon(callback, i)
        elif what == "soon_ctx":
            handle = loop.call_soon(callback, i, context=contextvars.copy_context())
        elif what == "threadsafe":
            handle = loop.call_soon_threadsafe(callback, i)
        elif what == "at_past":
            handle = loop.call_at(past_deadline(), callback, i)
        else:
            handle = loop.call_later(0, callback, i)
        if rng.random() < 0.5:
            held[i] = handle

    try:
        for _ in range(10):
            schedule(rng.choice(KINDS))
        if pending[0] == 0:
            return trace
        loop.run_forever()
        assert pending[0] == 0
        return trace
    finally:
        loop.close()


@pytest.mark.parametrize(
    ("seed", "debug"),
    # Debug mode takes other paths in tokioloop (no handle reuse, the
    # debug-mode runner with its slow-callback timing).
    [(seed, False) for seed in range(100)] + [(seed, True) for seed in range(20)],
)
def test_random_program_runs_in_asyncio_order(seed, debug):
    expected = run_program("asyncio", seed, debug)
    got = run_program("tokioloop", seed, debug)
    assert len(expected) > 10, "the program did too little to compare"
    if got != expected:
        first = next(
            (n for n, (a, b) in enumerate(zip(expected, got)) if a != b),
            min(len(expected), len(got)),
        )
        pytest.fail(
            f"traces differ from entry {first}: asyncio {expected[first : first + 8]}, "
            f"tokioloop {got[first : first + 8]} (lengths {len(expected)}, {len(got)})"
        )
