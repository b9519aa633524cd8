"""Python helpers the native core calls on its slow paths.

Formatting and error reporting must match asyncio's to the letter (handle
reprs, the exception-handler context, debug-mode warnings), and asyncio's
own formatting code differs between Python versions, so the native core
calls these small functions instead of re-implementing that text in Rust.
None of them is on a per-callback path outside debug mode.
"""

from __future__ import annotations

import sys
from asyncio import base_events, format_helpers
from asyncio.log import logger

# format_helpers grew a ``debug`` keyword in 3.13.
_FORMAT_TAKES_DEBUG = sys.version_info >= (3, 13)


def _format_callback_source(callback, args, debug):
    if _FORMAT_TAKES_DEBUG:
        return format_helpers._format_callback_source(callback, args, debug=debug)
    return format_helpers._format_callback_source(callback, args)


def report_callback_error(loop, handle, callback, args, exc):
    """What ``asyncio.Handle._run`` does when its callback raises."""
    source = _format_callback_source(callback, args, loop.get_debug())
    context = {
        "message": f"Exception in callback {source}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    loop.call_exception_handler(context)
    # Break the frame <-> exception traceback cycle, as Handle._run does.
    handle = callback = args = exc = context = None


def handle_repr(handle):
    """``repr()`` of a native Handle/TimerHandle, as asyncio formats its own."""
    info = [type(handle).__name__]
    cancelled = handle._cancelled
    if cancelled:
        info.append("cancelled")
    callback = handle._callback
    if callback is not None:
        info.append(_format_callback_source(callback, handle._args, handle._loop.get_debug()))
    traceback = handle._source_traceback
    if traceback:
        frame = traceback[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    when = getattr(handle, "_when", None)
    if when is not None:
        info.insert(2 if cancelled else 1, f"when={when}")
    return "<{}>".format(" ".join(info))


def extract_stack():
    """The creation traceback of a handle made in debug mode.

    Frame 1 is the code that called ``call_soon``/``call_later``: the native
    method in between has no Python frame.
    """
    return format_helpers.extract_stack(sys._getframe(1))


def run_handle_debug(loop, handle):
    """Run one handle the way ``BaseEventLoop._run_once`` does in debug mode."""
    try:
        loop._current_handle = handle
        t0 = loop.time()
        handle._run()
        dt = loop.time() - t0
        if dt >= loop.slow_callback_duration:
            logger.warning("Executing %s took %.3f seconds", base_events._format_handle(handle), dt)
    finally:
        loop._current_handle = None
        # A coroutine frame that outlives this call keeps this frame as its
        # f_back; drop the handle so a failed task is not kept alive in a
        # cycle (asyncio's Handle._run clears ``self`` for the same reason).
        handle = None
