"""create_connection to a numeric host (tokioloop's one-frame path,
``Loop._connect_numeric``), differential against stock asyncio: the socket
it makes, the errors it raises, cancellation, and the keyword cases that
must still take asyncio's own method."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import gc
import os
import socket
import warnings

import pytest
from loop_support import PY312
from net_support import (
    HAS_IPV6,
    RecordingProtocol,
    closed_port,
    iterations,
    run,
    run_reference,
    tcp_listener,
)

_HOSTS = [
    pytest.param("127.0.0.1", socket.AF_INET, id="ipv4"),
    pytest.param(
        "::1",
        socket.AF_INET6,
        id="ipv6",
        marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback"),
    ),
]


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def _socket_state(sock, listener_port):
    peer = sock.getpeername()
    return {
        "family": sock.family,
        "type": sock.type,
        "proto": sock.proto,
        "timeout": sock.gettimeout(),
        "blocking": os.get_blocking(sock.fileno()),
        "inheritable": sock.get_inheritable(),
        "nodelay": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0,
        "peer": (peer[0], peer[1] == listener_port, *peer[2:]),
    }


@pytest.mark.parametrize("port_type", [int, str])
@pytest.mark.parametrize("host,family", _HOSTS)
def test_numeric_host_socket_matches_asyncio(loop, host, family, port_type):
    listener = tcp_listener(host, family)
    port = listener.getsockname()[1]

    async def scenario(lp):
        tr, proto = await lp.create_connection(lambda: RecordingProtocol(lp), host, port_type(port))
        try:
            sock = tr.get_extra_info("socket")
            state = _socket_state(sock, port)
            state["sockname"] = tr.get_extra_info("sockname") == sock.getsockname()
            state["peername"] = tr.get_extra_info("peername") == sock.getpeername()
            # connection_made ran before create_connection returned.
            state["made"] = proto.transport is tr
            return state
        finally:
            tr.close()
            await proto.lost

    try:
        got = run(loop, scenario(loop))
        assert got == run_reference(scenario)
        assert got["proto"] == socket.IPPROTO_TCP
        assert got["family"] == family
        assert not got["blocking"]
    finally:
        listener.close()


def _error_outcome(factory, **kw):
    """create_connection to a closed port: the exception's shape, the port
    replaced, and whether the socket was closed (no fd left, no warning)."""
    lp = factory()
    port = closed_port()

    async def main():
        # One failed connect first: a loop may make its helpers (tokioloop's
        # epoll for socket waits) on first use.
        with contextlib.suppress(Exception):
            await lp.create_connection(asyncio.Protocol, "127.0.0.1", port, **kw)
        gc.collect()
        before = _open_fds()
        try:
            await lp.create_connection(asyncio.Protocol, "127.0.0.1", port, **kw)
        except Exception as exc:  # noqa: BLE001 (the shape is compared)
            error = exc
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
        leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
        inner = error.exceptions if hasattr(error, "exceptions") else [error]
        return (
            type(error).__name__,
            str(error).replace(str(port), "PORT") if not hasattr(error, "exceptions") else None,
            [(type(e).__name__, e.errno, str(e).replace(str(port), "PORT")) for e in inner],
            error.__context__ is None,
            _open_fds() - before,
            len(leaked),
        )

    try:
        return run(lp, main())
    finally:
        lp.close()


def test_refused_error_matches_asyncio(loop_factory):
    got = _error_outcome(loop_factory)
    assert got == _error_outcome(asyncio.new_event_loop)
    assert got[0] == "ConnectionRefusedError"
    assert got[2][0][1] == errno.ECONNREFUSED
    assert got[4:] == (0, 0)


def _refused_referrers(loop_factory, how):
    """What refers to a refused connect's exception once the task that
    made the call is done: asyncio (since gh-124859) leaves nothing but the
    traceback's frames, no future (anyio checks this for its happy
    eyeballs)."""
    lp = loop_factory()
    caught = []

    async def fail():
        port = closed_port()
        try:
            if how == "sock_connect":
                with socket.socket() as sock:
                    sock.setblocking(False)
                    await lp.sock_connect(sock, ("127.0.0.1", port))
            else:
                await lp.create_connection(asyncio.Protocol, "127.0.0.1", port)
        except OSError as exc:
            caught.append(exc)

    async def main():
        await lp.create_task(fail())
        await asyncio.sleep(0)
        return sorted(type(r).__name__ for r in gc.get_referrers(caught[0]) if r is not caught)

    try:
        return run(lp, main())
    finally:
        lp.close()


@pytest.mark.parametrize("how", ["sock_connect", "create_connection"])
def test_refused_exception_is_not_kept_by_the_loop(loop_factory, loop_kind, how):
    # Older asyncio (before 3.12.8/3.13.1) still keeps the future in
    # sock_connect's frame: never more than the running asyncio, and on
    # tokioloop never the future.
    got = _refused_referrers(loop_factory, how)
    assert set(got) <= set(_refused_referrers(asyncio.new_event_loop, how))
    if loop_kind == "tokioloop":
        assert "Future" not in got


@pytest.mark.skipif(not PY312, reason="all_errors= is 3.12+")
def test_refused_with_all_errors_matches_asyncio(loop_factory):
    got = _error_outcome(loop_factory, all_errors=True)
    assert got == _error_outcome(asyncio.new_event_loop, all_errors=True)
    assert got[0] == "ExceptionGroup"
    assert [e[0] for e in got[2]] == ["ConnectionRefusedError"]


def _full_listener():
    """A listener whose accept queue is full: a further connect stays in
    progress (the kernel drops its SYNs) until it is given up."""
    listener = tcp_listener(backlog=0)
    fillers = []
    for _ in range(2):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(listener.getsockname())
        fillers.append(s)
    return listener, fillers


@pytest.mark.parametrize("when", ["connecting", "connected"])
def test_cancelled_connect_closes_the_socket(loop, when):
    # "connecting": the cancel lands while the connect is in progress;
    # "connected": the connect is done and the cancel lands on the wait
    # for connection_made (or on the connect wait, when the loop has not
    # seen it finish yet). Either way CancelledError, and the loop closes
    # the socket itself: no fd left, no ResourceWarning from the GC.
    if when == "connecting":
        listener, fillers = _full_listener()
    else:
        listener, fillers = tcp_listener(), []
    address = listener.getsockname()

    async def scenario(lp):
        if when == "connected":
            # First use makes whatever the loop makes on first use.
            tr, _ = await lp.create_connection(asyncio.Protocol, *address)
            tr.close()
            await iterations(2)
        else:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(lp.create_connection(asyncio.Protocol, *address), 0.01)
        gc.collect()
        before = _open_fds()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            task = lp.create_task(lp.create_connection(asyncio.Protocol, *address))
            if when == "connecting":
                await asyncio.sleep(0.05)
            else:
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                outcome = "cancelled"
            else:  # pragma: no cover - the cancel came too late
                outcome = "connected"
                task.result()[0].close()
            await iterations(5)
            gc.collect()
        leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
        return outcome, _open_fds() - before, len(leaked)

    try:
        got = run(loop, scenario(loop))
        assert got == run_reference(scenario)
        assert got == ("cancelled", 0, 0)
    finally:
        listener.close()
        for s in fillers:
            s.close()


def test_protocol_factory_error_propagates(loop):
    listener = tcp_listener()

    def factory():
        raise ZeroDivisionError("no protocol")

    async def scenario(lp):
        try:
            await lp.create_connection(factory, *listener.getsockname())
        except ZeroDivisionError as exc:
            return str(exc), len(lp._transports) if hasattr(lp, "_transports") else 0
        return None

    try:
        with warnings.catch_warnings():
            # asyncio leaves the connected socket to the GC here; so do we.
            warnings.simplefilter("ignore", ResourceWarning)
            got = run(loop, scenario(loop))
            assert got == run_reference(scenario)
            gc.collect()
        assert got[0] == "no protocol"
    finally:
        listener.close()


@pytest.mark.parametrize("early", [False, True], ids=["quiet-peer", "peer-wrote-first"])
def test_transport_over_a_socket_sock_connect_connected(loop, early):
    # aiohappyeyeballs' (aiohttp's) way: sock_connect, then
    # create_connection(sock=...). On tokioloop the transport takes over
    # the connect wait's registration of the fd (src/loop_poll.rs,
    # `rekey`); data the peer sent before the transport existed, and data
    # after, must both arrive, and the fd must leave the loop with it.
    listener = tcp_listener()

    async def scenario(lp):
        sock = socket.socket()
        sock.setblocking(False)
        await lp.sock_connect(sock, listener.getsockname())
        peer, _ = listener.accept()
        with peer:
            if early:
                peer.sendall(b"early")
                await asyncio.sleep(0.05)
            tr, proto = await lp.create_connection(lambda: RecordingProtocol(lp), sock=sock)
            if early:
                await proto.wait_for_data(5)
            peer.sendall(b"late")
            await proto.wait_for_data(len(b"early" * early + b"late"))
            tr.write(b"back")
            peer.settimeout(5)
            got = peer.recv(100)
            tr.close()
            await proto.lost
            return proto.data(), got, sock.fileno()

    try:
        got = run(loop, scenario(loop))
        assert got == run_reference(scenario)
        assert got == (b"early" * early + b"late", b"back", -1)
    finally:
        listener.close()


def test_protocol_factory_runs_in_the_calling_task(loop):
    # asyncio makes the protocol inside the connecting task: its context
    # (a variable the factory sets is the task's from then on, and what
    # connection_made sees) and current_task(). tokioloop makes it when
    # the connect completes, natively (src/connect_op.rs), as the task.
    var = contextvars.ContextVar("var", default="unset")
    listener = tcp_listener()

    async def scenario(lp):
        seen = {}
        made = lp.create_future()

        class Probe(asyncio.Protocol):
            def __init__(self):
                seen["factory"] = (var.get(), asyncio.current_task() is task)
                var.set("set by the factory")

            def connection_made(self, transport):
                seen["made"] = (var.get(), asyncio.current_task())
                transport.close()
                made.set_result(None)

        async def connect():
            var.set("set by the task")
            await lp.create_connection(Probe, *listener.getsockname())
            seen["after"] = (var.get(), asyncio.current_task() is task)

        task = lp.create_task(connect())
        await task
        await made
        seen["outside"] = var.get()
        return seen

    try:
        got = run(loop, scenario(loop))
        assert got == run_reference(scenario)
        assert got == {
            "factory": ("set by the task", True),
            "made": ("set by the factory", None),
            "after": ("set by the factory", True),
            "outside": "unset",
        }
    finally:
        listener.close()


@pytest.mark.parametrize(
    "kw",
    [
        {"bogus": None},
        {"bogus": 1},
        pytest.param(
            {"all_errors": True},
            marks=pytest.mark.skipif(PY312, reason="all_errors exists from 3.12"),
        ),
    ],
    ids=["unknown-none", "unknown-value", "all_errors-before-3.12"],
)
def test_unknown_keyword_raises_type_error(loop, kw):
    async def scenario(lp):
        try:
            await lp.create_connection(asyncio.Protocol, "127.0.0.1", 1, **kw)
        except TypeError:
            return "TypeError"
        return None

    assert run(loop, scenario(loop)) == run_reference(scenario) == "TypeError"


def test_family_that_does_not_match_the_host_is_resolved(loop):
    # AF_INET6 with an IPv4 literal is not "already resolved" for asyncio:
    # it asks getaddrinfo, which fails. Both loops must take that path.
    async def scenario(lp):
        calls = []

        async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
            calls.append((host, port, family))
            raise socket.gaierror(socket.EAI_ADDRFAMILY, "no such family")

        lp.getaddrinfo = getaddrinfo
        try:
            await lp.create_connection(asyncio.Protocol, "127.0.0.1", 80, family=socket.AF_INET6)
        except socket.gaierror as exc:
            return calls, exc.errno
        finally:
            del lp.getaddrinfo

    got = run(loop, scenario(loop))
    assert got == run_reference(scenario)
    assert got[0] == [("127.0.0.1", 80, socket.AF_INET6)]


def test_debug_mode_takes_asyncio_path_and_logs(loop, caplog):
    # Debug mode logs the connection as asyncio does ("connected to").
    listener = tcp_listener()
    loop.set_debug(True)

    async def main():
        tr, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), *listener.getsockname()
        )
        tr.close()
        await proto.lost

    try:
        with caplog.at_level("DEBUG", logger="asyncio"):
            run(loop, main())
        assert any("connected to 127.0.0.1" in r.getMessage() for r in caplog.records)
    finally:
        listener.close()


_LISTEN_HOSTS = [
    pytest.param("127.0.0.1", "127.0.0.1", id="ipv4"),
    pytest.param("0.0.0.0", "127.0.0.1", id="ipv4-wildcard"),
    pytest.param(
        "::1",
        "::1",
        id="ipv6",
        marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback"),
    ),
    pytest.param(
        "::",
        "127.0.0.1",
        id="dual-stack-mapped",
        marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback"),
    ),
]


@pytest.mark.parametrize("listen_host,connect_host", _LISTEN_HOSTS)
def test_transport_addresses_match_the_socket_module(loop, listen_host, connect_host):
    # Both ends of a new connection record sockname and peername as the
    # socket module reports them: tokioloop reads them natively (accept,
    # connect), which must give the same tuples, including a wildcard
    # listener's real local address and IPv4-mapped IPv6 text.
    family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind((listen_host, 0))
    port = listener.getsockname()[1]

    async def scenario(lp):
        accepted = lp.create_future()

        class Server(asyncio.Protocol):
            def connection_made(self, transport):
                accepted.set_result(transport)

        server = await lp.create_server(Server, sock=listener.dup())
        try:
            tr, proto = await lp.create_connection(
                lambda: RecordingProtocol(lp), connect_host, port
            )
            str_ = await accepted
            names = []
            for t in (tr, str_):
                sock = t.get_extra_info("socket")
                names.append(
                    (
                        t.get_extra_info("sockname"),
                        t.get_extra_info("peername"),
                        sock.getsockname(),
                        sock.getpeername(),
                    )
                )
            tr.close()
            str_.close()
            await proto.lost
        finally:
            server.close()
            await server.wait_closed()
        for recorded_local, recorded_peer, local, peer in names:
            assert recorded_local == local
            assert recorded_peer == peer
        return [(n[0][0], n[1][0], len(n[0])) for n in names]

    try:
        got = run(loop, scenario(loop))
        assert got == run_reference(scenario)
        if listen_host == "::":
            assert got[1][1] == "::ffff:127.0.0.1"
    finally:
        listener.close()


def test_subclass_hook_sees_every_socket_transport(loop_factory):
    # A loop subclass that overrides _make_socket_transport sees the
    # accepted and the connecting side, as on asyncio's loop (tokioloop
    # otherwise builds accepted transports in _accept_plain's own frame).
    probe = loop_factory()
    base = type(probe)
    probe.close()
    made = []
    extras = []

    class Hooked(base):
        def _make_socket_transport(self, sock, protocol, waiter=None, **kw):
            made.append("server" if kw.get("server") is not None else "client")
            if kw.get("server") is not None:
                # asyncio passes the accepted peer's address in a dict.
                extra = kw["extra"]
                extras.append(type(extra) is dict and extra["peername"] == sock.getpeername())
            return super()._make_socket_transport(sock, protocol, waiter, **kw)

    lp = Hooked()
    accepted = None

    async def main():
        nonlocal accepted
        accepted = lp.create_future()

        class Server(asyncio.Protocol):
            def connection_made(self, transport):
                accepted.set_result(transport)

        server = await lp.create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, proto = await lp.create_connection(lambda: RecordingProtocol(lp), "127.0.0.1", port)
        (await accepted).close()
        tr.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    try:
        run(lp, main())
    finally:
        lp.close()
    assert sorted(made) == ["client", "server"]
    assert extras == [True]


def test_tokioloop_numeric_host_info_answers_as_asyncio():
    # create_connection's "is the host already an IP address?" is native for
    # a str host and an int port (src/numeric_host.rs); wherever it answers
    # (not NotImplemented), it must answer exactly as asyncio's _ipaddr_info.
    from asyncio import base_events

    from tokioloop._tokioloop import _numeric_host_info

    hosts = [
        "127.0.0.1",
        "::1",
        "::ffff:10.0.0.1",
        "0.0.0.0",
        "localhost",
        "",
        "1.2.3",
        "01.2.3.4",
        " 1.2.3.4",
        "::1%lo",
        "fe80::1%1",
        "1.2.3.4.5",
        "é",
    ]
    ports = [0, 80, 65535, None, "80", b"", True]
    families = [0, socket.AF_INET, socket.AF_INET6, socket.AF_UNIX]
    protos = [0, socket.IPPROTO_TCP, socket.IPPROTO_UDP]
    answered = 0
    for host in hosts:
        for port in ports:
            for family in families:
                for proto in protos:
                    ours = _numeric_host_info(host, port, family, proto)
                    if ours is NotImplemented:
                        continue
                    answered += 1
                    theirs = base_events._ipaddr_info(host, port, family, socket.SOCK_STREAM, proto)
                    assert ours == theirs, (host, port, family, proto)
    assert answered > 100
    # What only asyncio decides.
    assert _numeric_host_info("127.0.0.1", "80", 0, 0) is NotImplemented
    assert _numeric_host_info(b"127.0.0.1", 80, 0, 0) is NotImplemented
    assert _numeric_host_info("a\0b", 80, 0, 0) is NotImplemented
