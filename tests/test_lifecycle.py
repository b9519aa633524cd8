"""Loop lifecycle: run_forever/run_until_complete/stop/close, debug, asyncgens."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import os
import subprocess
import sys
import threading
import time
import warnings
import weakref

import pytest
from loop_support import PY312, child_prelude

CLOSED = "Event loop is closed"


# --------------------------------------------------------------------------
# run_forever / stop
# --------------------------------------------------------------------------


def test_run_forever_stop(loop):
    out = []

    def cb():
        out.append(loop.is_running())
        loop.stop()

    loop.call_soon(cb)
    assert loop.is_running() is False
    loop.run_forever()
    assert out == [True]
    assert loop.is_running() is False
    # Can be run again.
    loop.call_soon(cb)
    loop.run_forever()
    assert out == [True, True]


def test_stop_from_timer(loop):
    out = []
    loop.call_later(0.02, loop.stop)
    loop.call_later(0.01, out.append, "before")
    loop.call_later(0.5, out.append, "after")
    loop.run_forever()
    assert out == ["before"]


def test_stop_before_run_forever_runs_one_iteration(loop):
    out = []

    def cb():
        out.append("cb")
        loop.call_soon(out.append, "next-iteration")

    loop.call_soon(cb)
    loop.stop()
    loop.run_forever()
    assert out == ["cb"]
    # The stop request was consumed: the next run needs its own stop.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["cb", "next-iteration"]


def test_stop_before_run_forever_with_nothing_scheduled(loop):
    loop.stop()
    t0 = time.monotonic()
    loop.run_forever()  # must return promptly, not park
    assert time.monotonic() - t0 < 1.0
    assert not loop.is_running()


def test_get_running_loop_during_run_forever(loop):
    seen = []

    def cb():
        seen.append(asyncio.get_running_loop())
        seen.append(asyncio.get_event_loop())
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert seen[0] is loop
    assert seen[1] is loop
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


# --------------------------------------------------------------------------
# run_until_complete
# --------------------------------------------------------------------------


def test_run_until_complete_coroutine(loop):
    async def coro(x):
        await asyncio.sleep(0)
        return x * 2

    assert loop.run_until_complete(coro(21)) == 42


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"
    assert fut.done()


def test_run_until_complete_future_from_timer(loop):
    fut = loop.create_future()
    loop.call_later(0.01, fut.set_result, 7)
    assert loop.run_until_complete(fut) == 7


def test_run_until_complete_task(loop):
    async def coro():
        await asyncio.sleep(0.001)
        return "task-result"

    task = loop.create_task(coro())
    assert loop.run_until_complete(task) == "task-result"
    assert task.done()


def test_run_until_complete_awaitable_object(loop):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    assert loop.run_until_complete(Awaitable()) == "awaited"


def test_run_until_complete_propagates_exception(loop):
    async def boom():
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        loop.run_until_complete(boom())
    # The loop survives.
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_run_until_complete_cancelled_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(fut)


def test_run_until_complete_non_awaitable(loop):
    with pytest.raises(
        TypeError, match="An asyncio.Future, a coroutine or an awaitable is required"
    ):
        loop.run_until_complete(42)
    with pytest.raises(TypeError):
        loop.run_until_complete(None)
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, 1)) == 1


def test_run_until_complete_future_of_other_loop(loop, loop_factory):
    other = loop_factory()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError, match="The future belongs to a different loop"):
            loop.run_until_complete(fut)
    finally:
        other.close()


def test_nested_run_until_complete(loop):
    errors = []

    async def main():
        inner = asyncio.sleep(0)
        try:
            loop.run_until_complete(inner)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            inner.close()
        # The outer run is unaffected.
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    assert loop.run_until_complete(main()) is loop
    assert errors == ["This event loop is already running"]


def test_nested_run_forever(loop, loop_kind):
    if loop_kind == "asyncio" and sys.version_info[:3] == (3, 13, 0):
        pytest.skip("CPython 3.13.0 clears the running loop on this error path")
    errors = []

    async def main():
        try:
            loop.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    assert loop.run_until_complete(main()) is loop
    assert errors == ["This event loop is already running"]


def test_run_other_loop_while_running(loop, loop_factory):
    other = loop_factory()
    errors = []

    async def main():
        inner = asyncio.sleep(0)
        try:
            other.run_until_complete(inner)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            inner.close()
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    try:
        assert loop.run_until_complete(main()) is loop
    finally:
        other.close()
    assert errors == ["Cannot run the event loop while another loop is running"]


def test_stopped_before_future_completed(loop):
    async def main():
        loop.stop()
        await asyncio.sleep(10)

    with pytest.raises(RuntimeError, match=r"^Event loop stopped before Future completed\.$"):
        loop.run_until_complete(main())
    assert not loop.is_running()
    # Clean up the still-pending task.
    for t in asyncio.all_tasks(loop):
        t.cancel()
    loop.run_until_complete(asyncio.sleep(0))


def test_run_until_complete_base_exception_in_coroutine(loop):
    class MyBase(BaseException):
        pass

    async def main():
        await asyncio.sleep(0)
        raise MyBase("x")

    with pytest.raises(MyBase):
        loop.run_until_complete(main())
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


# --------------------------------------------------------------------------
# close
# --------------------------------------------------------------------------


def test_is_closed_and_close_twice(loop_factory):
    lp = loop_factory()
    assert lp.is_closed() is False
    assert lp.is_running() is False
    lp.close()
    assert lp.is_closed() is True
    lp.close()  # no error
    assert lp.is_closed() is True


def test_run_on_closed_loop(loop_factory):
    lp = loop_factory()
    lp.close()
    with pytest.raises(RuntimeError, match=f"^{CLOSED}$"):
        lp.run_forever()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match=f"^{CLOSED}$"):
        lp.run_until_complete(coro)
    coro.close()


def _noop():
    pass


@pytest.mark.parametrize(
    "method",
    [
        "call_soon",
        "call_later",
        "call_at",
        "call_soon_threadsafe",
        "create_task",
        "run_in_executor",
    ],
)
def test_scheduling_on_closed_loop(loop_factory, method):
    lp = loop_factory()
    lp.close()
    coro = None
    if method == "call_soon":
        call = lambda: lp.call_soon(_noop)
    elif method == "call_later":
        call = lambda: lp.call_later(0.1, _noop)
    elif method == "call_at":
        call = lambda: lp.call_at(lp.time() + 0.1, _noop)
    elif method == "call_soon_threadsafe":
        call = lambda: lp.call_soon_threadsafe(_noop)
    elif method == "create_task":
        coro = asyncio.sleep(0)
        call = lambda: lp.create_task(coro)
    else:
        call = lambda: lp.run_in_executor(None, _noop)
    try:
        with pytest.raises(RuntimeError, match=f"^{CLOSED}$"):
            call()
    finally:
        if coro is not None:
            coro.close()


def test_close_running_loop(loop):
    errors = []

    def cb():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert errors == ["Cannot close a running event loop"]
    assert loop.is_closed() is False


def test_close_discards_pending_callbacks(loop_factory):
    lp = loop_factory()
    out = []
    lp.call_soon(out.append, 1)
    lp.call_later(0.01, out.append, 2)
    lp.close()
    assert out == []
    assert lp.is_closed()


def test_is_running_inside_coroutine(loop):
    async def main():
        return loop.is_running(), loop.is_closed()

    assert loop.run_until_complete(main()) == (True, False)
    assert loop.is_running() is False


# --------------------------------------------------------------------------
# debug
# --------------------------------------------------------------------------


def test_get_set_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def _child_debug(kind, env_extra=None, args=()):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")}
    if env_extra:
        env.update(env_extra)
    code = child_prelude(kind) + (
        "import warnings\n"
        "warnings.simplefilter('ignore')\n"
        "loop = factory()\n"
        "print(loop.get_debug())\n"
        "loop.close()\n"
    )
    proc = subprocess.run(
        [sys.executable, *args, "-c", code],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_debug_default_off_in_subprocess(loop_kind):
    assert _child_debug(loop_kind) == "False"


def test_debug_from_env_var(loop_kind):
    assert _child_debug(loop_kind, {"PYTHONASYNCIODEBUG": "1"}) == "True"


def test_debug_from_dev_mode(loop_kind):
    assert _child_debug(loop_kind, args=("-X", "dev")) == "True"


# --------------------------------------------------------------------------
# async generators
# --------------------------------------------------------------------------


def test_shutdown_asyncgens_finalizes_unfinished_generator(loop):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)  # finalisation may await
            finalized.append("closed")

    g = agen()

    async def first():
        # The first iteration must happen while the loop runs so the loop's
        # firstiter hook registers the generator.
        return await g.__anext__()

    assert loop.run_until_complete(first()) == 1
    assert finalized == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert finalized == ["closed"]
    # The generator is closed now.
    with pytest.raises(StopAsyncIteration):
        loop.run_until_complete(g.__anext__())


def test_shutdown_asyncgens_error_goes_to_handler(loop):
    reported = []
    loop.set_exception_handler(lambda lp, ctx: reported.append(ctx))

    async def agen():
        try:
            yield 1
        finally:
            raise ZeroDivisionError("in finally")

    g = agen()

    async def first():
        return await g.__anext__()

    assert loop.run_until_complete(first()) == 1
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(reported) == 1
    ctx = reported[0]
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["asyncgen"] is g
    assert ctx["message"].startswith("an error occurred during closing of asynchronous generator")


def test_asyncgen_first_iteration_after_shutdown_warns(loop):
    loop.run_until_complete(loop.shutdown_asyncgens())

    async def agen():
        yield 1

    async def main():
        g = agen()
        try:
            return await g.__anext__()
        finally:
            await g.aclose()

    with pytest.warns(ResourceWarning, match="shutdown_asyncgens"):
        assert loop.run_until_complete(main()) == 1


def test_asyncgen_finalizer_hook_closes_dropped_generator(loop):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append(asyncio.get_running_loop())

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        del g
        gc.collect()
        for _ in range(20):
            if finalized:
                break
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert finalized == [loop]


def test_asyncgen_hooks_installed_while_running_and_restored(loop):
    def my_firstiter(agen):
        pass

    def my_finalizer(agen):
        pass

    old = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=my_firstiter, finalizer=my_finalizer)
    try:
        seen = []

        async def main():
            seen.append(sys.get_asyncgen_hooks())

        loop.run_until_complete(main())
        inside = seen[0]
        assert inside.firstiter is not None
        assert inside.finalizer is not None
        assert inside.firstiter is not my_firstiter
        assert inside.finalizer is not my_finalizer
        after = sys.get_asyncgen_hooks()
        assert after.firstiter is my_firstiter
        assert after.finalizer is my_finalizer

        # Restored even when the run ends with an exception.
        async def fail():
            raise KeyError("x")

        with pytest.raises(KeyError):
            loop.run_until_complete(fail())
        after = sys.get_asyncgen_hooks()
        assert after.firstiter is my_firstiter
        assert after.finalizer is my_finalizer
    finally:
        sys.set_asyncgen_hooks(*old)


# --------------------------------------------------------------------------
# shutdown_default_executor
# --------------------------------------------------------------------------


def test_shutdown_default_executor_waits_for_work(loop):
    done = threading.Event()

    def work():
        time.sleep(0.05)
        done.set()
        return threading.current_thread().name

    async def main():
        fut = loop.run_in_executor(None, work)
        await loop.shutdown_default_executor()
        assert done.is_set()
        return await fut

    name = loop.run_until_complete(main())
    assert isinstance(name, str)
    assert name != threading.current_thread().name


def test_shutdown_default_executor_without_executor(loop):
    # Nothing was ever submitted: completes immediately.
    assert loop.run_until_complete(loop.shutdown_default_executor()) is None


def test_run_in_executor_after_shutdown_default_executor(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, _noop)


def test_shutdown_default_executor_explicit_executor_still_usable(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        assert loop.run_until_complete(loop.run_in_executor(ex, sum, [1, 2, 3])) == 6


@pytest.mark.skipif(not PY312, reason="timeout= is new in 3.12")
def test_shutdown_default_executor_timeout(loop):
    done = threading.Event()

    def work():
        time.sleep(0.05)
        done.set()

    async def main():
        fut = loop.run_in_executor(None, work)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # must not warn: work finishes in time
            await loop.shutdown_default_executor(timeout=2.0)
        await fut

    loop.run_until_complete(main())
    assert done.is_set()


# --------------------------------------------------------------------------
# Several loops, leaks, unclosed loops
# --------------------------------------------------------------------------


def test_create_and_close_other_loop_inside_running_loop(loop, loop_factory):
    async def main():
        other = loop_factory()
        other.call_soon(_noop)
        other.close()
        return other.is_closed(), asyncio.get_running_loop()

    closed, running = loop.run_until_complete(main())
    assert closed is True
    assert running is loop


def test_close_other_loop_inside_callback(loop, loop_factory):
    other = loop_factory()
    try:
        results = []

        def cb():
            other.close()
            results.append(other.is_closed())
            loop.stop()

        loop.call_soon(cb)
        loop.run_forever()
        assert results == [True]
    finally:
        other.close()


def test_unclosed_loop_resource_warning(loop_factory, collect_garbage):
    lp = loop_factory()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del lp
        collect_garbage()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(messages) == 1, messages
    assert messages[0].startswith("unclosed event loop")


def test_close_needs_no_module_globals():
    # An unclosed loop kept by something cleared late (an event loop
    # policy's thread-local) is closed by its __del__ at interpreter
    # shutdown, after module globals were set to None; seen as "Exception
    # ignored in BaseEventLoop.__del__" at the end of pytest sessions.
    # tokioloop only: stock asyncio's close() reaches its base through
    # super(), which needs no module global.
    code = (
        "import tokioloop, tokioloop._loop as module\n"
        "loop = tokioloop.new_event_loop()\n"
        "module.base_events = None  # as at interpreter shutdown\n"
        "loop.close()\n"
        "print(loop.is_closed())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "True"
    assert out.stderr == ""


def _count_fds():
    return len(os.listdir("/proc/self/fd"))


def _count_os_threads():
    return len(os.listdir("/proc/self/task"))


def test_no_fd_or_thread_leak_across_loops(loop_factory, collect_garbage):
    def cycle():
        lp = loop_factory()
        lp.run_until_complete(asyncio.sleep(0.001))
        lp.call_later(0.001, _noop)
        lp.close()

    for _ in range(3):  # warm-up: lazily created process-wide resources
        cycle()
    collect_garbage()
    fds, threads = _count_fds(), _count_os_threads()
    for _ in range(50):
        cycle()
    collect_garbage()
    time.sleep(0.05)  # let exiting OS threads go away
    assert _count_fds() - fds <= 2
    assert _count_os_threads() - threads <= 2


def test_many_loops_alive_at_once(loop_factory):
    loops = [loop_factory() for _ in range(20)]
    try:
        results = [lp.run_until_complete(asyncio.sleep(0, i)) for i, lp in enumerate(loops)]
        assert results == list(range(20))
    finally:
        for lp in loops:
            lp.close()


# --------------------------------------------------------------------------
# Garbage collection: loops and callbacks must not be kept alive
# --------------------------------------------------------------------------


class _Target:
    def method(self):
        pass


def test_closed_loop_with_pending_handles_is_collected(loop_factory, collect_garbage):
    lp = loop_factory()
    lp.call_soon(lp.stop)  # handle -> loop -> handle cycle
    lp.call_later(10, lp.stop)
    lp.close()
    ref = weakref.ref(lp)
    del lp
    collect_garbage()
    assert ref() is None


async def _uses_executor():
    await asyncio.get_running_loop().run_in_executor(None, lambda: None)


async def _uses_futures_and_timers():
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_later(0.001, fut.set_result, None)
    await fut
    loop.call_later(10, lambda: None)  # still pending at close


async def _uses_tcp():
    async def echo(reader, writer):
        writer.write(await reader.read(10))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    writer.write(b"ping")
    assert await reader.read(10) == b"ping"
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


async def _uses_subprocess():
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    assert await proc.wait() == 0
    # asyncio's thread per child (its default up to 3.11) holds the loop
    # until it ends, a moment after the exit is reported.
    for thread in threading.enumerate():
        if thread.name.startswith("asyncio-waitpid"):
            thread.join(5)


@pytest.mark.parametrize(
    "workload",
    [None, _uses_executor, _uses_futures_and_timers, _uses_tcp, _uses_subprocess],
    ids=["idle", "executor", "futures_and_timers", "tcp", "subprocess"],
)
def test_closed_loop_is_freed_without_the_cyclic_gc(loop_factory, workload):
    # asyncio's closed loop is freed as soon as its last reference goes; one
    # left in a cycle lives on until a collection (Tornado's tests check
    # for such garbage). A future made before the loop runs takes the
    # loop's kwargs path on every Python.
    gc.collect()
    gc.disable()
    try:
        lp = loop_factory()
        lp.create_future().cancel()
        if workload is not None:
            lp.run_until_complete(workload())
        lp.run_until_complete(lp.shutdown_default_executor())
        lp.close()
        ref = weakref.ref(lp)
        del lp
        assert ref() is None
    finally:
        gc.enable()


def test_closed_loop_still_makes_futures_of_its_own(loop_factory):
    lp = loop_factory()
    lp.create_future().cancel()
    lp.close()
    fut = lp.create_future()
    assert fut.get_loop() is lp
    fut.cancel()


def test_unclosed_loop_with_pending_handles_is_collected(
    loop_factory, assert_dropped_loop_collected
):
    lp = loop_factory()
    lp.call_soon(lp.stop)
    lp.call_later(10, lp.stop)
    ref = weakref.ref(lp)
    del lp
    assert_dropped_loop_collected(ref)


def test_loop_that_ran_with_pending_handles_is_collected(
    loop_factory, assert_dropped_loop_collected
):
    # A running loop does not report what it holds to the GC (it is alive
    # anyway); once run_until_complete returns it must again, or a dropped
    # loop whose queue refers back to it would never be collected.
    lp = loop_factory()

    async def main():
        running = asyncio.get_running_loop()
        running.call_soon(running.stop)
        running.call_later(10, running.stop)

    lp.run_until_complete(main())
    ref = weakref.ref(lp)
    del lp
    assert_dropped_loop_collected(ref)


class _KeepsItsHandle:
    """An object that keeps the handle of its own callback and the loop: the
    cycle object -> handle -> bound method -> object, and the loop in it."""

    def __init__(self, loop, how):
        self.loop = loop
        if how == "call_soon":
            self.handle = loop.call_soon(self.method)
        else:
            self.handle = loop.call_later(10, self.method)

    def method(self):
        pass


@pytest.mark.parametrize("when", ["before_run", "during_run"])
@pytest.mark.parametrize("how", ["call_soon", "call_later"])
def test_dropped_loop_with_handles_kept_in_cycles_is_collected(
    loop_factory, assert_dropped_loop_collected, how, when
):
    # Queued handles that user code also holds, in a cycle through the loop:
    # whether scheduled before the loop ran or while it ran (after enough
    # callbacks that tokioloop reuses its handles), the dropped, unclosed
    # loop and the cycle are collected.
    lp = loop_factory()
    keepers = []
    if when == "before_run":
        keepers.append(_KeepsItsHandle(lp, how))
    else:

        def keep(lp=lp):
            keepers.append(_KeepsItsHandle(lp, how))

        for _ in range(3):
            for _ in range(600):
                lp.call_soon(lambda: None)
            lp.call_soon(lp.stop)
            lp.run_forever()
        lp.call_soon(keep)
        lp.call_soon(lp.stop)
        lp.run_forever()
        del keep  # it holds the loop (a default argument)
    assert len(keepers) == 1 and not keepers[0].handle.cancelled()
    ref = weakref.ref(lp)
    keeper_ref = weakref.ref(keepers[0])
    keepers.clear()
    del lp
    assert_dropped_loop_collected(ref)
    assert keeper_ref() is None


def test_timer_kept_in_cycle_survives_collection_while_running(
    loop_factory, assert_dropped_loop_collected
):
    # A timer scheduled in one run and kept by an object in a cycle through
    # the loop: a full collection made during the next run (the loop is
    # alive) leaves the keeper and its pending timer intact; once the loop
    # is dropped unclosed, the cycle is collected.
    lp = loop_factory()
    keepers = []
    seen = []

    def keep(lp=lp):
        keepers.append(_KeepsItsHandle(lp, "call_later"))
        lp.stop()

    def collect_then_stop(lp=lp):
        keeper_ref = weakref.ref(keepers.pop())
        gc.collect()
        keeper = keeper_ref()
        seen.append(keeper is not None and not keeper.handle.cancelled())
        keepers.append(keeper)
        lp.stop()

    lp.call_soon(keep)
    lp.run_forever()
    lp.call_soon(collect_then_stop)
    lp.run_forever()
    assert seen == [True]
    keeper_ref = weakref.ref(keepers[0])
    keepers.clear()
    ref = weakref.ref(lp)
    del lp, keep, collect_then_stop  # the functions hold the loop (a default)
    assert_dropped_loop_collected(ref)
    assert keeper_ref() is None


def test_full_collection_while_running_keeps_queued_callbacks(loop_factory):
    # Cycles whose only outside reference is a queued callback (queued from
    # another thread, so not yet run) must survive a full collection made
    # while the loop runs, and their callbacks see them intact.
    lp = loop_factory()
    seen = []

    class Node:
        def __init__(self, i):
            self.i = i
            self.me = self  # a cycle: only the queued handle keeps it alive

        def run(self):
            seen.append(self.me.i)

    def produce():
        for i in range(2000):
            lp.call_soon_threadsafe(Node(i).run)
        lp.call_soon_threadsafe(collect_then_stop)

    def collect_then_stop():
        lp.stop()

    def start():
        t = threading.Thread(target=produce)
        t.start()
        t.join()  # the whole backlog is queued, none of it run yet
        gc.collect()
        gc.collect()

    try:
        lp.call_soon(start)
        lp.run_forever()
    finally:
        lp.close()
    assert seen == list(range(2000))


def test_callbacks_released_after_close(loop_factory, collect_garbage):
    lp = loop_factory()
    soon_target, timer_target = _Target(), _Target()
    refs = [weakref.ref(soon_target), weakref.ref(timer_target)]
    lp.call_soon(soon_target.method)
    lp.call_later(10, timer_target.method)
    del soon_target, timer_target
    lp.close()
    collect_garbage()
    assert [r() for r in refs] == [None, None]


def test_callbacks_released_after_running(loop, collect_garbage):
    soon_target, timer_target = _Target(), _Target()
    refs = [weakref.ref(soon_target), weakref.ref(timer_target)]
    loop.call_soon(soon_target.method)
    loop.call_later(0.001, timer_target.method)
    del soon_target, timer_target
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    collect_garbage()
    assert [r() for r in refs] == [None, None]


def test_cancelled_timer_releases_callback(loop, collect_garbage):
    target = _Target()
    ref = weakref.ref(target)
    h = loop.call_later(10, target.method)
    del target
    h.cancel()
    del h
    collect_garbage()
    assert ref() is None


class _KeepsOwnHandle:
    """An object holding the handle whose callback is its own method: the
    cycle object -> handle -> bound method -> object, common in real code
    (``self._timer = loop.call_later(d, self._on_timeout)``)."""

    def __init__(self, loop, schedule):
        self.ran = False
        self.handle = schedule(loop, self.method)

    def method(self):
        self.ran = True


def _from_thread(func, *args):
    result = []
    thread = threading.Thread(target=lambda: result.append(func(*args)))
    thread.start()
    thread.join(10)
    return result[0]


_SCHEDULERS = {
    "call_soon": lambda lp, cb: lp.call_soon(cb),
    "call_later": lambda lp, cb: lp.call_later(0.001, cb),
    "call_at": lambda lp, cb: lp.call_at(lp.time(), cb),
    "call_soon_threadsafe": lambda lp, cb: lp.call_soon_threadsafe(cb),
    # From another thread (tokioloop hides those from the GC while queued).
    "call_soon_threadsafe_thread": lambda lp, cb: _from_thread(lp.call_soon_threadsafe, cb),
    # Behind a backlog of queued callbacks (tokioloop hides those from the GC).
    "call_soon_backlog": lambda lp, cb: (
        [lp.call_soon(int) for _ in range(2000)][-1] and lp.call_soon(cb)
    ),
}


@pytest.mark.parametrize("how", sorted(_SCHEDULERS))
def test_cycle_through_run_handle_is_collected(loop, collect_garbage, how):
    obj = _KeepsOwnHandle(loop, _SCHEDULERS[how])
    ref = weakref.ref(obj)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert obj.ran
    del obj
    collect_garbage()
    assert ref() is None


@pytest.mark.parametrize("how", sorted(_SCHEDULERS))
def test_cycle_through_pending_handle_is_collected_after_close(loop_factory, collect_garbage, how):
    lp = loop_factory()
    obj = _KeepsOwnHandle(lp, _SCHEDULERS[how])
    ref = weakref.ref(obj)
    del obj
    lp.close()
    collect_garbage()
    assert ref() is None


def test_cycle_through_handle_context_is_collected(loop, collect_garbage):
    # handle -> its context -> a context variable's value -> handle.
    var = contextvars.ContextVar("var")

    class Holder:
        pass

    def schedule():
        holder = Holder()
        var.set(holder)
        holder.handle = loop.call_soon(lambda: None)
        return weakref.ref(holder)

    ref = contextvars.copy_context().run(schedule)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    collect_garbage()
    assert ref() is None


def test_context_handed_out_then_cancelled(loop, collect_garbage):
    # get_context() while queued, then cancel and drop: no crash, no leak.
    seen = []
    for _ in range(200):
        h = loop.call_soon(seen.append, 1)
        ctx = h.get_context() if hasattr(h, "get_context") else h._context
        h.cancel()
        del h
        ctx.run(lambda: None)
        del ctx
    t = loop.call_later(10, seen.append, 2)
    t.cancel()
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    collect_garbage()
    assert seen == []
