"""os.fork() in a process that has a loop (differential).

Each scenario runs in a fresh interpreter (a helper script), not in the
pytest process: pytest may have threads (executors, child watchers) and a
fork there would copy its whole state.  In the helper, the parent builds a
loop of the kind under test and forks (before ever running it, after running
it, or from inside a callback/task while it runs).  The child always ends
with ``os._exit``: it builds a *new* loop of the same kind, runs timers, a
socketpair echo and a streams round trip on it, and exits 0 only if all of
them gave the right results.  The parent keeps using its own loop meanwhile,
then reaps the child with a deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from loop_support import child_prelude

SCRIPT = r"""
import asyncio, json, os, signal, socket, sys, time, traceback

SCENARIO = sys.argv[1]
KIND = sys.argv[2]
EXPECTED = {"order": [1, 2, 3], "slept": True, "echo": True, "streams": True}


async def work(lp, tag):
    # Timers fire in deadline order, and sleeping takes as long as asked.
    order = []
    done = lp.create_future()
    for delay, value in ((0.03, 3), (0.01, 1), (0.02, 2)):
        lp.call_later(delay, order.append, value)
    lp.call_later(0.04, done.set_result, None)
    await done
    t0 = time.monotonic()
    await asyncio.sleep(0.05)
    slept = time.monotonic() - t0 >= 0.045

    # Raw-socket echo over a socketpair (sock_* API).
    payload = tag.encode() * 50_000
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        async def echo():
            n = 0
            while n < len(payload):
                data = await lp.sock_recv(b, 65536)
                if not data:
                    break
                await lp.sock_sendall(b, data)
                n += len(data)

        task = lp.create_task(echo())
        sender = lp.create_task(lp.sock_sendall(a, payload))
        got = bytearray()
        while len(got) < len(payload):
            got += await lp.sock_recv(a, 65536)
        await sender
        await task
    finally:
        a.close()
        b.close()

    # Streams (transports) over another socketpair.
    c, d = socket.socketpair()
    r1, w1 = await asyncio.open_connection(sock=c)
    r2, w2 = await asyncio.open_connection(sock=d)
    try:
        w1.write(payload)
        w1.write_eof()
        received = await r2.read()
        w2.write(received[::-1])
        w2.write_eof()
        back = await r1.read()
    finally:
        for w in (w1, w2):
            w.close()
            await w.wait_closed()
    return {
        "order": order,
        "slept": slept,
        "echo": bytes(got) == payload,
        "streams": back == payload[::-1],
    }


def child():
    code = 1
    try:
        if sys.version_info < (3, 12):
            # 3.12+ forgets the parent's running loop at fork (gh-66285);
            # before that the child has to, to run a loop of its own.
            asyncio.events._set_running_loop(None)
        lp = factory()
        try:
            kind_ok = (type(lp).__module__.split(".")[0] == "tokioloop") == (KIND == "tokioloop")
            res = lp.run_until_complete(asyncio.wait_for(work(lp, "child"), 10))
        finally:
            lp.close()
        code = 0 if (res == EXPECTED and kind_ok) else 3
        if code:
            print("child:", res, kind_ok, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 2
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


async def reap(pid, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        await asyncio.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "timeout"


def fork_or_child():
    pid = os.fork()
    if pid == 0:
        child()  # never returns
    return pid


def main():
    lp = factory()
    asyncio.set_event_loop(lp)
    out = {}
    try:
        if SCENARIO == "fresh":
            pid = fork_or_child()
        elif SCENARIO == "idle":
            out["before"] = lp.run_until_complete(work(lp, "before"))
            pid = fork_or_child()
        elif SCENARIO in ("in-callback", "in-task"):
            async def fork_while_running():
                # Keep the loop busy with a timer and a pending read around the fork.
                r, w = socket.socketpair()
                r.setblocking(False)
                pending_read = lp.create_task(lp.sock_recv(r, 10))
                ticks = []
                handle = lp.call_later(0.02, ticks.append, "tick")
                await asyncio.sleep(0)
                if SCENARIO == "in-callback":
                    forked = lp.create_future()
                    lp.call_soon(lambda: forked.set_result(fork_or_child()))
                    pid = await forked
                else:
                    pid = fork_or_child()
                w.send(b"after")
                data = await pending_read
                await asyncio.sleep(0.03)
                handle.cancel()
                r.close()
                w.close()
                return pid, {"read": data.decode(), "ticks": ticks}

            pid, out["around"] = lp.run_until_complete(fork_while_running())
        else:
            raise AssertionError(SCENARIO)
        out["parent"] = lp.run_until_complete(asyncio.wait_for(work(lp, "parent"), 10))
        out["child"] = lp.run_until_complete(reap(pid))
    finally:
        lp.close()
    print(json.dumps(out))


main()
"""

SCENARIOS = ["fresh", "idle", "in-callback", "in-task"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_fork_child_runs_new_loop(loop_kind, scenario):
    code = child_prelude(loop_kind) + SCRIPT
    proc = subprocess.run(
        [sys.executable, "-c", code, scenario, loop_kind],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # Nothing on stderr: no child traceback, no warning (e.g. 3.12+ warns when
    # a process with threads forks).
    assert proc.stderr == ""
    out = json.loads(proc.stdout)
    expected_work = {"order": [1, 2, 3], "slept": True, "echo": True, "streams": True}
    assert out["child"] == 0
    assert out["parent"] == expected_work
    if scenario == "idle":
        assert out["before"] == expected_work
    if scenario in ("in-callback", "in-task"):
        assert out["around"] == {"read": "after", "ticks": ["tick"]}
