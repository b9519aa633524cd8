"""Shared fixtures for the differential core-loop test suite.

Every test that takes ``loop_factory`` (or ``loop``) runs twice: once on the
stock asyncio loop (id ``asyncio``), which is the reference behaviour, and
once on tokioloop (id ``tokioloop``).  The tokioloop param imports the package
without any fallback: if it is missing or broken those tests *error*, they are
never skipped.
"""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest
from loop_support import LOOP_KINDS, get_factory, import_tokioloop


@pytest.fixture(params=LOOP_KINDS, ids=LOOP_KINDS)
def loop_factory(request):
    """The ``new_event_loop`` function of the loop under test."""
    return get_factory(request.param)


@pytest.fixture
def loop_kind(request, loop_factory):
    """``"asyncio"`` or ``"tokioloop"``: the id of the current param."""
    return request.node.callspec.params["loop_factory"]


@pytest.fixture
def impl(loop_kind):
    """Module-level API of the implementation under test.

    For asyncio this is the stock equivalent of each tokioloop entry point, so
    API tests can be written once and compared against the reference.
    """

    class Impl:
        kind = loop_kind

    if loop_kind == "asyncio":
        Impl.run = staticmethod(asyncio.run)
        Impl.new_event_loop = staticmethod(asyncio.new_event_loop)
        Impl.Loop = asyncio.SelectorEventLoop
        Impl.EventLoopPolicy = asyncio.DefaultEventLoopPolicy

        def install():
            asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())

        Impl.install = staticmethod(install)
    else:
        tl = import_tokioloop()
        Impl.module = tl
        Impl.run = staticmethod(tl.run)
        Impl.new_event_loop = staticmethod(tl.new_event_loop)
        Impl.Loop = tl.Loop
        Impl.EventLoopPolicy = tl.EventLoopPolicy
        Impl.install = staticmethod(tl.install)
    return Impl


@pytest.fixture
def loop(loop_factory):
    """A fresh loop, installed as the current event loop, closed afterwards."""
    lp = loop_factory()
    asyncio.set_event_loop(lp)
    try:
        yield lp
    finally:
        try:
            if not lp.is_closed():
                if lp.is_running():  # pragma: no cover - a test went badly wrong
                    lp.stop()
                else:
                    lp.close()
        finally:
            asyncio.set_event_loop(None)


@pytest.fixture
def restore_policy():
    """Snapshot the global event-loop policy and put it back afterwards."""
    old = asyncio.get_event_loop_policy()
    try:
        yield old
    finally:
        asyncio.set_event_loop_policy(old)


@pytest.fixture
def collect_garbage():
    """Run the cyclic GC a few times (for "never retrieved" reports)."""

    def collect():
        for _ in range(3):
            gc.collect()

    return collect


@pytest.fixture
def assert_dropped_loop_collected(collect_garbage):
    """Check that a loop whose last reference is gone, reached through the
    weak reference given, is collected (the ResourceWarning of an unclosed
    loop is expected and ignored)."""

    def check(ref):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            collect_garbage()
        assert ref() is None

    return check
