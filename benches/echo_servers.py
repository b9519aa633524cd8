"""Echo servers for the network benchmark, in three styles, on any event loop.

Usage: python benches/echo_servers.py --loop LOOP --style sock|streams|protocol
                                      (--tcp HOST:PORT | --unix PATH) [--tls PEM]

LOOP is asyncio, uvloop, rloop, tokioloop or rsloop.  The styles exercise different
layers of a loop:

- sock:     loop.sock_accept / sock_recv / sock_sendall on non-blocking
            sockets (the loop's readiness API, no transports);
- streams:  asyncio.start_server / start_unix_server, reader.read(65536),
            writer.write + drain (transports plus the pure-Python streams);
- protocol: loop.create_server / create_unix_server with an asyncio.Protocol
            whose data_received calls transport.write (transports only).

With --tls PEM (a file holding the server's private key and certificate
chain), the streams and protocol servers speak TLS: the same calls with
``ssl=`` a server SSLContext, so the loop's own TLS layer is measured.

Port 0 picks a free port.  When listening, prints ``ready ADDRESS`` (the
actual host:port, or the path) on stdout, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import socket
import ssl
import sys

LOOPS = ("asyncio", "uvloop", "rloop", "tokioloop", "rsloop")
STYLES = ("sock", "streams", "protocol")
READ_SIZE = 65536

# Strong references to the serving task / Server object for the life of the
# process (the loop itself only keeps weak references to tasks).
_KEEP: list[object] = []


# --------------------------------------------------------------------------
# sock style
# --------------------------------------------------------------------------


async def _sock_echo(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    with conn:
        try:
            while True:
                data = await loop.sock_recv(conn, READ_SIZE)
                if not data:
                    return
                await loop.sock_sendall(conn, data)
        except ConnectionError:
            pass  # the client hung up mid-echo at the end of a run


async def serve_sock(loop: asyncio.AbstractEventLoop, listener: socket.socket) -> None:
    tasks: set[asyncio.Task] = set()  # strong refs: the loop keeps only weak ones
    while True:
        conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            # Transports set TCP_NODELAY themselves; raw sockets do not, and
            # Nagle + delayed ACK would add ~40 ms stalls to small echoes.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(_sock_echo(loop, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def make_listener(tcp: tuple[str, int] | None, unix: str | None) -> socket.socket:
    if tcp is not None:
        listener = socket.create_server(tcp, backlog=128)
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(unix)
        listener.listen(128)
    listener.setblocking(False)
    return listener


# --------------------------------------------------------------------------
# streams style
# --------------------------------------------------------------------------


async def _stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass  # the client hung up mid-echo at the end of a run
    finally:
        writer.close()


# --------------------------------------------------------------------------
# protocol style
# --------------------------------------------------------------------------


class EchoProtocol(asyncio.Protocol):
    """Writes every chunk straight back; no flow control is needed because
    the closed-loop client reads the whole echo before sending again."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def server_ssl_context(pem: str) -> ssl.SSLContext:
    """Default server context (TLS 1.2+, OpenSSL's default suites) for `pem`."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pem)
    return ctx


async def start(
    loop: asyncio.AbstractEventLoop,
    style: str,
    tcp: tuple[str, int] | None,
    unix: str | None,
    tls: ssl.SSLContext | None = None,
) -> str:
    """Start serving in `style`; return the address actually listened on."""
    if style == "sock":
        listener = make_listener(tcp, unix)
        task = loop.create_task(serve_sock(loop, listener))
        _KEEP.append(task)
        sockname = listener.getsockname()
    else:
        if style == "streams":
            if tcp is not None:
                server = await asyncio.start_server(_stream_echo, *tcp, ssl=tls)
            else:
                server = await asyncio.start_unix_server(_stream_echo, unix, ssl=tls)
        elif tcp is not None:
            server = await loop.create_server(EchoProtocol, *tcp, ssl=tls)
        else:
            server = await loop.create_unix_server(EchoProtocol, unix, ssl=tls)
        _KEEP.append(server)
        sockname = server.sockets[0].getsockname()
    if tcp is not None:
        return f"{sockname[0]}:{sockname[1]}"
    return str(unix)


def install_stop_handlers(loop: asyncio.AbstractEventLoop) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, loop.stop)
        except (NotImplementedError, RuntimeError, AttributeError):
            # A loop without signal support: leave without cleanup.  The
            # runner only needs the process gone.
            signal.signal(sig, lambda *_: os._exit(0))


def parse_tcp(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=LOOPS, required=True)
    parser.add_argument("--style", choices=STYLES, required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", type=parse_tcp, metavar="HOST:PORT")
    where.add_argument("--unix", metavar="PATH")
    parser.add_argument("--tls", metavar="PEM", help="serve TLS with this key + cert chain")
    args = parser.parse_args(argv)
    if args.tls and args.style == "sock":
        parser.error("--tls needs the streams or protocol style")
    tls = server_ssl_context(args.tls) if args.tls else None

    loop = importlib.import_module(args.loop).new_event_loop()
    asyncio.set_event_loop(loop)
    address = loop.run_until_complete(start(loop, args.style, args.tcp, args.unix, tls))
    install_stop_handlers(loop)
    print(f"ready {address}", flush=True)
    try:
        loop.run_forever()
    finally:
        if args.unix:
            try:
                os.unlink(args.unix)
            except OSError:
                pass
    # Skip the loop/interpreter teardown: it is not measured, and a loop with
    # half-implemented close paths must not turn a clean stop into a hang.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
