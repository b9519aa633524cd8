"""Cross-thread wake-ups, call_soon_threadsafe and executors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
import warnings

import pytest
from loop_support import PY311

N_THREADS = 8
N_CALLS = 2000


def test_call_soon_threadsafe_many_threads(loop):
    total = N_THREADS * N_CALLS
    received = []
    done = loop.create_future()
    barrier = threading.Barrier(N_THREADS)

    def on_call(tid, i):
        received.append((tid, i))
        if len(received) == total:
            done.set_result(None)

    def worker(tid):
        barrier.wait()
        for i in range(N_CALLS):
            loop.call_soon_threadsafe(on_call, tid, i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]

    def start_threads():
        # Started from inside the running loop, so the loop is (or soon will
        # be) parked waiting for wake-ups while the threads hammer it.
        for th in threads:
            th.start()

    loop.call_soon(start_threads)
    loop.run_until_complete(asyncio.wait_for(done, timeout=30))
    for th in threads:
        th.join(5)
    assert len(received) == total
    for tid in range(N_THREADS):
        seq = [i for (t, i) in received if t == tid]
        assert seq == list(range(N_CALLS)), f"thread {tid} out of order"


def test_call_soon_threadsafe_wakes_parked_loop(loop):
    fut = loop.create_future()

    def thread_main():
        time.sleep(0.1)
        loop.call_soon_threadsafe(fut.set_result, "woken")

    th = threading.Thread(target=thread_main)
    t0 = time.monotonic()
    th.start()
    # Nothing else is scheduled: the loop parks with no timeout.
    assert loop.run_until_complete(fut) == "woken"
    elapsed = time.monotonic() - t0
    th.join(5)
    assert 0.09 <= elapsed < 1.0


def test_call_soon_threadsafe_wakes_loop_with_far_timer(loop):
    # The loop is parked until a timer 30 s away; a thread must still wake it.
    fut = loop.create_future()
    far = loop.call_later(30, lambda: None)

    def thread_main():
        time.sleep(0.05)
        loop.call_soon_threadsafe(fut.set_result, "woken")

    th = threading.Thread(target=thread_main)
    t0 = time.monotonic()
    th.start()
    assert loop.run_until_complete(fut) == "woken"
    assert time.monotonic() - t0 < 1.0
    th.join(5)
    far.cancel()


def test_stop_from_other_thread_via_threadsafe(loop):
    def thread_main():
        time.sleep(0.05)
        loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=thread_main)
    t0 = time.monotonic()
    th.start()
    loop.run_forever()
    th.join(5)
    assert time.monotonic() - t0 < 1.0


def test_call_soon_threadsafe_returns_cancellable_handle(loop):
    out = []
    h = loop.call_soon_threadsafe(out.append, "x")
    loop.call_soon_threadsafe(out.append, "y")
    h.cancel()
    assert h.cancelled() is True
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["y"]


def test_debug_call_soon_from_other_thread_raises(loop):
    loop.set_debug(True)
    errors = []

    def thread_main():
        try:
            loop.call_soon(lambda: None)
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.call_soon_threadsafe(loop.stop)

    def start():
        threading.Thread(target=thread_main).start()

    loop.call_soon(start)
    loop.run_forever()
    assert errors == [
        "Non-thread-safe operation invoked on an event loop other than the current one"
    ]


# --------------------------------------------------------------------------
# run_in_executor
# --------------------------------------------------------------------------


def test_run_in_executor_default(loop):
    main_ident = threading.get_ident()

    def work(a, b):
        return a * b, threading.get_ident()

    async def main():
        return await loop.run_in_executor(None, work, 6, 7)

    result, ident = loop.run_until_complete(main())
    assert result == 42
    assert ident != main_ident


def test_run_in_executor_returns_asyncio_future(loop):
    fut = loop.run_in_executor(None, int, "5")
    assert isinstance(fut, asyncio.Future)
    assert loop.run_until_complete(fut) == 5


def test_run_in_executor_exception(loop):
    def work():
        raise OSError("from-thread")

    async def main():
        with pytest.raises(OSError, match="from-thread"):
            await loop.run_in_executor(None, work)
        return True

    assert loop.run_until_complete(main()) is True


def test_run_in_executor_explicit_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="explicit-pool") as ex:

        async def main():
            return await asyncio.gather(
                *(
                    loop.run_in_executor(ex, lambda: threading.current_thread().name)
                    for _ in range(4)
                )
            )

        names = loop.run_until_complete(main())
    assert len(names) == 4
    assert all(n.startswith("explicit-pool") for n in names)


def test_set_default_executor(loop):
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="my-default")
    loop.set_default_executor(ex)
    try:
        name = loop.run_until_complete(
            loop.run_in_executor(None, lambda: threading.current_thread().name)
        )
        assert name.startswith("my-default")
    finally:
        ex.shutdown(wait=True)


class _NotAThreadPool(concurrent.futures.Executor):
    def submit(self, fn, /, *args, **kwargs):  # pragma: no cover - never used
        raise AssertionError("should not be used")


def test_set_default_executor_rejects_non_threadpool(loop):
    ex = _NotAThreadPool()
    if PY311:
        with pytest.raises(TypeError, match="executor must be ThreadPoolExecutor instance"):
            loop.set_default_executor(ex)
    else:
        with pytest.warns(DeprecationWarning, match="ThreadPoolExecutor"):
            loop.set_default_executor(ex)
        # Put a real one back so close() does not call the fake.
        real = concurrent.futures.ThreadPoolExecutor(1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loop.set_default_executor(real)


def test_close_does_not_wait_for_default_executor(loop_factory):
    lp = loop_factory()
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    def work():
        started.set()
        release.wait(5)
        finished.set()

    try:

        async def submit():
            return lp.run_in_executor(None, work)

        lp.run_until_complete(submit())
        assert started.wait(5)
        t0 = time.monotonic()
        lp.close()
        # close() returned while the job is still blocked.
        assert time.monotonic() - t0 < 1.0
        assert not finished.is_set()
        assert lp.is_closed()
    finally:
        release.set()
        lp.close()
    assert finished.wait(5)


def test_default_executor_shut_down_by_close(loop_factory):
    lp = loop_factory()
    lp.run_until_complete(lp.run_in_executor(None, int))
    lp.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        lp.run_in_executor(None, int)


# --------------------------------------------------------------------------
# contextvars and executors
# --------------------------------------------------------------------------

cv = contextvars.ContextVar("cv", default="default")


def test_run_in_executor_does_not_copy_context(loop):
    # asyncio's run_in_executor does not propagate the caller's context.
    async def main():
        cv.set("caller-value")
        return await loop.run_in_executor(None, cv.get)

    assert loop.run_until_complete(main()) == "default"


def test_to_thread_copies_context(loop):
    async def main():
        cv.set("caller-value")
        return await asyncio.to_thread(cv.get)

    assert loop.run_until_complete(main()) == "caller-value"


# --------------------------------------------------------------------------
# Loops living in other threads
# --------------------------------------------------------------------------


def _run_in_thread(fn):
    result = []

    def target():
        try:
            result.append(("ok", fn()))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            result.append(("err", exc))

    th = threading.Thread(target=target)
    th.start()
    th.join(10)
    assert not th.is_alive()
    status, value = result[0]
    if status == "err":
        raise value
    return value


def test_loop_created_and_run_in_worker_thread(loop_factory):
    def work():
        lp = loop_factory()
        try:

            async def main():
                await asyncio.sleep(0.005)
                fut = lp.create_future()
                lp.call_later(0.005, fut.set_result, threading.get_ident())
                return await fut

            return lp.run_until_complete(main()), threading.get_ident()
        finally:
            lp.close()

    got, ident = _run_in_thread(work)
    assert got == ident
    assert ident != threading.get_ident()


def test_loop_created_in_main_run_in_worker_thread(loop_factory):
    lp = loop_factory()
    try:
        got = _run_in_thread(lambda: lp.run_until_complete(asyncio.sleep(0.005, "worker")))
        assert got == "worker"
        # ...and back in the main thread.
        assert lp.run_until_complete(asyncio.sleep(0, "main")) == "main"
    finally:
        lp.close()


def test_two_loops_in_two_threads_concurrently(loop_factory):
    barrier = threading.Barrier(2)
    results = {}

    def work(tag):
        lp = loop_factory()
        try:

            async def main():
                out = []
                for i in range(20):
                    await asyncio.sleep(0.001)
                    out.append(i)
                return out

            barrier.wait(5)
            results[tag] = lp.run_until_complete(main())
        finally:
            lp.close()

    threads = [threading.Thread(target=work, args=(t,)) for t in ("a", "b")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert results == {"a": list(range(20)), "b": list(range(20))}


def test_wake_loop_running_in_worker_thread_from_main(loop_factory):
    lp = loop_factory()
    started = threading.Event()
    result = []

    def work():
        lp.call_soon(started.set)
        lp.run_forever()
        result.append("stopped")

    th = threading.Thread(target=work)
    th.start()
    try:
        assert started.wait(5)
        fut = asyncio.run_coroutine_threadsafe(asyncio.sleep(0.001, "done"), lp)
        assert fut.result(5) == "done"
        t0 = time.monotonic()
        lp.call_soon_threadsafe(lp.stop)
        th.join(5)
        assert time.monotonic() - t0 < 1.0
        assert result == ["stopped"]
    finally:
        if th.is_alive():  # pragma: no cover - a broken loop
            lp.call_soon_threadsafe(lp.stop)
            th.join(5)
        lp.close()
