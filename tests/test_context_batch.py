"""Callbacks with private context copies share one entered context.

tokioloop runs a callback whose handle and context copy nothing else can
see in one private context of the loop's, entered across consecutive such
callbacks (`src/batch_context.rs`). These tests check, on both loops, that
this cannot be told apart from asyncio's enter-and-exit per callback: each
callback sees its own copy's values and nothing a previous callback set,
even through `ContextVar`'s lookup cache; a context that a `Token` keeps is
never run in again; the exception handler finds the failed callback's
context where asyncio does; everything else runs in the loop's own
context; and a handle that can still be reached (a reference or
a weak reference to it) runs in its own copy.
"""

from __future__ import annotations

import contextvars
import gc
import threading
import weakref

import pytest
from loop_support import PY312

var = contextvars.ContextVar("batch_var", default="unset")
other = contextvars.ContextVar("batch_other", default="unset")


def _run_once(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_a_callback_never_sees_what_the_previous_one_set(loop):
    seen = []

    def reader_then_writer(index):
        # The first get() fills ContextVar's cache; the set() changes this
        # callback's copy only.
        seen.append((index, var.get(), other.get()))
        var.set(f"set-by-{index}")
        seen.append((index, var.get()))

    var.set("main")
    for index in range(6):
        loop.call_soon(reader_then_writer, index)
    _run_once(loop)
    assert seen == [item for i in range(6) for item in ((i, "main", "unset"), (i, f"set-by-{i}"))]
    assert var.get() == "main"


def test_callbacks_scheduled_after_a_set_see_it(loop):
    # A callback's own call_soon copies its changed context: those see the
    # value, the ones scheduled before it do not.
    seen = []

    def child(label):
        seen.append((label, var.get()))

    def parent():
        var.set("parent")
        loop.call_soon(child, "after-set")

    var.set("main")
    loop.call_soon(parent)
    loop.call_soon(child, "before")
    _run_once(loop)
    _run_once(loop)
    assert seen == [("before", "main"), ("after-set", "parent")]


def test_a_token_from_one_callback_fails_in_the_next(loop):
    # The token keeps the context it was made in; asyncio never runs another
    # callback in it, so resetting there is an error.
    tokens, results = [], []

    def make_token():
        tokens.append(var.set("made"))

    def use_token():
        try:
            var.reset(tokens[0])
        except ValueError as exc:
            results.append(("ValueError", "different Context" in str(exc)))
        else:
            results.append(("reset", var.get()))

    for _ in range(3):
        tokens.clear()
        loop.call_soon(make_token)
        loop.call_soon(use_token)
        _run_once(loop)
    assert results == [("ValueError", True)] * 3


def test_the_token_s_own_callback_may_reset_it(loop):
    seen = []

    def set_and_reset():
        token = var.set("inside")
        var.reset(token)
        seen.append(var.get())

    var.set("main")
    for _ in range(3):
        loop.call_soon(set_and_reset)
    loop.call_soon(lambda: seen.append(("next", var.get())))
    _run_once(loop)
    assert seen == ["main", "main", "main", ("next", "main")]


def test_the_exception_handler_sees_the_failed_callback_s_context(loop):
    # 3.12+ runs a custom handler in the failed handle's context (the copy
    # the callback ran in, with what it set); earlier versions in the
    # loop's own.
    handled = []

    def failing():
        var.set("in-callback")
        raise ZeroDivisionError

    def handler(loop, context):
        handled.append((type(context["exception"]).__name__, var.get()))

    loop.set_exception_handler(handler)
    var.set("main")
    scheduling = contextvars.copy_context()
    scheduling.run(var.set, "scheduler")
    for _ in range(2):
        loop.call_soon(lambda: None)
        scheduling.run(loop.call_soon, failing)
        loop.call_soon(lambda: None)
        _run_once(loop)
    expected = "in-callback" if PY312 else "main"
    assert handled == [("ZeroDivisionError", expected)] * 2


@pytest.mark.parametrize("reach", ["reference", "weakref"])
def test_a_reachable_handle_runs_in_its_own_copy(loop, reach):
    # Through the handle, get_context() is the context the callback runs
    # in, and shows what it set.
    seen = []
    box = {}

    def cb():
        handle = box["handle"] if reach == "reference" else box["handle"]()
        var.set("set-in-callback")
        context = handle.get_context() if hasattr(handle, "get_context") else handle._context
        seen.append(context[var])

    var.set("main")
    for _ in range(3):
        handle = loop.call_soon(cb)
        box["handle"] = handle if reach == "reference" else weakref.ref(handle)
        del handle
        loop.call_soon(lambda: None)
        _run_once(loop)
        box.clear()
        gc.collect()
    assert seen == ["set-in-callback"] * 3


def _context_of(handle):
    return handle.get_context() if hasattr(handle, "get_context") else handle._context


def test_a_handles_context_is_one_copy_taken_when_scheduled(loop):
    # tokioloop keeps the caller's variables and makes the Context only when
    # someone asks (src/context_pool.rs): it must be the copy asyncio takes
    # at scheduling time, one object however often asked, before and after
    # the callback ran in it.
    seen = []

    def cb():
        seen.append(var.get())
        var.set("set-in-callback")

    var.set("at-scheduling")
    handle = loop.call_soon(cb)
    var.set("after-scheduling")
    first = _context_of(handle)
    assert isinstance(first, contextvars.Context)
    assert first[var] == "at-scheduling"
    assert _context_of(handle) is first
    _run_once(loop)
    assert seen == ["at-scheduling"]
    assert _context_of(handle) is first
    assert first[var] == "set-in-callback"
    assert var.get() == "after-scheduling"


def test_a_context_asked_for_after_the_run_shows_the_callbacks_sets(loop):
    # Nobody asked before it ran: the copy is made to run the (shared)
    # handle, and it is the one get_context() gives afterwards.
    timer_handle = loop.call_later(0, var.set, "timer-set")
    handle = loop.call_soon(var.set, "soon-set")
    _run_once(loop)
    _run_once(loop)
    assert _context_of(handle)[var] == "soon-set"
    assert _context_of(timer_handle)[var] == "timer-set"
    assert _context_of(handle) is _context_of(handle)
    assert var.get() not in ("soon-set", "timer-set")


def test_cancelling_a_handle_with_an_unasked_context(loop):
    ran = []
    var.set("main")
    handle = loop.call_soon(ran.append, 1)
    later = loop.call_later(10, ran.append, 2)
    handle.cancel()
    later.cancel()
    _run_once(loop)
    assert ran == []
    assert handle.cancelled() and later.cancelled()


def test_threads_contexts_are_kept_apart(loop):
    # call_soon_threadsafe from threads with their own values, interleaved in
    # one batch: each callback sees its own thread's.
    seen = []

    def cb(label):
        seen.append((label, var.get()))
        var.set("changed")

    def producer(label):
        var.set(label)
        for _ in range(5):
            loop.call_soon_threadsafe(cb, label)

    threads = [threading.Thread(target=producer, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    _run_once(loop)
    assert sorted(seen) == sorted((f"t{i}", f"t{i}") for i in range(3) for _ in range(5))
