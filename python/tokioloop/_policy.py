"""Ways to make asyncio use tokioloop: the event-loop policy, ``install()``
and ``run()``."""

from __future__ import annotations

import asyncio
import sys
import warnings
from asyncio import coroutines, events, unix_events

from ._loop import Loop


def new_event_loop() -> Loop:
    """Return a new tokioloop event loop."""
    return Loop()


# asyncio's Unix policy, so that what its Unix loop asks the policy for
# (the child watcher when it starts a subprocess, on 3.10-3.13) is there.
_BasePolicy = getattr(unix_events, "_UnixDefaultEventLoopPolicy", events.BaseDefaultEventLoopPolicy)


class EventLoopPolicy(_BasePolicy):
    """An event-loop policy whose loops are tokioloop loops."""

    def _loop_factory(self):
        return new_event_loop()


def install() -> None:
    """Make asyncio create tokioloop loops (sets the event-loop policy)."""
    if sys.version_info >= (3, 12):
        warnings.warn(
            "tokioloop.install() is deprecated in favor of tokioloop.run() "
            "starting with Python 3.12, as asyncio's loop policies are.",
            DeprecationWarning,
            stacklevel=2,
        )
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=None):
    """Run a coroutine on a new tokioloop loop, like ``asyncio.run``."""
    if events._get_running_loop() is not None:
        # Checked before a loop exists, as asyncio.run does (3.11's Runner
        # would build one first).
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    if sys.version_info >= (3, 12):
        return asyncio.run(main, debug=debug, loop_factory=new_event_loop)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return _run_310(main, debug=debug)


def _run_310(main, *, debug=None):
    # asyncio.run of 3.10, with our loop: 3.10 has no loop_factory.
    if not coroutines.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop()
    try:
        events.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            asyncio.runners._cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            events.set_event_loop(None)
            loop.close()
