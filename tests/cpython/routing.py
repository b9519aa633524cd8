"""Route the loops CPython's asyncio tests create to the loop under test.

Used inside the child process (child.py), *before* the test module is
imported.  The tests build their loops in a handful of ways; each one that
is meant to give "a normal event loop" is sent to the chosen factory:

* ``asyncio.new_event_loop()``, ``asyncio.run()``, ``asyncio.Runner()`` and
  ``unittest.IsolatedAsyncioTestCase`` all go through the event-loop policy.
  We install a policy whose ``new_event_loop`` calls the factory, and make it
  ``asyncio.DefaultEventLoopPolicy`` too, because nearly every test module's
  ``tearDownModule`` (and many tests) reset the policy with
  ``asyncio.set_event_loop_policy(None)``, which re-creates the default one.
* Test classes that build their loop in a ``create_event_loop()`` or
  ``new_loop()`` hook (test_events, test_sendfile, test_sock_lowlevel,
  test_server, test_sslproto, test_buffered_proto, ...) return
  ``asyncio.SelectorEventLoop(<some selector>)``.  Those hooks are wrapped:
  when the hook returns a plain stock ``SelectorEventLoop`` it is closed and
  a chosen loop is returned instead.  Hooks that return anything else (the
  mocked ``BaseEventLoop`` of test_runners, proactor loops, subclasses) are
  left alone: those tests are about stock internals.

Deliberately *not* routed: ``test_utils.TestLoop`` (``self.new_test_loop()``,
a BaseEventLoop with a fake clock), loops built with explicit stock classes
inside ``setUp``, and interpreters the tests spawn.  Tests that only use such
loops still run, but create no chosen loop, so the runner reports them as
"stock" passes instead of counting them as passes of the chosen loop.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import threading
import unittest

LOOP_KINDS = ("tokioloop", "uvloop", "asyncio")

# Captured before anything is patched: the class a stock loop has.
STOCK_SELECTOR_LOOP = asyncio.SelectorEventLoop
HOOK_NAMES = ("create_event_loop", "new_loop")


def load_factory(kind: str):
    """Return ``(factory, loop_type, version)`` for a loop kind."""
    if kind == "tokioloop":
        import tokioloop

        return tokioloop.new_event_loop, tokioloop.Loop, getattr(tokioloop, "__version__", "?")
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop, uvloop.Loop, uvloop.__version__
    if kind == "asyncio":
        import platform

        return STOCK_SELECTOR_LOOP, STOCK_SELECTOR_LOOP, platform.python_version()
    raise ValueError(f"unknown loop kind {kind!r}; expected one of {LOOP_KINDS}")


class Router:
    """Creates chosen loops and counts them (tests may create loops in threads)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factory, self.loop_type, self.version = load_factory(kind)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.created = 0
        self.routed_hooks: list[str] = []

    def new_loop(self):
        loop = self._factory()
        if isinstance(loop, self.loop_type):
            with self._lock:
                self.created = next(self._counter)
        return loop

    def install_policy(self) -> None:
        router = self

        class RoutedEventLoopPolicy(asyncio.DefaultEventLoopPolicy):
            """The stock default policy (child watchers and all) with our factory."""

            @staticmethod
            def _loop_factory():
                return router.new_loop()

        # set_event_loop_policy(None) re-creates ``asyncio.DefaultEventLoopPolicy``
        # (looked up on the package at that moment), so a reset keeps routing.
        asyncio.DefaultEventLoopPolicy = RoutedEventLoopPolicy
        if hasattr(asyncio, "unix_events"):
            asyncio.unix_events.DefaultEventLoopPolicy = RoutedEventLoopPolicy
        asyncio.set_event_loop_policy(RoutedEventLoopPolicy())

    def _wrap_hook(self, cls: type, name: str) -> None:
        original = getattr(cls, name)
        if getattr(original, "_routed", False) or not callable(original):
            return  # inherited from a class we already wrapped

        @functools.wraps(original)
        def hook(test, *args, **kwargs):
            loop = original(test, *args, **kwargs)
            if type(loop) is STOCK_SELECTOR_LOOP:
                loop.close()
                return self.new_loop()
            return loop

        hook._routed = True
        setattr(cls, name, hook)
        self.routed_hooks.append(f"{cls.__qualname__}.{name}")

    def route_hooks(self, module) -> None:
        """Wrap the loop-building hooks of every TestCase class in ``module``."""
        classes = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, unittest.TestCase)
        ]
        # Base classes first, so subclasses see (and skip) the wrapped hook.
        for cls in sorted(classes, key=lambda c: len(c.__mro__)):
            for name in HOOK_NAMES:
                if hasattr(cls, name):
                    self._wrap_hook(cls, name)


def patch_test_utils() -> None:
    """Let the suite's helper close loops that lack BaseEventLoop's private state.

    ``test_utils.TestCase.close_loop`` reads ``loop._default_executor``, a
    private attribute of ``BaseEventLoop``.  A loop that is not a
    BaseEventLoop (uvloop) would make every test's cleanup fail on that
    harness detail, so for such loops we do the public equivalent first.
    Loops that have the attribute go through the original code unchanged.
    """
    from test.test_asyncio import utils as test_utils

    original = test_utils.TestCase.close_loop

    def close_loop(loop):
        if not hasattr(loop, "_default_executor"):
            if not loop.is_closed():
                loop.run_until_complete(loop.shutdown_default_executor())
            try:
                loop._default_executor = None
            except AttributeError:
                loop.close()
                return
        original(loop)

    test_utils.TestCase.close_loop = staticmethod(close_loop)


def install(kind: str) -> Router:
    """Set up routing for ``kind``; call before importing a test module."""
    router = Router(kind)
    router.install_policy()
    patch_test_utils()
    return router
