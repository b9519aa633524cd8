"""Stream transport details that the native transport must get exactly right
(differential: the same scenario on stock asyncio and on tokioloop).

The broad protocol/stream behaviour lives in test_net_protocols.py and
test_net_streams.py; this module covers what a native re-implementation of
``_SelectorSocketTransport`` could plausibly get wrong: exceptions that must
escape, contexts, buffer ownership, protocol switching, data surviving
close(), repr, warnings, EMFILE on accept and closing a loop under open
transports.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import contextvars
import errno
import gc
import hashlib
import logging
import os
import re
import socket as socket_mod
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
from loop_support import FACTORY_EXPR, import_tokioloop
from net_support import (
    RecordingProtocol,
    busy_chain,
    iterations,
    run,
    tcp_listener,
    transport_io_index,
)

VAR = contextvars.ContextVar("VAR", default="unset")


async def _pair(loop, client_factory=None, server_factory=None):
    """A connected (client transport, client protocol, server protocol)."""
    accepted = loop.create_future()

    def make_server():
        proto = (server_factory or (lambda: RecordingProtocol(loop)))()
        if not accepted.done():
            accepted.set_result(proto)
        return proto

    server = await loop.create_server(make_server, "127.0.0.1", 0)
    addr = server.sockets[0].getsockname()
    tr, cp = await loop.create_connection(
        client_factory or (lambda: RecordingProtocol(loop)), *addr
    )
    sp = await accepted
    await sp.made
    return server, tr, cp, sp


async def _teardown(server, *transports):
    for tr in transports:
        if tr is not None and not tr.is_closing():
            tr.close()
    server.close()
    await server.wait_closed()
    await iterations(3)


def test_keyboard_interrupt_from_data_received_escapes(loop):
    class Interrupting(RecordingProtocol):
        def data_received(self, data):
            raise KeyboardInterrupt

    async def main():
        _server, _tr, _cp, sp = await _pair(loop, client_factory=lambda: Interrupting(loop))
        sp.transport.write(b"x")
        await asyncio.sleep(5)

    with pytest.raises(KeyboardInterrupt):
        run(loop, main())


def test_protocol_callbacks_see_the_creation_context(loop):
    seen = []

    class Recording(RecordingProtocol):
        def connection_made(self, transport):
            seen.append(("made", VAR.get()))
            super().connection_made(transport)

        def data_received(self, data):
            seen.append(("data", VAR.get()))
            super().data_received(data)

        def eof_received(self):
            seen.append(("eof", VAR.get()))
            return super().eof_received()

        def connection_lost(self, exc):
            seen.append(("lost", VAR.get()))
            super().connection_lost(exc)

    async def main():
        VAR.set("creator")
        server, tr, cp, sp = await _pair(loop, client_factory=lambda: Recording(loop))
        VAR.set("changed later")
        sp.transport.write(b"ping")
        await cp.wait_for_data(4)
        sp.transport.close()
        await cp.lost
        await _teardown(server, tr)

    run(loop, main())
    assert [kind for kind, _ in seen] == ["made", "data", "eof", "lost"]
    # Reading callbacks run in a copy of the context the transport was made
    # in; connection_lost runs where close() was scheduled from.
    assert seen[1][1] == "creator"
    assert seen[2][1] == "creator"


def test_close_right_after_big_write_delivers_everything(loop):
    payload = os.urandom(8 * 1024 * 1024)

    async def main():
        server, tr, _cp, sp = await _pair(loop)
        tr.write(payload)
        assert tr.get_write_buffer_size() > 0  # the rest is buffered
        tr.close()
        await sp.lost
        await _teardown(server, tr)
        return sp

    sp = run(loop, main(), timeout=20)
    assert hashlib.sha256(sp.data()).digest() == hashlib.sha256(payload).digest()
    assert sp.kinds()[-2:] == ["eof", "lost"]


def test_write_eof_after_buffered_write_delivers_then_half_closes(loop):
    payload = os.urandom(4 * 1024 * 1024)

    class KeepOpen(RecordingProtocol):
        eof_result = True

    async def main():
        server, tr, cp, sp = await _pair(loop, server_factory=lambda: KeepOpen(loop))
        tr.write(payload)
        tr.write_eof()
        await sp.eof
        # The other direction still works after our half-close.
        sp.transport.write(b"reply")
        await cp.wait_for_data(5)
        await _teardown(server, tr, sp.transport)
        return cp, sp

    cp, sp = run(loop, main(), timeout=20)
    assert sp.data() == payload
    assert cp.data() == b"reply"


def test_writes_after_write_eof_raise_as_asyncio(loop):
    # Before 3.12 asyncio's writelines is WriteTransport's (join, then
    # write(), so write's message and join's TypeError first); from 3.12 on
    # the transport's own, which checks write_eof first.
    own_writelines = sys.version_info >= (3, 12)

    async def main():
        server, tr, _cp, _sp = await _pair(loop)
        tr.write_eof()
        errors = []
        for call in (
            lambda: tr.write(b"x"),
            lambda: tr.writelines([b"x", b"y"]),
            lambda: tr.writelines(["not bytes"]),
            lambda: tr.write("not bytes"),
        ):
            try:
                call()
            except (RuntimeError, TypeError) as exc:
                errors.append((type(exc), str(exc)))
        await _teardown(server, tr)
        return errors

    errors = run(loop, main())
    assert errors[0] == (RuntimeError, "Cannot call write() after write_eof()")
    if own_writelines:
        assert errors[1] == (RuntimeError, "Cannot call writelines() after write_eof()")
        assert errors[2] == (RuntimeError, "Cannot call writelines() after write_eof()")
    else:
        assert errors[1] == (RuntimeError, "Cannot call write() after write_eof()")
        assert errors[2][0] is TypeError
    assert errors[3][0] is TypeError
    assert len(errors) == 4


def test_write_accepts_any_contiguous_buffer(loop):
    ints = array.array("i", [1, 2, 3])

    async def main():
        server, tr, _cp, sp = await _pair(loop)
        tr.write(b"a")
        tr.write(bytearray(b"bc"))
        tr.write(memoryview(b"xdefx")[1:4])
        tr.write(memoryview(ints))
        tr.writelines([b"g", bytearray(b"h"), memoryview(b"i")])
        # Any iterable, a generator too (it has no length).
        tr.writelines(chunk for chunk in (b"j", b"k"))
        tr.write(b"")
        tr.write(bytearray())
        expected = b"abcdef" + ints.tobytes() + b"ghijk"
        await sp.wait_for_data(len(expected))
        await _teardown(server, tr)
        return sp, expected

    sp, expected = run(loop, main())
    assert sp.data() == expected


def test_write_takes_data_by_keyword_and_exactly_one_argument(loop):
    async def main():
        server, tr, _cp, sp = await _pair(loop)
        tr.write(data=b"kw")
        errors = []
        for args, kwargs in [((), {}), ((b"x", b"y"), {}), ((), {"buf": b"x"})]:
            with pytest.raises(TypeError):
                tr.write(*args, **kwargs)
            errors.append(args)
        await sp.wait_for_data(2)
        await _teardown(server, tr)
        return sp, len(errors)

    sp, errors = run(loop, main())
    assert (sp.data(), errors) == (b"kw", 3)


def test_write_methods_through_the_class_and_shadowed_per_instance(loop):
    """`write`, `is_closing` and `get_write_buffer_size` called through the
    class (unbound, with the transport as `self`), and `write` replaced on
    one transport by a wrapper, as tracing code does: the wrapper sees every
    write and the data still arrives."""

    async def main():
        server, tr, _cp, sp = await _pair(loop)
        cls = type(tr)
        cls.write(tr, b"a")
        state = (cls.is_closing(tr), cls.get_write_buffer_size(tr))
        seen = []
        original = tr.write

        def traced(data):
            seen.append(bytes(data))
            original(data)

        tr.write = traced
        tr.write(b"bc")
        await sp.wait_for_data(3)
        del tr.write
        tr.write(b"d")
        await sp.wait_for_data(4)
        await _teardown(server, tr)
        return state, seen, sp.data(), tr.is_closing()

    assert run(loop, main()) == ((False, 0), [b"bc"], b"abcd", True)


@pytest.mark.parametrize("bad", ["text", 42, None, [b"x"]])
def test_write_rejects_non_bytes(loop, bad):
    async def main():
        server, tr, _cp, _sp = await _pair(loop)
        try:
            with pytest.raises(TypeError) as info:
                tr.write(bad)
            return str(info.value)
        finally:
            await _teardown(server, tr)

    message = run(loop, main())
    assert message == f"data argument must be a bytes-like object, not {type(bad).__name__!r}"


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="3.10's transport starts reading even if connection_made paused it (fixed in 3.11)",
)
def test_pause_reading_in_connection_made(loop):
    class Paused(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        server, tr, cp, sp = await _pair(loop, client_factory=lambda: Paused(loop))
        sp.transport.write(b"held back")
        await asyncio.sleep(0.05)
        before = cp.data()
        reading = tr.is_reading()
        tr.resume_reading()
        await cp.wait_for_data(9)
        await _teardown(server, tr)
        return before, reading, cp.data()

    before, reading, after = run(loop, main())
    assert (before, reading, after) == (b"", False, b"held back")


def test_buffered_protocol_tiny_buffer_large_transfer(loop):
    payload = os.urandom(1024 * 1024)

    class Tiny(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(7)
            self.received = bytearray()
            self.calls = 0
            self.done = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            self.calls += 1
            return self.buf

        def buffer_updated(self, nbytes):
            self.received += self.buf[:nbytes]

        def eof_received(self):
            self.done.set_result(None)

        def connection_lost(self, exc):
            if not self.done.done():
                self.done.set_result(None)

    async def main():
        server, tr, cp, sp = await _pair(loop, client_factory=Tiny)
        sp.transport.write(payload)
        sp.transport.close()
        await cp.done
        await _teardown(server, tr)
        return cp

    cp = run(loop, main(), timeout=30)
    assert bytes(cp.received) == payload
    assert cp.calls >= len(payload) // 7


def test_set_protocol_switches_between_plain_and_buffered(loop):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(1024)
            self.received = bytearray()
            self.got = asyncio.Event()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.received += self.buf[:nbytes]
            self.got.set()

        def connection_lost(self, exc):
            pass

    async def main():
        server, tr, cp, sp = await _pair(loop)
        sp.transport.write(b"first")
        await cp.wait_for_data(5)
        second = Buffered()
        tr.set_protocol(second)
        assert tr.get_protocol() is second
        sp.transport.write(b"second")
        await second.got.wait()
        third = RecordingProtocol(loop)
        tr.set_protocol(third)
        sp.transport.write(b"third")
        await third.wait_for_data(5)
        await _teardown(server, tr)
        return cp.data(), bytes(second.received), third.data()

    assert run(loop, main()) == (b"first", b"second", b"third")


def test_writes_after_connection_lost_warn_like_asyncio(loop, caplog):
    async def main():
        server, tr, cp, sp = await _pair(loop)
        tr.abort()
        await cp.lost
        for _ in range(7):
            tr.write(b"into the void")
        await _teardown(server, sp.transport)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run(loop, main())
    warnings_logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    # asyncio counts the abort as the first lost write and warns from the
    # fifth on (LOG_THRESHOLD_FOR_CONNLOST_WRITES).
    assert warnings_logged.count("socket.send() raised exception.") == 3


def test_writelines_after_connection_lost_warn_like_asyncio(loop_kind, loop, caplog):
    own_writelines = sys.version_info >= (3, 12)
    if own_writelines and loop_kind == "asyncio":
        pytest.skip("3.12.1/3.13.0's writelines raise AttributeError here (CPython gh-136234)")

    async def main():
        server, tr, cp, sp = await _pair(loop)
        tr.abort()
        await cp.lost
        for _ in range(7):
            tr.writelines([b"into ", b"the void"])
        tr.writelines([])
        try:
            tr.writelines(["not bytes"])
        except TypeError:
            raised = True
        else:
            raised = False
        await _teardown(server, sp.transport)
        return raised

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        raised = run(loop, main())
    warnings_logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    # Counted and warned about as write() does (above). Before 3.12 that is
    # write() itself, after a join that rejects the str; from 3.12 on (as
    # fixed in CPython) the list is not read once the connection is lost.
    assert raised is not own_writelines
    # Seven writes, the abort counted first: three warnings; from 3.12 the
    # unread str list counts as one more write.
    expected = 4 if own_writelines else 3
    assert warnings_logged.count("socket.send() raised exception.") == expected


def test_repr_tracks_state(loop):
    def shape(text):
        return re.sub(r"^<\w+ ", "<T ", re.sub(r"fd=\d+", "fd=N", text))

    async def main():
        server, tr, cp, sp = await _pair(loop)
        await iterations(2)
        open_repr = shape(repr(tr))
        tr.pause_reading()
        paused_repr = shape(repr(tr))
        tr.close()
        closing_repr = shape(repr(tr))
        await cp.lost
        closed_repr = shape(repr(tr))
        await _teardown(server, sp.transport)
        return open_repr, paused_repr, closing_repr, closed_repr

    assert run(loop, main()) == (
        "<T fd=N read=polling write=<idle, bufsize=0>>",
        "<T fd=N read=idle write=<idle, bufsize=0>>",
        "<T closing fd=N read=idle write=<idle, bufsize=0>>",
        "<T closed fd=N>",
    )


def test_transport_is_an_asyncio_transport(loop):
    async def main():
        server, tr, _cp, sp = await _pair(loop)
        try:
            return (
                isinstance(tr, asyncio.Transport),
                isinstance(sp.transport, asyncio.Transport),
                tr.get_extra_info("socket").fileno() == tr.get_extra_info("socket").fileno(),
                tr.get_extra_info("nonexistent", "dflt"),
            )
        finally:
            await _teardown(server, tr)

    assert run(loop, main()) == (True, True, True, "dflt")


def test_get_extra_info_patched_on_the_base_class(loop, monkeypatch):
    # websockets' tests patch asyncio.BaseTransport.get_extra_info: the
    # transports of both loops must answer through the patch.
    async def main():
        server, tr, _cp, sp = await _pair(loop)
        try:
            monkeypatch.setattr(
                asyncio.BaseTransport, "get_extra_info", lambda self, name, default=None: "patched"
            )
            return tr.get_extra_info("peername"), sp.transport.get_extra_info("sockname")
        finally:
            monkeypatch.undo()
            await _teardown(server, tr)

    assert run(loop, main()) == ("patched", "patched")


def test_get_extra_info_call_forms(loop):
    # Every form answers as asyncio's (tokioloop's transport keeps asyncio's
    # inherited method: see test_get_extra_info_patched_on_the_base_class).
    async def main():
        server, tr, _cp, sp = await _pair(loop)
        try:
            peer = tr.get_extra_info("peername")
            answers = [
                tr.get_extra_info("peername") == sp.transport.get_extra_info("sockname"),
                tr.get_extra_info(name="peername") == peer,
                tr.get_extra_info("peername", default=None) == peer,
                tr.get_extra_info("missing"),
                tr.get_extra_info("missing", 7),
                tr.get_extra_info("missing", default=8),
                tr.get_extra_info(name="missing", default=9),
            ]
            for bad in ((), ("a", "b", "c"), ("peername",)):
                kwargs = {"nope": 1} if bad == ("peername",) else {}
                try:
                    tr.get_extra_info(*bad, **kwargs)
                except TypeError:
                    answers.append("TypeError")
            try:
                tr.get_extra_info(["unhashable"])
            except TypeError:
                answers.append("unhashable")
            return answers
        finally:
            await _teardown(server, tr)

    assert run(loop, main()) == [
        True,
        True,
        True,
        None,
        7,
        8,
        9,
        "TypeError",
        "TypeError",
        "TypeError",
        "unhashable",
    ]


def test_extra_info_first_read_after_the_connection_is_lost(loop):
    # tokioloop builds a connection's extra info when it is first read
    # (src/extra_info.rs): read only once the connection is lost, it still
    # holds the addresses of the connection, as asyncio's does.
    seen = {}

    class Late(RecordingProtocol):
        def connection_lost(self, exc):
            seen["server"] = [
                self.transport.get_extra_info(name) for name in ("sockname", "peername")
            ]
            seen["server_fd"] = self.transport.get_extra_info("socket").fileno()
            super().connection_lost(exc)

    async def main():
        server, tr, cp, sp = await _pair(loop, server_factory=lambda: Late(loop))
        addr = server.sockets[0].getsockname()
        tr.close()
        await cp.lost
        await sp.lost
        client = [tr.get_extra_info(name) for name in ("sockname", "peername")]
        client_fd = tr.get_extra_info("socket").fileno()
        await _teardown(server)
        return addr, client, client_fd

    addr, client, client_fd = run(loop, main())
    assert client[1] == addr
    assert seen["server"] == [addr, client[0]]
    # asyncio closes the socket after connection_lost returns.
    assert client_fd == -1 and seen["server_fd"] >= 0


def test_extra_info_dict_kept_and_assignable(loop):
    # `_extra` is asyncio's slot on the base transport; code that adds to
    # it or replaces it is answered through get_extra_info on both loops.
    async def main():
        server, tr, _cp, sp = await _pair(loop)
        try:
            extra = sp.transport._extra
            same = sp.transport._extra is extra
            extra["custom"] = 1
            custom = sp.transport.get_extra_info("custom")
            sp.transport._extra = {"replaced": 2}
            return [
                same,
                custom,
                sp.transport.get_extra_info("replaced"),
                sp.transport.get_extra_info("peername"),
                sorted(tr._extra)[:3],
            ]
        finally:
            await _teardown(server, tr)

    assert run(loop, main()) == [True, 1, 2, None, ["peername", "socket", "sockname"]]


def test_transports_map_replaced_by_a_weak_value_dict(loop):
    # asyncio's loop keeps `_transports` as a WeakValueDictionary; code that
    # puts one in its place (as asyncio's own loop has) still gets its
    # transports registered, the fd check, and clean connection loss.
    import weakref

    errors = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))

    async def main():
        loop._transports = weakref.WeakValueDictionary()
        server, tr, cp, sp = await _pair(loop)
        fd = tr.get_extra_info("socket").fileno()
        registered = loop._transports.get(fd) is tr
        try:
            loop.add_reader(fd, lambda: None)
        except RuntimeError as exc:
            refused = str(exc).startswith(f"File descriptor {fd} is used by transport")
        else:
            refused = False
        tr.write(b"ping")
        await sp.wait_for_data(4)
        tr.close()
        await cp.lost
        await sp.lost
        await _teardown(server)
        return registered, refused, sp.data()

    assert run(loop, main()) == (True, True, b"ping")
    assert errors == []


def test_loop_closed_with_open_transport_warns_and_closes_socket(loop_factory):
    lp = loop_factory()
    try:

        async def main():
            server, tr, _cp, sp = await _pair(lp)
            server.close()
            return tr.get_extra_info("socket").fileno(), sp.transport.get_extra_info(
                "socket"
            ).fileno()

        fds = lp.run_until_complete(main())
    finally:
        lp.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            gc.collect()
    unclosed = [
        w
        for w in caught
        if issubclass(w.category, ResourceWarning) and "unclosed transport" in str(w.message)
    ]
    assert len(unclosed) >= 2
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


EMFILE_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, resource, socket, sys, time
    {imports}

    async def main():
        loop = asyncio.get_running_loop()
        served = 0
        async def handle(reader, writer):
            nonlocal served
            served += 1
            writer.write(await reader.read(10))
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        # Leave room for a few fds only, then fill it from the client side.
        used = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 6, used + 6))
        hogs = []
        try:
            while True:
                hogs.append(socket.socket())
        except OSError:
            pass
        clients = []
        for _ in range(3):
            hogs.pop().close()
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            clients.append(c)
        # The server cannot accept (EMFILE): it must not spin meanwhile.
        cpu0 = time.process_time()
        await asyncio.sleep(0.5)
        spin = time.process_time() - cpu0
        for h in hogs:
            h.close()
        def roundtrip(c):
            c.setblocking(True)
            c.settimeout(5)
            c.sendall(b"hello")
            assert c.recv(10) == b"hello"
            c.close()
        for c in clients:
            await asyncio.to_thread(roundtrip, c)
        server.close()
        await server.wait_closed()
        print("served", served, "spin", round(spin, 3))

    loop = {factory}()
    loop.run_until_complete(main())
    loop.close()
    """
)


def test_emfile_on_accept_recovers_without_spinning(loop_kind):
    imports = "import tokioloop" if loop_kind == "tokioloop" else ""
    script = EMFILE_SCRIPT.format(imports=imports, factory=FACTORY_EXPR[loop_kind])
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert words[:2] == ["served", "3"], proc.stdout
    assert float(words[3]) < 0.25, proc.stdout  # no busy loop while EMFILE


def test_socket_stays_registered_once(loop):
    """add_reader on a transport's socket is refused, as asyncio does."""

    async def main():
        server, tr, _cp, _sp = await _pair(loop)
        sock = tr.get_extra_info("socket")
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.add_reader(sock.fileno(), lambda: None)
        finally:
            await _teardown(server, tr)

    run(loop, main())


def test_many_connections_pipelined_both_ways(loop):
    async def main():
        listener = tcp_listener()

        async def handle(reader, writer):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, sock=listener)
        port = listener.getsockname()[1]

        async def client(i):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            blob = os.urandom(200_000 + i)
            writer.write(blob)
            writer.write_eof()
            echoed = await reader.read()
            writer.close()
            await writer.wait_closed()
            return echoed == blob

        results = await asyncio.gather(*(client(i) for i in range(32)))
        server.close()
        await server.wait_closed()
        return results

    assert run(loop, main(), timeout=30) == [True] * 32


def test_write_from_resume_writing_keeps_flushing(loop):
    """A protocol that writes again from resume_writing() (as asyncio's TLS
    protocol does): the new data must still be flushed. Regression test for
    a lost write watch when the buffer drained and refilled in one event."""
    block = os.urandom(512 * 1024)
    rounds = 12

    class Pump(RecordingProtocol):
        def __init__(self, lp):
            super().__init__(lp)
            self.sent = 0
            self.resumes = 0

        def push(self):
            while self.sent < rounds and not self.transport.get_write_buffer_size() > 64 * 1024:
                self.transport.write(block)
                self.sent += 1
            if self.sent == rounds:
                self.transport.write_eof()

        def connection_made(self, transport):
            super().connection_made(transport)
            self.push()

        def resume_writing(self):
            super().resume_writing()
            self.resumes += 1
            self.push()

    class KeepOpen(RecordingProtocol):
        eof_result = True

    async def main():
        server, tr, cp, sp = await _pair(
            loop, client_factory=lambda: Pump(loop), server_factory=lambda: KeepOpen(loop)
        )
        await sp.eof
        await _teardown(server, tr, sp.transport)
        return cp, sp

    cp, sp = run(loop, main(), timeout=30)
    assert cp.resumes > 0
    assert hashlib.sha256(sp.data()).digest() == hashlib.sha256(block * rounds).digest()


CONN_VAR = contextvars.ContextVar("CONN_VAR", default="none")


def test_accepted_connections_get_their_own_context(loop):
    """What a protocol factory sets in a contextvar is seen by that
    connection's callbacks and by no other connection (asyncio creates each
    accepted transport in a task, i.e. in a copy of the context)."""
    seen = []
    made = 0

    class Tagged(RecordingProtocol):
        def data_received(self, data):
            seen.append((data, CONN_VAR.get()))
            super().data_received(data)

    def factory():
        nonlocal made
        before = CONN_VAR.get()
        made += 1
        CONN_VAR.set(f"conn{made}")
        proto = Tagged(loop)
        proto.before = before
        return proto

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        clients = []
        for i in range(3):
            tr, _ = await loop.create_connection(asyncio.Protocol, *addr)
            clients.append(tr)
            tr.write(f"c{i}".encode())
            await asyncio.sleep(0.02)
        for tr in clients:
            tr.close()
        server.close()
        await server.wait_closed()
        return CONN_VAR.get()

    outer = run(loop, main())
    assert outer == "none"
    assert sorted(seen) == [(b"c0", "conn1"), (b"c1", "conn2"), (b"c2", "conn3")]


@pytest.mark.parametrize("debug", [False, True, "late"])
def test_failing_protocol_factory_on_accept(loop, debug):
    """asyncio reports a failing protocol factory only in debug mode; the
    accepted socket is dropped (the client sees EOF) and the server goes on.
    "late": debug mode is turned on by the factory itself, so the connection
    was accepted outside it (tokioloop: natively, src/stream_owner.rs) and
    the failure is reported all the same, as asyncio checks the mode then."""
    calls = 0

    def factory():
        nonlocal calls
        calls += 1
        if calls == 1:
            if debug == "late":
                loop.set_debug(True)
            raise ZeroDivisionError("no protocol")
        return RecordingProtocol(loop)

    async def main():
        loop.set_debug(debug is True)
        rec = []

        def handler(lp, ctx):
            # Keep only strings: the exception's traceback would keep the
            # accepted socket alive.
            if isinstance(ctx.get("exception"), ZeroDivisionError):
                rec.append(ctx["message"])

        loop.set_exception_handler(handler)
        server = await loop.create_server(factory, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        reader, writer = await asyncio.open_connection(*addr)
        await asyncio.sleep(0.05)
        gc.collect()  # debug mode: the traceback cycle holds the socket
        first = await asyncio.wait_for(reader.read(10), 5)
        writer.close()
        tr, cp = await loop.create_connection(lambda: RecordingProtocol(loop), *addr)
        await asyncio.sleep(0.05)
        tr.close()
        await cp.lost
        server.close()
        await server.wait_closed()
        gc.collect()
        return first, rec, calls

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        first, reported, calls_made = run(loop, main())
    assert first == b""
    assert calls_made == 2
    expected = ["Error on transport creation for incoming connection"] if debug else []
    assert reported == expected


def test_protocol_factory_on_accept_in_a_task_or_a_callback(loop, loop_kind):
    """The protocol of an accepted plain connection is made, then
    connection_made runs, then connection_lost. asyncio makes the protocol
    inside an ``_accept_connection2`` task per connection;
    tokioloop (like uvloop) makes it in a plain callback, so
    ``asyncio.current_task()`` in the factory is that task on asyncio and
    None on tokioloop. Documented in docs/architecture.md."""
    events = []

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            events.append("made")
            self.transport = transport

        def connection_lost(self, exc):
            events.append("lost")

    def factory():
        events.append(("factory", asyncio.current_task() is not None))
        return Proto()

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        tr, _ = await loop.create_connection(asyncio.Protocol, *addr)
        for _ in range(50):
            if "made" in events:
                break
            await asyncio.sleep(0.01)
        tr.close()
        for _ in range(50):
            if "lost" in events:
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    run(loop, main())
    in_task = loop_kind == "asyncio"
    assert events == [("factory", in_task), "made", "lost"]


def test_transport_closes_its_socket_once_the_connection_is_lost(loop):
    """After connection_lost the transport's socket is closed (fileno -1),
    for a plain socket.socket and through a subclass's own close()."""

    closes = []

    class MySocket(socket_mod.socket):
        def close(self):
            closes.append(self.fileno())
            super().close()

    async def main():
        accepted = loop.create_future()

        class Server(RecordingProtocol):
            def connection_made(self, transport):
                super().connection_made(transport)
                if not accepted.done():
                    accepted.set_result(self)

        server = await loop.create_server(lambda: Server(loop), "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        raw = socket_mod.create_connection(addr)
        sock = MySocket(fileno=raw.detach())
        tr, cp = await loop.create_connection(lambda: RecordingProtocol(loop), sock=sock)
        sp = await accepted
        server_sock = sp.transport.get_extra_info("socket")
        assert server_sock.fileno() != -1
        fd = sock.fileno()
        tr.close()
        await cp.lost
        await sp.lost
        server.close()
        await server.wait_closed()
        return server_sock.fileno(), sock.fileno(), closes == [fd]

    assert run(loop, main()) == (-1, -1, True)


def _accept_as_the_server_closes(loop_factory):
    """A connection accepted in the iteration that stops the loop; its
    transport is built after server.close(), so Server._attach() fails in
    the transport's constructor (aiosmtpd's Controller.stop() races so).
    Returns what the exception handler saw (debug mode reports the failure),
    the unraisable exceptions once the half-built transport is collected,
    and what the client then reads."""
    loop = loop_factory()
    errors, unraisable = [], []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append(u.exc_type.__name__)
    try:
        loop.set_debug(True)
        loop.set_exception_handler(lambda lp, ctx: errors.append(type(ctx.get("exception"))))
        server = loop.run_until_complete(loop.create_server(asyncio.Protocol, "127.0.0.1", 0))
        client = socket_mod.create_connection(server.sockets[0].getsockname())
        client.settimeout(5)
        with client:
            time.sleep(0.05)  # ready to accept when the loop next polls
            loop.call_later(0, loop.stop)
            loop.run_forever()
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.run_until_complete(asyncio.sleep(0.05))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                loop.close()
                del server
                gc.collect()
            # The collected transport closed its socket.
            read = client.recv(10)
    finally:
        sys.unraisablehook = old_hook
    return errors, unraisable, read


def test_transport_of_a_connection_accepted_as_the_server_closes(loop_factory):
    expected = _accept_as_the_server_closes(asyncio.new_event_loop)
    assert expected[0] == [AssertionError]
    assert _accept_as_the_server_closes(loop_factory) == expected


def test_data_written_to_a_peer_in_the_same_loop_arrives_in_the_next_iteration(loop):
    """A client and its server in one loop: what a callback writes reaches
    the server's data_received in the next iteration (where in it: see
    ``transport_io_index``), even while a chain of callbacks keeps the loop
    busy (the stock loop selects on every iteration; tokioloop polls I/O
    only every few busy iterations, and a send makes the next one poll)."""
    order = []

    class Receiver(RecordingProtocol):
        def data_received(self, data):
            order.append("data")

    async def main():
        server, tr, _cp, _sp = await _pair(loop, server_factory=lambda: Receiver(loop))
        await busy_chain(loop, order, lambda: tr.write(b"x"))
        await _teardown(server, tr)

    run(loop, main())
    assert order.index("data") == transport_io_index(loop), order


def test_callbacks_queued_before_a_run_come_before_the_io_it_first_polls(loop):
    """Data that reached a transport while the loop was not running is
    delivered after the callbacks queued before the run, on both loops
    (asyncio queues I/O last; tokioloop puts a transport's I/O first only
    from a run's second poll on, see ``transport_io_index``). CPython's
    ``test_datagram_send_to_non_listening_address`` counts on it: it sends,
    then runs a task whose first step makes the future the datagram sets."""
    order = []

    class Receiver(RecordingProtocol):
        def data_received(self, data):
            order.append("data")

    server, tr, _cp, sp = run(loop, _pair(loop, server_factory=lambda: Receiver(loop)))
    try:
        tr.write(b"x")  # sent at once: the server's socket is readable now
        loop.call_soon(order.append, "queued")
        run(loop, iterations(3))
        assert order == ["queued", "data"]
    finally:
        run(loop, _teardown(server, tr, sp.transport))


def test_tokioloop_transport_on_a_dead_fd_fails_cleanly():
    """tokioloop-only (asyncio's transport registers its fd a callback
    later): a stream transport made over a socket whose fd was closed
    underneath it fails with EBADF as the fd is registered, and the
    half-built transport, which has no native core then
    (src/stream_owner.rs), is collected with no error from ``__del__``, and
    its ``repr`` works."""
    from tokioloop._transports import SocketTransport

    loop = import_tokioloop().new_event_loop()
    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    a, b = socket_mod.socketpair()
    a.setblocking(False)
    os.close(a.fileno())  # the socket object does not know
    half_built = object.__new__(SocketTransport)
    try:
        with pytest.raises(OSError) as info:
            SocketTransport(loop, a, asyncio.Protocol())
        errno_seen = info.value.errno
        del info  # its traceback holds the half-built transport
        gc.collect()
        shown = repr(half_built)
        del half_built
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
        with contextlib.suppress(OSError):
            a.close()
        b.close()
        loop.close()
    assert errno_seen == errno.EBADF
    assert shown == "<SocketTransport closed fd=-1>"
    assert [u.exc_value for u in unraisable] == []
