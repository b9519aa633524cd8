"""TLS over the loop's transports (differential).

create_connection/create_server(ssl=), asyncio streams with ssl, start_tls,
mutual TLS, ALPN, SNI, verification failures, handshake/shutdown timeouts,
peers that go away mid-handshake, large transfers and fd hygiene.  Outcomes
that depend on the kernel or OpenSSL rather than on asyncio itself are
compared with what stock asyncio observes right now (``run_reference``).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import os
import random
import socket
import ssl
import time

import pytest
from loop_support import PY311
from net_support import (
    HandlerRecorder,
    RecordingProtocol,
    needs_ipv6,
    run,
    run_reference,
    set_linger_zero,
    tcp_listener,
    unix_path_fixture,  # noqa: F401  (provides the unix_path fixture)
)
from tls_support import (
    CLIENT_NAME,
    SERVER_HOSTNAME,
    SNI_NAME,
    tls_fixture,  # noqa: F401  (provides the tls fixture)
)

MiB = 1024 * 1024

KINDS = [
    "tcp",
    pytest.param("tcp6", marks=needs_ipv6),
    "unix",
]
# Scenarios that are the same code path whatever the address family.
KINDS_SHORT = ["tcp", "unix"]

# Protocol callbacks of a TLS client that calls transport.close() (the
# peer's close_notify is reported as eof_received). Flow-control callbacks
# are left out: 3.10's SSL transport pauses the writer on big writes, 3.11+'s
# does not.
CLIENT_CLOSE_KINDS = ["made", "data", "eof", "lost"]


def _kinds_without_flow_control(proto):
    out = []
    for k in proto.kinds():
        if k not in ("pause", "resume") and not (k == "data" and out and out[-1] == "data"):
            out.append(k)
    return out


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


class Endpoint:
    """Where a test server listens: TCP on 127.0.0.1 / ::1, or a Unix socket."""

    def __init__(self, kind: str, unix_path: str):
        self.kind = kind
        self.unix_path = unix_path
        self.addr = None

    def _host(self):
        return {"tcp": "127.0.0.1", "tcp6": "::1"}[self.kind]

    def _client_kw(self, kw):
        # Unix sockets have no host name to check the certificate against.
        if self.kind == "unix" and kw.get("ssl") and "server_hostname" not in kw:
            kw["server_hostname"] = SERVER_HOSTNAME
        return kw

    def _remember(self, server):
        self.addr = server.sockets[0].getsockname()
        return server

    async def create_server(self, loop, factory, **kw):
        if self.kind == "unix":
            return self._remember(await loop.create_unix_server(factory, self.unix_path, **kw))
        return self._remember(await loop.create_server(factory, self._host(), 0, **kw))

    async def create_connection(self, loop, factory, **kw):
        kw = self._client_kw(kw)
        if self.kind == "unix":
            return await loop.create_unix_connection(factory, self.unix_path, **kw)
        return await loop.create_connection(factory, *self.addr[:2], **kw)

    async def start_server(self, cb, **kw):
        if self.kind == "unix":
            return self._remember(await asyncio.start_unix_server(cb, self.unix_path, **kw))
        return self._remember(await asyncio.start_server(cb, self._host(), 0, **kw))

    async def open_connection(self, **kw):
        kw = self._client_kw(kw)
        if self.kind == "unix":
            return await asyncio.open_unix_connection(self.unix_path, **kw)
        return await asyncio.open_connection(*self.addr[:2], **kw)


class EchoServerProtocol(asyncio.Protocol):
    """Echoes everything; records its events; keeps the transport."""

    def __init__(self, loop, log):
        self.loop = loop
        self.log = log
        self.transport = None
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.log.append(("made", transport))

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        self.log.append(("eof",))

    def connection_lost(self, exc):
        self.log.append(("lost", exc))
        if not self.lost.done():
            self.lost.set_result(exc)


async def _echo_handler(reader, writer):
    try:
        while True:
            data = await reader.read(256 * 1024)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def _payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def _outcome(aw):
    """``("ok", result)`` or ``("error", exception type)`` of an awaitable."""
    try:
        return "ok", await aw
    except Exception as exc:  # noqa: BLE001 - the type is the outcome
        return "error", type(exc)


def _compare_with_reference(loop_kind, got, scenario, timeout=10):
    """On the tokioloop param, check ``got`` equals stock asyncio's outcome."""
    if loop_kind == "tokioloop":
        assert got == run_reference(scenario, timeout)


def _count_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _close_server(server):
    server.close()
    await server.wait_closed()


# --------------------------------------------------------------------------
# echo over create_connection/create_server(ssl=)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_echo_protocol(loop, tls, kind, unix_path):
    big = _payload(1, MiB + 17)
    server_log = []

    async def main():
        ep = Endpoint(kind, unix_path)
        server = await ep.create_server(
            loop, lambda: EchoServerProtocol(loop, server_log), ssl=tls.server_context()
        )
        try:
            tr, proto = await ep.create_connection(
                loop, lambda: RecordingProtocol(loop), ssl=tls.client_context()
            )
            tr.write(b"hello")
            await proto.wait_for_data(5)
            tr.writelines([big[:1000], big[1000:]])
            await proto.wait_for_data(5 + len(big))
            assert tr.can_write_eof() is False
            tr.close()
            lost = await proto.lost
            while server_log[-1][0] != "lost":  # the server sees the close_notify
                await asyncio.sleep(0.01)
            return proto.data(), _kinds_without_flow_control(proto), lost, server_log[:]
        finally:
            await _close_server(server)

    data, kinds, lost, slog = run(loop, main())
    assert data == b"hello" + big
    assert kinds == CLIENT_CLOSE_KINDS
    assert lost is None
    assert slog[0][0] == "made"
    assert slog[-1] == ("lost", None)


@pytest.mark.parametrize("kind", KINDS)
def test_echo_streams(loop, tls, kind, unix_path):
    big = _payload(2, 300_000)

    async def main():
        ep = Endpoint(kind, unix_path)
        server = await ep.start_server(_echo_handler, ssl=tls.server_context())
        async with server:
            reader, writer = await ep.open_connection(ssl=tls.client_context())
            try:
                assert writer.get_extra_info("ssl_object") is not None
                writer.write(b"line one\n")
                line = await reader.readline()
                writer.write(big)
                await writer.drain()
                echoed = await reader.readexactly(len(big))
            finally:
                writer.close()
                await writer.wait_closed()
        return line, echoed

    line, echoed = run(loop, main())
    assert line == b"line one\n"
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(big).digest()


@pytest.mark.parametrize("kind", KINDS_SHORT)
def test_extra_info(loop, tls, kind, unix_path):
    server_side = {}

    async def handler(reader, writer):
        for key in ("peercert", "cipher", "compression", "ssl_object", "sslcontext"):
            server_side[key] = writer.get_extra_info(key)
        writer.close()

    sctx, cctx = tls.server_context(), tls.client_context()

    async def main():
        ep = Endpoint(kind, unix_path)
        server = await ep.start_server(handler, ssl=sctx)
        async with server:
            reader, writer = await ep.open_connection(ssl=cctx)
            try:
                info = {
                    key: writer.get_extra_info(key)
                    for key in (
                        "peercert",
                        "cipher",
                        "compression",
                        "ssl_object",
                        "sslcontext",
                        "socket",
                        "peername",
                        "sockname",
                    )
                }
                info["missing"] = writer.get_extra_info("no-such-key", "dflt")
                info["server_addr"] = ep.addr
                info["sock_peer"] = info["socket"].getpeername()
                await reader.read()
            finally:
                writer.close()
                await writer.wait_closed()
        return info

    info = run(loop, main())
    sans = info["peercert"]["subjectAltName"]
    assert ("DNS", SERVER_HOSTNAME) in sans and ("DNS", SNI_NAME) in sans
    name, version, bits = info["cipher"]
    assert isinstance(name, str) and name
    assert version == info["ssl_object"].version() and version.startswith("TLSv1.")
    assert isinstance(bits, int) and bits >= 128
    assert info["compression"] is None
    assert isinstance(info["ssl_object"], ssl.SSLObject)
    assert info["ssl_object"].server_side is False
    assert info["sslcontext"] is cctx
    assert info["socket"] is not None
    if kind == "unix":
        assert info["peername"] == unix_path
    else:
        assert info["peername"] == info["sock_peer"] == info["server_addr"]
    assert info["missing"] == "dflt"
    # Server side: no client certificate was asked for.
    assert server_side["peercert"] is None
    assert server_side["cipher"] == info["cipher"]
    assert server_side["compression"] is None
    assert server_side["ssl_object"].server_side is True
    assert server_side["sslcontext"] is sctx


# --------------------------------------------------------------------------
# large transfer
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS_SHORT)
def test_large_transfer_8mib(loop, tls, kind, unix_path):
    total = 8 * MiB
    chunk = _payload(3, MiB)

    async def main():
        ep = Endpoint(kind, unix_path)
        server = await ep.start_server(_echo_handler, ssl=tls.server_context())
        async with server:
            reader, writer = await ep.open_connection(ssl=tls.client_context())

            async def send():
                for i in range(total // MiB):
                    writer.write(chunk[i:] + chunk[:i])
                    await writer.drain()

            async def receive():
                h = hashlib.sha256()
                n = 0
                while n < total:
                    data = await reader.read(MiB)
                    if not data:
                        break
                    h.update(data)
                    n += len(data)
                return n, h.hexdigest()

            try:
                _, (n, digest) = await asyncio.gather(send(), receive())
            finally:
                writer.close()
                await writer.wait_closed()
        return n, digest

    n, digest = run(loop, main(), timeout=30)
    expected = hashlib.sha256()
    for i in range(total // MiB):
        expected.update(chunk[i:] + chunk[:i])
    assert n == total
    assert digest == expected.hexdigest()


# --------------------------------------------------------------------------
# mutual TLS
# --------------------------------------------------------------------------


def test_mutual_tls(loop, tls):
    seen = {}

    async def handler(reader, writer):
        seen["peercert"] = writer.get_extra_info("peercert")
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    async def main():
        ep = Endpoint("tcp", None)
        server = await ep.start_server(handler, ssl=tls.server_context(client_cert="required"))
        async with server:
            reader, writer = await ep.open_connection(ssl=tls.client_context(cert="client"))
            try:
                writer.write(b"ping")
                return await reader.read()
            finally:
                writer.close()
                await writer.wait_closed()

    assert run(loop, main()) == b"ping"
    subject = dict(x[0] for x in seen["peercert"]["subject"])
    assert subject["commonName"] == CLIENT_NAME


@pytest.mark.parametrize(
    "client_cert, version",
    [
        ("none", ssl.TLSVersion.TLSv1_2),
        ("none", ssl.TLSVersion.TLSv1_3),
        ("rogue", ssl.TLSVersion.TLSv1_3),
    ],
    ids=["missing-tls1.2", "missing-tls1.3", "untrusted-tls1.3"],
)
def test_mutual_tls_rejected(loop, loop_kind, tls, client_cert, version):
    """The server requires a client certificate the client does not (validly)
    present. With TLS 1.2 the client's handshake fails; with TLS 1.3 the
    client finishes first and learns about it on its first read (asyncio's
    server drops the connection without flushing its alert, so the client
    may see a reset or a plain EOF rather than an SSL error)."""
    sctx = tls.server_context(client_cert="required", max_version=version)
    cctx = tls.client_context(cert=client_cert, max_version=version)

    async def scenario(lp):
        handler_calls = HandlerRecorder(lp)
        handled = []

        async def handler(reader, writer):  # pragma: no cover - must not run
            handled.append(True)
            writer.close()

        ep = Endpoint("tcp", None)
        server = await ep.start_server(handler, ssl=sctx)
        async with server:
            connect = await _outcome(ep.open_connection(ssl=cctx))
            read = None
            if connect[0] == "ok":
                reader, writer = connect[1]
                connect = ("ok", None)
                read = await _outcome(reader.read(10))
                writer.close()
                await _outcome(writer.wait_closed())
            await asyncio.sleep(0.05)
        return connect, read, handled, len(handler_calls.contexts)

    got = run(loop, scenario(loop))
    connect, read, handled, handler_calls = got
    assert handled == [] and handler_calls == 0
    if version == ssl.TLSVersion.TLSv1_2:
        assert connect[0] == "error"
        assert issubclass(connect[1], (ssl.SSLError, ConnectionError))
    else:
        assert connect == ("ok", None)
        # Never any application data.
        assert read == ("ok", b"") or (
            read[0] == "error" and issubclass(read[1], (ssl.SSLError, ConnectionError))
        )
    _compare_with_reference(loop_kind, got, scenario)


# --------------------------------------------------------------------------
# ALPN, SNI, hostname checks, untrusted certificates
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server_alpn, client_alpn, expected",
    [
        (["h2", "http/1.1"], ["http/1.1"], "http/1.1"),
        (["h2", "http/1.1"], ["h2", "http/1.1"], "h2"),
        (["http/1.1"], ["h2"], None),
        (None, ["h2"], None),
    ],
    ids=["http1", "h2", "no-overlap", "server-none"],
)
def test_alpn(loop, tls, server_alpn, client_alpn, expected):
    server_selected = []

    def factory():
        class P(asyncio.Protocol):
            def connection_made(self, transport):
                server_selected.append(
                    transport.get_extra_info("ssl_object").selected_alpn_protocol()
                )
                transport.close()

        return P()

    async def main():
        ep = Endpoint("tcp", None)
        server = await ep.create_server(loop, factory, ssl=tls.server_context(alpn=server_alpn))
        try:
            tr, proto = await ep.create_connection(
                loop, lambda: RecordingProtocol(loop), ssl=tls.client_context(alpn=client_alpn)
            )
            selected = tr.get_extra_info("ssl_object").selected_alpn_protocol()
            await proto.lost
            return selected
        finally:
            await _close_server(server)

    assert run(loop, main()) == expected
    assert server_selected == [expected]


@pytest.mark.parametrize(
    "host, server_hostname, expected_sni",
    [
        ("127.0.0.1", SNI_NAME, SNI_NAME),
        ("127.0.0.1", None, None),  # an IP address is never sent as SNI
        ("localhost", None, "localhost"),  # defaults to the host
    ],
    ids=["explicit", "ip-default", "name-default"],
)
def test_sni_and_server_hostname(loop, tls, host, server_hostname, expected_sni):
    sni_seen = []

    def sni_callback(sslobj, name, ctx):
        sni_seen.append(name)

    async def main():
        server = await asyncio.start_server(
            _echo_handler, "127.0.0.1", 0, ssl=tls.server_context(sni_callback=sni_callback)
        )
        async with server:
            port = server.sockets[0].getsockname()[1]
            kw = {} if server_hostname is None else {"server_hostname": server_hostname}
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls.client_context(), family=socket.AF_INET, **kw
            )
            try:
                obj = writer.get_extra_info("ssl_object")
                writer.write(b"x")
                echoed = await reader.readexactly(1)
                return obj.server_hostname, echoed
            finally:
                writer.close()
                await writer.wait_closed()

    hostname, echoed = run(loop, main())
    assert echoed == b"x"
    assert sni_seen == [expected_sni]
    assert hostname == (server_hostname or host)


@pytest.mark.parametrize(
    "case",
    ["hostname-mismatch", "untrusted-ca", "rogue-server", "default-context"],
)
def test_certificate_verification_fails(loop, loop_kind, tls, case):
    """The client refuses the server's certificate with
    ssl.SSLCertVerificationError (as asyncio raises it), and nothing leaks
    to the exception handler on either side."""
    cctx = {
        "hostname-mismatch": tls.client_context(),
        "untrusted-ca": tls.client_context(trust="other"),
        "rogue-server": tls.client_context(),
        "default-context": True,  # system CAs
    }[case]
    sctx = tls.server_context(rogue=case == "rogue-server")
    server_hostname = "wrong.test" if case == "hostname-mismatch" else SERVER_HOSTNAME

    async def scenario(lp):
        calls = HandlerRecorder(lp)
        server_log = []
        server = await lp.create_server(
            lambda: EchoServerProtocol(lp, server_log), "127.0.0.1", 0, ssl=sctx
        )
        try:
            port = server.sockets[0].getsockname()[1]
            try:
                await lp.create_connection(
                    asyncio.Protocol, "127.0.0.1", port, ssl=cctx, server_hostname=server_hostname
                )
            except ssl.SSLCertVerificationError as exc:
                result = (type(exc), exc.verify_code, "mismatch" in exc.verify_message.lower())
            await asyncio.sleep(0.05)
        finally:
            await _close_server(server)
        # The server never got a connection_made for the failed handshake.
        return result, len(calls.contexts), [e[0] for e in server_log]

    got = run(loop, scenario(loop))
    (exc_type, _verify_code, mismatch), handler_calls, server_events = got
    assert exc_type is ssl.SSLCertVerificationError
    assert mismatch == (case == "hostname-mismatch")
    assert handler_calls == 0
    assert server_events == []
    _compare_with_reference(loop_kind, got, scenario)


def test_connect_to_plain_server_fails(loop, loop_kind, tls):
    """A TLS client talking to a plain-text server gets an SSL error."""

    async def scenario(lp):
        async def handler(reader, writer):
            await reader.read(1)
            writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            return await _outcome(
                lp.create_connection(asyncio.Protocol, "127.0.0.1", port, ssl=tls.client_context())
            )

    got = run(loop, scenario(loop))
    assert got[0] == "error" and issubclass(got[1], ssl.SSLError)
    _compare_with_reference(loop_kind, got, scenario)


# --------------------------------------------------------------------------
# handshake timeouts, peers going away mid-handshake
# --------------------------------------------------------------------------


def test_client_handshake_timeout(loop, loop_kind, tls):
    """The server accepts at TCP level but never answers the ClientHello."""

    async def scenario(lp):
        listener = tcp_listener()
        try:
            t0 = time.monotonic()
            outcome = await _outcome(
                lp.create_connection(
                    asyncio.Protocol,
                    *listener.getsockname(),
                    ssl=tls.client_context(),
                    server_hostname=SERVER_HOSTNAME,
                    ssl_handshake_timeout=0.3,
                )
            )
            elapsed = time.monotonic() - t0
        finally:
            listener.close()
        return outcome, 0.25 <= elapsed < 3.0

    got = run(loop, scenario(loop))
    assert got[0][0] == "error"
    assert issubclass(got[0][1], (ConnectionAbortedError, TimeoutError))
    assert got[1], "the handshake timeout did not fire after ~0.3 s"
    _compare_with_reference(loop_kind, got, scenario)


def test_server_handshake_timeout(loop, loop_kind, tls):
    """A client connects at TCP level and never sends a ClientHello: the
    server aborts the connection after ssl_handshake_timeout."""

    async def scenario(lp):
        calls = HandlerRecorder(lp)
        made = []
        server = await lp.create_server(
            lambda: EchoServerProtocol(lp, made),
            "127.0.0.1",
            0,
            ssl=tls.server_context(),
            ssl_handshake_timeout=0.3,
        )
        try:
            sock = socket.socket()
            sock.setblocking(False)
            try:
                await lp.sock_connect(sock, server.sockets[0].getsockname())
                t0 = time.monotonic()
                read = await _outcome(lp.sock_recv(sock, 100))
                elapsed = time.monotonic() - t0
            finally:
                sock.close()
        finally:
            await _close_server(server)
        return read, 0.25 <= elapsed < 3.0, made, len(calls.contexts)

    got = run(loop, scenario(loop))
    read, timely, made, handler_calls = got
    assert read in (("ok", b""), ("error", ConnectionResetError))
    assert timely, "the server-side handshake timeout did not fire after ~0.3 s"
    assert made == [] and handler_calls == 0
    _compare_with_reference(loop_kind, got, scenario)


@pytest.mark.parametrize("how", ["close", "reset", "garbage"])
def test_peer_goes_away_mid_handshake(loop, loop_kind, tls, how):
    """The server reads the ClientHello, then closes (FIN), resets (RST) or
    answers with garbage; the client's create_connection fails the way
    asyncio's does."""

    async def scenario(lp):
        listener = tcp_listener()
        try:

            async def serve_one():
                conn, _ = await lp.sock_accept(listener)
                try:
                    hello = await lp.sock_recv(conn, 65536)
                    assert hello[:1] == b"\x16", hello[:16]  # TLS handshake record
                    if how == "reset":
                        set_linger_zero(conn)
                    elif how == "garbage":
                        await lp.sock_sendall(conn, b"SSH-2.0-nope\r\n" * 20)
                        await asyncio.sleep(0.05)
                finally:
                    conn.close()

            server_task = lp.create_task(serve_one())
            outcome = await _outcome(
                lp.create_connection(
                    asyncio.Protocol,
                    *listener.getsockname(),
                    ssl=tls.client_context(),
                    server_hostname=SERVER_HOSTNAME,
                )
            )
            await server_task
        finally:
            listener.close()
        return outcome

    got = run(loop, scenario(loop))
    assert got[0] == "error"
    if how == "garbage":
        assert issubclass(got[1], ssl.SSLError)
    else:
        assert issubclass(got[1], (ConnectionError, ssl.SSLError))
    _compare_with_reference(loop_kind, got, scenario)


@pytest.mark.skipif(not PY311, reason="ssl_shutdown_timeout is new in 3.11")
def test_shutdown_timeout(loop, loop_kind, tls):
    """The peer completes the handshake but never answers close_notify: the
    client transport gives up after ssl_shutdown_timeout."""

    async def manual_server_handshake(lp, conn, ctx):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            out = outgoing.read()
            if out:
                await lp.sock_sendall(conn, out)
            data = await lp.sock_recv(conn, 65536)
            if not data:
                raise ConnectionResetError("client went away")
            incoming.write(data)
        out = outgoing.read()
        if out:
            await lp.sock_sendall(conn, out)

    async def scenario(lp):
        listener = tcp_listener()
        conns = []
        try:

            async def serve_one():
                conn, _ = await lp.sock_accept(listener)
                conns.append(conn)
                await manual_server_handshake(lp, conn, tls.server_context())
                # ... and never read again.

            server_task = lp.create_task(serve_one())
            tr, proto = await lp.create_connection(
                lambda: RecordingProtocol(lp),
                *listener.getsockname(),
                ssl=tls.client_context(),
                server_hostname=SERVER_HOSTNAME,
                ssl_shutdown_timeout=0.3,
            )
            await server_task
            t0 = time.monotonic()
            tr.close()
            lost = await proto.lost
            elapsed = time.monotonic() - t0
        finally:
            listener.close()
            for c in conns:
                c.close()
        return type(lost), 0.25 <= elapsed < 3.0, proto.kinds()

    got = run(loop, scenario(loop))
    assert got == (TimeoutError, True, ["made", "lost"])
    _compare_with_reference(loop_kind, got, scenario)


# --------------------------------------------------------------------------
# start_tls
# --------------------------------------------------------------------------


class StartTlsServerProtocol(asyncio.Protocol):
    """Plain-text echo until the line ``STARTTLS``; then answers ``OK``,
    upgrades the connection (server side) and echoes inside TLS."""

    def __init__(self, loop, ctx):
        self.loop = loop
        self.ctx = ctx
        self.transport = None
        self.upgraded = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if data == b"STARTTLS\n":
            self.transport.write(b"OK\n")
            self.loop.create_task(self._upgrade())
        else:
            self.transport.write(data)

    async def _upgrade(self):
        try:
            tls_tr = await self.loop.start_tls(self.transport, self, self.ctx, server_side=True)
        except BaseException as exc:
            self.upgraded.set_exception(exc)
            raise
        self.transport = tls_tr
        self.upgraded.set_result(tls_tr)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.parametrize("kind", KINDS_SHORT)
def test_start_tls_protocols(loop, tls, kind, unix_path):
    payload = _payload(4, 200_000)
    servers = []

    def factory():
        p = StartTlsServerProtocol(loop, tls.server_context())
        servers.append(p)
        return p

    async def main():
        ep = Endpoint(kind, unix_path)
        server = await ep.create_server(loop, factory)
        try:
            tr, proto = await ep.create_connection(loop, lambda: RecordingProtocol(loop))
            tr.write(b"plain\n")
            await proto.wait_for_data(6)
            assert tr.get_extra_info("ssl_object") is None
            tr.write(b"STARTTLS\n")
            await proto.wait_for_data(9)
            assert proto.data() == b"plain\nOK\n"
            tls_tr = await loop.start_tls(
                tr, proto, tls.client_context(), server_hostname=SERVER_HOSTNAME
            )
            server_tls_tr = await servers[0].upgraded
            assert tls_tr is not tr
            assert tr.is_closing() is False
            tls_tr.write(payload)
            await proto.wait_for_data(9 + len(payload))
            info = (
                tls_tr.get_extra_info("ssl_object").server_side,
                server_tls_tr.get_extra_info("ssl_object").server_side,
                tls_tr.get_extra_info("peercert") is not None,
            )
            tls_tr.close()
            lost = await proto.lost
            await servers[0].lost
            return proto.data(), info, lost, _kinds_without_flow_control(proto)
        finally:
            await _close_server(server)

    data, info, lost, kinds = run(loop, main())
    assert data == b"plain\nOK\n" + payload
    assert info == (False, True, True)
    assert lost is None
    assert kinds == CLIENT_CLOSE_KINDS


@pytest.mark.skipif(not PY311, reason="StreamWriter.start_tls is new in 3.11")
@pytest.mark.parametrize("kind", KINDS_SHORT)
def test_start_tls_streams(loop, tls, kind, unix_path):
    payload = _payload(5, 100_000)
    server_info = {}

    async def handler(reader, writer):
        try:
            assert await reader.readline() == b"hello\n"
            writer.write(b"hello yourself\n")
            assert await reader.readline() == b"STARTTLS\n"
            writer.write(b"OK\n")
            await writer.drain()
            await writer.start_tls(tls.server_context())
            server_info["ssl_object"] = writer.get_extra_info("ssl_object")
            data = await reader.readexactly(len(payload))
            writer.write(hashlib.sha256(data).digest())
            await writer.drain()
        finally:
            writer.close()

    async def main():
        ep = Endpoint(kind, unix_path)
        server = await ep.start_server(handler)
        async with server:
            reader, writer = await ep.open_connection()
            try:
                writer.write(b"hello\n")
                greeting = await reader.readline()
                writer.write(b"STARTTLS\n")
                ok = await reader.readline()
                await writer.start_tls(tls.client_context(), server_hostname=SERVER_HOSTNAME)
                obj = writer.get_extra_info("ssl_object")
                writer.write(payload)
                await writer.drain()
                digest = await reader.readexactly(32)
                tail = await reader.read()
            finally:
                writer.close()
                await writer.wait_closed()
        return greeting, ok, digest, tail, obj.server_side

    greeting, ok, digest, tail, client_server_side = run(loop, main())
    assert (greeting, ok) == (b"hello yourself\n", b"OK\n")
    assert digest == hashlib.sha256(payload).digest()
    assert tail == b""
    assert client_server_side is False
    assert server_info["ssl_object"].server_side is True


def test_start_tls_rejects_bad_arguments(loop, tls):
    async def main():
        server = await asyncio.start_server(_echo_handler, "127.0.0.1", 0)
        async with server:
            tr, proto = await loop.create_connection(
                lambda: RecordingProtocol(loop), *server.sockets[0].getsockname()
            )
            try:
                with pytest.raises(TypeError):
                    await loop.start_tls(tr, proto, object())
                # Still a working plain connection afterwards.
                tr.write(b"abc")
                await proto.wait_for_data(3)
            finally:
                tr.close()
                await proto.lost
        return proto.data()

    assert run(loop, main()) == b"abc"


def test_ssl_argument_errors(loop, tls, unix_path):
    listener = tcp_listener()
    addr = listener.getsockname()

    async def main():
        out = []
        for call in (
            lambda: loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl_handshake_timeout=1),
            lambda: loop.create_unix_connection(
                asyncio.Protocol, unix_path, ssl=tls.client_context()
            ),
            lambda: loop.create_connection(
                asyncio.Protocol, *addr, ssl=tls.client_context(), ssl_handshake_timeout=0
            ),
            lambda: loop.create_connection(
                asyncio.Protocol, *addr, ssl=tls.client_context(), ssl_handshake_timeout=-1
            ),
        ):
            out.append(await _outcome(call()))
        return out

    try:
        assert run(loop, main()) == [("error", ValueError)] * 4
    finally:
        listener.close()


# --------------------------------------------------------------------------
# fd hygiene after failures
# --------------------------------------------------------------------------


def test_no_fd_leak_after_failures(loop, tls):
    """Failed handshakes of every kind close all their sockets."""

    async def one_round():
        listener = tcp_listener()
        silent_addr = listener.getsockname()
        server = await loop.create_server(
            asyncio.Protocol,
            "127.0.0.1",
            0,
            ssl=tls.server_context(client_cert="required", max_version=ssl.TLSVersion.TLSv1_2),
            ssl_handshake_timeout=0.2,
        )
        addr = server.sockets[0].getsockname()
        try:
            attempts = [
                # untrusted server certificate
                loop.create_connection(
                    asyncio.Protocol, *addr, ssl=tls.client_context(trust="other")
                ),
                # hostname mismatch
                loop.create_connection(
                    asyncio.Protocol, *addr, ssl=tls.client_context(), server_hostname="no.test"
                ),
                # no client certificate
                loop.create_connection(asyncio.Protocol, *addr, ssl=tls.client_context()),
                # handshake timeout (peer never answers)
                loop.create_connection(
                    asyncio.Protocol,
                    *silent_addr,
                    ssl=tls.client_context(),
                    server_hostname=SERVER_HOSTNAME,
                    ssl_handshake_timeout=0.1,
                ),
            ]
            outcomes = await asyncio.gather(*attempts, return_exceptions=True)
            # a plain client that never says hello (server-side timeout)
            sock = socket.socket()
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, addr)
                await _outcome(loop.sock_recv(sock, 1))
            finally:
                sock.close()
        finally:
            listener.close()
            await _close_server(server)
        await asyncio.sleep(0.05)  # let closing transports finish
        return outcomes

    def settle():
        for _ in range(3):
            gc.collect()
        loop.run_until_complete(asyncio.sleep(0.01))

    outcomes = run(loop, one_round())  # warm-up (lazily created resources)
    assert all(isinstance(o, (ssl.SSLError, ConnectionError)) for o in outcomes), outcomes
    settle()
    before = _count_fds()
    for _ in range(3):
        outcomes = run(loop, one_round())
        assert all(isinstance(o, (ssl.SSLError, ConnectionError)) for o in outcomes), outcomes
    settle()
    assert _count_fds() - before == 0


# --------------------------------------------------------------------------
# the data paths of an established TLS connection (native on 3.11+ in
# tokioloop): app protocol errors, BufferedProtocol, writelines, write()
# argument handling, pause_reading, write flow control, set_protocol
# --------------------------------------------------------------------------


class _RaisingProtocol(asyncio.Protocol):
    """Raises from data_received on the first data; records its callbacks."""

    def __init__(self, loop, exc):
        self.exc = exc
        self.events = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        self.events.append("data")
        raise self.exc

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


@pytest.mark.parametrize("exc_type", [ZeroDivisionError, asyncio.CancelledError])
def test_data_received_error_reaches_handler(loop, loop_kind, tls, exc_type):
    """An exception from the app's data_received over TLS goes to the loop's
    exception handler (asyncio's message and context: the SSL protocol's for
    an Exception, the socket transport's for a BaseException such as
    CancelledError) and closes the connection; the app's connection_lost
    gets the exception."""
    sctx, cctx = tls.server_context(), tls.client_context()

    async def scenario(lp):
        handler = HandlerRecorder(lp)
        exc = exc_type("boom")
        protos = []

        def factory():
            protos.append(_RaisingProtocol(lp, exc))
            return protos[-1]

        ep = Endpoint("tcp", None)
        server = await ep.create_server(lp, factory, ssl=sctx)
        try:
            tr, client = await ep.create_connection(
                lp, lambda: RecordingProtocol(lp), ssl=cctx, server_hostname=SERVER_HOSTNAME
            )
            tr.write(b"hello")
            lost_exc = await protos[0].lost
            await client.lost
            tr.close()
        finally:
            await _close_server(server)
        ctx = handler.contexts
        return (
            [c["message"] for c in ctx],
            [c["exception"] is exc for c in ctx],
            [isinstance(c["protocol"], asyncio.sslproto.SSLProtocol) for c in ctx],
            [c["transport"] is not None for c in ctx],
            lost_exc is exc,
            protos[0].events,
            client.data(),
        )

    got = run(loop, scenario(loop))
    assert len(got[0]) == 1 and got[1] == [True] and got[4] is True
    assert got[5] == ["made", "data", "lost"]
    _compare_with_reference(loop_kind, got, scenario)


class _BufferedEcho(asyncio.BufferedProtocol):
    """An echo server as a BufferedProtocol with a small buffer."""

    def __init__(self, loop, size):
        # A memoryview: asyncio's SSL transport reads into buf[offset:],
        # which for a bytearray would be a copy.
        self.buf = memoryview(bytearray(size))
        self.sizes = []
        self.events = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def get_buffer(self, sizehint):
        self.sizes.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes):
        self.transport.write(bytes(self.buf[:nbytes]))

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


@pytest.mark.parametrize("bufsize", [7, 65536])
def test_buffered_protocol_echo(loop, tls, bufsize):
    big = _payload(11, 300_000)

    async def main():
        servers = []

        def factory():
            servers.append(_BufferedEcho(loop, bufsize))
            return servers[-1]

        ep = Endpoint("tcp", None)
        server = await ep.create_server(loop, factory, ssl=tls.server_context())
        try:
            tr, proto = await ep.create_connection(
                loop, lambda: RecordingProtocol(loop), ssl=tls.client_context()
            )
            tr.write(b"abc")
            await proto.wait_for_data(3)
            tr.write(big)
            await proto.wait_for_data(3 + len(big))
            tr.close()
            await proto.lost
            await servers[0].lost
        finally:
            await _close_server(server)
        return proto.data(), servers[0].events, servers[0].sizes

    data, events, sizes = run(loop, main(), timeout=15)
    assert data == b"abc" + big
    # 3.10's SSL protocol does not pass close_notify on to a BufferedProtocol.
    assert events == (["made", "eof", "lost"] if PY311 else ["made", "lost"])
    assert sizes and all(isinstance(s, int) and s >= 0 for s in sizes)


def test_writelines_and_write_arguments(loop, loop_kind, tls):
    """writelines() of mixed bytes-likes, write() of a bytearray changed
    afterwards, a memoryview, empty data, and the TypeError for str."""
    sctx, cctx = tls.server_context(), tls.client_context()

    async def scenario(lp):
        server_log = []
        ep = Endpoint("tcp", None)
        server = await ep.create_server(lp, lambda: EchoServerProtocol(lp, server_log), ssl=sctx)
        try:
            tr, proto = await ep.create_connection(
                lp, lambda: RecordingProtocol(lp), ssl=cctx, server_hostname=SERVER_HOSTNAME
            )
            errors = []
            for bad in ("text", 12, None, [b"x"]):
                try:
                    tr.write(bad)
                except TypeError as exc:
                    errors.append(str(exc))
            tr.write(b"")
            tr.write(bytearray())
            ba = bytearray(b"one,")
            tr.write(ba)
            ba[:] = b"XXXX"
            tr.write(memoryview(b"two,"))
            tr.writelines([b"three,", bytearray(b"four,"), memoryview(b"five,")])
            tr.writelines(iter([b"six,", b"seven"]))
            expected = b"one,two,three,four,five,six,seven"
            await proto.wait_for_data(len(expected))
            size = tr.get_write_buffer_size()
            tr.close()
            await proto.lost
        finally:
            await _close_server(server)
        return errors, proto.data(), size

    got = run(loop, scenario(loop))
    assert got[1] == b"one,two,three,four,five,six,seven"
    assert got[0][0] == "data: expecting a bytes-like instance, got str"
    _compare_with_reference(loop_kind, got, scenario)


def test_write_after_close_is_ignored(loop, loop_kind, tls):
    sctx, cctx = tls.server_context(), tls.client_context()

    async def scenario(lp):
        server_log = []
        ep = Endpoint("tcp", None)
        server = await ep.create_server(lp, lambda: EchoServerProtocol(lp, server_log), ssl=sctx)
        try:
            tr, proto = await ep.create_connection(
                lp, lambda: RecordingProtocol(lp), ssl=cctx, server_hostname=SERVER_HOSTNAME
            )
            tr.write(b"ping")
            await proto.wait_for_data(4)
            tr.close()
            closing = tr.is_closing()
            for _ in range(7):
                tr.write(b"late")
            await proto.lost
            for _ in range(3):
                tr.write(b"later")
            tr.close()  # a second close: asyncio drops the protocol
            try:
                tr.write(b"after second close")
                outcome = "ok"
            except AttributeError:
                outcome = "AttributeError"
        finally:
            await _close_server(server)
        return closing, proto.data(), proto.kinds(), outcome

    got = run(loop, scenario(loop))
    assert got[0] is True and got[1] == b"ping"
    _compare_with_reference(loop_kind, got, scenario)


class _PausingReceiver(asyncio.Protocol):
    """Pauses reading on its first data_received; records what it got."""

    def __init__(self, loop):
        self.chunks = []
        self.reading = []
        self.first = loop.create_future()
        self.waiters = []

    def connection_made(self, transport):
        self.transport = transport
        # Small kernel buffers, so a peer that writes a lot fills them soon.
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)

    def data_received(self, data):
        self.chunks.append(data)
        if len(self.chunks) == 1:
            self.transport.pause_reading()
            self.reading.append(self.transport.is_reading())
            self.first.set_result(None)
        for total, fut in self.waiters:
            if not fut.done() and sum(map(len, self.chunks)) >= total:
                fut.set_result(None)

    def wait_for(self, total):
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append((total, fut))
        if sum(map(len, self.chunks)) >= total:
            fut.set_result(None)
        return fut


def test_pause_reading(loop, tls):
    """While the app has paused reading, no data_received runs however much
    the peer sends; after resume_reading everything arrives, in order."""
    more = _payload(12, 200_000)

    async def main():
        receivers = []

        def factory():
            receivers.append(_PausingReceiver(loop))
            return receivers[-1]

        ep = Endpoint("tcp", None)
        server = await ep.create_server(loop, factory, ssl=tls.server_context())
        try:
            tr, proto = await ep.create_connection(
                loop, lambda: RecordingProtocol(loop), ssl=tls.client_context()
            )
            tr.write(b"first")
            await receivers[0].first
            rcv = receivers[0]
            tr.write(more)
            for _ in range(20):
                await asyncio.sleep(0.01)
            paused_chunks = len(rcv.chunks)
            rcv.transport.resume_reading()
            rcv.reading.append(rcv.transport.is_reading())
            await rcv.wait_for(5 + len(more))
            tr.close()
            await proto.lost
        finally:
            await _close_server(server)
        return paused_chunks, b"".join(rcv.chunks), rcv.reading

    paused_chunks, data, reading = run(loop, main(), timeout=15)
    assert paused_chunks == 1
    assert data == b"first" + more
    assert reading == [False, True]


def test_write_flow_control(loop, tls):
    """Large writes to a peer that has paused reading: pause_writing once the
    app-level buffer (asyncio counts the SSL buffers, not the socket
    transport's) passes the high mark, resume_writing when it drains,
    strictly alternating; the buffer ends empty and every byte arrives."""
    chunk = _payload(13, 256 * 1024)
    count = 16

    async def main():
        receivers = []

        def factory():
            receivers.append(_PausingReceiver(loop))
            return receivers[-1]

        ep = Endpoint("tcp", None)
        server = await ep.create_server(loop, factory, ssl=tls.server_context())
        try:
            tr, proto = await ep.create_connection(
                loop, lambda: RecordingProtocol(loop), ssl=tls.client_context()
            )
            tr.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            tr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
            limits = tr.get_write_buffer_limits()
            tr.write(b"x")
            await receivers[0].first  # the server now has reading paused
            sizes = []
            for i in range(count):
                tr.write(chunk)
                sizes.append(tr.get_write_buffer_size())
            first_events = [e[0] for e in proto.events if e[0] in ("pause", "resume")]
            await asyncio.sleep(0.05)
            receivers[0].transport.resume_reading()
            await receivers[0].wait_for(1 + count * len(chunk))
            for _ in range(100):
                if tr.get_write_buffer_size() == 0:
                    break
                await asyncio.sleep(0.01)
            events = [e[0] for e in proto.events if e[0] in ("pause", "resume")]
            final_size = tr.get_write_buffer_size()
            data = b"".join(receivers[0].chunks)
            tr.close()
            await proto.lost
        finally:
            await _close_server(server)
        return limits, sizes, first_events, events, final_size, data

    limits, sizes, first_events, events, final_size, data = run(loop, main(), timeout=30)
    assert limits == (16 * 1024, 64 * 1024)
    # While the socket transport holds the first chunk, the rest stays in
    # the SSL buffers: the app is paused at once, and only once.
    assert sizes[-1] > 64 * 1024
    assert first_events == ["pause"]
    assert events[0] == "pause" and events[-1] == "resume"
    assert all(a != b for a, b in itertools.pairwise(events))  # strictly alternating
    assert final_size == 0
    assert data == b"x" + chunk * count


def test_set_protocol_mid_stream(loop, tls):
    """The app protocol is swapped (to a BufferedProtocol, then back to a
    plain one) between messages; each gets exactly the data sent after the
    switch."""

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(1000)
            self.data = bytearray()

        def get_buffer(self, sizehint):
            return memoryview(self.buf)

        def buffer_updated(self, nbytes):
            self.data += self.buf[:nbytes]

    async def main():
        server_log = []
        ep = Endpoint("tcp", None)
        server = await ep.create_server(
            loop, lambda: EchoServerProtocol(loop, server_log), ssl=tls.server_context()
        )
        try:
            tr, first = await ep.create_connection(
                loop, lambda: RecordingProtocol(loop), ssl=tls.client_context()
            )
            tr.write(b"one")
            await first.wait_for_data(3)
            second = Buffered()
            tr.set_protocol(second)
            assert tr.get_protocol() is second
            tr.write(b"two" * 1000)
            while len(second.data) < 3000:
                await asyncio.sleep(0.01)
            third = RecordingProtocol(loop)
            tr.set_protocol(third)
            tr.write(b"three")
            await third.wait_for_data(5)
            tr.close()
            await third.lost
        finally:
            await _close_server(server)
        return first.data(), bytes(second.data), third.data()

    assert run(loop, main()) == (b"one", b"two" * 1000, b"three")


# --------------------------------------------------------------------------
# ciphertext cut at arbitrary byte boundaries
# --------------------------------------------------------------------------

# Cut sizes: single bytes (inside a record header), odd sizes, one byte more
# than a full TLS record (16 KiB of plaintext plus overhead), and more.
_CUTS = (1, 2, 3, 5, 13, 100, 517, 1500, 4096, 16384 + 22, 16384 + 23, 20000)


async def _cutting_pump(reader, writer, rng):
    """Forward everything from ``reader`` to ``writer`` in pieces of
    ``_CUTS`` sizes, often pausing so that the peer reads each piece on its
    own."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            while data:
                n = rng.choice(_CUTS)
                writer.write(data[:n])
                data = data[n:]
                await writer.drain()
                await asyncio.sleep(0.001 if rng.random() < 0.6 else 0)
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.mark.parametrize("app", ["protocol", "buffered", "streams"])
def test_ciphertext_cut_at_arbitrary_boundaries(loop, tls, app):
    """Records split anywhere (in the header, in the body, one byte into the
    next record) reach both TLS ends through a plain TCP proxy that forwards
    the ciphertext in pieces of arbitrary sizes; every echo comes back
    whole, for a plain, a buffered and a streams app protocol."""
    messages = [
        _payload(20 + i, size) for i, size in enumerate((1, 1000, 16384, 16385, 40_000, 100_000))
    ]

    async def main():
        rng = random.Random(1234)
        servers = []
        if app == "streams":
            upstream = await asyncio.start_server(
                _echo_handler, "127.0.0.1", 0, ssl=tls.server_context()
            )
        else:

            def factory():
                if app == "buffered":
                    servers.append(_BufferedEcho(loop, 4096))
                else:
                    servers.append(EchoServerProtocol(loop, []))
                return servers[-1]

            upstream = await loop.create_server(factory, "127.0.0.1", 0, ssl=tls.server_context())
        up_port = upstream.sockets[0].getsockname()[1]
        pumps = []

        async def proxy(reader, writer):
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", up_port)
            pumps.append(asyncio.ensure_future(_cutting_pump(reader, up_writer, rng)))
            pumps.append(asyncio.ensure_future(_cutting_pump(up_reader, writer, rng)))

        proxy_server = await asyncio.start_server(proxy, "127.0.0.1", 0)
        try:
            tr, proto = await loop.create_connection(
                lambda: RecordingProtocol(loop),
                "127.0.0.1",
                proxy_server.sockets[0].getsockname()[1],
                ssl=tls.client_context(),
                server_hostname=SERVER_HOSTNAME,
            )
            expected = 0
            for message in messages:
                tr.write(message)
                expected += len(message)
                await proto.wait_for_data(expected)
            tr.close()
            lost = await proto.lost
            await asyncio.wait_for(asyncio.gather(*pumps), 10)
        finally:
            await _close_server(proxy_server)
            await _close_server(upstream)
        return proto.data(), lost

    data, lost = run(loop, main(), timeout=30)
    assert hashlib.sha256(data).digest() == hashlib.sha256(b"".join(messages)).digest()
    assert lost is None


# --------------------------------------------------------------------------
# the protocol's attributes (slots on tokioloop, 3.11+) behave as plain ones
# --------------------------------------------------------------------------


def _tls_protocol_class(loop, tls):
    """The ``SSLProtocol`` class ``loop`` runs TLS connections with."""

    async def main():
        server = await loop.create_server(
            lambda: EchoServerProtocol(loop, []), "127.0.0.1", 0, ssl=tls.server_context()
        )
        try:
            tr, proto = await loop.create_connection(
                lambda: RecordingProtocol(loop),
                "127.0.0.1",
                server.sockets[0].getsockname()[1],
                ssl=tls.client_context(),
                server_hostname=SERVER_HOSTNAME,
            )
            cls = type(tr._ssl_protocol)
            tr.close()
            await proto.lost
        finally:
            await _close_server(server)
        return cls

    return run(loop, main())


# asyncio's SSLProtocol attributes that tokioloop keeps in __slots__ (3.11+).
_SLOT_NAMES = (
    "_state",
    "_app_transport",
    "_ssl_buffer",
    "_ssl_buffer_view",
    "_incoming",
    "_outgoing",
    "_sslobj",
    "_transport",
    "_app_protocol",
    "_app_reading_paused",
    "_app_protocol_is_buffer",
    "_write_backlog",
    "_write_buffer_size",
    "_ssl_writing_paused",
    "_app_writing_paused",
    "_ssl_reading_paused",
    "_outgoing_high_water",
    "_outgoing_low_water",
    "_incoming_high_water",
    "_incoming_low_water",
)


@pytest.mark.skipif(not PY311, reason="3.10's asyncio SSLProtocol has other attributes")
def test_protocol_attributes_get_set_delete(loop, loop_kind, tls):
    cls = _tls_protocol_class(loop, tls)
    if loop_kind == "tokioloop" and PY311:
        from tokioloop._tokioloop import SSLProtocolCore

        assert tuple(SSLProtocolCore._tl_slots) == _SLOT_NAMES
        assert set(_SLOT_NAMES) <= set(cls.__slots__)
    proto = cls(
        loop, asyncio.Protocol(), tls.client_context(), None, server_hostname=SERVER_HOSTNAME
    )
    outcomes = []
    for name in (*_SLOT_NAMES, "_loop", "_tl_test_extra"):
        had = hasattr(proto, name)
        before = getattr(proto, name, None)
        marker = object()
        setattr(proto, name, marker)
        assert getattr(proto, name) is marker
        delattr(proto, name)
        assert not hasattr(proto, name)
        with pytest.raises(AttributeError) as info:
            getattr(proto, name)
        assert name in str(info.value)
        with pytest.raises(AttributeError):
            delattr(proto, name)
        setattr(proto, name, before)
        assert getattr(proto, name) is before
        outcomes.append((name, had))
    # Set in __init__ exactly where asyncio sets them (all but the extra name).
    assert [name for name, had in outcomes if not had] == ["_tl_test_extra"]
    proto._transport = None
    proto._app_transport = None


def test_protocol_attribute_changes_reach_native_paths(loop, loop_kind, tls):
    """Pausing the app's reading through the attribute asyncio uses for it
    (now a slot on tokioloop) holds the data back until it is resumed."""

    async def main():
        server = await loop.create_server(
            lambda: EchoServerProtocol(loop, []), "127.0.0.1", 0, ssl=tls.server_context()
        )
        try:
            tr, proto = await loop.create_connection(
                lambda: RecordingProtocol(loop),
                "127.0.0.1",
                server.sockets[0].getsockname()[1],
                ssl=tls.client_context(),
                server_hostname=SERVER_HOSTNAME,
            )
            tr.write(b"first")
            await proto.wait_for_data(5)
            tr.pause_reading()
            tr.write(b"second")
            await asyncio.sleep(0.2)
            held = proto.data()
            tr.resume_reading()
            await proto.wait_for_data(11)
            tr.close()
            await proto.lost
        finally:
            await _close_server(server)
        return held, proto.data()

    held, data = run(loop, main())
    assert held == b"first"
    assert data == b"firstsecond"
