"""Rust code awaiting on the loop through pyo3-async-runtimes (differential).

Rust libraries for Python hand asyncio futures to Python code with
pyo3-async-runtimes: the Rust future runs on a tokio runtime of the
library's own, on other threads, and completes the Python future through
the loop's `call_soon_threadsafe`; a Python awaitable that Rust awaits is
scheduled on the running loop the same way. tests/rust_await is such a
library (built by scripts/test.sh); each test runs on stock asyncio and on
tokioloop.
"""

from __future__ import annotations

import asyncio
import contextvars

import pytest
import rust_await  # tests/rust_await, built and installed by scripts/test.sh
from net_support import run

VAR = contextvars.ContextVar("VAR", default="unset")


def test_rust_future_result(loop):
    async def main():
        return await rust_await.sleep_then(0.01, "done")

    assert run(loop, main()) == "done"


def test_rust_future_wakes_a_parked_loop(loop):
    # Nothing else to do: the loop parks until tokio's thread completes it.
    async def main():
        started = loop.time()
        value = await rust_await.sleep_then(0.05, 7)
        return value, loop.time() - started

    value, took = run(loop, main())
    assert value == 7
    assert 0.04 <= took < 3


def test_many_rust_futures_at_once(loop):
    async def main():
        return await asyncio.gather(
            *(rust_await.sleep_then(0.001 * (i % 7), i) for i in range(300))
        )

    assert run(loop, main()) == list(range(300))


def test_rust_error_is_raised_in_python(loop):
    async def main():
        await rust_await.fail_after(0.01, "from rust")

    with pytest.raises(ValueError, match="from rust"):
        run(loop, main())


def test_rust_awaits_a_python_coroutine_on_the_running_loop(loop):
    seen = []

    async def half():
        seen.append(asyncio.get_running_loop())
        await asyncio.sleep(0.01)
        return 21

    async def main():
        return await rust_await.double_of(half())

    assert run(loop, main()) == 42
    assert seen == [loop]


def test_python_coroutine_awaited_by_rust_sees_the_callers_context(loop):
    async def read():
        return VAR.get()

    async def main():
        VAR.set("caller")
        return await rust_await.double_of(read())

    assert run(loop, main()) == "callercaller"


def test_cancelling_a_rust_future(loop):
    async def main():
        task = asyncio.ensure_future(rust_await.sleep_then(10, "never"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The loop goes on, and Rust futures still complete.
        return await rust_await.sleep_then(0.01, "after")

    assert run(loop, main()) == "after"
