"""add_reader / add_writer / remove_reader / remove_writer (differential)."""

from __future__ import annotations

import asyncio
import errno
import gc
import itertools
import os
import socket

import pytest
from net_support import (
    HandlerRecorder,
    RecordingProtocol,
    busy_chain,
    closed_port,
    iterations,
    run,
    sock_pair_fixture,  # noqa: F401  (provides the sock_pair fixture)
    tcp_listener,
    watch_once,
)


class FileNo:
    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


# How a socket is named to add_reader() and then to remove_reader(): the
# registration is keyed by the fd number, whatever object carried it.
_KEYS = {
    "fd": (lambda s: s.fileno(), lambda s: s.fileno()),
    "fileno_object": (lambda s: FileNo(s.fileno()), lambda s: s.fileno()),
    "socket_object": (lambda s: s, lambda s: FileNo(s.fileno())),
}


@pytest.mark.parametrize("key", sorted(_KEYS))
def test_reader_fires_when_readable(loop, sock_pair, key):
    a, b = sock_pair
    add_key, remove_key = _KEYS[key]
    got = watch_once(
        loop,
        "reader",
        add_key(a),
        lambda tag: (tag, a.recv(100)),
        "tag",
        trigger=lambda: b.send(b"ping"),  # not readable before: must not fire
        remove_key=remove_key(a),
    )
    assert got == [("tag", b"ping"), True]
    assert loop.remove_reader(a.fileno()) is False


def test_reader_is_level_triggered(loop, sock_pair):
    """A reader that does not drain the socket fires again next iteration."""
    a, b = sock_pair
    calls = []

    async def main():
        ticks = 0
        loop.add_reader(a, calls.append, "r")
        b.send(b"x")
        try:
            while len(calls) < 3:
                await asyncio.sleep(0)
                ticks += 1
                assert ticks < 50, calls
        finally:
            loop.remove_reader(a)
        return ticks

    ticks = run(loop, main())
    assert calls == ["r", "r", "r"]
    # At most a couple of iterations between two calls: level-triggered, not
    # "once per edge" (the byte is still there, nobody read it).
    assert ticks <= 10
    assert a.recv(10) == b"x"


def test_reader_fires_each_iteration_when_ready(loop, sock_pair):
    a, b = sock_pair
    calls = []

    async def main():
        b.send(b"x")
        loop.add_reader(a.fileno(), lambda: calls.append(1))
        # Wait for the first call, then count calls over 4 more iterations.
        for _ in range(20):
            if calls:
                break
            await asyncio.sleep(0)
        assert calls, "reader never fired"
        before = len(calls)
        await iterations(4)
        loop.remove_reader(a.fileno())
        return len(calls) - before

    extra = run(loop, main())
    assert extra >= 2


@pytest.mark.parametrize("direction", ["reader", "writer"])
def test_callback_on_a_ready_fd_runs_in_the_next_iteration(loop, sock_pair, direction):
    """A reader added for an fd that is already readable (a writer for one
    already writable) runs in the next iteration, right after the callbacks
    that were queued before it, even while a chain of callbacks keeps the
    loop busy: the stock loop selects on every iteration. (tokioloop polls
    I/O only every few busy iterations; a registration makes the next one
    poll.)"""
    a, b = sock_pair
    b.send(b"x")
    order = []

    def chain(n):
        order.append(n)
        if n < 8:
            loop.call_soon(chain, n + 1)

    def fired():
        order.append(direction)
        remove = loop.remove_reader if direction == "reader" else loop.remove_writer
        remove(a.fileno())

    def start():
        add = loop.add_reader if direction == "reader" else loop.add_writer
        add(a.fileno(), fired)
        loop.call_soon(chain, 0)

    async def main():
        await asyncio.sleep(0)
        start()
        while len(order) < 10:
            await asyncio.sleep(0.001)

    run(loop, main())
    assert order.index(direction) == 1, order


def test_reader_beside_an_accepting_listener_runs_again_next_iteration(loop, sock_pair):
    """A reader whose fd stays ready runs in every iteration, also when the
    same poll found a listener with a connection waiting. (tokioloop skips
    the re-check poll for a listener its accept loop drained; the reader
    beside it still needs that poll.)"""
    a, b = sock_pair
    b.send(b"x")
    order = []

    async def main():
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        await asyncio.sleep(0)
        # In the listen queue before the loop polls again.
        client = socket.create_connection(("127.0.0.1", port))
        try:
            loop.add_reader(a.fileno(), order.append, "r")
            await busy_chain(loop, order, lambda: None, length=8)
            loop.remove_reader(a.fileno())
        finally:
            client.close()
        srv.close()
        await srv.wait_closed()

    run(loop, main())
    last_step = order.index(8)
    runs = [i for i, item in enumerate(order[:last_step]) if item == "r"]
    assert len(runs) >= 5, order
    # One chain step, then the reader, in each iteration.
    assert all(j - i == 2 for i, j in itertools.pairwise(runs)), order


@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_remove_return_values(loop, sock_pair, kind):
    a, _ = sock_pair
    add, remove = getattr(loop, f"add_{kind}"), getattr(loop, f"remove_{kind}")
    assert remove(a.fileno()) is False
    add(a.fileno(), lambda: None)
    assert remove(a.fileno()) is True
    assert remove(a.fileno()) is False


def test_reader_and_writer_are_independent(loop, sock_pair):
    a, _ = sock_pair
    loop.add_reader(a.fileno(), lambda: None)
    assert loop.remove_writer(a.fileno()) is False
    loop.add_writer(a.fileno(), lambda: None)
    assert loop.remove_writer(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False


def test_replacing_reader(loop, sock_pair):
    a, b = sock_pair
    got = []

    async def main():
        done = loop.create_future()

        def first():
            got.append("first")

        def second():
            got.append(("second", a.recv(10)))
            done.set_result(None)

        loop.add_reader(a.fileno(), first)
        loop.add_reader(a.fileno(), second)
        b.send(b"z")
        await done
        assert loop.remove_reader(a.fileno()) is True
        # Only one registration existed.
        assert loop.remove_reader(a.fileno()) is False

    run(loop, main())
    assert got == [("second", b"z")]


def test_writer_fires_when_writable(loop, sock_pair):
    a, b = sock_pair
    got = watch_once(loop, "writer", a.fileno(), lambda x, y: (x, y, a.send(b"hello")), 1, 2)
    assert got == [(1, 2, 5), True]
    assert b.recv(10) == b"hello"


def test_writer_waits_while_send_buffer_full(loop, sock_pair):
    a, b = sock_pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    # Fill the socket until the kernel refuses more.
    sent = 0
    chunk = b"\0" * 65536
    while True:
        try:
            sent += a.send(chunk)
        except BlockingIOError:
            break
    calls = []

    async def main():
        loop.add_writer(a.fileno(), calls.append, "w")
        try:
            await iterations(10)
            assert calls == []  # full: must not fire
            # Drain the peer; the writer becomes ready.
            received = 0
            while received < sent:
                try:
                    received += len(b.recv(1 << 20))
                except BlockingIOError:
                    await asyncio.sleep(0)
            for _ in range(100):
                if calls:
                    break
                await asyncio.sleep(0.001)
        finally:
            loop.remove_writer(a.fileno())

    run(loop, main())
    assert calls and set(calls) == {"w"}


def test_remove_reader_inside_callback_stops_calls(loop, sock_pair):
    a, b = sock_pair
    calls = []

    def cb():
        calls.append(1)
        assert loop.remove_reader(a.fileno()) is True

    async def main():
        loop.add_reader(a.fileno(), cb)
        b.send(b"x")
        await asyncio.sleep(0.05)

    run(loop, main())
    assert calls == [1]


@pytest.mark.parametrize("method", ["reader", "writer"])
def test_cancelled_handle_on_a_ready_fd_is_removed(loop, sock_pair, method):
    """A registered callback's handle cancelled by the program never runs;
    once its fd is reported ready, the loop drops the registration (asyncio's
    `_process_events`), so remove_*() then finds nothing."""
    a, b = sock_pair
    calls = []
    # The private form returns the handle (asyncio's selector loop's too).
    add = getattr(loop, f"_add_{method}")
    remove = getattr(loop, f"remove_{method}")

    async def main():
        handle = add(a.fileno(), calls.append, method)
        handle.cancel()
        b.send(b"x")  # the reader's fd is ready; the writer's always was
        await asyncio.sleep(0.02)
        await iterations(3)
        return remove(a.fileno())

    assert run(loop, main()) is False
    assert calls == []


def test_peer_reset_runs_reader_and_writer(loop):
    """An error on a watched socket counts for both directions, as with an
    epoll selector: the reader and the writer both run."""
    a, b = socket.socketpair()
    a.setblocking(False)
    calls = []

    def writer():
        calls.append("w")
        loop.remove_writer(a.fileno())

    def reader():
        calls.append("r")
        loop.remove_reader(a.fileno())

    async def main():
        # Fill the send buffer so that only the peer's going away can make
        # the socket writable again.
        try:
            while True:
                a.send(b"x" * 65536)
        except BlockingIOError:
            pass
        loop.add_writer(a.fileno(), writer)
        loop.add_reader(a.fileno(), reader)
        await iterations(3)
        assert calls == []
        b.close()
        await asyncio.sleep(0.02)
        await iterations(3)

    try:
        run(loop, main())
    finally:
        a.close()
    assert sorted(calls) == ["r", "w"]


def test_ping_pong_between_two_readers(loop, sock_pair):
    """Two readers answering each other through a socket pair: each one runs
    once per message, and every message arrives."""
    a, b = sock_pair
    counts = {"a": 0, "b": 0}
    rounds = 2000

    async def main():
        done = loop.create_future()

        def on_a():
            counts["a"] += 1
            a.send(a.recv(64))

        def on_b():
            counts["b"] += 1
            b.recv(64)
            if counts["b"] == rounds:
                done.set_result(None)
            else:
                b.send(b"x")

        loop.add_reader(a.fileno(), on_a)
        loop.add_reader(b.fileno(), on_b)
        b.send(b"x")
        await asyncio.wait_for(done, 10)
        loop.remove_reader(a.fileno())
        loop.remove_reader(b.fileno())

    run(loop, main())
    assert counts == {"a": rounds, "b": rounds}


def test_reader_exception_goes_to_handler_and_reader_stays(loop, sock_pair):
    a, b = sock_pair
    rec = HandlerRecorder(loop)
    calls = []
    boom = ValueError("boom")

    async def main():
        done = loop.create_future()

        def cb():
            calls.append(1)
            if len(calls) == 1:
                raise boom
            loop.remove_reader(a.fileno())
            done.set_result(None)

        loop.add_reader(a.fileno(), cb)
        b.send(b"x")
        await done

    run(loop, main())
    assert calls == [1, 1]
    assert len(rec.contexts) == 1
    ctx = rec.contexts[0]
    assert ctx["exception"] is boom
    assert "handle" in ctx
    assert ctx["message"].startswith("Exception in callback")


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_negative_fd_raises_value_error(loop, method):
    with pytest.raises(ValueError):
        getattr(loop, method)(-1, lambda: None)
    with pytest.raises(ValueError):
        getattr(loop, method)(FileNo(-5), lambda: None)


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_negative_fd_raises_value_error(loop, method):
    with pytest.raises(ValueError):
        getattr(loop, method)(-1)


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
@pytest.mark.parametrize("bad", ["abc", 1.5, object(), None])
def test_invalid_file_object_raises_value_error(loop, method, bad):
    args = (bad, lambda: None) if method.startswith("add") else (bad,)
    with pytest.raises(ValueError):
        getattr(loop, method)(*args)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_closed_fd_number(loop, method):
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as info:
        getattr(loop, method)(fd, lambda: None)
    assert info.value.errno == errno.EBADF
    # Nothing stays registered after the failure.
    assert getattr(loop, method.replace("add", "remove"))(fd) is False


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_closed_socket_object(loop, method):
    s = socket.socket()
    s.close()
    # socket.fileno() returns -1 once closed.
    with pytest.raises(ValueError):
        getattr(loop, method)(s, lambda: None)


def test_add_reader_on_closed_loop(loop_factory, sock_pair):
    lp = loop_factory()
    lp.close()
    a, _ = sock_pair
    with pytest.raises(RuntimeError, match="closed"):
        lp.add_reader(a.fileno(), lambda: None)
    with pytest.raises(RuntimeError, match="closed"):
        lp.add_writer(a.fileno(), lambda: None)
    assert lp.remove_reader(a.fileno()) is False
    assert lp.remove_writer(a.fileno()) is False


def test_close_loop_with_registered_reader(loop_factory, sock_pair):
    """Closing the loop drops registrations; the fd itself is left open."""
    lp = loop_factory()
    a, b = sock_pair
    lp.add_reader(a.fileno(), lambda: None)
    lp.add_writer(b.fileno(), lambda: None)
    lp.close()
    assert a.fileno() >= 0 and b.fileno() >= 0
    a.send(b"still open")
    assert b.recv(100) == b"still open"


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
def test_fd_owned_by_transport_raises_runtime_error(loop, method):
    lsock = tcp_listener()

    async def main():
        server = await loop.create_server(asyncio.Protocol, sock=lsock)
        async with server:
            tr, proto = await loop.create_connection(
                lambda: RecordingProtocol(loop), *lsock.getsockname()
            )
            try:
                fd = tr.get_extra_info("socket").fileno()
                args = (fd, lambda: None) if method.startswith("add") else (fd,)
                with pytest.raises(RuntimeError, match="is used by transport"):
                    getattr(loop, method)(*args)
                # A file object with that fileno() is rejected the same way.
                args = (FileNo(fd),) + args[1:]
                with pytest.raises(RuntimeError, match="is used by transport"):
                    getattr(loop, method)(*args)
            finally:
                tr.close()
            await proto.lost

    run(loop, main())


def test_reader_on_pipe(loop):
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        got = watch_once(
            loop, "reader", r, lambda: os.read(r, 100), trigger=lambda: os.write(w, b"pipe data")
        )
    finally:
        os.close(r)
        os.close(w)
    assert got == [b"pipe data", True]


def test_reader_sees_eof(loop, sock_pair):
    a, b = sock_pair
    got = watch_once(
        loop, "reader", a.fileno(), lambda: a.recv(10), trigger=lambda: b.shutdown(socket.SHUT_WR)
    )
    assert got == [b"", True]


def test_fd_closed_while_registered(loop, sock_pair):
    """Closing a watched fd behind the loop's back: no callback, no error, and
    remove_reader() still reports the registration."""
    a, _ = sock_pair
    calls = []
    fd = a.fileno()

    async def main():
        loop.add_reader(fd, calls.append, "r")
        await iterations(3)
        a.close()
        await asyncio.sleep(0.02)
        await iterations(3)

    run(loop, main())
    assert calls == []
    assert loop.remove_reader(fd) is True
    assert loop.remove_reader(fd) is False


@pytest.mark.parametrize("method", ["reader", "writer"])
def test_socket_closed_while_registered_is_removed_by_the_object(loop, sock_pair, method):
    """A socket object closed while watched (fileno() now -1) still removes
    its registration: a selector finds it by the object it was registered
    with (anyio closes a socket a receive is waiting on, then the wait's
    done callback removes the reader by the socket object)."""
    a, _ = sock_pair
    calls = []
    add = getattr(loop, f"add_{method}")
    remove = getattr(loop, f"remove_{method}")
    key_events = 1 if method == "reader" else 2

    async def main():
        add(a, calls.append, method)
        a.close()
        await asyncio.sleep(0.02)
        key = loop._selector.get_key(a)
        removed = remove(a)
        with pytest.raises(ValueError):
            remove(a)  # no longer registered: the fileno() error again
        return key.fd, key.events, removed

    fd = a.fileno()
    assert run(loop, main()) == (fd, key_events, True)
    assert calls == []


def test_unregistered_closed_socket_raises_on_remove(loop):
    s = socket.socket()
    s.close()
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        loop.remove_reader(s)


def test_reader_fires_on_pending_socket_error(loop):
    """A socket whose only event is an error (EPOLLERR without EPOLLIN) is
    reported readable, as selectors do: a connected UDP socket that got an
    ICMP port-unreachable for its previous datagram."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.connect(("127.0.0.1", closed_port()))

    def recv_error():
        try:
            s.recv(100)
        except OSError as e:
            return type(e)
        return "data"  # pragma: no cover - nothing was sent to us

    try:
        got = watch_once(loop, "reader", s, recv_error, trigger=lambda: s.send(b"ping"))
    finally:
        s.close()
    assert got == [ConnectionRefusedError, True]


def test_writer_fires_on_failed_connect(loop):
    """Non-blocking connect() to a closed port: the writer fires (error/hangup
    counts as writable) and SO_ERROR holds ECONNREFUSED."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    err = s.connect_ex(("127.0.0.1", closed_port()))
    assert err in (errno.EINPROGRESS, errno.ECONNREFUSED)
    try:
        if err != errno.EINPROGRESS:
            pytest.skip("connect() failed synchronously on this kernel")
        got = watch_once(
            loop, "writer", s, lambda: s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        )
        assert got == [errno.ECONNREFUSED, True]
    finally:
        s.close()


@pytest.mark.parametrize("keep", [True, False])
def test_fd_of_closed_transport_is_free_again(loop, keep):
    # Once the transport is closed (kept alive or not), its fd number may be
    # watched again: asyncio's map of transports holds them weakly and skips
    # closing ones; tokioloop's drops the entry when the connection is lost.
    lsock = tcp_listener()
    fired = []

    async def main():
        server = await loop.create_server(asyncio.Protocol, sock=lsock)
        async with server:
            tr, proto = await loop.create_connection(
                lambda: RecordingProtocol(loop), *lsock.getsockname()
            )
            sock = tr.get_extra_info("socket")
            dup = socket.socket(fileno=os.dup(sock.fileno()))
            fd = sock.fileno()
            tr.close()
            await proto.lost
            held = tr if keep else None
            del tr, sock
            gc.collect()
            # The transport closed its socket, so fd may now be reused:
            # register the duplicate at that number if it is free.
            try:
                os.dup2(dup.fileno(), fd)
                loop.add_reader(fd, fired.append, fd)
                loop.remove_reader(fd)
            finally:
                os.close(fd)
                dup.close()
            assert (held is not None) == keep

    run(loop, main())
    assert fired == []


def test_transport_replaces_a_reader_on_its_socket(loop, sock_pair):
    """A transport made for a socket that has a reader takes the fd over: the
    old reader is cancelled and never runs, and the data goes to the
    protocol (asyncio's transport replaces the reader the same way)."""
    a, b = sock_pair
    calls = []

    async def main():
        handle = loop._add_reader(a.fileno(), calls.append, "old")
        await iterations(2)
        transport, proto = await loop.connect_accepted_socket(lambda: RecordingProtocol(loop), a)
        await iterations(3)
        b.send(b"hello")
        await asyncio.sleep(0.02)
        await iterations(3)
        transport.close()
        return handle.cancelled(), proto.data()

    assert run(loop, main()) == (True, b"hello")
    assert calls == []


def test_transport_map_behaves_like_a_weak_value_dict():
    # tokioloop's native stand-in for asyncio's WeakValueDictionary.
    from tokioloop._tokioloop import TransportMap

    class T:
        pass

    m = TransportMap()
    a, b = T(), T()
    m[3] = a
    m[4] = b
    assert m[3] is a and m.get(4) is b and 3 in m and len(m) == 2
    assert sorted(m) == [3, 4] and sorted(m.keys()) == [3, 4]
    assert {id(v) for v in m.values()} == {id(a), id(b)}
    assert m.get(5) is None and m.get(5, "x") == "x" and 5 not in m
    with pytest.raises(KeyError):
        m[5]
    del b
    gc.collect()
    # A dead transport reads as missing, as in a WeakValueDictionary.
    assert 4 not in m and m.get(4) is None and len(m) == 1
    with pytest.raises(KeyError):
        del m[4]
    m.discard(3, T())  # not the owner: left alone
    assert m[3] is a
    m.discard(3, a)
    assert 3 not in m
    m[3] = a
    del m[3]
    assert len(m) == 0 and m.items() == []
    with pytest.raises(TypeError):
        m["x"] = a
