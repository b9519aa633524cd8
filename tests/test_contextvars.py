"""contextvars propagation through callbacks and tasks."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from loop_support import PY311

var = contextvars.ContextVar("var", default="unset")


@pytest.fixture(autouse=True)
def _reset_var():
    token = var.set("unset")
    yield
    var.reset(token)


def _scheduler(loop, method):
    """Return ``schedule(cb, *args, **kw)`` for one scheduling method."""
    if method == "call_soon":
        return loop.call_soon
    if method == "call_later":
        return lambda cb, *a, **kw: loop.call_later(0.001, cb, *a, **kw)
    if method == "call_at":
        return lambda cb, *a, **kw: loop.call_at(loop.time() + 0.001, cb, *a, **kw)
    if method == "call_soon_threadsafe":
        return loop.call_soon_threadsafe
    raise AssertionError(method)


METHODS = ["call_soon", "call_later", "call_at", "call_soon_threadsafe"]


def _drain(loop):
    loop.call_later(0.02, loop.stop)
    loop.run_forever()


@pytest.mark.parametrize("method", METHODS)
def test_callback_runs_in_given_context(loop, method):
    ctx = contextvars.Context()
    ctx.run(var.set, "in-ctx")
    seen = []

    def cb(tag):
        seen.append((tag, var.get()))
        var.set("changed-by-" + tag)

    schedule = _scheduler(loop, method)
    schedule(cb, "first", context=ctx)
    schedule(cb, "second", context=ctx)
    _drain(loop)
    # The same Context object is used for both calls, so the second one sees
    # the first one's change, and the change is visible in ctx afterwards.
    assert seen == [("first", "in-ctx"), ("second", "changed-by-first")]
    assert ctx[var] == "changed-by-second"
    assert var.get() == "unset"


@pytest.mark.parametrize("method", METHODS)
def test_callback_without_context_gets_copy(loop, method):
    var.set("caller")
    seen = []

    def cb(tag):
        seen.append((tag, var.get()))
        var.set("leak-" + tag)

    schedule = _scheduler(loop, method)
    schedule(cb, "a")
    var.set("caller-later")  # captured at scheduling time, not call time
    schedule(cb, "b")
    _drain(loop)
    # Each callback gets its own copy taken when it was scheduled.
    assert seen == [("a", "caller"), ("b", "caller-later")]
    assert var.get() == "caller-later"


def test_call_soon_threadsafe_from_thread_uses_thread_context(loop):
    seen = []

    def thread_main():
        var.set("thread-value")
        loop.call_soon_threadsafe(lambda: seen.append(var.get()))
        ctx = contextvars.Context()
        ctx.run(var.set, "explicit")
        loop.call_soon_threadsafe(lambda: seen.append(var.get()), context=ctx)
        loop.call_soon_threadsafe(loop.stop)

    var.set("main-value")
    th = threading.Thread(target=thread_main)
    th.start()
    th.join(5)
    loop.run_forever()
    assert seen == ["thread-value", "explicit"]
    assert var.get() == "main-value"


def test_task_inherits_context(loop):
    async def child():
        seen = var.get()
        var.set("child-set")
        return seen

    async def main():
        var.set("parent")
        got = await asyncio.create_task(child())
        # The child ran in a copy: its change did not leak into the parent.
        return got, var.get()

    assert loop.run_until_complete(main()) == ("parent", "parent")
    assert var.get() == "unset"


def test_task_context_copied_at_creation(loop):
    async def child():
        await asyncio.sleep(0)
        return var.get()

    async def main():
        var.set("at-create")
        t = asyncio.create_task(child())
        var.set("after-create")
        return await t

    assert loop.run_until_complete(main()) == "at-create"


def test_run_until_complete_coroutine_sees_caller_context(loop):
    var.set("outer")

    async def main():
        seen = var.get()
        var.set("inner")
        return seen

    assert loop.run_until_complete(main()) == "outer"
    assert var.get() == "outer"


@pytest.mark.skipif(not PY311, reason="create_task(context=) is new in 3.11")
def test_create_task_with_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "given")

    async def child():
        seen = var.get()
        var.set("child-changed")
        await asyncio.sleep(0)
        return seen

    t = loop.create_task(child(), context=ctx)
    assert loop.run_until_complete(t) == "given"
    # The task ran *in* ctx (not a copy of it).
    assert ctx[var] == "child-changed"
    assert var.get() == "unset"


def test_future_callbacks_get_context_of_add_done_callback(loop):
    seen = []
    fut = loop.create_future()
    var.set("when-added")
    fut.add_done_callback(lambda f: seen.append(var.get()))
    var.set("after-added")
    ctx = contextvars.Context()
    ctx.run(var.set, "explicit")
    fut.add_done_callback(lambda f: seen.append(var.get()), context=ctx)
    fut.set_result(None)
    _drain(loop)
    assert seen == ["when-added", "explicit"]
