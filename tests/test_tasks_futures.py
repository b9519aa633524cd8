"""Futures, tasks, task factories and the asyncio high-level primitives."""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import inspect
import threading

import pytest
from loop_support import PY311, PY312

# --------------------------------------------------------------------------
# Futures
# --------------------------------------------------------------------------


def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert asyncio.isfuture(fut)
    assert fut.get_loop() is loop
    assert not fut.done()
    loop.call_soon(fut.set_result, 5)
    assert loop.run_until_complete(fut) == 5
    assert fut.result() == 5


def test_futures_and_tasks_belong_to_the_loop_that_made_them(loop_factory):
    # Made by a loop that is not the running one (from inside another loop's
    # task, and from another thread while it runs), they still belong to it.
    other = loop_factory()

    async def noop():
        return 1

    async def main():
        here = asyncio.get_running_loop()
        fut, task = other.create_future(), other.create_task(noop())
        own_fut, own_task = here.create_future(), here.create_task(noop())
        made_in_thread = []

        def in_thread():
            made_in_thread.append(here.create_future())

        t = threading.Thread(target=in_thread)
        t.start()
        t.join()
        result = (
            fut.get_loop() is other,
            task.get_loop() is other,
            own_fut.get_loop() is here,
            own_task.get_loop() is here,
            made_in_thread[0].get_loop() is here,
            await own_task,
        )
        own_fut.cancel()
        return result, task

    loop = loop_factory()
    try:
        result, other_task = loop.run_until_complete(main())
        assert result == (True, True, True, True, True, 1)
        assert other.run_until_complete(other_task) == 1
    finally:
        loop.close()
        other.close()


def test_future_done_callbacks_run_via_loop(loop):
    fut = loop.create_future()
    out = []
    fut.add_done_callback(lambda f: out.append(("cb", f.result())))
    fut.set_result(3)
    # Done callbacks are scheduled with call_soon, not run synchronously.
    assert out == []
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == [("cb", 3)]


def test_future_exception(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_exception, KeyError("k"))
    with pytest.raises(KeyError):
        loop.run_until_complete(fut)
    assert isinstance(fut.exception(), KeyError)


# --------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------


async def _ret(x):
    await asyncio.sleep(0)
    return x


def test_create_task(loop):
    task = loop.create_task(_ret(1))
    assert isinstance(task, asyncio.Task)
    assert isinstance(task, asyncio.Future)
    assert task.get_loop() is loop
    assert loop.run_until_complete(task) == 1


def test_create_task_name(loop):
    task = loop.create_task(_ret(1), name="my-task")
    assert task.get_name() == "my-task"
    assert "my-task" in repr(task)
    unnamed = loop.create_task(_ret(2))
    assert unnamed.get_name().startswith("Task-")
    loop.run_until_complete(asyncio.gather(task, unnamed))


@pytest.mark.skipif(not PY311, reason="create_task(context=) is new in 3.11")
def test_create_task_context(loop):
    var = contextvars.ContextVar("var", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")

    async def read():
        return var.get()

    assert loop.run_until_complete(loop.create_task(read(), context=ctx)) == "in-ctx"
    assert loop.run_until_complete(loop.create_task(read())) == "default"


def test_current_task_and_all_tasks(loop):
    seen = {}

    async def child():
        seen["child_current"] = asyncio.current_task()
        await asyncio.sleep(0.01)

    async def main():
        me = asyncio.current_task()
        seen["main_current"] = me
        seen["current_with_loop"] = asyncio.current_task(loop)
        c = asyncio.create_task(child())
        await asyncio.sleep(0)
        seen["all"] = asyncio.all_tasks()
        seen["all_with_loop"] = asyncio.all_tasks(loop)
        await c
        seen["child"] = c
        seen["all_after"] = asyncio.all_tasks()
        return me

    main_task = loop.create_task(main())
    assert loop.run_until_complete(main_task) is main_task
    assert seen["main_current"] is main_task
    assert seen["current_with_loop"] is main_task
    assert seen["child_current"] is seen["child"]
    assert seen["all"] == {main_task, seen["child"]}
    assert seen["all_with_loop"] == {main_task, seen["child"]}
    assert seen["all_after"] == {main_task}
    assert asyncio.current_task(loop) is None
    assert asyncio.all_tasks(loop) == set()


def test_current_task_none_in_plain_callback(loop):
    seen = []

    def cb():
        seen.append(asyncio.current_task())
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert seen == [None]


def test_get_running_loop_inside_coroutine(loop):
    async def main():
        return asyncio.get_running_loop(), asyncio.get_event_loop()

    running, current = loop.run_until_complete(main())
    assert running is loop
    assert current is loop


def test_task_factory(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append((lp, coro, kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    coro = _ret("via-factory")
    task = loop.create_task(coro, name="factory-named")
    assert calls == [(loop, coro, {})]
    assert task.get_name() == "factory-named"
    assert loop.run_until_complete(task) == "via-factory"

    # Coroutines passed to run_until_complete go through the factory too.
    assert loop.run_until_complete(_ret("ruc")) == "ruc"
    assert len(calls) == 2

    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    loop.run_until_complete(loop.create_task(_ret(0)))
    assert len(calls) == 2


# loop.create_task(coro, **kwargs) (eager_start=, keywords for a task
# factory) is new in 3.13.3; before, asyncio raises TypeError.
_CREATE_TASK_TAKES_KWARGS = any(
    p.kind is inspect.Parameter.VAR_KEYWORD
    for p in inspect.signature(asyncio.BaseEventLoop.create_task).parameters.values()
)
_NO_EAGER_START = "BaseEventLoop.create_task() got an unexpected keyword argument 'eager_start'"


def _create_task_outcome(loop, **kwargs):
    async def main():
        coro = _ret("result")
        try:
            task = loop.create_task(coro, **kwargs)
        except TypeError as exc:
            coro.close()
            return ("TypeError", str(exc))
        done = task.done()
        return ("task", done, await task)

    return loop.run_until_complete(main())


def test_create_task_eager_start_as_the_running_asyncio(loop):
    outcome = _create_task_outcome(loop, eager_start=True)
    if _CREATE_TASK_TAKES_KWARGS:
        assert outcome == ("task", True, "result")
    else:
        assert outcome == ("TypeError", _NO_EAGER_START)


def test_create_task_other_keywords_reach_the_task_factory(loop):
    calls = []

    def factory(lp, coro, *, custom=None, **kwargs):
        if custom is not None:  # not run_until_complete's own task
            calls.append(custom)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    outcome = _create_task_outcome(loop, custom=7)
    if _CREATE_TASK_TAKES_KWARGS:
        assert (outcome, calls) == (("task", False, "result"), [7])
    else:
        assert outcome[0] == "TypeError" and "'custom'" in outcome[1]
        assert calls == []


@pytest.mark.skipif(not PY311, reason="create_task(context=) is new in 3.11")
def test_task_factory_receives_context(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append(kwargs)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    ctx = contextvars.copy_context()
    task = loop.create_task(_ret(9), context=ctx)
    assert calls == [{"context": ctx}]
    assert loop.run_until_complete(task) == 9


def test_task_factory_custom_class(loop):
    class MyTask(asyncio.Task):
        pass

    loop.set_task_factory(lambda lp, coro: MyTask(coro, loop=lp))

    async def main():
        return type(asyncio.current_task())

    assert loop.run_until_complete(main()) is MyTask


def test_set_task_factory_rejects_non_callable(loop):
    with pytest.raises(TypeError, match="task factory must be a callable or None"):
        loop.set_task_factory(1)
    assert loop.get_task_factory() is None


@pytest.mark.skipif(not PY312, reason="eager_task_factory is new in 3.12")
def test_eager_task_factory(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    out = []

    async def child(tag):
        out.append(f"{tag}-start")
        await asyncio.sleep(0)
        out.append(f"{tag}-end")
        return tag

    async def no_suspend():
        out.append("sync")
        return "sync-result"

    async def main():
        t = asyncio.create_task(child("a"))
        out.append("after-create")
        t2 = asyncio.create_task(no_suspend())
        # Ran to completion synchronously inside create_task().
        assert t2.done()
        assert t2.result() == "sync-result"
        return await t

    assert loop.run_until_complete(main()) == "a"
    assert out == ["a-start", "after-create", "sync", "a-end"]


def test_task_cancel(loop):
    out = []

    async def sleeper():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            out.append("cancelled-inside")
            raise

    async def main():
        t = asyncio.create_task(sleeper())
        await asyncio.sleep(0)
        assert t.cancel() is True
        with pytest.raises(asyncio.CancelledError):
            await t
        return t

    t = loop.run_until_complete(main())
    assert t.cancelled() is True
    assert t.done() is True
    assert out == ["cancelled-inside"]
    assert t.cancel() is False  # already done


def test_task_cancel_message(loop):
    async def main():
        t = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        t.cancel("custom-msg")
        try:
            await t
        except asyncio.CancelledError as exc:
            return exc.args

    # 3.10's Task does not forward the message to the awaiting side.
    assert loop.run_until_complete(main()) == (("custom-msg",) if PY311 else ())


def test_task_cancel_before_start(loop):
    started = []

    async def never():
        started.append(1)

    t = loop.create_task(never())
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(t)
    assert started == []


def test_cancel_running_main_from_callback(loop):
    async def main():
        loop.call_later(0.01, asyncio.current_task().cancel)
        await asyncio.sleep(10)

    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(main())


@pytest.mark.skipif(not PY311, reason="TaskGroup is new in 3.11")
def test_taskgroup(loop):
    async def fail():
        await asyncio.sleep(0.01)
        raise ValueError("tg-fail")

    async def slow(out):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            out.append("slow-cancelled")
            raise

    async def main():
        out = []
        async with asyncio.TaskGroup() as tg:
            a = tg.create_task(_ret(1))
            b = tg.create_task(_ret(2))
        results = [a.result(), b.result()]
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(fail())
                tg.create_task(slow(out))
        except builtins.ExceptionGroup as eg:  # not a builtin name on 3.10
            return results, type(eg).__name__, [type(e) for e in eg.exceptions], out
        return results, None, None, out

    results, eg_name, excs, out = loop.run_until_complete(main())
    assert results == [1, 2]
    assert eg_name == "ExceptionGroup"
    assert excs == [ValueError]
    assert out == ["slow-cancelled"]


@pytest.mark.skipif(not PY311, reason="asyncio.timeout is new in 3.11")
def test_asyncio_timeout(loop):
    async def main():
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await asyncio.sleep(10)
        elapsed = loop.time() - t0
        async with asyncio.timeout(1) as cm:
            await asyncio.sleep(0)
        return elapsed, cm.expired()

    elapsed, expired = loop.run_until_complete(main())
    assert 0.02 - 0.001 <= elapsed < 1.0
    assert expired is False


def test_wait_for(loop):
    async def main():
        assert await asyncio.wait_for(_ret("fast"), timeout=1) == "fast"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), timeout=0.02)
        return "ok"

    assert loop.run_until_complete(main()) == "ok"


def test_gather(loop):
    async def boom():
        await asyncio.sleep(0)
        raise KeyError("g")

    async def main():
        r = await asyncio.gather(_ret(1), _ret(2), _ret(3))
        r2 = await asyncio.gather(_ret(1), boom(), return_exceptions=True)
        return r, r2

    r, r2 = loop.run_until_complete(main())
    assert r == [1, 2, 3]
    assert r2[0] == 1
    assert isinstance(r2[1], KeyError)


def test_shield(loop):
    out = []

    async def inner():
        await asyncio.sleep(0.02)
        out.append("inner-done")
        return "inner"

    async def main():
        inner_task = asyncio.ensure_future(inner())
        outer = asyncio.ensure_future(asyncio.shield(inner_task))
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return await inner_task

    assert loop.run_until_complete(main()) == "inner"
    assert out == ["inner-done"]


def test_queue_producer_consumer(loop):
    async def producer(q, n):
        for i in range(n):
            await q.put(i)
        await q.put(None)

    async def consumer(q):
        got = []
        while True:
            item = await q.get()
            q.task_done()
            if item is None:
                return got
            got.append(item)

    async def main():
        q = asyncio.Queue(maxsize=3)
        p = asyncio.create_task(producer(q, 100))
        got = await consumer(q)
        await p
        await q.join()
        return got

    assert loop.run_until_complete(main()) == list(range(100))


def test_lock(loop):
    async def worker(lock, log, i):
        async with lock:
            log.append(("enter", i))
            await asyncio.sleep(0.001)
            log.append(("exit", i))

    async def main():
        lock = asyncio.Lock()
        log = []
        await asyncio.gather(*(worker(lock, log, i) for i in range(5)))
        return log

    log = loop.run_until_complete(main())
    # Strictly alternating enter/exit of the same worker, FIFO.
    assert log == [x for i in range(5) for x in (("enter", i), ("exit", i))]


def test_semaphore(loop):
    async def main():
        sem = asyncio.Semaphore(2)
        active = []
        peak = []

        async def worker():
            async with sem:
                active.append(1)
                peak.append(len(active))
                await asyncio.sleep(0.005)
                active.pop()

        await asyncio.gather(*(worker() for _ in range(6)))
        return max(peak), len(peak)

    assert loop.run_until_complete(main()) == (2, 6)


def test_event(loop):
    async def main():
        ev = asyncio.Event()
        out = []

        async def waiter(i):
            await ev.wait()
            out.append(i)

        tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        assert out == []
        loop.call_later(0.005, ev.set)
        await asyncio.gather(*tasks)
        return out, ev.is_set()

    out, is_set = loop.run_until_complete(main())
    assert out == [0, 1, 2]
    assert is_set is True


def test_condition(loop):
    async def main():
        cond = asyncio.Condition()
        items = []
        got = []

        async def consumer():
            async with cond:
                await cond.wait_for(lambda: len(items) >= 3)
                got.extend(items)

        c = asyncio.create_task(consumer())
        for i in range(3):
            await asyncio.sleep(0.001)
            async with cond:
                items.append(i)
                cond.notify_all()
        await c
        return got

    assert loop.run_until_complete(main()) == [0, 1, 2]


def test_to_thread(loop):
    main_thread = threading.get_ident()

    def blocking(a, b=0):
        return a + b, threading.get_ident()

    async def main():
        return await asyncio.to_thread(blocking, 1, b=2)

    result, tid = loop.run_until_complete(main())
    assert result == 3
    assert tid != main_thread


def test_sleep_ordering(loop):
    out = []

    async def sleeper(d):
        await asyncio.sleep(d)
        out.append(d)

    async def main():
        await asyncio.gather(*(sleeper(d) for d in (0.03, 0.01, 0.02, 0.0)))

    loop.run_until_complete(main())
    assert out == [0.0, 0.01, 0.02, 0.03]


def test_sleep_zero_yields(loop):
    out = []

    async def a():
        out.append("a1")
        await asyncio.sleep(0)
        out.append("a2")

    async def b():
        out.append("b1")
        await asyncio.sleep(0)
        out.append("b2")

    async def main():
        await asyncio.gather(a(), b())

    loop.run_until_complete(main())
    assert out == ["a1", "b1", "a2", "b2"]


def test_sleep_result(loop):
    assert loop.run_until_complete(asyncio.sleep(0.001, result="r")) == "r"


def test_ensure_future_and_wrap_future(loop):
    import concurrent.futures

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            cf = ex.submit(lambda: "from-thread")
            return await asyncio.wrap_future(cf)

    assert loop.run_until_complete(main()) == "from-thread"


def test_run_coroutine_threadsafe(loop):
    results = []

    def thread_main():
        fut = asyncio.run_coroutine_threadsafe(_ret("rct"), loop)
        results.append(fut.result(timeout=5))
        loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=thread_main)
    th.start()
    loop.run_forever()
    th.join(5)
    assert results == ["rct"]
