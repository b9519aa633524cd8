"""Differential fuzzer for tokioloop's network objects, run by hand.

    .venv/bin/python scripts/fuzz_net.py {stream,unix,tls,udp,sock,server} FIRST_SEED LAST_SEED

Each seed generates a random sequence of operations on one kind of object
(a TCP stream transport pair, the same over a Unix socket or TLS, a UDP endpoint pair, a
socket pair driven by ``sock_*`` calls, or a server whose clients come and
go while it starts and stops serving and closes), runs it twice on stock asyncio and
once on tokioloop, and prints every seed whose tokioloop observations
differ from asyncio's. A seed whose two asyncio runs disagree depends on
timing and is skipped; one explained by a known stock bug (``STOCK_BUGS``)
is counted, not printed. What is observed: the exceptions the calls raise,
the protocol callbacks per side (in order), the state the transport
reports, and how many bytes of what arrived.

Not part of the test command: a difference can still be timing (how much a
peer read before a reset, for instance), so each one needs reading. What
it found so far is tested in tests/ (writelines after write_eof or after a
lost connection; the retry of a short sock_sendall).
"""

from __future__ import annotations

import asyncio
import faulthandler
import hashlib
import os
import random
import socket
import ssl
import sys
import tempfile

import tokioloop

STREAM_OPS = (
    "write",
    "writelines",
    "big",
    "pause",
    "resume",
    "sleep",
    "eof",
    "peer_pause",
    "peer_resume",
)


class Recorder(asyncio.Protocol):
    """A stream protocol that logs its callbacks; echoes if asked to."""

    def __init__(self, side, log, *, echo=False, keep_open_on_eof=False):
        self.side, self.log = side, log
        self.echo, self.keep_open_on_eof = echo, keep_open_on_eof
        self.data = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.log.append((self.side, "made"))

    def data_received(self, data):
        self.data += data
        if self.echo and not self.transport.is_closing():
            self.transport.write(data)

    def eof_received(self):
        self.log.append((self.side, "eof", len(self.data)))
        return self.keep_open_on_eof

    def connection_lost(self, exc):
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            # Which of the two a reset peer shows first, and how much was
            # read before it, is timing (and read sizes).
            self.log.append((self.side, "lost", "reset"))
        else:
            digest = hashlib.md5(self.data).hexdigest()[:8]
            error = type(exc).__name__ if exc else None
            self.log.append((self.side, "lost", error, len(self.data), digest))
        if not self.done.done():
            self.done.set_result(None)


async def stream_scenario(seed, tls=None, unix=False):
    """Random writes, pauses and half-closes on a client transport, against
    a server that may echo; then close or abort, and wait for both ends.
    Over TCP, or a Unix socket with ``unix``."""
    rnd = random.Random(seed)
    loop = asyncio.get_running_loop()
    log, servers = [], []
    echo = rnd.random() < 0.6

    def server_protocol():
        protocol = Recorder("server", log, echo=echo, keep_open_on_eof=rnd.random() < 0.5)
        servers.append(protocol)
        return protocol

    server_ssl, client_ssl = tls or (None, None)
    if unix:
        scratch = tempfile.TemporaryDirectory()
        path = os.path.join(scratch.name, "s")
        server = await loop.create_unix_server(server_protocol, path)
        transport, client = await loop.create_unix_connection(lambda: Recorder("client", log), path)
    else:
        server = await loop.create_server(server_protocol, "127.0.0.1", 0, ssl=server_ssl)
        port = server.sockets[0].getsockname()[1]
        transport, client = await loop.create_connection(
            lambda: Recorder("client", log),
            "127.0.0.1",
            port,
            ssl=client_ssl,
            server_hostname="localhost" if tls else None,
        )

    def peer_transport():
        # The server's end, once connection_made has run (after the TLS
        # handshake with ssl).
        return getattr(servers[0], "transport", None) if servers else None

    for _ in range(rnd.randint(1, 12)):
        op = rnd.choice(STREAM_OPS)
        try:
            if op == "write":
                transport.write(bytes([rnd.randint(97, 122)]) * rnd.randint(1, 5000))
            elif op == "writelines":
                transport.writelines(
                    [b"a" * rnd.randint(0, 100), bytearray(b"b" * 50), memoryview(b"c" * 10)]
                )
            elif op == "big":
                transport.write(b"z" * rnd.randint(100_000, 2_000_000))
            elif op == "pause":
                transport.pause_reading()
            elif op == "resume":
                transport.resume_reading()
            elif op == "sleep":
                await asyncio.sleep(rnd.choice([0, 0.001, 0.01]))
            elif op == "eof":
                transport.write_eof()
            elif op == "peer_pause" and peer_transport():
                peer_transport().pause_reading()
            elif op == "peer_resume" and peer_transport():
                peer_transport().resume_reading()
        except Exception as exc:  # noqa: BLE001 (what it raises is the observation)
            log.append(("client", op, "raised", type(exc).__name__, str(exc)))
        log.append(("client", op, transport.is_closing(), transport.is_reading()))
    if peer_transport():
        peer_transport().resume_reading()
    transport.resume_reading()
    ending = rnd.choice(["close", "abort"])
    getattr(transport, ending)()
    log.append(("client", ending, transport.is_closing()))
    await await_lost([client, *servers], 10, abort=True)
    server.close()
    await asyncio.wait_for(server.wait_closed(), 10)
    if unix:
        scratch.cleanup()
    # The two ends interleave by timing: compare each side's own sequence.
    return [e for e in log if e[0] == "client"], [e for e in log if e[0] == "server"]


class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self, side, log):
        self.side, self.log = side, log

    def connection_made(self, transport):
        self.log.append((self.side, "made"))

    def datagram_received(self, data, addr):
        self.log.append((self.side, "datagram", len(data), addr[0]))

    def error_received(self, exc):
        self.log.append((self.side, "error", type(exc).__name__, getattr(exc, "errno", None)))

    def connection_lost(self, exc):
        self.log.append((self.side, "lost", type(exc).__name__ if exc else None))


async def udp_scenario(seed, dead_port):
    """Random sends (too large, wrong types, bad and unreachable addresses)
    from a connected or unconnected endpoint, before and after close."""
    rnd = random.Random(seed)
    loop = asyncio.get_running_loop()
    log = []
    server, _ = await loop.create_datagram_endpoint(
        lambda: DatagramRecorder("server", log), local_addr=("127.0.0.1", 0)
    )
    address = server.get_extra_info("sockname")
    connected = rnd.random() < 0.5
    if connected:
        remote = address if rnd.random() < 0.7 else ("127.0.0.1", dead_port)
        client, _ = await loop.create_datagram_endpoint(
            lambda: DatagramRecorder("client", log), remote_addr=remote
        )
        target = None
    else:
        client, _ = await loop.create_datagram_endpoint(
            lambda: DatagramRecorder("client", log), local_addr=("127.0.0.1", 0)
        )
        target = address
    sends = {
        "small": lambda: client.sendto(b"x" * rnd.randint(1, 1000), target),
        "addressed": lambda: client.sendto(b"y", address),
        "large": lambda: client.sendto(b"b" * 60_000, target),
        "too_large": lambda: client.sendto(b"h" * 70_000, target),
        "int": lambda: client.sendto(12345, target),
        "str": lambda: client.sendto("text", target),
        "bad_address": lambda: client.sendto(b"z", ("not-an-ip", "x")),
        "unreachable": lambda: client.sendto(b"d", ("127.0.0.1", dead_port)),
        "empty": lambda: client.sendto(b"", target),
        "close": client.close,
    }
    for _ in range(rnd.randint(1, 10)):
        op = rnd.choice([*sends, "sleep"])
        try:
            if op == "sleep":
                await asyncio.sleep(rnd.choice([0, 0.001, 0.01]))
            else:
                sends[op]()
        except Exception as exc:  # noqa: BLE001
            log.append(("client", op, "raised", type(exc).__name__, str(exc)))
        log.append(("client", op, client.is_closing(), client.get_write_buffer_size()))
    await asyncio.sleep(0.02)
    client.close()
    server.close()
    await asyncio.sleep(0.01)
    return [e for e in log if e[0] == "client"], sorted(
        (e for e in log if e[0] == "server"), key=str
    )


SOCK_OPS = (
    "send",
    "send_big",
    "send_cancelled",
    "recv",
    "recv_into",
    "recv_cancelled",
    "sleep",
    "peer_send",
    "shut_write",
    "settle",
)


async def sock_scenario(seed):
    """Random sock_sendall/sock_recv/sock_recv_into calls on a socket pair,
    some cancelled, some left waiting; one receive waits at a time (asyncio
    serves only the last of several on one socket)."""
    rnd = random.Random(seed)
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    log, received, pending = [], bytearray(), []

    async def settle(timeout):
        for name, task in pending:
            try:
                result = await asyncio.wait_for(task, timeout)
                if isinstance(result, bytes):
                    received.extend(result)
                log.append((name, "done"))
            except Exception as exc:  # noqa: BLE001
                log.append((name, type(exc).__name__))
        pending.clear()

    async def recv_into():
        buffer = bytearray(5000)
        return bytes(buffer[: await loop.sock_recv_into(b, buffer)])

    for _ in range(rnd.randint(1, 14)):
        op = rnd.choice(SOCK_OPS)
        if op.startswith("recv") and any(name.startswith("recv") for name, _ in pending):
            op = "settle"
        try:
            if op == "send":
                await asyncio.wait_for(loop.sock_sendall(a, b"s" * rnd.randint(1, 3000)), 1)
            elif op == "send_big":
                pending.append((op, asyncio.ensure_future(loop.sock_sendall(a, b"B" * 3_000_000))))
            elif op == "send_cancelled":
                task = asyncio.ensure_future(loop.sock_sendall(a, b"C" * 3_000_000))
                await asyncio.sleep(0)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                log.append((op, task.cancelled()))
            elif op == "recv":
                pending.append((op, asyncio.ensure_future(loop.sock_recv(b, 1 << 20))))
            elif op == "recv_into":
                pending.append((op, asyncio.ensure_future(recv_into())))
            elif op == "recv_cancelled":
                task = asyncio.ensure_future(loop.sock_recv(b, 100))
                await asyncio.sleep(0)
                task.cancel()
                (result,) = await asyncio.gather(task, return_exceptions=True)
                if isinstance(result, bytes):
                    received.extend(result)
                log.append((op, task.cancelled()))
            elif op == "sleep":
                await asyncio.sleep(rnd.choice([0, 0.001]))
            elif op == "peer_send":
                b.send(b"p" * 10)
            elif op == "shut_write":
                a.shutdown(socket.SHUT_WR)
            elif op == "settle":
                await settle(2)
        except Exception as exc:  # noqa: BLE001
            log.append((op, "raised", type(exc).__name__, str(exc)))
    try:
        a.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    await settle(5)
    while True:
        try:
            data = await asyncio.wait_for(loop.sock_recv(b, 1 << 20), 5)
        except Exception as exc:  # noqa: BLE001
            log.append(("drain", type(exc).__name__))
            break
        if not data:
            break
        received.extend(data)
    a.close()
    b.close()
    return log, len(received), {c: received.count(c.encode()) for c in "sBC"}


SERVER_OPS = (
    "connect",
    "connect",
    "write",
    "client_close",
    "start_serving",
    "close",
    "close_clients",
    "abort_clients",
    "wait_closed",
    "serve_forever",
    "cancel_forever",
    "sleep",
)


async def outcome(awaitable, bound):
    """How an awaitable ends within ``bound`` seconds, left running if it
    does not: "returned", "pending" or the name of what it raised. (From
    3.12 on a cancelled serve_forever() waits for the server's connections
    to close, so it may still be pending.)"""
    try:
        await asyncio.wait_for(asyncio.shield(awaitable), bound)
    except asyncio.TimeoutError:
        return "pending"
    except BaseException as exc:  # noqa: BLE001
        return type(exc).__name__
    return "returned"


async def await_lost(protocols, bound, *, abort=False):
    """Waits up to ``bound`` seconds for each protocol's connection_lost;
    one that does not come is logged (and its transport aborted if asked)."""
    for protocol in protocols:
        if await outcome(protocol.done, bound) == "pending":
            protocol.log.append((protocol.side, "timeout"))
            if abort and getattr(protocol, "transport", None):
                protocol.transport.abort()


async def server_scenario(seed):
    """A server's life: clients connect, write and leave while the server
    starts and stops serving, closes, closes or aborts its clients (3.13),
    and serve_forever runs and is cancelled; then everything is closed."""
    rnd = random.Random(seed)
    loop = asyncio.get_running_loop()
    log, server_sides, clients = [], [], []

    def server_protocol():
        protocol = Recorder(f"server{len(server_sides)}", [], echo=True)
        server_sides.append(protocol)
        return protocol

    server = await loop.create_server(
        server_protocol, "127.0.0.1", 0, start_serving=rnd.random() < 0.7
    )
    port = server.sockets[0].getsockname()[1]
    forever = None
    for _ in range(rnd.randint(1, 14)):
        op = rnd.choice(SERVER_OPS)
        try:
            if op == "connect":
                connect = loop.create_connection(
                    lambda: Recorder(f"client{len(clients)}", []), "127.0.0.1", port
                )
                try:
                    _, client = await asyncio.wait_for(connect, 0.5)
                except asyncio.TimeoutError:
                    log.append((op, "timeout"))
                else:
                    clients.append(client)
                    log.append((op, "ok"))
            elif op == "write" and clients:
                rnd.choice(clients).transport.write(b"x" * rnd.randint(1, 3000))
            elif op == "client_close" and clients:
                rnd.choice(clients).transport.close()
            elif op == "start_serving":
                await server.start_serving()
            elif op in ("close", "close_clients", "abort_clients"):
                if hasattr(server, op):
                    getattr(server, op)()
            elif op == "wait_closed":
                log.append((op, await outcome(server.wait_closed(), 0.05)))
            elif op == "serve_forever" and forever is None:
                forever = asyncio.ensure_future(server.serve_forever())
                await asyncio.sleep(0)
                log.append((op, forever.done()))
            elif op == "cancel_forever" and forever is not None:
                forever.cancel()
                log.append((op, await outcome(forever, 0.2)))
                forever = None
            elif op == "sleep":
                await asyncio.sleep(rnd.choice([0, 0.01]))
        except Exception as exc:  # noqa: BLE001 (what it raises is the observation)
            log.append((op, "raised", type(exc).__name__, str(exc).replace(str(port), "PORT")))
        log.append((op, server.is_serving(), len(server.sockets or ())))
    await asyncio.sleep(0.05)
    for client in clients:
        client.transport.close()
    if forever is not None:
        forever.cancel()
        log.append(("end_forever", await outcome(forever, 0.2)))
    server.close()
    try:
        await asyncio.wait_for(server.wait_closed(), 5)
    except asyncio.TimeoutError:
        log.append(("wait_closed", "timeout"))
    await await_lost([*clients, *server_sides], 5)
    return log, [p.log for p in clients], [p.log for p in server_sides]


def tls_contexts():
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def unused_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Stock asyncio bugs that tokioloop does not copy, each with a string that
# marks it in an observation. A seed whose stock run shows one and whose
# tokioloop run does not is counted under the bug's name, not printed (so
# another difference in the same seed goes unseen).
STOCK_BUGS = {
    # An unconnected datagram endpoint's sendto() after close() reaches
    # _fatal_error with self._loop already None (seen on 3.11 and 3.13.0).
    "sendto after close": "'NoneType' object has no attribute 'call_exception_handler'",
}


def stock_bug(stock, ours):
    """The name of the known stock bug that explains a difference, if any."""
    for name, mark in STOCK_BUGS.items():
        if mark in repr(stock) and mark not in repr(ours):
            return name
    return None


def observe(run, scenario, seed):
    """One run's observations; a scenario that fails (a bounded wait that
    ran out, say) is observed as its exception."""
    try:
        return run(scenario(seed))
    except Exception as exc:  # noqa: BLE001
        return ("scenario raised", type(exc).__name__, str(exc))


def main():
    kind, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if kind == "stream":
        scenario = stream_scenario
    elif kind == "tls":
        contexts = tls_contexts()
        scenario = lambda seed: stream_scenario(seed, contexts)
    elif kind == "unix":
        scenario = lambda seed: stream_scenario(seed, unix=True)
    elif kind == "udp":
        dead_port = unused_udp_port()
        scenario = lambda seed: udp_scenario(seed, dead_port)
    elif kind == "sock":
        scenario = sock_scenario
    elif kind == "server":
        scenario = server_scenario
    else:
        sys.exit(f"unknown kind {kind!r}: stream, unix, tls, udp, sock or server")
    compared = differ = 0
    explained = dict.fromkeys(STOCK_BUGS, 0)
    for seed in range(first, last + 1):
        faulthandler.dump_traceback_later(120, exit=True)
        stock = observe(asyncio.run, scenario, seed)
        if observe(asyncio.run, scenario, seed) != stock:
            continue
        ours = observe(tokioloop.run, scenario, seed)
        faulthandler.cancel_dump_traceback_later()
        compared += 1
        if ours == stock:
            continue
        bug = stock_bug(stock, ours)
        if bug is not None:
            explained[bug] += 1
            continue
        differ += 1
        print(f"seed {seed}\n  asyncio:   {stock}\n  tokioloop: {ours}", flush=True)
    known = "".join(
        f", {n} more only by the stock bug '{bug}'" for bug, n in explained.items() if n
    )
    print(
        f"{kind}: {differ} of {compared} seeds differ{known} "
        f"({last - first + 1 - compared} skipped as timing-dependent)"
    )


if __name__ == "__main__":
    main()
