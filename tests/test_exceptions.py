"""Exception handling: handlers, logging, BaseException propagation, debug checks."""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import pytest
from loop_support import PY313


def callback_that_raises():
    raise ZeroDivisionError("in callback")


def _run_briefly(loop, delay=0.0):
    if delay:
        loop.call_later(delay, loop.stop)
    else:
        loop.call_soon(loop.stop)
    loop.run_forever()


# --------------------------------------------------------------------------
# Exception handler
# --------------------------------------------------------------------------


def test_callback_exception_reaches_custom_handler(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append((lp, dict(ctx))))
    out = []
    h = loop.call_soon(callback_that_raises)
    loop.call_soon(out.append, "next")  # the loop keeps going
    _run_briefly(loop)
    assert out == ["next"]
    assert len(calls) == 1
    lp, ctx = calls[0]
    assert lp is loop
    assert set(ctx) == {"message", "exception", "handle"}
    assert ctx["message"].startswith("Exception in callback")
    assert "callback_that_raises" in ctx["message"]
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["exception"].args == ("in callback",)
    assert ctx["handle"] is h


def test_timer_callback_exception_reaches_custom_handler(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(dict(ctx)))
    h = loop.call_later(0.001, callback_that_raises)
    _run_briefly(loop, 0.02)
    assert len(calls) == 1
    ctx = calls[0]
    assert set(ctx) == {"message", "exception", "handle"}
    assert ctx["message"].startswith("Exception in callback")
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["handle"] is h


def test_callback_exception_message_includes_args(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx["message"]))

    def cb_with_args(a, b):
        raise ValueError(a, b)

    loop.call_soon(cb_with_args, 1, "two")
    _run_briefly(loop)
    assert len(calls) == 1
    assert calls[0].startswith("Exception in callback")
    # asyncio stopped formatting the arguments in 3.13.
    expected = "cb_with_args()" if PY313 else "cb_with_args(1, 'two')"
    assert expected in calls[0]


def test_get_set_exception_handler(loop):
    assert loop.get_exception_handler() is None

    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None
    with pytest.raises(TypeError, match="A callable object or None is expected, got 1"):
        loop.set_exception_handler(1)
    assert loop.get_exception_handler() is None


def test_call_exception_handler_passes_context(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))
    exc = RuntimeError("manual")
    context = {"message": "manual report", "exception": exc, "extra": 5}
    loop.call_exception_handler(context)
    assert len(calls) == 1
    assert calls[0][0] is loop
    assert calls[0][1] == context


def test_default_exception_handler_logs(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.call_soon(callback_that_raises)
    _run_briefly(loop)
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.ERROR
    assert rec.getMessage().startswith("Exception in callback")
    assert "callback_that_raises" in rec.getMessage()
    assert rec.exc_info is not None
    assert isinstance(rec.exc_info[1], ZeroDivisionError)


def test_default_exception_handler_called_directly(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.default_exception_handler({"message": "direct call", "exception": KeyError("k")})
    loop.default_exception_handler({"message": "no exception here"})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert [r.levelno for r in records] == [logging.ERROR, logging.ERROR]
    assert records[0].getMessage().startswith("direct call")
    assert isinstance(records[0].exc_info[1], KeyError)
    assert records[1].getMessage() == "no exception here"
    assert not records[1].exc_info


def test_custom_handler_can_defer_to_default(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    seen = []

    def handler(lp, ctx):
        seen.append(ctx["message"])
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    loop.call_soon(callback_that_raises)
    _run_briefly(loop)
    assert len(seen) == 1
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].getMessage().startswith("Exception in callback")


def test_handler_that_raises(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")

    def bad_handler(lp, ctx):
        raise ValueError("handler is broken")

    loop.set_exception_handler(bad_handler)
    out = []
    loop.call_soon(callback_that_raises)
    loop.call_soon(out.append, "still-running")
    _run_briefly(loop)
    assert out == ["still-running"]
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].getMessage().startswith("Unhandled error in exception handler")
    assert isinstance(records[0].exc_info[1], ValueError)

    # Calling it directly behaves the same and does not raise.
    loop.call_exception_handler({"message": "direct"})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 2
    assert records[1].getMessage().startswith("Unhandled error in exception handler")


def test_handler_keyboard_interrupt_propagates(loop):
    def handler(lp, ctx):
        raise KeyboardInterrupt

    loop.set_exception_handler(handler)
    with pytest.raises(KeyboardInterrupt):
        loop.call_exception_handler({"message": "x"})


# --------------------------------------------------------------------------
# BaseException propagation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_callback_propagates_from_run_forever(loop, exc_type):
    out = []
    handled = []
    loop.set_exception_handler(lambda lp, ctx: handled.append(ctx))

    def raiser():
        raise exc_type("stop-now")

    loop.call_soon(out.append, "before")
    loop.call_soon(raiser)
    loop.call_soon(out.append, "after")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert handled == []  # not routed to the exception handler
    assert out == ["before"]
    assert loop.is_running() is False

    # The loop is reusable, and the callback queued behind the raising one
    # was not lost.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["before", "after"]
    assert loop.run_until_complete(asyncio.sleep(0, "reusable")) == "reusable"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_callback_propagates_from_run_until_complete(loop, exc_type):
    def raiser():
        raise exc_type()

    async def main():
        loop.call_later(0.01, raiser)
        await asyncio.sleep(0.05)
        return "finished"

    task = loop.create_task(main())
    with pytest.raises(exc_type):
        loop.run_until_complete(task)
    assert loop.is_running() is False
    assert not task.done()
    # Run again: the interrupted task completes normally.
    assert loop.run_until_complete(task) == "finished"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_coroutine_propagates(loop, exc_type):
    async def main():
        await asyncio.sleep(0)
        raise exc_type()

    with pytest.raises(exc_type):
        loop.run_until_complete(main())
    assert loop.is_running() is False
    assert loop.run_until_complete(asyncio.sleep(0, 1)) == 1


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_timer_propagates(loop, exc_type):
    def raiser():
        raise exc_type()

    loop.call_later(0.005, raiser)
    with pytest.raises(exc_type):
        loop.run_forever()
    assert loop.is_running() is False
    loop.call_later(0.001, loop.stop)
    loop.run_forever()


# --------------------------------------------------------------------------
# Never-retrieved task exceptions
# --------------------------------------------------------------------------


def test_task_exception_never_retrieved(loop, collect_garbage):
    reports = []
    loop.set_exception_handler(lambda lp, ctx: reports.append(dict(ctx)))

    async def fail():
        raise LookupError("nobody looks")

    task = loop.create_task(fail())
    loop.run_until_complete(asyncio.sleep(0.01))
    assert task.done()
    assert reports == []
    del task
    collect_garbage()
    assert len(reports) == 1
    ctx = reports[0]
    assert ctx["message"] == "Task exception was never retrieved"
    assert isinstance(ctx["exception"], LookupError)
    assert isinstance(ctx["future"], asyncio.Task)
    assert set(ctx) == {"message", "exception", "future"}


def test_future_exception_never_retrieved(loop, collect_garbage):
    reports = []
    loop.set_exception_handler(lambda lp, ctx: reports.append(dict(ctx)))
    fut = loop.create_future()
    fut.set_exception(LookupError("future"))
    del fut
    collect_garbage()
    assert len(reports) == 1
    assert reports[0]["message"] == "Future exception was never retrieved"
    assert isinstance(reports[0]["exception"], LookupError)


def test_retrieved_exception_not_reported(loop, collect_garbage):
    reports = []
    loop.set_exception_handler(lambda lp, ctx: reports.append(dict(ctx)))

    async def fail():
        raise LookupError("retrieved")

    task = loop.create_task(fail())
    with pytest.raises(LookupError):
        loop.run_until_complete(task)
    del task
    collect_garbage()
    assert reports == []


# --------------------------------------------------------------------------
# Debug-mode checks
# --------------------------------------------------------------------------


async def _coro_fn():
    pass


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at", "call_soon_threadsafe"])
def test_debug_rejects_coroutine_function(loop, method):
    loop.set_debug(True)
    schedule = {
        "call_soon": loop.call_soon,
        "call_later": lambda cb: loop.call_later(0.01, cb),
        "call_at": lambda cb: loop.call_at(loop.time() + 0.01, cb),
        "call_soon_threadsafe": loop.call_soon_threadsafe,
    }[method]
    with pytest.raises(TypeError, match="coroutines cannot be used with"):
        schedule(_coro_fn)
    coro = _coro_fn()
    try:
        with pytest.raises(TypeError, match="coroutines cannot be used with"):
            schedule(coro)
    finally:
        coro.close()


def test_debug_call_soon_messages(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError, match=r"^coroutines cannot be used with call_soon\(\)$"):
        loop.call_soon(_coro_fn)
    with pytest.raises(
        TypeError, match=r"^a callable object was expected by call_soon\(\), got 1$"
    ):
        loop.call_soon(1)


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at", "call_soon_threadsafe"])
def test_debug_rejects_non_callable(loop, method):
    loop.set_debug(True)
    schedule = {
        "call_soon": loop.call_soon,
        "call_later": lambda cb: loop.call_later(0.01, cb),
        "call_at": lambda cb: loop.call_at(loop.time() + 0.01, cb),
        "call_soon_threadsafe": loop.call_soon_threadsafe,
    }[method]
    with pytest.raises(TypeError, match="a callable object was expected by"):
        schedule(42)


def test_debug_run_in_executor_rejects_coroutine_function(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError, match=r"coroutines cannot be used with run_in_executor\(\)"):
        loop.run_in_executor(None, _coro_fn)


def test_slow_callback_warning(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    assert loop.slow_callback_duration == 0.01

    def slow_cb():
        time.sleep(0.05)

    loop.call_soon(slow_cb)
    _run_briefly(loop)
    warnings_ = [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncio" and r.levelno == logging.WARNING
    ]
    # (On a loaded machine a trivial callback may exceed 10 ms too, so only
    # the warnings about slow_cb are counted.)
    assert all(m.startswith("Executing ") for m in warnings_), warnings_
    slow = [m for m in warnings_ if "slow_cb" in m]
    assert len(slow) == 1, warnings_
    msg = slow[0]
    assert " took " in msg
    assert msg.endswith(" seconds")
    took = float(msg.rsplit(" took ", 1)[1].split()[0])
    assert took >= 0.05


def test_no_slow_callback_warning_without_debug(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.slow_callback_duration = 0.01

    def slow_cb():
        time.sleep(0.03)

    loop.call_soon(slow_cb)
    _run_briefly(loop)
    assert [r for r in caplog.records if r.name == "asyncio"] == []


def test_slow_callback_duration_default(loop):
    assert loop.slow_callback_duration == 0.1


def test_debug_callback_exception_has_source_traceback(loop):
    loop.set_debug(True)
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(dict(ctx)))
    loop.call_soon(callback_that_raises)  # the line the traceback must point at
    loop.call_later(0.001, callback_that_raises)
    _run_briefly(loop, 0.02)
    assert len(calls) == 2
    for ctx in calls:
        assert set(ctx) == {"message", "exception", "handle", "source_traceback"}
        last = ctx["source_traceback"][-1]
        assert last.filename == __file__
        assert last.name == "test_debug_callback_exception_has_source_traceback"


def test_failed_task_is_freed_promptly_in_debug_mode(loop_factory):
    """A failed, unreferenced task is finalized (reporting 'exception was
    never retrieved') by the next iteration even in debug mode, and on 3.12+
    the handler runs in the task's context. A debug-mode frame kept alive by
    the task's traceback used to delay this until a GC pass."""
    import contextvars
    import weakref

    var = contextvars.ContextVar("var", default="outer")
    seen = []

    async def failing():
        var.set("task")
        raise ZeroDivisionError("boom")

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: seen.append(var.get()))
        ref = weakref.ref(loop.create_task(failing()))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return ref() is None

    loop = loop_factory()
    loop.set_debug(True)
    try:
        freed = loop.run_until_complete(main())
    finally:
        loop.close()
    assert freed
    expected = "task" if sys.version_info >= (3, 12) else "outer"
    assert seen == [expected]
