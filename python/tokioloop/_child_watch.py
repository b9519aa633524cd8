"""Waiting for subprocesses with a pidfd on Python 3.10 and 3.11.

asyncio 3.12+ waits for a child through ``os.pidfd_open`` and the loop's
reader (``PidfdChildWatcher``) wherever Linux has pidfds. 3.10 and 3.11
default to ``ThreadedChildWatcher``: one thread per child that blocks in
``waitpid`` and then wakes the loop from that thread, which costs more than
the rest of a short spawn. There, tokioloop waits for its own subprocesses
the 3.12 way, privately (nothing is installed in the policy), so other loops
and code that calls ``waitpid`` are unaffected: each pidfd waits for its own
pid only, as the threaded watcher's threads do.

A watcher the application chose itself (``set_child_watcher`` with a
Safe/Fast/MultiLoop/custom watcher, as CPython's own tests do) stays in
charge: only the default threaded watcher, or none yet, is bypassed.
Children still running when the loop closes are handed to a thread that
reaps them, as the threaded watcher would have, so none is left a zombie.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from asyncio import events, unix_events

logger = logging.getLogger("asyncio")


def _pidfd_works() -> bool:
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


_PIDFD = sys.version_info < (3, 12) and sys.platform.startswith("linux") and _pidfd_works()


def use_pidfd() -> bool:
    """Whether this loop should wait for its children itself (see above)."""
    if not _PIDFD:
        return False
    watcher = getattr(events.get_event_loop_policy(), "_watcher", False)
    return watcher is None or type(watcher) is unix_events.ThreadedChildWatcher


class PidfdWaits:
    """One loop's children waited for through pidfds."""

    def __init__(self, loop):
        # Weakly: the loop holds this object, and a closed loop must be freed
        # by its last reference going, as asyncio's is, not by the cyclic GC.
        self._loop = weakref.proxy(loop)
        self._pending = {}  # pid -> pidfd

    def add(self, pid, callback, *args):
        pidfd = os.pidfd_open(pid)
        self._pending[pid] = pidfd
        self._loop._add_reader(pidfd, self._reap, pid, callback, args)

    def _reap(self, pid, callback, args):
        pidfd = self._pending.pop(pid)
        self._loop._remove_reader(pidfd)
        os.close(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            # Reaped elsewhere (someone called waitpid): as asyncio reports it.
            returncode = 255
            logger.warning(
                "child process pid %d exit status already read:  will report returncode 255", pid
            )
        else:
            returncode = os.waitstatus_to_exitcode(status)
        callback(pid, returncode, *args)

    def close(self):
        """Stop watching; children still running are reaped by a thread."""
        pending, self._pending = self._pending, {}
        for pid, pidfd in pending.items():
            self._loop._remove_reader(pidfd)
            os.close(pidfd)
            threading.Thread(target=_reap_quietly, args=(pid,), daemon=True).start()


def _reap_quietly(pid):
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


async def make_subprocess_transport(
    loop, waits, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
):
    """asyncio's ``_make_subprocess_transport`` waiting through ``waits``
    instead of the policy's child watcher."""
    waiter = loop.create_future()
    transp = unix_events._UnixSubprocessTransport(
        loop,
        protocol,
        args,
        shell,
        stdin,
        stdout,
        stderr,
        bufsize,
        waiter=waiter,
        extra=extra,
        **kwargs,
    )
    waits.add(transp.get_pid(), loop._child_watcher_callback, transp)
    try:
        await waiter
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        transp.close()
        await transp._wait()
        raise
    return transp
