"""The process-wide checks tokioloop makes once, on first use, raced from
several threads.

Some of those checks run Python code that releases the GIL (the socket
layout check closes a probe socket). Behind a plain `std::sync::OnceLock`
that deadlocked: the checking thread waited for the GIL, which a second
thread held while it waited for the check (seen as httpx's suite hanging,
its test server's loop in one thread and a client's in another). Each
race runs in a fresh interpreter, where the checks have not run yet,
under a time limit.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

RACE = """
import asyncio
import socket
import threading

import tokioloop

THREADS = 8
barrier = threading.Barrier(THREADS)
results = []


async def exchange():
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        await loop.sock_sendall(a, b"x")
        return await loop.sock_recv(b, 1)


def first_use():
    barrier.wait()
    results.append(FIRST_USE)


threads = [threading.Thread(target=first_use) for _ in range(THREADS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert len(results) == THREADS, results
print("ok")
"""

FIRST_USES = {
    # The socket layout check alone.
    "socket layout": "tokioloop._tokioloop._reads_socket_fields()",
    # A loop per thread: its callbacks (the context layout checks) and its
    # socket waits (the socket layout check, through its users).
    "loops": "tokioloop.run(exchange())",
}


@pytest.mark.parametrize("first_use", list(FIRST_USES), ids=list(FIRST_USES))
def test_first_use_from_many_threads_does_not_deadlock(first_use):
    code = RACE.replace("FIRST_USE", FIRST_USES[first_use])
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=20
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ok"
