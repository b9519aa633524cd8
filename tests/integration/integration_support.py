"""Helpers for the real-framework integration tests (``tests/integration``).

Named ``integration_support`` (not ``support``) so it cannot clash with the
helper modules of ``tests/`` on ``sys.path``.  Everything here is
loopback-only and bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tokioloop

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"

if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))

#: Loop factories by name: ``asyncio`` is the stock reference loop, used only
#: by the differential tests that show a behaviour is asyncio's too.
LOOP_FACTORIES = {
    "asyncio": asyncio.new_event_loop,
    "tokioloop": tokioloop.new_event_loop,
}

#: What ``uvicorn --loop`` gets for each kind.
UVICORN_LOOP = {"asyncio": "asyncio", "tokioloop": "tokioloop:new_event_loop"}

#: Upper bound (seconds) for one scenario driven by :func:`run`.
TIMEOUT = 30.0


def is_tokioloop(loop) -> bool:
    return type(loop).__module__.startswith("tokioloop") and isinstance(loop, tokioloop.Loop)


def running_loop_info() -> dict:
    """Describe the running loop (the framework apps return this)."""
    loop = asyncio.get_running_loop()
    return {
        "module": type(loop).__module__,
        "name": type(loop).__qualname__,
        "is_tokioloop": is_tokioloop(loop),
    }


def assert_running_tokioloop() -> None:
    loop = asyncio.get_running_loop()
    assert is_tokioloop(loop), f"running loop is {type(loop)!r}, not tokioloop"


def assert_tokioloop_info(info: dict) -> None:
    """Assert a :func:`running_loop_info` dict (e.g. from a server) names tokioloop."""
    assert info["module"].startswith("tokioloop"), info
    assert info["is_tokioloop"] is True, info


def run(coro_fn, *args, kind: str = "tokioloop", timeout: float = TIMEOUT):
    """Run ``coro_fn(*args)`` on a fresh loop of ``kind``, bounded in time.

    On tokioloop, first asserts the coroutine really runs on tokioloop.
    """

    async def main():
        if kind == "tokioloop":
            assert_running_tokioloop()
        return await asyncio.wait_for(coro_fn(*args), timeout)

    if kind == "tokioloop":
        return tokioloop.run(main())
    if sys.version_info >= (3, 12):
        return asyncio.run(main(), loop_factory=LOOP_FACTORIES[kind])
    return asyncio.run(main())


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (bind to port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket on a free loopback port (race-free hand-off)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(128)
    return s


def http_request(
    port, path="/", method="GET", body=None, headers=None, timeout=10.0, host="127.0.0.1"
):
    """One blocking HTTP/1.1 request with the stdlib client: (status, headers, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(APPS), str(HERE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


class ServerProcess:
    """A server in a child interpreter; output goes to a temporary file.

    Always stopped on exit (SIGTERM, then SIGKILL after 10 s), so a failing
    test never leaks a server.
    """

    def __init__(self, args, *, env=None, pass_fds=(), cwd=None):
        self.args = [str(a) for a in args]
        self.env = env or child_env()
        self.pass_fds = tuple(pass_fds)
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        # Closed (and so removed) in __exit__.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="tokioloop-int-", suffix=".log"
        )

    def __enter__(self):
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            pass_fds=self.pass_fds,
            cwd=self.cwd,
        )
        return self

    def __exit__(self, *exc):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            self._log.close()

    def output(self) -> str:
        with open(self._log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_http(self, port, path="/", timeout=30.0, host="127.0.0.1"):
        """Poll until the server answers ``path`` with any HTTP status."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                return http_request(port, path, timeout=2.0, host=host)
            except OSError as e:  # not listening yet
                last = e
                time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s ({last!r}):\n{self.output()}")

    def wait_tcp(self, port, timeout=30.0, host="127.0.0.1"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), 1.0):
                return
            time.sleep(0.05)
        raise AssertionError(f"server not listening after {timeout}s:\n{self.output()}")

    def wait_output(self, text, timeout=20.0):
        """Poll the server's output until ``text`` appears in it."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared:\n{self.output()}")
            time.sleep(0.02)

    def signal_and_wait(self, sig=signal.SIGTERM, timeout=20.0) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"server still running {timeout}s after signal {sig!r}:\n{self.output()}"
            ) from None
