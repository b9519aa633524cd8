"""Helpers shared by the networking test modules (``tests/test_net_*.py``).

Everything here is loopback-only: 127.0.0.1, ::1 and Unix sockets in short
temporary directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import socket
import struct
import tempfile

import pytest

#: Upper bound (seconds) for one scenario driven by :func:`run`.
TIMEOUT = 5.0


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _has_ipv6()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="::1 is not available")
needs_reuseport = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="SO_REUSEPORT is not available"
)


def run(loop, coro, timeout: float = TIMEOUT):
    """Run ``coro`` on ``loop`` to completion, bounded by ``timeout`` seconds."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return loop.run_until_complete(bounded())


def run_reference(scenario, timeout: float = TIMEOUT):
    """Run ``scenario(loop)`` (a coroutine function) on a fresh *stock* asyncio
    loop and return its result.

    Used when the expected outcome depends on the kernel (ICMP, resets) rather
    than on asyncio itself: the tokioloop param then compares its own outcome
    with what stock asyncio observes on the same machine right now.
    """
    lp = asyncio.new_event_loop()
    try:
        return lp.run_until_complete(asyncio.wait_for(scenario(lp), timeout))
    finally:
        lp.close()


@contextlib.contextmanager
def short_tmpdir():
    """A short temporary directory (AF_UNIX paths are limited to ~107 bytes)."""
    d = tempfile.mkdtemp(prefix="tlnet-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(name="unix_path")
def unix_path_fixture():
    """Fixture ``unix_path``: a path for a Unix socket that does not exist yet
    (its directory is removed afterwards).  Test modules import
    ``unix_path_fixture`` to make it available."""
    with short_tmpdir() as d:
        yield os.path.join(d, "sock")


@pytest.fixture(name="sock_pair")
def sock_pair_fixture():
    """Fixture ``sock_pair``: two connected non-blocking AF_UNIX stream sockets,
    closed afterwards.  Test modules import ``sock_pair_fixture`` to make it
    available."""
    a, b = nb_socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def closed_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    """A TCP/UDP port number on ``host`` that nothing listens on (best effort)."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


#: Parametrizes ``kind`` (``"tcp"`` or ``"unix"``) and the ``error`` that
#: connecting to :func:`unused_address` of that kind raises.
nobody_listening = pytest.mark.parametrize(
    "kind,error",
    [("tcp", ConnectionRefusedError), ("unix", FileNotFoundError)],
    ids=["tcp", "unix"],
)


def unused_address(kind, unix_path):
    """An address nobody listens on: a closed 127.0.0.1 port for ``"tcp"``, the
    (not yet existing) ``unix_path`` for ``"unix"``."""
    return ("127.0.0.1", closed_port()) if kind == "tcp" else unix_path


def check_nobody_listening(loop, kind, error, unix_path, connect_tcp, connect_unix):
    """``await connect_tcp(host, port)`` (``kind`` "tcp") or
    ``await connect_unix(path)`` ("unix") to :func:`unused_address` raises
    ``error`` (use with :data:`nobody_listening`)."""
    address = unused_address(kind, unix_path)

    async def main():
        with pytest.raises(error):
            if kind == "unix":
                await connect_unix(address)
            else:
                await connect_tcp(*address)

    run(loop, main())


def tcp_listener(host="127.0.0.1", family=socket.AF_INET, backlog=16):
    """A bound, listening, non-blocking TCP socket."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(backlog)
    s.setblocking(False)
    return s


def nb_socketpair(family=socket.AF_UNIX, type=socket.SOCK_STREAM):
    a, b = socket.socketpair(family, type)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def close_then_new_pair(*old):
    """Close ``old`` and make a new non-blocking socketpair whose first socket
    has the fd number the first of ``old`` had (the fd-reuse tests need that
    number). The kernel hands out the lowest free number, but another fd
    freed meanwhile (an earlier test's leftover socket collected by the GC)
    could be lower; then the new socket is moved onto the old number with
    dup2, which is only done while that number is free."""
    fd = old[0].fileno()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for sock in old:
            sock.close()
        c, d = nb_socketpair()
        if c.fileno() != fd and not _fd_in_use(fd):
            os.dup2(c.fileno(), fd)
            moved = socket.socket(fileno=fd)
            moved.setblocking(False)
            c.close()
            c = moved
        return c, d
    finally:
        if enabled:
            gc.enable()


def _fd_in_use(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def set_linger_zero(sock):
    """Make ``close()`` send RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class HandlerRecorder:
    """Installs itself as the loop's exception handler and records contexts."""

    def __init__(self, loop):
        self.contexts = []
        loop.set_exception_handler(self)

    def __call__(self, loop, context):
        self.contexts.append(context)


class RecordingProtocol(asyncio.Protocol):
    """A stream protocol that records every callback in ``events``.

    ``events`` holds tuples: ``("made",)``, ``("data", bytes)``, ``("eof",)``,
    ``("pause",)``, ``("resume",)``, ``("lost", exc)``.  Consecutive data
    chunks are *not* merged; use :meth:`data` for the concatenation.
    """

    eof_result = None

    def __init__(self, loop=None):
        loop = loop or asyncio.get_running_loop()
        self.loop = loop
        self.events = []
        self.transport = None
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.eof = loop.create_future()
        self._waiters = []

    def connection_made(self, transport):
        self.transport = transport
        self.events.append(("made",))
        self.made.set_result(transport)

    def data_received(self, data):
        assert isinstance(data, bytes), type(data)
        self.events.append(("data", data))
        self._wake()

    def eof_received(self):
        self.events.append(("eof",))
        if not self.eof.done():
            self.eof.set_result(None)
        self._wake()
        return self.eof_result

    def pause_writing(self):
        self.events.append(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self):
        self.events.append(("resume", self.transport.get_write_buffer_size()))

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        if not self.lost.done():
            self.lost.set_result(exc)
        if not self.eof.done():
            self.eof.set_result(None)
        self._wake()

    # helpers ---------------------------------------------------------------

    def data(self) -> bytes:
        return b"".join(e[1] for e in self.events if e[0] == "data")

    def kinds(self):
        """Event names with consecutive ``data`` events collapsed into one."""
        out = []
        for e in self.events:
            if e[0] == "data" and out and out[-1] == "data":
                continue
            out.append(e[0])
        return out

    def _wake(self):
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def wait_for_data(self, n: int) -> bytes:
        """Wait until at least ``n`` bytes have been received in total."""
        while len(self.data()) < n:
            if self.lost.done():
                raise AssertionError(f"connection lost after {len(self.data())} bytes")
            w = self.loop.create_future()
            self._waiters.append(w)
            await w
        return self.data()


class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self, loop=None):
        loop = loop or asyncio.get_running_loop()
        self.loop = loop
        self.transport = None
        self.datagrams = []
        self.errors = []
        self.lost_calls = []
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self._queue = asyncio.Queue()
        self._err_queue = asyncio.Queue()

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(transport)

    def datagram_received(self, data, addr):
        self.datagrams.append((data, addr))
        self._queue.put_nowait((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)
        self._err_queue.put_nowait(exc)

    def connection_lost(self, exc):
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)

    async def recv(self):
        return await self._queue.get()

    async def next_error(self):
        return await self._err_queue.get()


async def iterations(n: int):
    """Let the loop run ``n`` iterations."""
    for _ in range(n):
        await asyncio.sleep(0)


def busy_chain(loop, order, action, *, at=2, length=8):
    """Keep the loop busy with a chain of callbacks, one per iteration, each
    appending its index to ``order``; the one at index ``at`` also calls
    ``action()``. Returns a future that is done after the last one."""
    done = loop.create_future()

    def step(n):
        order.append(n)
        if n == at:
            action()
        if n < length:
            loop.call_soon(step, n + 1)
        else:
            done.set_result(None)

    loop.call_soon(step, 0)
    return done


def transport_io_index(loop, at=2):
    """Where, in a ``busy_chain`` whose callback at index ``at`` sent data
    to a transport of the same loop, the receiving protocol's callback
    lands: in the next iteration on both loops, after the chain's next
    callback on the stock loop (I/O is queued last there) and before it on
    tokioloop (a transport's I/O runs first, as libuv's poll phase runs
    before the callbacks queued by the last iteration)."""
    stock = type(loop).__module__.startswith("asyncio")
    return at + 2 if stock else at + 1


def watch_once(loop, kind, key, action, *args, trigger=None, remove_key=None):
    """Watch ``key`` with ``loop.add_<kind>(key, callback, *args)`` (``kind`` is
    ``"reader"`` or ``"writer"``) and run the loop until the callback has run.

    The callback records ``action(*args)``, then removes itself with
    ``loop.remove_<kind>(remove_key)`` (default: ``key``) and records what that
    returned.  With a ``trigger``, the watch must stay quiet for a few
    iterations before ``trigger()`` is called.  Returns the records, so a
    single call that removed its registration gives ``[value, True]``; a
    second call would add more entries, and an ``action`` that raised (the
    loop's exception handler reports it) leaves the value out.
    """
    add = getattr(loop, f"add_{kind}")
    remove = getattr(loop, f"remove_{kind}")
    records = []

    async def main():
        done = loop.create_future()

        def callback(*cb_args):
            try:
                records.append(action(*cb_args))
            finally:
                records.append(remove(key if remove_key is None else remove_key))
                if not done.done():
                    done.set_result(None)

        assert add(key, callback, *args) is None
        if trigger is not None:
            await iterations(5)
            assert records == [], "fired before the trigger"
            trigger()
        await done
        await iterations(3)

    run(loop, main())
    return records
