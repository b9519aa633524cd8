"""``tokioloop.Loop``: the event loop class users get.

The class is the native ``LoopCore`` (ready queue, timers, the run loop,
everything on the per-callback path) combined with ``asyncio.BaseEventLoop``
(asyncio's own Python code for the policy parts: exception handling,
executors, async generator hooks, ``run_until_complete``). This file holds
only the glue between the two: ``run_forever``'s set-up and clean-up,
``close``, and signal handling, which is borrowed from asyncio's Unix loop
so it keeps that loop's exact rules on every Python version.
"""

from __future__ import annotations

import signal
import sys
import threading
from asyncio import base_events, events, unix_events

from ._tokioloop import LoopCore

_UnixLoop = unix_events._UnixSelectorEventLoop


class _WakeupSocket:
    """Stands in for asyncio's self-pipe socket in the borrowed signal code,
    which only asks it for ``fileno()``."""

    __slots__ = ("_fd",)

    def __init__(self, fd):
        self._fd = fd

    def fileno(self):
        return self._fd


def _in_main_thread():
    return threading.current_thread() is threading.main_thread()


class Loop(LoopCore, base_events.BaseEventLoop):
    """An asyncio event loop driven by tokio. Create it with
    ``tokioloop.new_event_loop()``."""

    def __init__(self):
        base_events.BaseEventLoop.__init__(self)
        self._old_agen_hooks = None
        self._signal_handlers = {}
        self._csock = _WakeupSocket(self._signal_wakeup_fd())
        # The process's wakeup fd before run_forever installed ours.
        self._saved_wakeup_fd = None

    # -- running ---------------------------------------------------------

    def run_forever(self):
        """Run until stop() is called."""
        self._run_forever_setup()
        try:
            self._run()
        finally:
            self._run_forever_cleanup()

    def _run_forever_setup(self):
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        self._old_agen_hooks = sys.get_asyncgen_hooks()
        self._thread_id = threading.get_ident()
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook,
            finalizer=self._asyncgen_finalizer_hook,
        )
        events._set_running_loop(self)
        self._install_signal_wakeup()

    def _run_forever_cleanup(self):
        self._stopping = False
        self._thread_id = None
        events._set_running_loop(None)
        self._set_coroutine_origin_tracking(False)
        if self._old_agen_hooks is not None:
            sys.set_asyncgen_hooks(*self._old_agen_hooks)
            self._old_agen_hooks = None
        self._restore_signal_wakeup()

    def _install_signal_wakeup(self):
        # A signal must wake a parked loop (Ctrl+C while idle), and Python
        # only signals the main thread, through the wakeup fd.
        if not _in_main_thread():
            return
        try:
            self._saved_wakeup_fd = signal.set_wakeup_fd(self._signal_wakeup_fd())
        except (ValueError, OSError):
            self._saved_wakeup_fd = None

    def _restore_signal_wakeup(self):
        saved, self._saved_wakeup_fd = self._saved_wakeup_fd, None
        if saved is None or not _in_main_thread():
            return
        if self._signal_handlers:
            # add_signal_handler's registration outlives this run.
            return
        try:
            signal.set_wakeup_fd(saved)
        except (ValueError, OSError):
            pass

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
        base_events.BaseEventLoop.close(self)
        self._close_native()

    # -- signals (asyncio's Unix implementation, over our wake-up socket) --

    add_signal_handler = _UnixLoop.add_signal_handler
    _handle_signal = _UnixLoop._handle_signal
    _check_signal = _UnixLoop._check_signal
    _process_self_data = _UnixLoop._process_self_data

    def remove_signal_handler(self, sig):
        removed = _UnixLoop.remove_signal_handler(self, sig)
        if removed and not self._signal_handlers and self.is_running() and _in_main_thread():
            # asyncio cleared the wakeup fd with its last handler; a running
            # loop still needs it for Ctrl+C.
            try:
                signal.set_wakeup_fd(self._signal_wakeup_fd())
            except (ValueError, OSError):
                pass
        return removed
