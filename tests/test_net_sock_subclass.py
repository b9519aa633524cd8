"""Sockets of a ``socket.socket`` subclass handed to the loop (differential).

asyncio's selector transports call ``recv``/``recv_into``/``send`` (and
``recvfrom``/``sendto`` for datagrams) on the socket object they are given,
so a subclass that overrides them (to count, log or shape traffic: the
websockets test suite does) sees every read and write. tokioloop's native
stream transport works on the fd; for such a socket the loop must use a
transport that calls the methods, as asyncio does (its datagram transport
calls the socket's own methods anyway). A subclass that overrides none of
them keeps the native transport.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest
from net_support import run, tcp_listener
from tls_support import (
    SERVER_HOSTNAME,
    tls_fixture,  # noqa: F401  (provides the tls fixture)
)


class TrackedSocket(socket.socket):
    """Records which I/O methods were called on it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = set()

    def recv(self, *args):
        self.calls.add("recv")
        return super().recv(*args)

    def recv_into(self, *args):
        self.calls.add("recv_into")
        return super().recv_into(*args)

    def send(self, *args):
        self.calls.add("send")
        return super().send(*args)

    def recvfrom(self, *args):
        self.calls.add("recvfrom")
        return super().recvfrom(*args)

    def sendto(self, *args):
        self.calls.add("sendto")
        return super().sendto(*args)


class TaggedSocket(socket.socket):
    """A subclass that adds state but leaves every I/O method alone."""

    tag = "mine"


async def _echo(reader, writer):
    writer.write(await reader.read(100))
    await writer.drain()
    writer.close()


def _connected(kind, address):
    sock = kind(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect(address)
    sock.setblocking(False)
    return sock


class Collect(asyncio.Protocol):
    def __init__(self, loop):
        self.data = b""
        self.lost = loop.create_future()

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class CollectBuffered(asyncio.BufferedProtocol):
    def __init__(self, loop):
        self.data = b""
        self.buffer = bytearray(64)
        self.lost = loop.create_future()

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.data += bytes(self.buffer[:nbytes])

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.mark.parametrize("protocol", [Collect, CollectBuffered])
def test_stream_transport_calls_overridden_methods(loop, protocol):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        sock = _connected(TrackedSocket, server.sockets[0].getsockname())
        transport, proto = await loop.create_connection(lambda: protocol(loop), sock=sock)
        transport.write(b"hello")
        await proto.lost
        server.close()
        await server.wait_closed()
        return proto.data, sock.calls

    data, calls = run(loop, main())
    assert data == b"hello"
    read = "recv" if protocol is Collect else "recv_into"
    assert calls == {read, "send"}


def test_streams_over_subclassed_socket(loop):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        sock = _connected(TrackedSocket, server.sockets[0].getsockname())
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"ping")
        echoed = await reader.read(100)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return echoed, sock.calls

    echoed, calls = run(loop, main())
    assert echoed == b"ping"
    assert {"recv", "send"} <= calls


def test_accepted_subclassed_socket(loop):
    """connect_accepted_socket and a server's listener of the subclass."""

    async def main():
        listener = tcp_listener()
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        listener.close()
        accepted = TrackedSocket(conn.family, conn.type, conn.proto, conn.detach())
        accepted.setblocking(False)
        transport, proto = await loop.connect_accepted_socket(lambda: Collect(loop), accepted)
        transport.write(b"from server")
        client.sendall(b"from client")
        client.shutdown(socket.SHUT_WR)
        while not proto.data:
            await asyncio.sleep(0.01)
        got = client.recv(100)
        transport.close()
        await proto.lost
        client.close()
        return got, proto.data, accepted.calls

    got, data, calls = run(loop, main())
    assert (got, data) == (b"from server", b"from client")
    assert calls == {"recv", "send"}


@pytest.mark.parametrize("connected", [True, False], ids=["connected", "unconnected"])
def test_datagram_transport_calls_overridden_methods(loop, connected):
    class Receiver(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = loop.create_future()

        def datagram_received(self, data, addr):
            if not self.got.done():
                self.got.set_result(data)

    async def main():
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        sock = TrackedSocket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        if connected:
            sock.connect(peer.getsockname())
        transport, proto = await loop.create_datagram_endpoint(Receiver, sock=sock)
        if connected:
            transport.sendto(b"out")
        else:
            transport.sendto(b"out", peer.getsockname())
        out, _ = peer.recvfrom(100)
        peer.sendto(b"in", sock.getsockname())
        got = await proto.got
        transport.close()
        peer.close()
        return out, got, sock.calls

    out, got, calls = run(loop, main())
    assert (out, got) == (b"out", b"in")
    assert calls == {"recvfrom", "send" if connected else "sendto"}


def test_tls_over_subclassed_socket(loop, tls):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=tls.server_context())
        sock = _connected(TrackedSocket, server.sockets[0].getsockname())
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=tls.client_context(), server_hostname=SERVER_HOSTNAME
        )
        writer.write(b"secret")
        echoed = await reader.read(100)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return echoed, sock.calls

    echoed, calls = run(loop, main())
    assert echoed == b"secret"
    # asyncio's TLS protocol is a BufferedProtocol from 3.11 on.
    read = "recv_into" if sys.version_info >= (3, 11) else "recv"
    assert calls == {read, "send"}


def test_subclass_without_io_overrides_keeps_the_native_transport(loop, loop_kind):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        sock = _connected(TaggedSocket, server.sockets[0].getsockname())
        transport, proto = await loop.create_connection(lambda: Collect(loop), sock=sock)
        transport.write(b"hi")
        await proto.lost
        server.close()
        await server.wait_closed()
        return proto.data, type(transport)

    data, transport_type = run(loop, main())
    assert data == b"hi"
    expected = "tokioloop._transports" if loop_kind == "tokioloop" else "asyncio.selector_events"
    assert transport_type.__module__ == expected


def test_socket_class_patched_with_a_factory(loop, monkeypatch):
    """`socket.socket` replaced by a function while the loop makes and
    accepts sockets (AsyncSSH's TUN/TAP tests patch it so): asyncio's
    `create_connection` and `sock.accept()` call the factory, and the
    transports still get made (tokioloop once raised AttributeError,
    looking up the I/O methods on the function)."""
    real = socket.socket
    made = []

    def factory(*args, **kwargs):
        sock = real(*args, **kwargs)
        made.append(sock)
        return sock

    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        monkeypatch.setattr(socket, "socket", factory)
        try:
            transport, proto = await loop.create_connection(
                lambda: Collect(loop), "127.0.0.1", port
            )
        finally:
            monkeypatch.setattr(socket, "socket", real)
        transport.write(b"via factory")
        await proto.lost
        server.close()
        await server.wait_closed()
        return proto.data

    assert run(loop, main()) == b"via factory"
    assert made  # create_connection's socket came from the factory
