"""loop.sendfile on transports and loop.sock_sendfile on sockets
(differential): plain TCP and Unix (native os.sendfile), TLS (the read/write
fallback), offsets and counts, fallback=False, argument errors."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket

import pytest
from net_support import (
    RecordingProtocol,
    nb_socketpair,
    run,
    unix_path_fixture,  # noqa: F401  (provides the unix_path fixture)
)
from tls_support import (
    SERVER_HOSTNAME,
    tls_fixture,  # noqa: F401  (provides the tls fixture)
)

MiB = 1024 * 1024
BIG = 50 * MiB
SMALL = MiB + 4321


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """A 50 MiB file of random bytes and its sha256."""
    path = tmp_path_factory.mktemp("sendfile") / "big.bin"
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(BIG // (4 * MiB)):
            block = os.urandom(4 * MiB)
            h.update(block)
            f.write(block)
        rest = os.urandom(BIG % (4 * MiB))
        h.update(rest)
        f.write(rest)
    return path, h.hexdigest()


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sendfile") / "small.bin"
    data = os.urandom(SMALL)
    path.write_bytes(data)
    return path, data


class Sink(asyncio.Protocol):
    """Server side: hashes (and optionally keeps) everything it receives."""

    def __init__(self, loop, keep):
        self.keep = keep
        self.buf = bytearray()
        self.h = hashlib.sha256()
        self.n = 0
        self.eof = False
        self.done = loop.create_future()

    def data_received(self, data):
        self.h.update(data)
        self.n += len(data)
        if self.keep:
            self.buf += data

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(exc)


class Link:
    """A connection from a client transport (the one files are sent on) to a
    :class:`Sink`, over plain TCP, a Unix socket or TLS-over-TCP."""

    def __init__(self, loop, kind, tls=None, unix_path=None, keep=True):
        self.loop, self.kind, self.tls = loop, kind, tls
        self.unix_path, self.keep = unix_path, keep
        self.sinks = []

    def _make_sink(self):
        self.sinks.append(Sink(self.loop, self.keep))
        return self.sinks[-1]

    async def __aenter__(self):
        lp = self.loop
        if self.kind == "unix":
            self.server = await lp.create_unix_server(self._make_sink, self.unix_path)
            self.tr, self.proto = await lp.create_unix_connection(
                lambda: RecordingProtocol(lp), self.unix_path
            )
        else:
            server_ssl = self.tls.server_context() if self.kind == "tls" else None
            client_kw = {}
            if self.kind == "tls":
                client_kw = {"ssl": self.tls.client_context(), "server_hostname": SERVER_HOSTNAME}
            self.server = await lp.create_server(self._make_sink, "127.0.0.1", 0, ssl=server_ssl)
            self.tr, self.proto = await lp.create_connection(
                lambda: RecordingProtocol(lp), *self.server.sockets[0].getsockname(), **client_kw
            )
        return self

    async def finish(self):
        """Close the client side and wait for the sink to see the end."""
        self.tr.close()
        await self.proto.lost
        while not self.sinks:
            await asyncio.sleep(0.001)
        await self.sinks[0].done
        return self.sinks[0]

    async def __aexit__(self, *exc):
        if not self.tr.is_closing():
            self.tr.close()
        self.server.close()
        await self.server.wait_closed()


KINDS = ["tcp", "unix", "tls"]


# --------------------------------------------------------------------------
# loop.sendfile(transport, ...)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_sendfile_50mib(loop, big_file, kind, unix_path):
    path, digest = big_file

    async def main(f):
        async with Link(loop, kind, unix_path=unix_path, keep=False) as link:
            sent = await loop.sendfile(link.tr, f)
            pos = f.tell()
            sink = await link.finish()
        return sent, pos, sink.n, sink.h.hexdigest(), sink.eof

    with open(path, "rb") as f:
        got = run(loop, main(f), timeout=30)
    assert got == (BIG, BIG, BIG, digest, True)


def test_sendfile_tls_fallback_8mib(loop, tls, big_file):
    path, _ = big_file
    count = 8 * MiB
    with open(path, "rb") as f:
        f.seek(MiB)
        expected = hashlib.sha256(f.read(count)).hexdigest()
        f.seek(0)

        async def main():
            async with Link(loop, "tls", tls, keep=False) as link:
                sent = await loop.sendfile(link.tr, f, MiB, count)
                pos = f.tell()
                sink = await link.finish()
            return sent, pos, sink.n, sink.h.hexdigest()

        got = run(loop, main(), timeout=30)
    assert got == (count, MiB + count, count, expected)


@pytest.mark.parametrize(
    "offset, count",
    [
        (0, None),
        (1000, None),
        (0, 12345),
        (7, 300_001),
        (SMALL - 10, None),
        (SMALL - 10, 100),  # count past the end: stops at EOF
        (SMALL, None),  # nothing left
    ],
    ids=["all", "offset", "count", "offset-count", "tail", "count-past-eof", "at-eof"],
)
@pytest.mark.parametrize("kind", KINDS)
def test_sendfile_offset_count(loop, tls, small_file, kind, offset, count, unix_path):
    path, data = small_file
    expected = data[offset:] if count is None else data[offset : offset + count]

    async def main(f):
        async with Link(loop, kind, tls, unix_path) as link:
            sent = await loop.sendfile(link.tr, f, offset, count)
            pos = f.tell()
            # The transport is still usable after sendfile.
            link.tr.write(b"<END>")
            sink = await link.finish()
        return sent, pos, bytes(sink.buf)

    with open(path, "rb") as f:
        sent, pos, received = run(loop, main(f))
    assert sent == len(expected)
    assert received == expected + b"<END>"
    if sent:
        assert pos == offset + sent


@pytest.mark.parametrize("kind", KINDS)
def test_sendfile_bytesio(loop, tls, kind, unix_path):
    """A file object without a file descriptor always takes the fallback."""
    data = os.urandom(200_000)

    async def main():
        bio = io.BytesIO(data)
        async with Link(loop, kind, tls, unix_path) as link:
            sent = await loop.sendfile(link.tr, bio, 10, 150_000)
            pos = bio.tell()
            sink = await link.finish()
        return sent, pos, bytes(sink.buf)

    assert run(loop, main()) == (150_000, 150_010, data[10:150_010])


@pytest.mark.parametrize(
    "kind, source, expected",
    [
        ("tcp", "file", ("ok", SMALL)),
        ("unix", "file", ("ok", SMALL)),
        ("tcp", "bytesio", ("error", asyncio.SendfileNotAvailableError)),
        ("tls", "file", ("error", RuntimeError)),
        ("tls", "bytesio", ("error", RuntimeError)),
    ],
)
def test_sendfile_no_fallback(loop, tls, small_file, unix_path, kind, source, expected):
    """fallback=False: native sendfile works on plain sockets; a file without
    a descriptor raises SendfileNotAvailableError; TLS transports (which can
    only use the fallback) raise RuntimeError. The transport stays usable."""
    path, data = small_file

    async def main(f):
        async with Link(loop, kind, tls, unix_path) as link:
            try:
                outcome = ("ok", await loop.sendfile(link.tr, f, fallback=False))
            except Exception as exc:  # noqa: BLE001 - the type is the outcome
                outcome = ("error", type(exc))
            link.tr.write(b"<END>")
            sink = await link.finish()
        return outcome, bytes(sink.buf)

    with open(path, "rb") as real:
        f = real if source == "file" else io.BytesIO(data)
        outcome, received = run(loop, main(f))
    assert outcome == expected
    assert received == (data if outcome[0] == "ok" else b"") + b"<END>"


@pytest.mark.parametrize(
    "case, expected",
    [
        ("text-mode", ValueError),
        ("count-zero", ValueError),
        ("count-negative", ValueError),
        ("count-str", TypeError),
        ("offset-negative", ValueError),
        ("offset-float", TypeError),
    ],
)
def test_sendfile_argument_errors(loop, small_file, case, expected):
    path, _ = small_file
    args = {
        "text-mode": (0, None),
        "count-zero": (0, 0),
        "count-negative": (0, -5),
        "count-str": (0, "10"),
        "offset-negative": (-1, None),
        "offset-float": (1.5, None),
    }[case]

    async def main(f):
        async with Link(loop, "tcp") as link:
            with pytest.raises(expected):
                await loop.sendfile(link.tr, f, *args)
            # Nothing was sent and the transport still works (reading too).
            link.tr.write(b"still alive")
            sink = await link.finish()
        return bytes(sink.buf)

    with open(path, "r" if case == "text-mode" else "rb") as f:
        assert run(loop, main(f)) == b"still alive"


def test_sendfile_on_closing_or_unsupported_transport(loop, small_file):
    path, _ = small_file

    async def main(f):
        async with Link(loop, "tcp") as link:
            link.tr.close()
            with pytest.raises(RuntimeError):
                await loop.sendfile(link.tr, f)
        udp_tr, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        try:
            with pytest.raises(RuntimeError):
                await loop.sendfile(udp_tr, f)
        finally:
            udp_tr.close()
        return f.tell()

    with open(path, "rb") as f:
        assert run(loop, main(f)) == 0


# --------------------------------------------------------------------------
# loop.sock_sendfile(sock, ...)
# --------------------------------------------------------------------------


async def _recv_all(loop, sock):
    h, n, head = hashlib.sha256(), 0, bytearray()
    while True:
        chunk = await loop.sock_recv(sock, 256 * 1024)
        if not chunk:
            return n, h.hexdigest(), bytes(head)
        h.update(chunk)
        n += len(chunk)
        if len(head) < 64:
            head += chunk[: 64 - len(head)]


def _tcp_pair():
    listener = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(listener.getsockname())
    b, _ = listener.accept()
    listener.close()
    for s in (a, b):
        s.setblocking(False)
    return a, b


@pytest.mark.parametrize("fallback", [True, False])
@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_sock_sendfile(loop, big_file, family, fallback):
    path, digest = big_file
    a, b = _tcp_pair() if family == "tcp" else nb_socketpair()

    async def main(f):
        async def send():
            try:
                return await loop.sock_sendfile(a, f, fallback=fallback), f.tell()
            finally:
                a.shutdown(socket.SHUT_WR)

        (sent, pos), (n, got_digest, _) = await asyncio.gather(send(), _recv_all(loop, b))
        return sent, pos, n, got_digest

    try:
        with open(path, "rb") as f:
            got = run(loop, main(f), timeout=30)
    finally:
        a.close()
        b.close()
    assert got == (BIG, BIG, BIG, digest)


@pytest.mark.parametrize(
    "offset, count", [(3, 1000), (MiB, None), (SMALL - 1, 50)], ids=["head", "rest", "last"]
)
def test_sock_sendfile_offset_count(loop, small_file, offset, count):
    path, data = small_file
    expected = data[offset:] if count is None else data[offset : offset + count]
    a, b = nb_socketpair()

    async def main(f):
        sent = await loop.sock_sendfile(a, f, offset, count)
        pos = f.tell()
        a.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := await loop.sock_recv(b, 65536):
            received += chunk
        return sent, pos, bytes(received)

    try:
        with open(path, "rb") as f:
            got = run(loop, main(f))
    finally:
        a.close()
        b.close()
    assert got == (len(expected), offset + len(expected), expected)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("text-mode", ValueError),
        ("dgram-socket", ValueError),
        ("count-zero", ValueError),
        ("offset-negative", ValueError),
        ("offset-str", TypeError),
        ("bytesio-no-fallback", asyncio.SendfileNotAvailableError),
    ],
)
def test_sock_sendfile_argument_errors(loop, small_file, case, expected):
    path, _ = small_file
    a, b = nb_socketpair()
    da, db = nb_socketpair(type=socket.SOCK_DGRAM)

    async def main(f):
        sock, args, kw = {
            "text-mode": (a, (), {}),
            "dgram-socket": (da, (), {}),
            "count-zero": (a, (0, 0), {}),
            "offset-negative": (a, (-1,), {}),
            "offset-str": (a, ("0",), {}),
            "bytesio-no-fallback": (a, (), {"fallback": False}),
        }[case]
        if case == "bytesio-no-fallback":
            f = io.BytesIO(b"abc")
        with pytest.raises(expected):
            await loop.sock_sendfile(sock, f, *args, **kw)
        # Nothing was sent.
        await loop.sock_sendall(a, b"ok")
        return await loop.sock_recv(b, 100)

    try:
        with open(path, "r" if case == "text-mode" else "rb") as f:
            assert run(loop, main(f)) == b"ok"
    finally:
        for s in (a, b, da, db):
            s.close()
