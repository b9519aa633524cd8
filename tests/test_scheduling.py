"""Callback scheduling: call_soon / call_later / call_at, handles, loop.time()."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import decimal
import fractions
import functools
import itertools
import math
import sys
import time
from unittest import mock

import pytest
from loop_support import PY311, PY312


def run_once(loop):
    """Run exactly one loop iteration (the stop() idiom asyncio documents)."""
    loop.call_soon(loop.stop)
    loop.run_forever()


# --------------------------------------------------------------------------
# call_soon
# --------------------------------------------------------------------------


def test_call_soon_fifo(loop):
    out = []
    for i in range(200):
        loop.call_soon(out.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == list(range(200))


def test_call_soon_args(loop):
    out = []

    def cb(*args):
        out.append(args)

    loop.call_soon(cb)
    loop.call_soon(cb, 1)
    loop.call_soon(cb, "a", None, 3.5)
    obj = object()
    loop.call_soon(cb, obj, [1, 2])
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == [(), (1,), ("a", None, 3.5), (obj, [1, 2])]
    assert out[3][0] is obj


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_later"])
def test_single_tuple_argument_stays_one_argument(loop, method):
    # A lone argument that is itself a tuple (or an empty one, or a tuple
    # subclass) is passed as one argument, and `_args` wraps it once.
    Pair = collections.namedtuple("Pair", "a b")
    out = []

    def cb(*args):
        out.append(args)

    def schedule(*args):
        if method == "call_later":
            return loop.call_later(0, cb, *args)
        return getattr(loop, method)(cb, *args)

    single, empty, pair = (1, 2), (), Pair(1, 2)
    handles = [schedule(single), schedule(empty), schedule(pair), schedule(single, empty)]
    shapes = [h._args for h in handles]
    assert shapes == [((1, 2),), ((),), (Pair(1, 2),), ((1, 2), ())]
    assert all(h._args is a for h, a in zip(handles, shapes))
    assert shapes[0][0] is single and shapes[2][0] is pair
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert out == [((1, 2),), ((),), (Pair(1, 2),), ((1, 2), ())]
    assert out[0][0] is single and type(out[2][0]) is Pair


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_call_soon_argument_forms(loop, method):
    # The keyword forms asyncio's Python signature accepts, and its errors.
    schedule = getattr(loop, method)
    seen = []
    ctx = contextvars.copy_context()
    schedule(callback=functools.partial(seen.append, "kw"))
    schedule(seen.append, "ctx-kw", context=ctx)
    schedule(context=None, callback=functools.partial(seen.append, "both-kw"))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["kw", "ctx-kw", "both-kw"]
    errors = []
    for call in (
        lambda: schedule(),
        lambda: schedule(context=None),
        lambda: schedule(seen.append, callback=seen.append),
        lambda: schedule(seen.append, delay=1),
        lambda: schedule(seen.append, 1, context=None, contexts=None),
    ):
        with pytest.raises(TypeError) as info:
            call()
        # (3.13 adds "Did you mean ...?" hints to asyncio's messages.)
        errors.append(str(info.value).split("(")[-1].split(". Did you mean")[0])
    assert errors == [
        ") missing 1 required positional argument: 'callback'",
        ") missing 1 required positional argument: 'callback'",
        ") got multiple values for argument 'callback'",
        ") got an unexpected keyword argument 'delay'",
        ") got an unexpected keyword argument 'contexts'",
    ]


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_timer_argument_forms(loop, method):
    lead = "delay" if method == "call_later" else "when"
    schedule = getattr(loop, method)

    def at(delay):
        return delay if method == "call_later" else loop.time() + delay

    seen = []
    ctx = contextvars.copy_context()
    schedule(at(0), callback=functools.partial(seen.append, 1))
    schedule(**{lead: at(0.001)}, callback=functools.partial(seen.append, 2))
    schedule(at(0.002), seen.append, 3, context=ctx)
    schedule(at(0.01), loop.stop)
    loop.run_forever()
    assert seen == [1, 2, 3]
    errors = []
    for call in (
        lambda: schedule(),
        lambda: schedule(at(1)),
        lambda: schedule(callback=seen.append),
        lambda: schedule(at(1), seen.append, **{lead: 1}),
        lambda: schedule(at(1), seen.append, nope=1),
        # (3.10's asyncio has no None check: TypeError or AssertionError.)
        *([lambda: schedule(None, seen.append)] if PY311 else []),
    ):
        with pytest.raises(TypeError) as info:
            call()
        errors.append(str(info.value).split("(")[-1].split(". Did you mean")[0])
    assert errors == [
        f") missing 2 required positional arguments: '{lead}' and 'callback'",
        ") missing 1 required positional argument: 'callback'",
        f") missing 1 required positional argument: '{lead}'",
        f") got multiple values for argument '{lead}'",
        ") got an unexpected keyword argument 'nope'",
        *(
            ["delay must not be None" if lead == "delay" else "when cannot be None"]
            if PY311
            else []
        ),
    ]


def test_call_soon_returns_handle(loop):
    h = loop.call_soon(lambda: None)
    assert hasattr(h, "cancel")
    assert h.cancelled() is False


def test_callback_return_value_ignored(loop):
    out = []

    def cb():
        out.append(1)
        return "ignored"

    loop.call_soon(cb)
    run_once(loop)
    assert out == [1]


# --------------------------------------------------------------------------
# call_later / call_at
# --------------------------------------------------------------------------


def test_call_later_order_by_when(loop):
    out = []
    # Scheduled in an order different from the firing order.
    for delay in (0.03, 0.01, 0.05, 0.02, 0.04):
        loop.call_later(delay, out.append, delay)
    loop.call_later(0.08, loop.stop)
    loop.run_forever()
    assert out == [0.01, 0.02, 0.03, 0.04, 0.05]


def test_call_at_order_by_when(loop):
    out = []
    base = loop.time()
    offsets = [0.04, 0.0, 0.03, 0.01, 0.02]
    for off in offsets:
        loop.call_at(base + off, out.append, off)
    loop.call_at(base + 0.07, loop.stop)
    loop.run_forever()
    assert out == sorted(offsets)


def test_call_later_same_delay_fires_in_scheduling_order(loop):
    # Consecutive call_later() calls with the same delay get non-decreasing
    # deadlines, so they fire in scheduling order.
    out = []
    for i in range(50):
        loop.call_later(0.01, out.append, i)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert out == list(range(50))


def test_call_at_exact_ties_fire_together_before_later_timer(loop):
    # asyncio documents the order of callbacks scheduled for *exactly* the
    # same time as undefined (its heap does not keep insertion order for
    # ties), so only assert that all of them fire, before the next deadline.
    out = []
    base = loop.time() + 0.01
    for i in range(20):
        loop.call_at(base, out.append, i)
    loop.call_at(base + 0.01, out.append, "later")
    loop.call_at(base + 0.02, loop.stop)
    loop.run_forever()
    assert len(out) == 21
    assert sorted(out[:20]) == list(range(20))
    assert out[20] == "later"


def test_call_later_waits_for_delay(loop):
    fired = []
    start = loop.time()
    loop.call_later(0.05, lambda: (fired.append(loop.time()), loop.stop()))
    loop.run_forever()
    assert len(fired) == 1
    # A timer never fires before its deadline (asyncio allows one clock
    # resolution of slack; use 1 ms to be safe).
    assert fired[0] - start >= 0.05 - 0.001
    # Generous upper bound on latency.
    assert fired[0] - start < 1.0


def test_zero_and_negative_delays_after_queued_call_soon(loop):
    # Due timers are moved to the ready queue *after* the callbacks already
    # there; among themselves they run in deadline order.
    out = []
    loop.call_soon(out.append, "soon1")
    loop.call_later(0, out.append, "later0")
    loop.call_later(-5, out.append, "later-5")
    loop.call_at(loop.time() - 10, out.append, "at-10")
    loop.call_soon(out.append, "soon2")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["soon1", "soon2", "at-10", "later-5", "later0"]


def test_zero_delay_runs_within_one_iteration(loop):
    out = []
    loop.call_later(0, out.append, "zero")
    run_once(loop)
    assert out == ["zero"]


def test_callbacks_scheduled_by_callback_run_next_iteration(loop):
    out = []

    def first():
        out.append("first")
        loop.call_soon(out.append, "child")

    loop.call_soon(first)
    loop.call_soon(loop.stop)
    loop.call_soon(out.append, "after-stop")
    loop.run_forever()
    # The whole batch that was ready when the iteration started runs, even
    # the callbacks queued after stop(); the child waits for the next one.
    assert out == ["first", "after-stop"]

    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["first", "after-stop", "child"]


def test_stop_called_from_callback_finishes_current_batch(loop):
    out = []

    def stopper():
        out.append("stopper")
        loop.stop()

    loop.call_soon(out.append, 1)
    loop.call_soon(stopper)
    loop.call_soon(out.append, 2)
    loop.run_forever()
    assert out == [1, "stopper", 2]
    assert not loop.is_running()


def test_self_rescheduling_callback_does_not_starve_timers(loop):
    count = []

    def again():
        count.append(1)
        loop.call_soon(again)  # an endless chain, one link per iteration

    loop.call_soon(again)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()  # would hang if the timer never got its turn
    assert len(count) >= 2
    n = len(count)
    # The next link is still queued and runs in the next iteration.
    run_once(loop)
    assert len(count) in (n + 1, n + 2)


# --------------------------------------------------------------------------
# Handle / TimerHandle
# --------------------------------------------------------------------------


def my_named_callback():
    pass


def test_handle_cancel_prevents_call(loop):
    out = []
    h = loop.call_soon(out.append, "cancelled")
    loop.call_soon(out.append, "kept")
    assert h.cancelled() is False
    h.cancel()
    assert h.cancelled() is True
    h.cancel()  # idempotent
    assert h.cancelled() is True
    run_once(loop)
    assert out == ["kept"]


def test_timer_cancel_prevents_call(loop):
    out = []
    h = loop.call_later(0.01, out.append, "cancelled")
    h2 = loop.call_at(loop.time() + 0.01, out.append, "cancelled2")
    loop.call_later(0.02, out.append, "kept")
    h.cancel()
    h2.cancel()
    assert h.cancelled() is True
    assert h2.cancelled() is True
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert out == ["kept"]


def test_timer_cancelled_by_earlier_callback(loop):
    out = []
    h = loop.call_later(0.02, out.append, "victim")
    loop.call_later(0.01, h.cancel)
    loop.call_later(0.04, loop.stop)
    loop.run_forever()
    assert out == []
    assert h.cancelled() is True


def test_timerhandle_when(loop):
    when = loop.time() + 12.5
    h = loop.call_at(when, my_named_callback)
    assert h.when() == when
    before = loop.time()
    h2 = loop.call_later(3.25, my_named_callback)
    after = loop.time()
    assert before + 3.25 <= h2.when() <= after + 3.25
    h.cancel()
    h2.cancel()
    # when() stays available after cancellation.
    assert h.when() == when


def test_handle_repr(loop):
    h = loop.call_soon(my_named_callback)
    assert "my_named_callback" in repr(h)
    assert "cancelled" not in repr(h)
    h.cancel()
    assert "cancelled" in repr(h)

    t = loop.call_later(10, my_named_callback)
    assert "my_named_callback" in repr(t)
    assert "cancelled" not in repr(t)
    t.cancel()
    assert "cancelled" in repr(t)


@pytest.mark.skipif(not PY312, reason="Handle.get_context() is new in 3.12")
def test_handle_get_context(loop):
    ctx = contextvars.Context()
    h = loop.call_soon(my_named_callback, context=ctx)
    assert h.get_context() is ctx
    t = loop.call_later(10, my_named_callback, context=ctx)
    assert t.get_context() is ctx
    t.cancel()

    var = contextvars.ContextVar("var")
    var.set("outer")
    h2 = loop.call_soon(my_named_callback)
    got = h2.get_context()
    assert isinstance(got, contextvars.Context)
    assert got[var] == "outer"


def test_many_timers_cancelled(loop):
    calls = []
    handles = [loop.call_later(0.001 + (i % 100) * 0.0001, calls.append, i) for i in range(100_000)]
    for h in handles:
        h.cancel()
    assert all(h.cancelled() for h in handles)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == []
    # The loop is still perfectly usable afterwards.
    loop.call_later(0.001, calls.append, "ok")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == ["ok"]


# --------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------


def test_call_later_non_number_delay(loop):
    with pytest.raises(TypeError):
        loop.call_later("1", my_named_callback)
    with pytest.raises(TypeError):
        loop.call_later(object(), my_named_callback)


def test_call_later_none_delay(loop):
    if PY311:
        with pytest.raises(TypeError, match="delay must not be None"):
            loop.call_later(None, my_named_callback)
    else:
        with pytest.raises(TypeError):
            loop.call_later(None, my_named_callback)


def test_call_at_none_when(loop):
    if PY311:
        with pytest.raises(TypeError, match="when cannot be None"):
            loop.call_at(None, my_named_callback)
    else:
        # 3.10's asyncio fails an internal assert here; a TypeError is the
        # behaviour of every later version.
        with pytest.raises((TypeError, AssertionError)):
            loop.call_at(None, my_named_callback)


def test_call_later_int_and_float_delays(loop):
    out = []
    loop.call_later(0, out.append, "int0")
    loop.call_later(0.0, out.append, "float0")
    loop.call_later(False, out.append, "bool0")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert sorted(out) == ["bool0", "float0", "int0"]


# --------------------------------------------------------------------------
# loop.time()
# --------------------------------------------------------------------------


def test_time_monotonic_and_close_to_time_monotonic(loop):
    samples = []
    for _ in range(200):
        samples.append(loop.time())
    assert all(b >= a for a, b in itertools.pairwise(samples))
    assert isinstance(samples[0], float)
    for _ in range(5):
        t0 = time.monotonic()
        lt = loop.time()
        t1 = time.monotonic()
        assert t0 - 0.01 <= lt <= t1 + 0.01


def test_time_sub_millisecond_precision(loop):
    # Two consecutive calls are much closer than a millisecond...
    deltas = []
    for _ in range(20):
        a = loop.time()
        b = loop.time()
        deltas.append(b - a)
    assert min(deltas) < 0.001

    # ...and the values are not quantised to whole milliseconds.
    samples = []
    for _ in range(20):
        time.sleep(0.0003)
        samples.append(loop.time())
    off_grid = [v for v in samples if abs(v * 1000 - round(v * 1000)) > 1e-6]
    assert len(off_grid) >= 10, samples


def test_time_advances_during_run(loop):
    seen = []

    async def main():
        seen.append(loop.time())
        await asyncio.sleep(0.02)
        seen.append(loop.time())

    loop.run_until_complete(main())
    assert 0.02 - 0.001 <= seen[1] - seen[0] < 1.0


def test_time_is_float_and_python_clock(loop):
    # Same epoch as time.monotonic(): this is what asyncio does and what
    # code mixing both clocks relies on.
    assert abs(loop.time() - time.monotonic()) < 0.05
    assert sys.float_info.max > loop.time() > 0


# --------------------------------------------------------------------------
# Extreme deadlines and call signatures
# --------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [1e9, 1e18, float("inf")])
def test_call_later_huge_delay(loop, delay):
    out = []
    h = loop.call_later(delay, out.append, "never")
    if delay == float("inf"):
        assert h.when() == delay
    else:
        assert h.when() == pytest.approx(loop.time() + delay)
    loop.call_soon(out.append, "soon")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == ["soon"]
    h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["soon"]


@pytest.mark.parametrize("when", [1e18, float("inf"), -1e18, float("-inf")])
def test_call_at_extreme_when(loop, when):
    out = []
    loop.call_at(when, out.append, "extreme")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    # Deadlines in the far past are due at once; far future ones never are.
    assert out == (["extreme"] if when < 0 else [])


def test_call_later_huge_negative_delay(loop):
    out = []
    loop.call_later(-1e18, out.append, "past")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["past"]


def test_call_soon_rejects_unknown_keyword(loop):
    with pytest.raises(TypeError):
        loop.call_soon(my_named_callback, x=1)
    with pytest.raises(TypeError):
        loop.call_later(0, my_named_callback, x=1)
    with pytest.raises(TypeError):
        loop.call_at(loop.time(), my_named_callback, x=1)
    with pytest.raises(TypeError):
        loop.call_soon_threadsafe(my_named_callback, x=1)


def test_context_none_is_accepted(loop):
    out = []
    loop.call_soon(out.append, 1, context=None)
    loop.call_later(0, out.append, 2, context=None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == [1, 2]


def test_timerhandle_ordering_and_hash(loop):
    base = loop.time() + 100
    a = loop.call_at(base, my_named_callback)
    b = loop.call_at(base + 1, my_named_callback)
    assert a < b
    assert b > a
    assert a <= b
    assert not (b < a)
    assert isinstance(hash(a), int)
    assert len({a, b}) == 2
    a.cancel()
    b.cancel()


# --------------------------------------------------------------------------
# Cancellation and ordering inside one iteration
# --------------------------------------------------------------------------


def test_cancel_handle_later_in_same_batch(loop):
    out = []
    victim = None

    def killer():
        out.append("killer")
        victim.cancel()

    loop.call_soon(killer)
    victim = loop.call_soon(out.append, "victim")
    loop.call_soon(out.append, "survivor")
    run_once(loop)
    assert out == ["killer", "survivor"]


def test_cancel_due_timer_in_same_iteration(loop):
    # Both timers are already due when the iteration starts, so both are
    # moved to the ready queue; the first cancels the second, which then
    # must not run.
    out = []
    victim = None

    def killer():
        out.append("killer")
        victim.cancel()

    now = loop.time()
    loop.call_at(now - 1.0, killer)
    victim = loop.call_at(now - 0.5, out.append, "victim")
    loop.call_at(now - 0.25, out.append, "survivor")
    run_once(loop)
    assert out == ["killer", "survivor"]
    assert victim.cancelled()


def test_due_timers_cancelled_in_their_batch_leave_the_heap(loop):
    # 1,000 timers already due; the first cancels the other 999 while they
    # wait in the ready queue. None of them is scheduled any more after the
    # iteration (asyncio's TimerHandle._scheduled), and later timers, live
    # and cancelled, still behave (tokioloop counts the cancellations for
    # heap compaction and must take them back).
    out = []
    now = loop.time()
    due = []

    def killer():
        out.append("killer")
        for h in due[1:]:
            h.cancel()

    due.append(loop.call_at(now - 1.0, killer))
    due.extend(loop.call_at(now - 0.5 + i * 1e-6, out.append, i) for i in range(999))
    later = [loop.call_at(now + 0.1 + 1e-4 * ((i * 7) % 300), out.append, i) for i in range(300)]
    for h in later[::2]:
        h.cancel()
    run_once(loop)
    assert out == ["killer"]
    assert [h._scheduled for h in due] == [False] * 1000
    loop.call_at(now + 0.3, loop.stop)
    loop.run_forever()
    want = sorted(range(1, 300, 2), key=lambda i: (i * 7) % 300)
    assert out == ["killer", *want]
    assert not any(h._scheduled for h in later)


def test_timers_scheduled_by_callback_run_after_its_call_soons(loop):
    out = []

    def parent():
        loop.call_later(0, out.append, "later0-a")
        loop.call_soon(out.append, "soon-a")
        loop.call_at(loop.time() - 1, out.append, "at-past")
        loop.call_soon(out.append, "soon-b")

    loop.call_soon(parent)
    run_once(loop)
    assert out == []
    run_once(loop)
    assert out == ["soon-a", "soon-b", "at-past", "later0-a"]


def test_timer_never_fires_before_its_deadline(loop):
    fired = []
    delays = [0.0003 * i for i in range(1, 40)] + [0.001, 0.0015, 0.002, 0.0101, 0.0199]

    def cb(h_box):
        fired.append((loop.time(), h_box[0].when()))

    for d in delays:
        box = []
        box.append(loop.call_later(d, cb, box))
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert len(fired) == len(delays)
    # asyncio allows one clock resolution (1 ns) of slack; allow 1 us.
    early = [(t, w) for (t, w) in fired if t < w - 1e-6]
    assert early == []
    # ...and they fired in deadline order.
    whens = [w for (_, w) in fired]
    assert whens == sorted(whens)


def test_non_callable_without_debug_fails_at_call_time(loop):
    # Outside debug mode asyncio does not validate the callback when it is
    # scheduled; calling it fails and goes to the exception handler.
    reports = []
    loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))
    h = loop.call_soon(42)
    run_once(loop)
    assert len(reports) == 1
    assert reports[0]["handle"] is h
    assert isinstance(reports[0]["exception"], TypeError)
    assert reports[0]["message"] == "Exception in callback 42()"


def test_partial_and_callable_object_callbacks(loop):
    out = []

    class Callable:
        def __call__(self, x):
            out.append(("obj", x))

    h = loop.call_soon(functools.partial(out.append, "partial"))
    assert "append" in repr(h)  # the partial is unwrapped in the repr
    loop.call_soon(Callable(), 1)
    loop.call_later(0, functools.partial(out.append, "timer-partial"))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["partial", ("obj", 1), "timer-partial"]


class _Int(int):
    pass


def test_call_later_int_delays(loop):
    # Exact ints take a direct int-to-float conversion: same deadlines, same
    # order, same errors as floats and int subclasses.
    seen = []
    t0 = loop.time()
    handles = [
        loop.call_later(0, seen.append, "int 0"),
        loop.call_later(0.0, seen.append, "float 0"),
        loop.call_later(-3, seen.append, "int -3"),
        loop.call_later(False, seen.append, "bool"),
        loop.call_later(_Int(0), seen.append, "subclass"),
        loop.call_later(2**53 + 1, seen.append, "never"),
    ]
    assert handles[0].when() >= t0
    assert handles[-1].when() - loop.time() > 2**52
    assert isinstance(handles[0].when(), float)
    handles[-1].cancel()
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert seen == ["int -3", "int 0", "float 0", "bool", "subclass"]
    with pytest.raises(OverflowError, match="int too large to convert to float"):
        loop.call_later(2**1100, seen.append)
    with pytest.raises(OverflowError, match="int too large to convert to float"):
        loop.call_later(-(2**1100), seen.append)


def test_call_at_int_deadlines(loop):
    seen = []
    now = int(loop.time())
    h = loop.call_at(now, seen.append, "int")
    loop.call_at(float(now), seen.append, "float")
    loop.call_at(now - 10, seen.append, "past")
    assert h.when() == now
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert seen == ["past", "int", "float"]


def test_time_is_monotonic_float(loop):
    # tokioloop's time() is a METH_NOARGS C method.
    a = time.monotonic()
    b = loop.time()
    c = time.monotonic()
    assert type(b) is float
    assert a <= b <= c
    with pytest.raises(TypeError):
        loop.time(1)
    loop.close()
    assert loop.time() >= c


class _IntSubclass(int):
    pass


@pytest.mark.parametrize(
    "make",
    [
        lambda now: math.ceil(now + 10),
        lambda now: now + 10.5,
        lambda now: _IntSubclass(int(now) + 10),
        lambda now: decimal.Decimal(int(now) + 10),
        lambda now: fractions.Fraction(2 * int(now) + 21, 2),
        lambda now: 2**60,
        lambda now: True,
    ],
    ids=["int", "float", "int_subclass", "decimal", "fraction", "huge_int", "bool"],
)
def test_call_at_when_is_the_number_given(loop, make):
    # asyncio keeps call_at's deadline as given (aiohttp schedules
    # call_at(math.ceil(t)) and its tests read when() back as an int).
    when = make(loop.time())
    h = loop.call_at(when, my_named_callback)
    assert type(h.when()) is type(when)
    assert h.when() == when
    assert f"when={when} " in repr(h)
    h.cancel()
    assert type(h.when()) is type(when)


def test_call_later_when_is_a_float(loop):
    h = loop.call_later(10, my_named_callback)
    assert type(h.when()) is float
    h.cancel()


# --------------------------------------------------------------------------
# A replaced time(): asyncio's scheduler asks self.time()
# --------------------------------------------------------------------------


def test_patched_time_makes_timers_due(loop):
    # aiohttp's keep-alive test: time() patched to a call_at deadline, then
    # two sleep(0)s; the timer has run.
    async def main():
        now = loop.time()
        fired = []
        with mock.patch.object(loop, "time") as patched:
            patched.return_value = now
            loop.call_at(now + 3630, fired.append, "deadline")
            patched.return_value = now + 3630
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        return fired

    # No wait_for: from 3.12 its deadline is read from the patched clock.
    # main() only awaits sleep(0)s.
    assert loop.run_until_complete(main()) == ["deadline"]


def test_patched_time_is_call_laters_now(loop):
    async def main():
        with mock.patch.object(loop, "time", return_value=1000.0):
            return loop.call_later(5, my_named_callback).when()

    assert loop.run_until_complete(main()) == 1005.0


def test_patched_time_ahead_counts_the_wait_from_it(loop):
    # The wait for the next timer is its deadline less the patched now
    # (~0.05 s here), not less the real clock (an hour).
    async def main():
        with mock.patch.object(loop, "time", side_effect=lambda: time.monotonic() + 3600):
            fut = loop.create_future()
            loop.call_at(loop.time() + 0.05, fut.set_result, "fired")
            return await asyncio.wait_for(fut, 5)

    started = time.monotonic()
    assert loop.run_until_complete(main()) == "fired"
    assert time.monotonic() - started < 3


def test_clock_back_to_normal_after_the_patch(loop):
    async def main():
        with mock.patch.object(loop, "time", return_value=0.0):
            await asyncio.sleep(0)
        assert "time" not in vars(loop)
        fut = loop.create_future()
        h = loop.call_later(0.01, fut.set_result, "fired")
        assert abs(h.when() - (time.monotonic() + 0.01)) < 1
        return await asyncio.wait_for(fut, 5)

    assert loop.run_until_complete(main()) == "fired"


def test_loop_subclass_with_its_own_clock(impl):
    class AheadLoop(impl.Loop):
        def time(self):
            return super().time() + 3600

    loop = AheadLoop()
    try:

        async def main():
            fut = loop.create_future()
            h = loop.call_later(0.05, fut.set_result, "later")
            assert h.when() > time.monotonic() + 3599
            loop.call_at(loop.time() + 0.02, fut.set_result, "at")
            return await asyncio.wait_for(fut, 5)

        assert loop.run_until_complete(main()) == "at"
    finally:
        loop.close()
