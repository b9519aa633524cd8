"""Signals: Ctrl-C (real SIGINT to a child) and add/remove_signal_handler."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from loop_support import child_prelude

# --------------------------------------------------------------------------
# SIGINT delivered to a child process
# --------------------------------------------------------------------------


def _run_forever_body(*setup):
    """Child body: ``setup`` lines, then run_forever() on a new loop, printing
    "ready" from its first callback and "finally" on the way out."""
    return "\n".join(
        [
            "loop = factory()",
            *setup,
            'loop.call_soon(lambda: print("ready", flush=True))',
            "try:",
            "    loop.run_forever()",
            "finally:",
            '    print("finally", flush=True)',
            "    loop.close()",
        ]
    )


_CHILD_BODY = {
    # run(main()) parked on a future that never completes.
    "run": """
        async def main():
            print("ready", flush=True)
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                print("main-cancelled", flush=True)
                raise
        run(main())
    """,
    # run_forever() with nothing at all to do.
    "run_forever": _run_forever_body(),
    # run_forever() parked until a timer far in the future.
    "far_timer": _run_forever_body("loop.call_later(60, lambda: None)"),
    # run_until_complete() on a never-completing future.
    "run_until_complete": """
        loop = factory()
        async def main():
            print("ready", flush=True)
            await asyncio.get_running_loop().create_future()
        loop.run_until_complete(main())
    """,
    # Busy loop: a callback chain that keeps the ready queue non-empty.
    "busy": _run_forever_body("def spin():", "    loop.call_soon(spin)", "loop.call_soon(spin)"),
}

# What stock asyncio does (identical on 3.10 - 3.13): the child dies of the
# KeyboardInterrupt (CPython re-raises SIGINT at exit, so the return code is
# -SIGINT), after printing a traceback ending in "KeyboardInterrupt".
_EXPECTED_STDOUT = {
    "run": "ready\nmain-cancelled\n",
    "run_forever": "ready\nfinally\n",
    "far_timer": "ready\nfinally\n",
    "run_until_complete": "ready\n",
    "busy": "ready\nfinally\n",
}


def _child_source(kind, mode):
    # A shell starts background jobs (CI) with SIGINT ignored, which the
    # child inherits; at a terminal, Ctrl+C finds Python's default handler.
    prelude = (
        "import signal\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n" + child_prelude(kind)
    )
    run_expr = "asyncio.run" if kind == "asyncio" else "tokioloop.run"
    return prelude + f"run = {run_expr}\n" + textwrap.dedent(_CHILD_BODY[mode])


@pytest.mark.parametrize("mode", sorted(_CHILD_BODY))
def test_sigint_interrupts_loop(loop_kind, mode):
    proc = subprocess.Popen(
        [sys.executable, "-c", _child_source(loop_kind, mode)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        if first != "ready\n":
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"child did not get ready: {first!r}\n{err}")
        time.sleep(0.1)  # let it park
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=5)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert elapsed < 5
    assert proc.returncode == -signal.SIGINT, err
    assert "ready\n" + out == _EXPECTED_STDOUT[mode], err
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1] == "KeyboardInterrupt", err


# --------------------------------------------------------------------------
# add_signal_handler / remove_signal_handler
# --------------------------------------------------------------------------


@pytest.fixture
def sigusr1_restored():
    old = signal.getsignal(signal.SIGUSR1)
    old2 = signal.getsignal(signal.SIGUSR2)
    yield
    signal.signal(signal.SIGUSR1, old)
    signal.signal(signal.SIGUSR2, old2)


def test_add_signal_handler_fires(loop, sigusr1_restored):
    got = []
    fut = loop.create_future()

    def handler(*args):
        got.append((args, threading.get_ident()))
        if not fut.done():
            fut.set_result(None)

    assert loop.add_signal_handler(signal.SIGUSR1, handler, "a", 2) is None

    async def main():
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(fut, 5)

    loop.run_until_complete(main())
    assert got == [(("a", 2), threading.get_ident())]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_signal_wakes_parked_loop(loop, sigusr1_restored):
    fut = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, lambda: fut.set_result("signalled"))

    def thread_main():
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGUSR1)

    th = threading.Thread(target=thread_main)
    t0 = time.monotonic()
    th.start()
    assert loop.run_until_complete(fut) == "signalled"
    assert time.monotonic() - t0 < 1.0
    th.join(5)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


async def _sigusr1_until(calls, n):
    """Send SIGUSR1 to this process and wait (1 s at most) until ``calls`` has
    ``n`` entries."""
    os.kill(os.getpid(), signal.SIGUSR1)
    for _ in range(500):
        if len(calls) >= n:
            return
        await asyncio.sleep(0.002)


def test_signal_handler_fires_each_time(loop, sigusr1_restored):
    count = []
    loop.add_signal_handler(signal.SIGUSR1, count.append, "sig")

    async def main():
        for i in range(3):
            await _sigusr1_until(count, i + 1)
        await asyncio.sleep(0.02)  # no late duplicates

    loop.run_until_complete(main())
    assert count == ["sig", "sig", "sig"]


def test_add_signal_handler_replaces_previous(loop, sigusr1_restored):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "first")
    loop.add_signal_handler(signal.SIGUSR1, got.append, "second")
    loop.run_until_complete(_sigusr1_until(got, 1))
    assert got == ["second"]


@pytest.mark.parametrize(
    "sig,default",
    [(signal.SIGUSR1, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)],
    ids=["SIGUSR1", "SIGINT"],
)
def test_remove_signal_handler_restores_default(loop, sig, default):
    old = signal.getsignal(sig)
    try:
        assert loop.remove_signal_handler(sig) is False  # nothing registered yet
        loop.add_signal_handler(sig, lambda: None)
        assert loop.remove_signal_handler(sig) is True
        assert loop.remove_signal_handler(sig) is False
        # The default disposition is restored (Python's own handler for SIGINT).
        assert signal.getsignal(sig) == default
    finally:
        signal.signal(sig, old)


def test_close_removes_signal_handlers(loop_factory, sigusr1_restored):
    lp = loop_factory()
    lp.add_signal_handler(signal.SIGUSR1, lambda: None)
    lp.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_add_signal_handler_uncatchable(loop, sig):
    with pytest.raises(RuntimeError, match=f"^sig {int(sig)} cannot be caught$"):
        loop.add_signal_handler(sig, lambda: None)


@pytest.mark.parametrize("sig", [0, -1, signal.NSIG, 1000])
def test_add_signal_handler_invalid_number(loop, sig):
    with pytest.raises(ValueError, match=f"invalid signal number {sig}"):
        loop.add_signal_handler(sig, lambda: None)
    with pytest.raises(ValueError, match=f"invalid signal number {sig}"):
        loop.remove_signal_handler(sig)


def test_add_signal_handler_non_int(loop):
    with pytest.raises(TypeError, match="sig must be an int, not 'SIGUSR1'"):
        loop.add_signal_handler("SIGUSR1", lambda: None)
    with pytest.raises(TypeError, match="sig must be an int"):
        loop.remove_signal_handler("SIGUSR1")


async def _coro_handler():
    pass


def test_add_signal_handler_coroutine(loop, sigusr1_restored):
    with pytest.raises(TypeError, match=r"coroutines cannot be used with add_signal_handler\(\)"):
        loop.add_signal_handler(signal.SIGUSR1, _coro_handler)
    coro = _coro_handler()
    try:
        with pytest.raises(TypeError, match="coroutines cannot be used"):
            loop.add_signal_handler(signal.SIGUSR1, coro)
    finally:
        coro.close()
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_add_signal_handler_on_closed_loop(loop_factory):
    lp = loop_factory()
    lp.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        lp.add_signal_handler(signal.SIGUSR1, lambda: None)


def test_add_signal_handler_from_non_main_thread(loop_factory, sigusr1_restored):
    results = []

    def thread_main():
        lp = loop_factory()
        try:
            lp.add_signal_handler(signal.SIGUSR1, lambda: None)
        except BaseException as exc:  # noqa: BLE001 - recorded and asserted below
            results.append(type(exc))
        else:
            results.append(None)
        finally:
            lp.close()

    th = threading.Thread(target=thread_main)
    th.start()
    th.join(5)
    # asyncio: set_wakeup_fd() refuses to run outside the main thread and the
    # ValueError is re-raised as RuntimeError.
    assert results == [RuntimeError]
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
