"""Where the loop parks: its own epoll instance, with tokio's nested.

A tokioloop loop parks in an epoll instance of its own that holds the native
transports' sockets and tokio's reactor fd, which tokio does not expose
(``src/runtime.rs`` finds it, ``src/loop_poll.rs``). These tests check that
it is found, that a busy process creating fds on another thread does not
make a loop pick a wrong fd, and that the fallback, where the loop parks in
tokio as before, still passes the network and wake-up tests (run in a child
pytest with ``TOKIOLOOP_PARK_IN_TOKIO=1``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from loop_support import import_tokioloop, pytest_in_child

TESTS = Path(__file__).parent


def test_loop_parks_in_its_own_epoll_instance():
    tokioloop = import_tokioloop()
    loop = tokioloop.new_event_loop()
    try:
        assert loop._parks_in_own_epoll()
    finally:
        loop.close()


def echo_round_trip(loop) -> bytes:
    """Open a TCP echo server and client on `loop`, return the echo."""

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        data = await asyncio.wait_for(reader.readexactly(4), 5)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return data

    return loop.run_until_complete(main())


def test_loops_made_while_another_thread_opens_fds_work():
    # Another thread opening and closing fds as fast as it can may take the
    # fd number a loop expects for tokio's reactor; the probe must reject it
    # (and the loop retry, or park in tokio), never wait on a wrong fd.
    tokioloop = import_tokioloop()
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            a, b = socket.socketpair()
            a.close()
            b.close()

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        for _ in range(30):
            loop = tokioloop.new_event_loop()
            try:
                assert echo_round_trip(loop) == b"ping"
            finally:
                loop.close()
    finally:
        stop.set()
        thread.join(5)


FALLBACK_FILES = [
    "test_lifecycle.py",
    "test_net_protocols.py",
    "test_net_readers.py",
    "test_net_sock.py",
    "test_net_sock_waits.py",
    "test_net_streams.py",
    "test_net_transport.py",
    "test_net_udp.py",
    "test_pipes.py",
    "test_scheduling.py",
    "test_signals.py",
    "test_subprocess.py",
    "test_threads.py",
    "test_tls.py",
]


# More ready transports than one look at the instance reads (256): in the
# fallback, tokio reports the instance edge-triggered, so what the first
# look leaves must be read without a new report.
MANY_READY = """
import asyncio, resource, socket, sys
import tokioloop
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
N = 600

class Keep(asyncio.Protocol):
    def __init__(self, fut):
        self.fut = fut
    def data_received(self, data):
        if not self.fut.done():
            self.fut.set_result(data)

async def main():
    loop = asyncio.get_running_loop()
    pairs = [socket.socketpair() for _ in range(N)]
    futs = []
    for a, _ in pairs:
        fut = loop.create_future()
        await loop.connect_accepted_socket(lambda fut=fut: Keep(fut), a)
        futs.append(fut)
    await asyncio.sleep(0.05)
    for _, b in pairs:
        b.send(b"x")
    done, _ = await asyncio.wait(futs, timeout=5)
    return len(done)

loop = tokioloop.new_event_loop()
print(loop._parks_in_own_epoll(), loop.run_until_complete(main()))
"""


@pytest.mark.parametrize("park_in_tokio", ["", "1"])
def test_more_ready_transports_than_one_poll_reads(park_in_tokio):
    env = dict(os.environ, TOKIOLOOP_PARK_IN_TOKIO=park_in_tokio)
    proc = subprocess.run(
        [sys.executable, "-c", MANY_READY],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(not park_in_tokio), "600"]


@pytest.mark.timeout(600)
def test_network_and_wakeup_tests_pass_when_the_loop_parks_in_tokio():
    env = dict(os.environ, TOKIOLOOP_PARK_IN_TOKIO="1")
    code = "import tokioloop; lp = tokioloop.new_event_loop(); print(lp._parks_in_own_epoll())"
    probe = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert probe.stdout.strip() == "False"
    pytest_in_child(FALLBACK_FILES, env, 580)
