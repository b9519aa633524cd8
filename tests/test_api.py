"""Public API: run(), Loop, EventLoopPolicy, install(), integration with asyncio.

Tests taking ``impl`` run against stock asyncio's equivalents too (asyncio.run,
asyncio.DefaultEventLoopPolicy, ...), so the expected behaviour is the
reference one.  Tests that only make sense for tokioloop import it directly.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import signal
import sys
import warnings

import pytest
from loop_support import PY311, PY312, import_tokioloop

# --------------------------------------------------------------------------
# run()
# --------------------------------------------------------------------------


def _default_debug():
    return bool(os.environ.get("PYTHONASYNCIODEBUG")) or sys.flags.dev_mode


def _assert_impl_loop_type(impl, loop_type):
    """``loop_type`` is the implementation's loop class: a subclass of
    ``impl.Loop``, and exactly tokioloop.Loop for tokioloop (nothing silently
    falls back to another loop)."""
    assert issubclass(loop_type, impl.Loop)
    if impl.kind == "tokioloop":
        assert loop_type is impl.Loop


def _assert_new_loop_is_impl(impl, new_event_loop):
    """``new_event_loop()`` makes a fresh, open loop of the implementation."""
    lp = new_event_loop()
    try:
        _assert_impl_loop_type(impl, type(lp))
        assert not lp.is_closed()
    finally:
        lp.close()


def test_run_returns_result(impl):
    async def main(x):
        await asyncio.sleep(0)
        return x + 1

    assert impl.run(main(41)) == 42


def test_run_uses_implementation_loop(impl):
    async def main():
        lp = asyncio.get_running_loop()
        return type(lp), lp

    loop_type, lp = impl.run(main())
    _assert_impl_loop_type(impl, loop_type)
    assert lp.is_closed()


def test_run_propagates_exception(impl):
    async def main():
        raise KeyError("from-main")

    with pytest.raises(KeyError, match="from-main"):
        impl.run(main())


def test_run_debug(impl):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert impl.run(main(), debug=True) is True
    assert impl.run(main(), debug=False) is False
    assert impl.run(main(), debug=None) is _default_debug()
    assert impl.run(main()) is _default_debug()


def test_run_cancels_leftover_tasks_and_closes_asyncgens(impl):
    log = []

    async def background():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            log.append("background-cancelled")
            raise

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append("agen-closed")

    keep = []

    async def main():
        asyncio.get_running_loop().create_task(background())
        g = agen()
        await g.__anext__()
        await asyncio.sleep(0)
        keep.append(g)  # keep it alive past main()
        return "main-done"

    assert impl.run(main()) == "main-done"
    assert sorted(log) == ["agen-closed", "background-cancelled"]


def test_run_non_coroutine(impl):
    with pytest.raises(ValueError, match="a coroutine was expected, got 42"):
        impl.run(42)


def test_run_from_running_loop(impl):
    async def main():
        inner = asyncio.sleep(0)
        try:
            impl.run(inner)
        except RuntimeError as exc:
            return str(exc)
        finally:
            inner.close()
        return None

    msg = impl.run(main())
    assert msg is not None
    assert msg.endswith("cannot be called from a running event loop")


def test_run_twice_uses_fresh_loops(impl):
    async def main():
        return asyncio.get_running_loop()

    a = impl.run(main())
    b = impl.run(main())
    assert a is not b
    assert a.is_closed()
    assert b.is_closed()


# --------------------------------------------------------------------------
# asyncio.run(loop_factory=) / asyncio.Runner
# --------------------------------------------------------------------------


@pytest.mark.skipif(not PY312, reason="asyncio.run(loop_factory=) is new in 3.12")
def test_asyncio_run_with_loop_factory(impl):
    async def main():
        return type(asyncio.get_running_loop()), "value"

    loop_type, value = asyncio.run(main(), loop_factory=impl.new_event_loop)
    assert value == "value"
    _assert_impl_loop_type(impl, loop_type)


@pytest.mark.skipif(not PY311, reason="asyncio.Runner is new in 3.11")
def test_runner_with_loop_factory(impl):
    async def step(x):
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()), x

    with asyncio.Runner(loop_factory=impl.new_event_loop, debug=True) as runner:
        lp = runner.get_loop()
        assert isinstance(lp, impl.Loop)
        assert lp.get_debug() is True
        t1, r1 = runner.run(step(1))
        t2, r2 = runner.run(step(2))
    assert (r1, r2) == (1, 2)
    assert t1 is type(lp)
    assert t2 is type(lp)
    assert lp.is_closed()


@pytest.mark.skipif(not PY311, reason="asyncio.Runner is new in 3.11")
def test_runner_sigint_handler_installed_and_restored(impl):
    before = signal.getsignal(signal.SIGINT)
    if before is not signal.default_int_handler:
        pytest.skip("Runner only installs its handler over the default one")

    async def main():
        return signal.getsignal(signal.SIGINT)

    with asyncio.Runner(loop_factory=impl.new_event_loop) as runner:
        during = runner.run(main())
    assert during is not before  # the Runner's own handler
    assert signal.getsignal(signal.SIGINT) is before


# --------------------------------------------------------------------------
# Loop class / new_event_loop
# --------------------------------------------------------------------------


def test_loop_is_abstract_event_loop(loop, impl):
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert isinstance(loop, impl.Loop)
    assert issubclass(impl.Loop, asyncio.AbstractEventLoop)


def test_running_loop_type_inside_coroutine(loop, impl):
    async def main():
        return asyncio.get_running_loop()

    running = loop.run_until_complete(main())
    assert running is loop
    _assert_impl_loop_type(impl, type(running))


def test_new_event_loop_returns_fresh_loops(impl):
    a = impl.new_event_loop()
    b = impl.new_event_loop()
    try:
        assert a is not b
        _assert_impl_loop_type(impl, type(a))
        assert not a.is_closed()
        assert not a.is_running()
    finally:
        a.close()
        b.close()


def test_loop_repr(loop):
    r = repr(loop)
    assert "running=False" in r
    assert "closed=False" in r
    assert "debug=False" in r


# --------------------------------------------------------------------------
# Policy / install()
# --------------------------------------------------------------------------


def test_policy_new_event_loop(impl):
    policy = impl.EventLoopPolicy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    _assert_new_loop_is_impl(impl, policy.new_event_loop)


def test_install_makes_asyncio_use_implementation(impl, restore_policy):
    with warnings.catch_warnings():
        # tokioloop deprecates install() on 3.12+ (policies are on their way out).
        warnings.simplefilter("ignore", DeprecationWarning)
        impl.install()
    policy = asyncio.get_event_loop_policy()
    assert isinstance(policy, impl.EventLoopPolicy)
    _assert_new_loop_is_impl(impl, asyncio.new_event_loop)

    async def main():
        return type(asyncio.get_running_loop())

    # Plain asyncio.run() now runs on the installed implementation.
    _assert_impl_loop_type(impl, asyncio.run(main()))


def test_policy_get_event_loop(impl, restore_policy):
    asyncio.set_event_loop_policy(impl.EventLoopPolicy())
    lp = impl.new_event_loop()
    try:
        asyncio.set_event_loop(lp)
        assert asyncio.get_event_loop_policy().get_event_loop() is lp
    finally:
        asyncio.set_event_loop(None)
        lp.close()


@pytest.mark.parametrize("how", ["exec", "shell"])
def test_subprocesses_under_the_installed_policy(impl, restore_policy, how):
    # The policy must provide what asyncio's Unix loop asks it for when it
    # starts a child (the child watcher on 3.10-3.13).
    asyncio.set_event_loop_policy(impl.EventLoopPolicy())

    async def main():
        if how == "exec":
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "print('hi')", stdout=asyncio.subprocess.PIPE
            )
        else:
            proc = await asyncio.create_subprocess_shell("echo hi", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode, type(asyncio.get_running_loop())

    out, code, loop_type = asyncio.run(main())
    assert (out, code) == (b"hi\n", 0)
    _assert_impl_loop_type(impl, loop_type)


# --------------------------------------------------------------------------
# Module metadata
# --------------------------------------------------------------------------


def test_version():
    tl = import_tokioloop()
    assert isinstance(tl.__version__, str)
    assert tl.__version__
    assert tl.__version__ == importlib.metadata.version("tokioloop")


def test_public_names():
    tl = import_tokioloop()
    for name in ("new_event_loop", "Loop", "run", "EventLoopPolicy", "install", "__version__"):
        assert hasattr(tl, name), name
    assert callable(tl.new_event_loop)
    assert callable(tl.run)
    assert callable(tl.install)
    assert isinstance(tl.Loop, type)
    assert issubclass(tl.Loop, asyncio.AbstractEventLoop)
