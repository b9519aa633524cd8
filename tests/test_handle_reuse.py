"""Handles after they ran: what user code can still see of them.

tokioloop keeps the handles it has run and nobody else refers to, and
reuses them for later ``call_soon`` calls. These tests pin down that this is
invisible: a handle Python code still holds (directly, through a weak
reference, in an exception handler's context, in a cycle) is never reused,
and a reused handle behaves as a new one (repr, cancel, cancelled, context).
"""

from __future__ import annotations

import contextvars
import gc
import sys
import weakref

import pytest
from loop_support import PY312, import_tokioloop

BURST = 600  # more than the smallest spare pool (256)


def run_once(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def noop(*args):
    pass


def first_callback(*args):
    pass


def second_callback(*args):
    pass


class Target:
    def method(self, *args):
        pass


def churn(loop, rounds=3):
    """Run bursts of short-lived handles, so that later ones are reused."""
    for _ in range(rounds):
        for i in range(BURST):
            loop.call_soon(noop, i)
        run_once(loop)


def test_handle_kept_after_it_ran_stays_itself(loop):
    out = []
    kept = [loop.call_soon(out.append, i) for i in range(BURST)]
    run_once(loop)
    assert out == list(range(BURST))
    churn(loop)
    fresh = [loop.call_soon(second_callback, "x") for _ in range(BURST)]
    ids = {id(h) for h in kept}
    assert not any(id(h) in ids for h in fresh)
    for i, h in enumerate(kept):
        assert h.cancelled() is False
        assert h._callback == out.append
        assert h._args == (i,)
        assert "append" in repr(h)
    run_once(loop)
    assert out == list(range(BURST))


def test_cancel_after_it_ran(loop):
    out = []
    kept = loop.call_soon(out.append, "ran")
    run_once(loop)
    churn(loop)
    kept.cancel()
    assert kept.cancelled() is True
    assert "cancelled" in repr(kept)
    # Later handles are not affected by cancelling the old one.
    later = [loop.call_soon(out.append, i) for i in range(BURST)]
    assert not any(h.cancelled() for h in later)
    run_once(loop)
    assert out == ["ran", *range(BURST)]


def test_dropped_cancelled_handles_do_not_cancel_later_ones(loop):
    out = []
    for i in range(BURST):
        loop.call_soon(out.append, ("cancelled", i)).cancel()
    run_once(loop)
    for _ in range(2):
        handles = [loop.call_soon(out.append, i) for i in range(BURST)]
        assert not any(h.cancelled() for h in handles)
        assert all("cancelled" not in repr(h) for h in handles[:10])
        del handles
        run_once(loop)
    assert out == [*range(BURST), *range(BURST)]


def test_later_handle_shows_its_own_callback(loop):
    churn(loop)
    h = loop.call_soon(second_callback, 1, 2)
    assert "second_callback" in repr(h)
    assert "first_callback" not in repr(h)
    assert h._callback is second_callback
    assert h._args == (1, 2)
    assert h.cancelled() is False
    h.cancel()
    assert h.cancelled() is True
    assert "cancelled" in repr(h)
    run_once(loop)


def test_later_handles_run_in_their_own_context(loop):
    var = contextvars.ContextVar("var", default="default")
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "first")
    for _ in range(BURST):
        loop.call_soon(noop, context=ctx)
    run_once(loop)
    loop.call_soon(lambda: seen.append(var.get()))
    other = contextvars.Context()
    loop.call_soon(lambda: seen.append(var.get()), context=other)
    run_once(loop)
    assert seen == ["default", "default"]


@pytest.mark.skipif(not PY312, reason="Handle.get_context() is new in 3.12")
def test_reused_handle_get_context(loop):
    churn(loop)
    ctx = contextvars.Context()
    h = loop.call_soon(noop, context=ctx)
    assert h.get_context() is ctx
    h2 = loop.call_soon(noop)
    assert h2.get_context() is not ctx
    run_once(loop)


def test_arguments_released_after_running(loop):
    churn(loop)
    targets = [Target() for _ in range(BURST)]
    refs = [weakref.ref(t) for t in targets]
    for t in targets:
        loop.call_soon(noop, t)
        loop.call_soon(t.method)
    del targets, t
    run_once(loop)
    # Without a collection: the handles let go of them when they ran.
    assert [r() for r in refs] == [None] * BURST


def test_weakly_referenced_handle_dies_after_running(loop):
    churn(loop)
    refs = [weakref.ref(loop.call_soon(noop)) for _ in range(BURST)]
    run_once(loop)
    assert [r() for r in refs] == [None] * BURST
    churn(loop)


def test_handle_kept_by_exception_handler(loop):
    kept = []

    def handler(lp, context):
        kept.append(context["handle"])

    def fail(n):
        raise ValueError(n)

    loop.set_exception_handler(handler)
    for i in range(10):
        loop.call_soon(fail, i)
    run_once(loop)
    churn(loop)
    assert [h._args for h in kept] == [(i,) for i in range(10)]
    assert all("fail" in repr(h) for h in kept)
    fresh = [loop.call_soon(noop) for _ in range(BURST)]
    assert not any(h in kept for h in fresh)
    run_once(loop)


def test_cycle_through_handle_args_is_collected(loop, collect_garbage):
    churn(loop)
    refs = []
    for _ in range(50):
        holder = Target()
        holder.handle = loop.call_soon(noop, holder)
        refs.append(weakref.ref(holder))
    del holder
    run_once(loop)
    churn(loop)
    collect_garbage()
    assert [r() for r in refs] == [None] * 50
    churn(loop)


def test_cycle_through_handle_args_before_running(loop, collect_garbage):
    # Cycles created while the handle is queued, then broken by running it.
    churn(loop)
    refs = []
    for _ in range(BURST):
        holder = Target()
        holder.handle = loop.call_soon(holder.method, holder)
        refs.append(weakref.ref(holder))
    del holder
    collect_garbage()  # queued: alive
    assert all(r() is not None for r in refs)
    run_once(loop)
    collect_garbage()
    assert [r() for r in refs] == [None] * BURST


def test_collections_while_handles_are_spare(loop, collect_garbage):
    # Collections (and their traversal and clearing) with spare handles
    # around, then more handles: nothing is lost or run twice.
    out = []
    for round_ in range(3):
        for i in range(BURST):
            loop.call_soon(out.append, (round_, i))
        run_once(loop)
        collect_garbage()
        gc.get_objects()
    assert out == [(r, i) for r in range(3) for i in range(BURST)]


def test_unclosed_loop_with_spare_handles_is_collected(loop_factory, assert_dropped_loop_collected):
    lp = loop_factory()
    churn(lp)
    lp.call_soon(lp.stop)
    ref = weakref.ref(lp)
    del lp
    assert_dropped_loop_collected(ref)


def test_call_soon_threadsafe_and_from_callbacks_reuse_safely(loop):
    out = []

    def step(i):
        out.append(i)
        if i < 3 * BURST:
            h = loop.call_soon(step, i + 1)
            if i % 7 == 0:
                kept.append(h)
        else:
            loop.stop()

    kept = []
    loop.call_soon_threadsafe(step, 0)
    for i in range(BURST):
        loop.call_soon_threadsafe(noop, i)
    loop.run_forever()
    assert out == list(range(3 * BURST + 1))
    assert [h._args for h in kept] == [(i + 1,) for i in range(0, 3 * BURST, 7)]


def test_single_argument_args_tuple(loop):
    # One argument is the common case (future callbacks); `_args` is still
    # a tuple, the same object every time.
    marker = object()
    h = loop.call_soon(first_callback, marker)
    args = h._args
    assert args == (marker,)
    assert h._args is args
    assert "first_callback" in repr(h)
    h0 = loop.call_soon(first_callback)
    assert h0._args == ()
    assert h0._args is h0._args
    t0 = loop.call_at(loop.time() + 100, first_callback)
    assert t0._args == ()
    assert t0 == loop.call_at(t0.when(), first_callback)
    t1 = loop.call_at(loop.time() + 100, first_callback, 1)
    t2 = loop.call_at(t1.when(), first_callback, 1)
    t3 = loop.call_at(t1.when(), first_callback, 2)
    assert t1 == t2
    assert t1 != t3
    for t in (t1, t2, t3):
        t.cancel()
    run_once(loop)


def test_single_argument_callback_error_reports_args(loop):
    reports = []

    def handler(lp, context):
        reports.append((context["handle"]._args, repr(context["handle"])))

    def fail(arg):
        raise ValueError(arg)

    loop.set_exception_handler(handler)
    loop.call_soon(fail, "only")
    run_once(loop)
    assert len(reports) == 1
    assert reports[0][0] == ("only",)
    # 3.13's asyncio shows a callback's arguments in reprs in debug mode only.
    shown = "fail()" if sys.version_info >= (3, 13) else "fail('only')"
    assert shown in reports[0][1]


def fire_timers(loop, count=BURST, delay=0.0):
    """Let `count` short timers fire and be dropped (what a loop that reuses
    timer handles would reuse; tokioloop reuses plain handles only, these
    pin down the behaviour for timers too)."""
    for i in range(count):
        loop.call_later(delay, noop, i)
    loop.call_later(delay + 0.001, loop.stop)
    loop.run_forever()


def test_timer_kept_after_it_fired_stays_itself(loop):
    out = []
    kept = [loop.call_later(0, out.append, i) for i in range(BURST)]
    whens = [t.when() for t in kept]
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert sorted(out) == list(range(BURST))
    fire_timers(loop)
    fresh = [loop.call_later(50, second_callback, "x") for _ in range(BURST)]
    ids = {id(t) for t in kept}
    assert not any(id(t) in ids for t in fresh)
    for i, t in enumerate(kept):
        assert t.when() == whens[i]
        assert t._args == (i,)
        assert t.cancelled() is False
        assert "append" in repr(t)
    for t in fresh:
        t.cancel()
    kept[0].cancel()
    assert kept[0].cancelled() is True
    run_once(loop)


def test_later_timers_are_new(loop):
    fire_timers(loop)
    out = []
    start = loop.time()
    timers = [loop.call_at(start + 0.002 + i * 1e-5, out.append, i) for i in range(BURST)]
    assert all(t.cancelled() is False for t in timers)
    assert [t.when() for t in timers] == [start + 0.002 + i * 1e-5 for i in range(BURST)]
    assert all("second_callback" not in repr(t) for t in timers[:5])
    assert timers[0] < timers[1]
    assert timers[3] == timers[3]
    assert len({hash(t) for t in timers[:2]}) >= 1
    timers[5].cancel()
    del timers
    loop.call_at(start + 0.02, loop.stop)
    loop.run_forever()
    assert out == [i for i in range(BURST) if i != 5]


def test_dropped_fired_timers_release_their_arguments(loop):
    fire_timers(loop)
    targets = [Target() for _ in range(BURST)]
    refs = [weakref.ref(t) for t in targets]
    for t in targets:
        loop.call_later(0, t.method)
    del targets, t
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert [r() for r in refs] == [None] * BURST


def test_timer_cycle_after_firing_is_collected(loop, collect_garbage):
    fire_timers(loop)
    refs = []
    for _ in range(50):
        holder = Target()
        holder.timer = loop.call_later(0, noop, holder)
        refs.append(weakref.ref(holder))
    del holder
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    fire_timers(loop)
    collect_garbage()
    assert [r() for r in refs] == [None] * 50


def test_debug_records_survive_running_and_reuse(loop):
    # A handle made in debug mode keeps where it was made; one cancelled in
    # debug mode keeps the repr it had then, whether or not it was made in
    # debug mode, while the loop goes on making and reusing other handles.
    loop.set_debug(True)
    made_in_debug = loop.call_soon(first_callback, 1)
    loop.set_debug(False)
    made_plain = loop.call_soon(second_callback, 2)
    assert made_plain._source_traceback is None
    tb = made_in_debug._source_traceback
    assert tb and tb[-1].name == "test_debug_records_survive_running_and_reuse"
    run_once(loop)
    churn(loop)
    assert made_in_debug._source_traceback is tb
    loop.set_debug(True)
    made_plain.cancel()
    made_in_debug.cancel()
    frozen = repr(made_plain), repr(made_in_debug)
    loop.set_debug(False)
    churn(loop)
    assert (repr(made_plain), repr(made_in_debug)) == frozen
    assert "second_callback" in frozen[0] and "cancelled" in frozen[0]
    assert "first_callback" in frozen[1] and "cancelled" in frozen[1]
    assert made_plain._source_traceback is None
    assert made_in_debug._source_traceback is tb
    # The handles that ran meanwhile are plain ones again.
    h = loop.call_soon(noop)
    assert h._source_traceback is None
    assert "cancelled" not in repr(h)
    run_once(loop)


def test_tokioloop_plain_handle_fits_pymalloc_96_byte_class():
    # Bursts of call_soon_threadsafe allocate one handle per call before the
    # loop runs any: a handle of 96 bytes (GC header included) instead of
    # 112 is a seventh less memory to fault in. getsizeof counts the header.
    loop = import_tokioloop().new_event_loop()
    try:
        assert sys.getsizeof(loop.call_soon(noop)) <= 96
        assert sys.getsizeof(loop.call_soon_threadsafe(noop, 1)) <= 96
    finally:
        loop.close()


def test_tokioloop_spare_pool_shrinks_after_a_burst():
    # The pool keeps about as many run handles as the last batch had, so a
    # burst's handles are let go once batches are small again (the loop's
    # memory does not stay at its peak).
    loop = import_tokioloop().new_event_loop()
    try:
        burst = 4 * BURST
        for _ in range(burst):
            loop.call_soon(noop)
        run_once(loop)
        assert loop._spare_counts()[1] >= burst
        for _ in range(3):
            run_once(loop)
        assert loop._spare_counts()[1] <= 256  # SPARE_MIN, src/loop_core.rs
    finally:
        loop.close()
