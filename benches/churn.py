"""Server instructions per *connection*: accept, a 100-byte echo, close.

Each loop's echo server (an `asyncio.Protocol`) runs under valgrind's
callgrind twice, once for `--small` and once for `--large` connections made
one after another by a plain blocking client in this process; the difference
of the two totals divided by the difference of the counts is the cost of one
connection, without interpreter start-up. Instructions, not time: syscalls
and cache misses are not weighed (see benches/README.md).

    .venv/bin/python benches/churn.py [--loops tokioloop,uvloop,rloop,asyncio]
        [--small 500] [--large 2500]

With ``--client`` the loop under test is the *client* instead: it makes
the connections one after another (``create_connection`` to 127.0.0.1, a
100-byte echo, ``close()``) against a plain blocking echo server in this
process, and the figure is the client's instructions per connection.

With ``--cpu`` the servers run without valgrind and the figure is server
CPU time per connection (utime+stime from /proc, syscalls included) over
``--large`` connections after ``--small`` of warm-up, loops interleaved
over ``--rounds`` rounds, median shown:

    .venv/bin/python benches/churn.py --cpu [--rounds 5]
    .venv/bin/python benches/churn.py --client [--loops ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from _netproc import cpu_us

MESSAGE = b"x" * 100


def new_loop(loop_name: str) -> asyncio.AbstractEventLoop:
    if loop_name == "asyncio":
        return asyncio.new_event_loop()
    return __import__(loop_name).new_event_loop()


@contextlib.contextmanager
def echo_server(command: list[str], **popen_options):
    """Start `command` (a `--serve` run of this script, maybe under
    valgrind); yield it and the port it printed; kill it if it is still
    running afterwards."""
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, **popen_options)
    try:
        yield server, int(server.stdout.readline())
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def serve(loop_name: str, conns: int) -> None:
    """Echo server that exits after `conns` connections; prints its port."""
    loop = new_loop(loop_name)

    async def main():
        done = loop.create_future()
        lost = 0

        class Echo(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                self.transport.write(data)

            def connection_lost(self, exc):
                nonlocal lost
                lost += 1
                if lost == conns:
                    done.set_result(None)

        server = await loop.create_server(Echo, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await done
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    loop.close()


def connect_many(port: int, conns: int) -> None:
    for _ in range(conns):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(MESSAGE)
            got = b""
            while len(got) < len(MESSAGE):
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError("server closed early")
                got += chunk


def connect_loop(loop_name: str, port: int, conns: int) -> None:
    """Client on `loop_name`: `conns` connections one after another, each a
    create_connection, a 100-byte echo and close()."""
    loop = new_loop(loop_name)

    class Client(asyncio.Protocol):
        def __init__(self, done):
            self.done = done
            self.got = 0

        def connection_made(self, transport):
            transport.write(MESSAGE)

        def data_received(self, data):
            self.got += len(data)
            if self.got >= len(MESSAGE):
                self.done.set_result(None)

    async def main():
        for _ in range(conns):
            done = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda done=done: Client(done), "127.0.0.1", port
            )
            await done
            transport.close()

    loop.run_until_complete(main())
    loop.close()


def blocking_echo_server() -> int:
    """A thread echoing one message per connection until the peer closes;
    returns the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)

    def serve_forever():
        while True:
            conn, _ = listener.accept()
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

    threading.Thread(target=serve_forever, daemon=True).start()
    return listener.getsockname()[1]


def instructions(loop_name: str, conns: int, tmp: str, client: bool = False) -> int:
    out = os.path.join(tmp, f"cg.{loop_name}.{conns}")
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    script = [sys.executable, os.path.abspath(__file__)]
    if client:
        port = blocking_echo_server()
        command = [*valgrind, *script, "--connect", loop_name, str(port), str(conns)]
        subprocess.run(command, stderr=subprocess.DEVNULL, check=True, timeout=300)
    else:
        command = [*valgrind, *script, "--serve", loop_name, str(conns)]
        with echo_server(command, stderr=subprocess.DEVNULL) as (server, port):
            connect_many(port, conns)
            server.wait(timeout=300)
    with open(out) as f:
        for line in f:
            m = re.match(r"(?:summary|totals): (\d+)", line)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"no totals in {out}")


def cpu_per_connection(loop_name: str, warm: int, conns: int) -> float:
    """Server CPU µs per connection over `conns` connections, after `warm`."""
    command = [sys.executable, os.path.abspath(__file__), "--serve", loop_name, str(warm + conns)]
    with echo_server(command) as (server, port):
        connect_many(port, warm)
        before = cpu_us(server.pid)
        connect_many(port, conns)
        after = cpu_us(server.pid)
        server.wait(timeout=60)
    return (after - before) / conns


def main_cpu(loops: list[str], warm: int, conns: int, rounds: int) -> None:
    print(
        f"protocol echo, one 100-byte request per connection: server CPU µs/connection "
        f"(median of {rounds} rounds of {conns} connections, loops interleaved)"
    )
    results = {name: [] for name in loops}
    for _ in range(rounds):
        for name in loops:
            results[name].append(cpu_per_connection(name, warm, conns))
    for name in loops:
        runs = ", ".join(f"{v:.1f}" for v in results[name])
        print(f"  {name:10s} {statistics.median(results[name]):7.1f}   ({runs})", flush=True)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "--connect":
        connect_loop(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", default="tokioloop,uvloop,rloop,asyncio")
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=2500)
    parser.add_argument("--cpu", action="store_true", help="CPU time, not instructions")
    parser.add_argument("--client", action="store_true", help="measure the client side")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.cpu:
        main_cpu(args.loops.split(","), args.small, args.large, args.rounds)
        return 0
    side = "client" if args.client else "server"
    print(
        f"protocol echo, one 100-byte request per connection: {side} instructions/connection "
        f"({args.large} - {args.small} connections)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.loops.split(","):
            t = time.monotonic()
            small = instructions(name, args.small, tmp, args.client)
            large = instructions(name, args.large, tmp, args.client)
            per = (large - small) / (args.large - args.small)
            print(f"  {name:10s} {per:10,.0f}   ({time.monotonic() - t:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
