"""create_datagram_endpoint / datagram transports (differential)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket

import pytest
from loop_support import PY311, PY313
from net_support import (
    DatagramRecorder,
    HandlerRecorder,
    busy_chain,
    closed_port,
    iterations,
    needs_ipv6,
    needs_reuseport,
    run,
    run_reference,
    transport_io_index,
    unix_path_fixture,  # noqa: F401  (provides the unix_path fixture)
)

LOCALHOST = ("127.0.0.1", 0)


class Echo(DatagramRecorder):
    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        self.transport.sendto(b"echo:" + data, addr)


async def _endpoint(loop, factory=None, **kw):
    return await loop.create_datagram_endpoint(factory or (lambda: DatagramRecorder(loop)), **kw)


@contextlib.asynccontextmanager
async def _opened(loop, factory=None, **kw):
    """An endpoint from :func:`_endpoint`: yields ``(transport, protocol)``,
    closes the transport on exit and, unless the body failed, awaits its
    connection_lost()."""
    t, p = await _endpoint(loop, factory, **kw)
    try:
        yield t, p
    finally:
        t.close()
    await p.lost


@contextlib.asynccontextmanager
async def _pair(loop, server_factory=None, server_kw=None, **client_kw):
    """A server endpoint (``server_kw``, default: bound to 127.0.0.1) and a
    client endpoint connected to it (``remote_addr`` is the server's address),
    both :func:`_opened`: yields ``(st, sp, ct, cp)``."""
    server_kw = server_kw or {"local_addr": LOCALHOST}
    async with _opened(loop, server_factory, **server_kw) as (st, sp):
        addr = st.get_extra_info("sockname")
        remote_addr = addr[:2] if isinstance(addr, tuple) else addr
        async with _opened(loop, remote_addr=remote_addr, **client_kw) as (ct, cp):
            yield st, sp, ct, cp


_FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6, "unix": socket.AF_UNIX}


@pytest.mark.parametrize("kind", ["ipv4", pytest.param("ipv6", marks=needs_ipv6), "unix"])
def test_udp_echo(loop, kind, unix_path):
    family = _FAMILIES[kind]
    if kind == "unix":
        server_kw = {"local_addr": unix_path, "family": family}
        client_kw = {"local_addr": unix_path + "-c", "family": family}
    else:
        server_kw = {"local_addr": ("::1" if kind == "ipv6" else "127.0.0.1", 0)}
        client_kw = {}

    async def main():
        async with _pair(loop, lambda: Echo(loop), server_kw, **client_kw) as (st, sp, ct, cp):
            server_addr = st.get_extra_info("sockname")
            client_addr = ct.get_extra_info("sockname")
            if kind == "unix":
                assert (server_addr, client_addr) == (unix_path, unix_path + "-c")
            assert await sp.made is st
            assert ct.get_extra_info("socket").family == family
            assert ct.get_extra_info("peername") == server_addr
            ct.sendto(b"one")
            ct.sendto(b"two", None)
            got = [await cp.recv(), await cp.recv()]
            assert got == [(b"echo:one", server_addr), (b"echo:two", server_addr)]
            assert sp.datagrams == [(b"one", client_addr), (b"two", client_addr)]
            assert cp.errors == [] and sp.errors == []
        assert cp.lost.result() is None
        assert sp.lost.result() is None
        await iterations(3)
        assert cp.lost_calls == [None] and sp.lost_calls == [None]

    run(loop, main())


def test_udp_unconnected_sendto(loop):
    async def main():
        async with (
            _opened(loop, local_addr=LOCALHOST) as (a, _ap),
            _opened(loop, local_addr=LOCALHOST) as (b, bp),
        ):
            assert a.get_extra_info("peername") is None
            a.sendto(b"to b", b.get_extra_info("sockname"))
            a.sendto(bytearray(b"ba"), b.get_extra_info("sockname"))
            a.sendto(memoryview(b"mv"), b.get_extra_info("sockname"))
            got = [await bp.recv() for _ in range(3)]
            src = a.get_extra_info("sockname")
            assert got == [(b"to b", src), (b"ba", src), (b"mv", src)]
            assert a.get_write_buffer_size() == 0

    run(loop, main())


def test_udp_sendto_without_address_unconnected(loop):
    """sendto(data) with no address on an unconnected endpoint is a fatal
    (non-OSError) write error in asyncio: handler called, transport closed."""

    async def main():
        async with _opened(loop, local_addr=LOCALHOST) as (a, ap):
            rec = HandlerRecorder(loop)
            a.sendto(b"nowhere")
            exc = await ap.lost
            await iterations(3)
            return list(ap.errors), list(rec.contexts), a, ap, exc

    errors, contexts, tr, proto, exc = run(loop, main())
    assert errors == []
    assert isinstance(exc, TypeError)
    assert len(contexts) == 1
    assert contexts[0]["exception"] is exc
    assert contexts[0]["message"] == "Fatal write error on datagram transport"
    assert contexts[0]["transport"] is tr
    assert contexts[0]["protocol"] is proto
    assert tr.is_closing() is True
    assert proto.lost_calls == [exc]


@pytest.mark.parametrize("connected", [False, True])
def test_udp_sendto_empty(loop, connected):
    async def main():
        async with _opened(loop, local_addr=LOCALHOST) as (st, sp):
            dest = st.get_extra_info("sockname")
            client_kw = {"remote_addr": dest} if connected else {"local_addr": LOCALHOST}
            async with _opened(loop, **client_kw) as (ct, _cp):
                ct.sendto(b"", None if connected else dest)
                ct.sendto(b"marker", None if connected else dest)
                first = (await sp.recv())[0]
                assert ct.get_write_buffer_size() == 0
                return first

    first = run(loop, main())
    # 3.13 sends empty datagrams; older versions silently drop them.
    assert first == (b"" if PY313 else b"marker")


def test_udp_sendto_wrong_address_when_connected(loop):
    async def main():
        async with _pair(loop) as (st, sp, ct, _cp):
            with pytest.raises(ValueError, match="Invalid address"):
                ct.sendto(b"x", ("127.0.0.1", closed_port()))
            # The connected address itself is accepted.
            ct.sendto(b"ok", st.get_extra_info("sockname"))
            assert (await sp.recv())[0] == b"ok"

    run(loop, main())


def test_udp_sendto_wrong_type(loop):
    async def main():
        async with _opened(loop, local_addr=LOCALHOST) as (a, _ap):
            with pytest.raises(TypeError):
                a.sendto("str", ("127.0.0.1", 9))
            with pytest.raises(TypeError):
                a.sendto(42, ("127.0.0.1", 9))

    run(loop, main())


def test_udp_large_datagram(loop):
    async def main():
        payload = bytes(range(256)) * 200  # 51200 bytes, one datagram
        async with _pair(loop) as (_st, sp, ct, _cp):
            ct.sendto(payload)
            data, _ = await sp.recv()
            assert data == payload

    run(loop, main())


def test_udp_sock_argument(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        fd = sock.fileno()
        async with _pair(loop, lambda: Echo(loop), {"sock": sock}) as (st, _sp, ct, cp):
            assert st.get_extra_info("socket").fileno() == fd
            assert ct.get_extra_info("peername") == sock.getsockname()
            assert sock.gettimeout() == 0
            ct.sendto(b"via sock")
            assert (await cp.recv())[0] == b"echo:via sock"
        assert sock.fileno() == -1

    run(loop, main())


def test_udp_sock_argument_conflicts(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket()
        try:
            with pytest.raises(ValueError):
                await _endpoint(loop, sock=sock, local_addr=LOCALHOST)
            with pytest.raises(ValueError):
                await _endpoint(loop, sock=tcp)
        finally:
            sock.close()
            tcp.close()

    run(loop, main())


def test_udp_no_address_needs_family(loop):
    async def main():
        with pytest.raises(ValueError):
            await _endpoint(loop)
        # With a family but no address, an unbound socket is created.
        async with _opened(loop, family=socket.AF_INET) as (t, _p):
            assert t.get_extra_info("socket").family == socket.AF_INET

    run(loop, main())


@needs_reuseport
def test_udp_reuse_port(loop):
    async def main():
        async with _opened(loop, local_addr=LOCALHOST, reuse_port=True) as (a, _ap):
            port = a.get_extra_info("sockname")[1]
            addr = ("127.0.0.1", port)
            async with _opened(loop, local_addr=addr, reuse_port=True) as (b, _bp):
                for t in (a, b):
                    s = t.get_extra_info("socket")
                    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
                assert b.get_extra_info("sockname") == addr

    run(loop, main())


def test_udp_port_in_use_without_reuse_port(loop):
    async def main():
        async with _opened(loop, local_addr=LOCALHOST) as (a, _ap):
            with pytest.raises(OSError) as info:
                await _endpoint(loop, local_addr=a.get_extra_info("sockname"))
            assert info.value.errno == errno.EADDRINUSE

    run(loop, main())


def test_udp_reuse_address_true_rejected(loop):
    async def main():
        # 3.10 still accepts the keyword (and rejects True); 3.11 removed it.
        with pytest.raises(TypeError if PY311 else ValueError):
            await _endpoint(loop, local_addr=LOCALHOST, reuse_address=True)

    run(loop, main())


def test_udp_allow_broadcast(loop):
    def broadcast(t):
        return t.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)

    async def main():
        async with (
            _opened(loop, local_addr=LOCALHOST, allow_broadcast=True) as (t, _p),
            _opened(loop, local_addr=LOCALHOST) as (u, _q),
        ):
            assert broadcast(t) != 0
            assert broadcast(u) == 0

    run(loop, main())


def test_udp_remote_addr_resolution(loop):
    async def main():
        async with _opened(loop, local_addr=LOCALHOST) as (st, sp):
            port = st.get_extra_info("sockname")[1]
            remote = ("localhost", port)
            async with _opened(loop, remote_addr=remote, family=socket.AF_INET) as (ct, _cp):
                assert ct.get_extra_info("peername") == ("127.0.0.1", port)
                ct.sendto(b"resolved")
                assert (await sp.recv())[0] == b"resolved"

    run(loop, main())


def test_udp_error_received_port_unreachable(loop):
    """Connected UDP socket sending to a closed port: the kernel's ICMP port
    unreachable surfaces as error_received(ConnectionRefusedError)."""

    async def scenario(lp):
        port = closed_port()
        rec = HandlerRecorder(lp)
        async with _opened(lp, remote_addr=("127.0.0.1", port)) as (t, p):
            t.sendto(b"ping")
            exc = await asyncio.wait_for(p.next_error(), 2)
            # The transport survives the error and can still send.
            t.sendto(b"again")
            await asyncio.sleep(0.05)
            return (
                type(exc).__name__,
                t.is_closing(),
                list(p.lost_calls),
                list(rec.contexts),
                {type(e).__name__ for e in p.errors},
            )

    got = run(loop, scenario(loop))
    assert got[0] == "ConnectionRefusedError"
    assert got[1] is False
    assert got[2] == []
    assert got[3] == []
    assert got[4] == {"ConnectionRefusedError"}
    assert got == run_reference(scenario)


def test_udp_close_and_abort(loop):
    async def main():
        a, ap = await _endpoint(loop, local_addr=LOCALHOST)
        b, bp = await _endpoint(loop, local_addr=LOCALHOST)
        assert a.is_closing() is False
        a.close()
        assert a.is_closing() is True
        a.close()
        b.abort()
        assert b.is_closing() is True
        assert await ap.lost is None
        assert await bp.lost is None
        await iterations(3)
        return ap, bp

    ap, bp = run(loop, main())
    assert ap.lost_calls == [None]
    assert bp.lost_calls == [None]
    assert ap.errors == []


def test_udp_close_flushes_nothing_pending(loop):
    """Datagrams sent right before close() are delivered."""

    async def main():
        st, sp = await _endpoint(loop, local_addr=LOCALHOST)
        ct, cp = await _endpoint(loop, remote_addr=st.get_extra_info("sockname"))
        for i in range(10):
            ct.sendto(b"%d" % i)
        ct.close()
        await cp.lost
        got = [(await sp.recv())[0] for _ in range(10)]
        st.close()
        await sp.lost
        return got

    assert run(loop, main()) == [b"%d" % i for i in range(10)]


def test_udp_sendto_after_close_connected(loop):
    async def main():
        rec = HandlerRecorder(loop)
        st, sp = await _endpoint(loop, local_addr=LOCALHOST)
        ct, cp = await _endpoint(loop, remote_addr=st.get_extra_info("sockname"))
        ct.close()
        await cp.lost
        ct.sendto(b"late")  # silently ignored
        ct.sendto(b"late", st.get_extra_info("sockname"))
        await asyncio.sleep(0.05)
        st.close()
        await sp.lost
        return sp.datagrams, cp.errors, rec.contexts

    assert run(loop, main()) == ([], [], [])


def test_udp_datagram_received_exception(loop):
    """asyncio does not guard datagram_received(): the exception reaches the
    handler as a callback error and the endpoint stays open."""
    boom = ArithmeticError("dgram")

    class Bad(DatagramRecorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if data == b"x":
                raise boom

    async def main():
        rec = HandlerRecorder(loop)
        async with _pair(loop, lambda: Bad(loop)) as (st, sp, ct, _cp):
            ct.sendto(b"x")
            assert (await sp.recv())[0] == b"x"
            await iterations(3)
            ct.sendto(b"y")
            assert (await sp.recv())[0] == b"y"
            return list(rec.contexts), st.is_closing(), list(sp.lost_calls)

    contexts, closing, lost = run(loop, main())
    assert closing is False
    assert lost == []
    assert len(contexts) == 1
    assert contexts[0]["exception"] is boom


def test_udp_protocol_without_datagram_received(loop):
    """A datagram protocol with no datagram_received() when the endpoint is
    made: asyncio looks the method up per datagram, so the AttributeError
    reaches the handler as a callback error (nothing is dropped silently),
    and a method added later is called."""

    class Bare(asyncio.BaseProtocol):
        def connection_made(self, transport):
            self.transport = transport

    async def main():
        rec = HandlerRecorder(loop)
        server = Bare()
        st, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
        ct, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=st.get_extra_info("sockname")
        )
        try:
            ct.sendto(b"x")
            for _ in range(200):
                if rec.contexts:
                    break
                await asyncio.sleep(0.005)
            got = loop.create_future()
            server.datagram_received = lambda data, addr: got.set_result(data)
            ct.sendto(b"y")
            data = await asyncio.wait_for(got, 5)
            return list(rec.contexts), data, st.is_closing()
        finally:
            ct.close()
            st.close()

    contexts, data, closing = run(loop, main())
    assert len(contexts) == 1
    assert type(contexts[0]["exception"]) is AttributeError
    assert "datagram_received" in str(contexts[0]["exception"])
    assert data == b"y"
    assert closing is False


def test_udp_extra_info(loop):
    async def main():
        async with _pair(loop) as (st, _sp, ct, cp):
            s = ct.get_extra_info("socket")
            assert s.type == socket.SOCK_DGRAM
            assert ct.get_extra_info("sockname") == s.getsockname()
            assert ct.get_extra_info("peername") == st.get_extra_info("sockname")
            assert st.get_extra_info("peername") is None
            assert ct.get_extra_info("nope", 7) == 7
            assert ct.get_protocol() is cp

    run(loop, main())


@pytest.mark.parametrize("connected", [False, True])
def test_udp_datagram_to_a_peer_in_the_same_loop_arrives_in_the_next_iteration(loop, connected):
    """As for streams (test_net_transport.py): a datagram sent by a callback
    to an endpoint of the same loop is received in the next iteration, even
    while a chain of callbacks keeps the loop busy."""
    order = []

    class Receiver(DatagramRecorder):
        def datagram_received(self, data, addr):
            order.append("data")

    async def main():
        if connected:
            async with _pair(loop, server_factory=lambda: Receiver(loop)) as (_st, _sp, ct, _cp):
                await busy_chain(loop, order, lambda: ct.sendto(b"x"))
        else:
            async with (
                _opened(loop, lambda: Receiver(loop), local_addr=LOCALHOST) as (st, _sp),
                _opened(loop, local_addr=LOCALHOST) as (ct, _cp),
            ):
                to = st.get_extra_info("sockname")
                await busy_chain(loop, order, lambda: ct.sendto(b"x", to))

    run(loop, main())
    assert order.index("data") == transport_io_index(loop), order
