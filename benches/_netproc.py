"""Process plumbing for benches/net.py: servers, CPU time, load clients, TLS files.

Everything here is bounded: a server gets READY_TIMEOUT seconds to print its
``ready`` line and STOP_GRACE seconds to exit after SIGTERM before it is
SIGKILLed (by PID), and every client run has a hard subprocess timeout.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

BENCHES = Path(__file__).resolve().parent
CLIENT_DIR = BENCHES / "echo_client"
CLIENT_BIN = CLIENT_DIR / "target" / "release" / "echo_client"
READY_TIMEOUT = 20.0
STOP_GRACE = 2.0
# Slack on top of a client's own run time before it is killed as hung.
CLIENT_SLACK = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Extra environment for every server and worker (net.py --server-env).
EXTRA_ENV: dict[str, str] = {}


class CellError(Exception):
    """One measurement failed; the message is the short reason shown in the table."""


def last_line(text: str, limit: int = 160) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


def cpu_us(pid: int) -> float:
    """utime+stime of process `pid` (all its threads) in µs, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # Field 2 (comm) may contain spaces; fields after the last ')' start at 3.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) * 1e6 / CLK_TCK


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    # Debug/dev mode slow the loops by very different amounts.
    for var in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE"):
        env.pop(var, None)
    env.update(EXTRA_ENV)
    return env


class RunningServer:
    """A started server: its process, the words after ``ready`` and its stderr."""

    def __init__(self, proc: subprocess.Popen, ready_words: list[str], stderr: IO[str]):
        self.proc = proc
        self.pid = proc.pid
        self.ready_words = ready_words
        self._stderr = stderr

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self) -> str:
        return _tail(self._stderr)


def _tail(stderr: IO[str]) -> str:
    stderr.seek(0)
    return last_line(stderr.read())


def _wait_ready(proc: subprocess.Popen, stderr: IO[str]) -> list[str]:
    """Words after ``ready`` on the server's stdout; CellError if it dies or stalls."""
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    fd = proc.stdout.fileno()
    pending = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CellError(f"server not ready after {READY_TIMEOUT:g}s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            proc.wait(timeout=STOP_GRACE)
            raise CellError(_tail(stderr) or f"server exited ({proc.returncode})")
        pending += chunk
        for line in pending.decode(errors="replace").splitlines():
            if line.startswith("ready"):
                return line.split()[1:]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM by PID, then SIGKILL after STOP_GRACE seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            # Some loop/framework pairs hang in their shutdown path; the
            # measurement is already taken, so do not wait for them.
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def run_json(cmd: list[str], run_seconds: float, what: str) -> dict:
    """Run a program that prints one JSON object; CellError if it fails.

    It gets `run_seconds` plus CLIENT_SLACK before it is killed as hung.
    """
    try:
        proc = subprocess.run(
            cmd,
            check=False,
            capture_output=True,
            text=True,
            timeout=run_seconds + CLIENT_SLACK,
            env=server_env(),
        )
    except subprocess.TimeoutExpired as exc:
        raise CellError(f"{what} timed out") from exc
    if proc.returncode != 0:
        raise CellError(last_line(proc.stderr) or f"{what} exit {proc.returncode}")
    return json.loads(proc.stdout)


@contextmanager
def server(argv: list[str]) -> Iterator[RunningServer]:
    """Start a server that prints ``ready ADDRESS [...]`` once listening.

    Yields once it is ready (or raises CellError with the server's last
    stderr line) and always stops it on the way out.
    """
    with tempfile.TemporaryFile(mode="w+") as stderr:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=server_env(),
            # Own session: a Ctrl-C at the terminal reaches only the runner,
            # which then stops the server itself.
            start_new_session=True,
        )
        try:
            words = _wait_ready(proc, stderr)
            yield RunningServer(proc, words, stderr)
        finally:
            _stop(proc)


# --------------------------------------------------------------------------
# The Rust echo client
# --------------------------------------------------------------------------


def _newest_mtime(paths: list[Path]) -> float:
    return max(p.stat().st_mtime for p in paths)


def ensure_client() -> Path:
    """Build the echo client if it is missing or older than its sources."""
    sources = [CLIENT_DIR / "Cargo.toml", *sorted((CLIENT_DIR / "src").glob("*.rs"))]
    if CLIENT_BIN.exists() and CLIENT_BIN.stat().st_mtime >= _newest_mtime(sources):
        return CLIENT_BIN
    cmd = ["cargo", "build", "--release", "--manifest-path", str(CLIENT_DIR / "Cargo.toml")]
    print("building the echo client: " + " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, timeout=900)
    return CLIENT_BIN


def run_echo_client(
    target: list[str], size: int, conns: int, warmup: float, duration: float, pid: int
) -> dict:
    """Run one closed-loop load; returns the client's JSON report.

    The client samples the server's /proc/PID/stat CPU time itself, at the
    exact start and end of its measured phase, so the warm-up, connection
    set-up and teardown are not billed to the requests.
    """
    cmd = [
        str(CLIENT_BIN),
        *target,
        "--size",
        str(size),
        "--conns",
        str(conns),
        "--warmup",
        str(warmup),
        "--duration",
        str(duration),
        "--pid",
        str(pid),
    ]
    return run_json(cmd, warmup + duration, "echo client")


def client_rustls_version() -> str:
    """The rustls version the echo client is built with, from Cargo.lock."""
    lock = (CLIENT_DIR / "Cargo.lock").read_text()
    match = re.search(r'name = "rustls"\nversion = "([^"]+)"', lock)
    return match.group(1) if match else "?"


# --------------------------------------------------------------------------
# TLS certificates
# --------------------------------------------------------------------------


@contextmanager
def tls_files() -> Iterator[tuple[str, str]]:
    """A fresh CA and a certificate for 127.0.0.1 signed by it, made with
    trustme in a temporary directory that is removed afterwards.

    Yields (CA certificate PEM path, server key + certificate chain PEM path).
    """
    try:
        import trustme
    except ImportError as exc:
        raise CellError("--tls needs the trustme package (pip install trustme)") from exc
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    with tempfile.TemporaryDirectory(prefix="tokioloop-tls-") as tmp:
        ca_pem, server_pem = Path(tmp, "ca.pem"), Path(tmp, "server.pem")
        ca.cert_pem.write_to_path(str(ca_pem))
        cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
        yield str(ca_pem), str(server_pem)


# --------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------

_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def _latency_us(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"bad wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_US[match.group(2)]


def parse_wrk(output: str) -> dict:
    """Requests, req/s, p50/p99 (µs) and error count from `wrk --latency` output."""
    requests = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not requests or not rps:
        raise CellError("cannot parse wrk output: " + last_line(output))
    pcts = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)", output, re.MULTILINE))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non2xx.group(1)) if non2xx else 0
    return {
        "requests": int(requests.group(1)),
        "rps": float(rps.group(1)),
        "p50_us": _latency_us(pcts["50"]) if "50" in pcts else None,
        "p99_us": _latency_us(pcts["99"]) if "99" in pcts else None,
        "errors": errors,
    }


def run_wrk(
    url: str, conns: int, duration: float, latency: bool = True, headers: tuple[str, ...] = ()
) -> dict:
    """One wrk run with a single thread (the server needs the other core)."""
    # wrk only takes whole seconds.
    duration = max(1, math.ceil(duration))
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", *(["--latency"] if latency else [])]
    for header in headers:
        cmd += ["-H", header]
    cmd.append(url)
    try:
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=duration + CLIENT_SLACK
        )
    except subprocess.TimeoutExpired as exc:
        raise CellError("wrk timed out") from exc
    except FileNotFoundError as exc:
        raise CellError("wrk not installed (apt-get install -y wrk)") from exc
    if proc.returncode != 0:
        reason = last_line(proc.stderr) or last_line(proc.stdout)
        raise CellError(f"wrk exit {proc.returncode}: {reason}")
    return parse_wrk(proc.stdout)
