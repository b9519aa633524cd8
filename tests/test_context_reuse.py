"""Contexts copied for `context=None` callbacks stay copies when reused.

tokioloop keeps the `Context` objects of handles it recycles and refills
them for later `context=None` copies (`src/context_pool.rs`). These tests
run many rounds, so that later rounds run in reused contexts, and check
what asyncio guarantees: each callback sees the caller's values at
scheduling time, changes stay in the callback's own copy, a context that
anything still refers to is never reused, and values set in a copy are
released with it.
"""

from __future__ import annotations

import contextvars
import gc
import threading
import weakref

import pytest
from loop_support import PY312, import_tokioloop

var = contextvars.ContextVar("reuse_var", default="unset")

ROUNDS = 20
PER_ROUND = 50


def _run_round(loop, schedule_all):
    """Schedule a round of callbacks, then run the loop until they ran."""
    done = threading.Event()
    schedule_all(done)
    loop.call_soon(_stop_when, loop, done)
    loop.run_forever()


def _stop_when(loop, done):
    if done.is_set():
        loop.stop()
    else:
        loop.call_soon(_stop_when, loop, done)


def test_reused_copies_see_the_callers_values_and_keep_changes(loop):
    seen = []

    def cb(round_no, index):
        seen.append((round_no, index, var.get()))
        var.set(f"changed-{round_no}-{index}")

    for round_no in range(ROUNDS):
        token = var.set(f"caller-{round_no}")
        for index in range(PER_ROUND):
            loop.call_soon(cb, round_no, index)
        var.reset(token)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert seen == [(r, i, f"caller-{r}") for r in range(ROUNDS) for i in range(PER_ROUND)]
    assert var.get() == "unset"


def test_copies_follow_the_context_current_at_scheduling(loop):
    # The copy is of whichever context is current when the callback is
    # scheduled: the thread's own, or one entered with Context.run (nested
    # too), however many rounds reuse the copies.
    seen = []

    def cb(label):
        seen.append((label, var.get()))
        var.set("changed")

    outer = contextvars.copy_context()
    outer.run(var.set, "outer")
    inner = outer.copy()
    inner.run(var.set, "inner")
    var.set("main")
    for _ in range(ROUNDS):
        loop.call_soon(cb, "main")
        outer.run(loop.call_soon, cb, "outer")
        outer.run(inner.run, loop.call_soon, cb, "inner")
        outer.run(lambda: (loop.call_soon(cb, "outer-after-inner"), inner.run(var.get)))
        loop.call_soon(cb, "main-again")
        loop.call_soon(loop.stop)
        loop.run_forever()
    expected = [
        ("main", "main"),
        ("outer", "outer"),
        ("inner", "inner"),
        ("outer-after-inner", "outer"),
        ("main-again", "main"),
    ]
    assert seen == expected * ROUNDS
    assert (var.get(), outer.run(var.get), inner.run(var.get)) == ("main", "outer", "inner")


@pytest.mark.parametrize("set_in_thread", [True, False], ids=["thread-sets", "thread-never-set"])
def test_reused_copies_from_another_thread(loop, set_in_thread):
    seen = []

    def cb(round_no):
        seen.append((round_no, var.get()))
        var.set("changed")

    def producer(done):
        def main():
            for round_no in range(ROUNDS):
                if set_in_thread:
                    var.set(f"thread-{round_no}")
                for _ in range(PER_ROUND):
                    loop.call_soon_threadsafe(cb, round_no)
            loop.call_soon_threadsafe(done.set)

        threads.append(threading.Thread(target=main))
        threads[-1].start()

    threads = []
    var.set("main")
    _run_round(loop, producer)
    threads[0].join(5)
    assert not threads[0].is_alive()
    expected = [
        (r, f"thread-{r}" if set_in_thread else "unset")
        for r in range(ROUNDS)
        for _ in range(PER_ROUND)
    ]
    assert seen == expected
    assert var.get() == "main"


def test_context_kept_alive_by_a_token_is_not_reused(loop):
    # A Token refers to the context it was made in, and `reset` checks
    # that it runs there: a later callback in a reused copy of that very
    # object would be allowed to reset it.
    tokens = []
    errors = []

    def keep_token():
        tokens.append(var.set("kept"))

    def reset_token(token):
        try:
            var.reset(token)
        except ValueError as exc:
            errors.append(str(exc))

    for _ in range(ROUNDS):
        loop.call_soon(keep_token)
        loop.call_soon(loop.stop)
        loop.run_forever()
    for token in tokens:
        loop.call_soon(reset_token, token)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(errors) == ROUNDS
    assert all("different Context" in e for e in errors)


def test_handle_context_is_the_copy_made_at_scheduling_time(loop):
    """The copy a handle reports before it runs holds the caller's values
    as they were when it was scheduled, and is the context the callback
    then runs in (its changes show there), for call_soon, call_later and
    call_soon_threadsafe from another thread."""
    seen = []

    def cb(name):
        seen.append((name, var.get()))
        var.set(f"changed-{name}")

    handles = {}
    token = var.set("at-schedule")
    handles["soon"] = loop.call_soon(cb, "soon")
    handles["later"] = loop.call_later(0.001, cb, "later")

    def from_thread():
        var.set("thread-at-schedule")
        handles["threadsafe"] = loop.call_soon_threadsafe(cb, "threadsafe")
        var.set("thread-after")

    thread = threading.Thread(target=from_thread)
    thread.start()
    thread.join()
    var.set("after-schedule")
    before = {name: h._context for name, h in handles.items()}
    values_before = {name: ctx.get(var) for name, ctx in before.items()}
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    var.reset(token)
    assert values_before == {
        "soon": "at-schedule",
        "later": "at-schedule",
        "threadsafe": "thread-at-schedule",
    }
    assert sorted(seen) == sorted(values_before.items())
    assert {name: ctx.get(var) for name, ctx in before.items()} == {
        name: f"changed-{name}" for name in handles
    }
    assert all(h._context is before[name] for name, h in handles.items())


def test_copies_made_at_run_time_are_distinct(loop):
    """Callbacks scheduled together, each run in its own copy: one's change
    is not seen by the next, even though the copies share the caller's
    variables until they run."""
    seen = []

    def cb(index):
        seen.append(var.get())
        var.set(f"changed-{index}")

    token = var.set("caller")
    for index in range(PER_ROUND):
        loop.call_soon(cb, index)
    var.reset(token)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["caller"] * PER_ROUND


def test_cycle_through_a_pending_handles_copy_is_collected(loop_factory):
    """A value in the copy a pending handle holds refers back to the
    handle: once the loop is closed with the handle never run, the cycle
    (handle -> copy -> value -> handle) is garbage and collected."""

    class Holder:
        handle = None

    loop = loop_factory()
    holder = Holder()
    ref = weakref.ref(holder)
    token = var.set(holder)
    holder.handle = loop.call_soon(lambda: None)
    var.reset(token)
    loop.close()
    del holder
    gc.collect()
    assert ref() is None


def test_values_set_in_a_copy_are_released_with_it(loop):
    class Value:
        pass

    refs = []

    def cb():
        value = Value()
        refs.append(weakref.ref(value))
        var.set(value)

    for _ in range(ROUNDS):
        loop.call_soon(cb)
        loop.call_soon(loop.stop)
        loop.run_forever()
    gc.collect()
    assert [r() for r in refs] == [None] * ROUNDS


@pytest.mark.skipif(not PY312, reason="Handle.get_context() is new in 3.12")
def test_contexts_handed_out_are_distinct_and_kept(loop):
    contexts = []
    handles = []

    def cb():
        var.set("changed")

    for round_no in range(ROUNDS):
        var.set(f"caller-{round_no}")
        handle = loop.call_soon(cb)
        handles.append(handle)
        loop.call_soon(loop.stop)
        loop.run_forever()
        contexts.append(handle.get_context())
        # Let go of this round's other references; the handle stays.
        del handle
    assert len({id(c) for c in contexts}) == ROUNDS
    assert [c[var] for c in contexts] == ["changed"] * ROUNDS
    assert [h.get_context() is c for h, c in zip(handles, contexts)] == [True] * ROUNDS


@pytest.mark.skipif(not PY312, reason="Handle.get_context() is new in 3.12")
def test_context_with_a_weak_reference_is_not_reused(loop):
    refs = []

    def cb():
        var.set("changed")

    for round_no in range(ROUNDS):
        var.set(f"caller-{round_no}")
        handle = loop.call_soon(cb)
        refs.append(weakref.ref(handle.get_context()))
        del handle
        loop.call_soon(loop.stop)
        loop.run_forever()
    gc.collect()
    # Each copy is freed once its handle lets go, as asyncio's are, not
    # kept alive (or brought back) by a pool.
    assert [r() for r in refs] == [None] * ROUNDS


def test_tokioloop_reuses_contexts_on_this_python():
    # The layout check (src/context_pool.rs) passes on every CPython we
    # support. There, a `context=None` copy is not made at all (the handle
    # keeps the caller's mapping until someone can see the copy), so the
    # context pool stays empty and only handles are reused.
    loop = import_tokioloop().new_event_loop()
    try:
        for _ in range(3):
            for _ in range(PER_ROUND):
                loop.call_soon(lambda: None)
            loop.call_soon(loop.stop)
            loop.run_forever()
        reuses, spare_handles, spare_contexts = loop._spare_counts()
        assert reuses
        # ... and so does the check of where the thread state keeps the
        # current context (src/thread_context.rs).
        assert loop._reads_thread_context()
        assert spare_handles >= PER_ROUND
        assert spare_contexts == 0
    finally:
        loop.close()
    # A closed loop keeps neither (it may live on, held by user code).
    assert loop._spare_counts()[1:] == (0, 0)
