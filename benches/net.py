"""Network benchmark: echo servers (plain or TLS), HTTP hello-worlds and
subprocess spawns on each event loop.

Usage: .venv/bin/python benches/net.py [--quick] [--rounds 3] [--loops asyncio,tokioloop]
       [--only protocol,tcp,1k,c16] [--json out.json]
       .venv/bin/python benches/net.py --tls [--quick] [--only protocol,100k]
       .venv/bin/python benches/net.py --http [--only fastapi] [--json out.json]
       .venv/bin/python benches/net.py --spawn [--quick] [--only c8]
       .venv/bin/python benches/net.py --client [--only c16]

Echo mode: every cell (style x transport x message size x connections) runs
each loop's `echo_servers.py` in its own process, loaded by the Rust closed-loop
client in `echo_client/` (built on first use).  TLS mode: the same, with the
servers given ``ssl=`` and the client speaking TLS (rustls) with a CA made
for the run.  HTTP mode: aiohttp and uvicorn+FastAPI hello-worlds from
`http_servers.py`, loaded by `wrk`.  Spawn mode: `spawn_worker.py` runs
``create_subprocess_exec('true')`` + ``wait()`` closed-loop on each loop.
Client mode: `http_client_worker.py` makes aiohttp client requests on each
loop against one aiohttp hello-world server on stock asyncio (the same
server for every loop), and the client's own CPU time is the metric.
Rounds are interleaved: each round runs every cell on every loop in turn.
The ranking metric is CPU time per request (the server's utime+stime from
/proc/PID/stat over the measured phase) or per spawn (the spawning
process's) or per client request (the client's), reported beside req/s (spawns/s) and p50/p99.  Prints markdown
tables on stdout and progress on stderr.  See benches/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import _netproc as proc
from _netproc import CellError
from tokioloop._microbench import EXTRA_LOOPS, KNOWN_LOOPS, LOOP_NAMES

TARGET = "tokioloop"
BASELINES = ("uvloop", "rloop")
STYLES = ("sock", "streams", "protocol")
TRANSPORTS = ("tcp", "unix")
SIZES_KIB = (1, 10, 100)
CONNS = (1, 16)
QUICK_SIZES_KIB = (1, 100)
QUICK_CONNS = (16,)
# TLS mode: TLS over TCP ("tls" in the net column), transports only.
TLS_STYLES = ("protocol", "streams")
TLS_SIZES_KIB = (1, 100)
HTTP_APPS = ("aiohttp", "fastapi")
HTTP_CONNS = 16
# Client mode: the client library, and its concurrent requests; the server
# every client loop talks to runs on SERVER_LOOP.
CLIENT_APP = "aiohttp"
CLIENT_CONNS = (1, 16)
CLIENT_SERVER_LOOP = "asyncio"
# Spawn mode: the program spawned, and how many spawns are in flight at once.
SPAWN_COMMAND = "true"
SPAWN_CONCURRENCY = (1, 8)
# Loops that cannot serve a transport at all: shown as n/a, never run.
# rloop 0.5 has no Unix sockets, and create_server(ssl=...) raises
# NotImplementedError.
UNSUPPORTED = {("rloop", "unix"), ("rloop", "tls")}

# Default timings (seconds) and rounds per mode.  The full echo matrix is 36
# cells x (4 loops, 3 on unix) x 3 rounds = 378 server runs of ~0.1 s
# start/stop + warm-up + measured phase, ~1.9 s each: about 12 minutes; TLS
# is 8 cells x 3 loops x 5 rounds, about 4 minutes; spawn 2 cells x 4 loops
# x 5 rounds of ~2.7 s, about 2 minutes.  1.5 s measured keeps the 10 ms
# granularity of /proc CPU times under 1% of a busy server's total.
FULL = {
    "echo": {"warmup": 0.3, "duration": 1.5},
    "tls": {"warmup": 0.3, "duration": 1.5},
    "http": {"warmup": 1.0, "duration": 5.0},
    "spawn": {"warmup": 0.5, "duration": 2.0},
    "client": {"warmup": 1.0, "duration": 3.0},
}
QUICK = {
    "echo": {"warmup": 0.2, "duration": 1.0},
    "tls": {"warmup": 0.2, "duration": 1.0},
    "http": {"warmup": 1.0, "duration": 2.0},
    "spawn": {"warmup": 0.3, "duration": 1.0},
    "client": {"warmup": 0.5, "duration": 1.5},
}
ROUNDS = {"echo": 3, "tls": 5, "http": 3, "spawn": 5, "client": 3}


@dataclass(frozen=True)
class Cell:
    """One row of the matrix.  For HTTP cells style is the app name; for
    spawn cells it is the program spawned, and conns the spawns in flight."""

    style: str
    transport: str  # tcp | unix | tls | http | spawn | client
    size_kib: int | None
    conns: int

    def supported_by(self, loop: str) -> bool:
        return (loop, self.transport) not in UNSUPPORTED

    @property
    def key(self) -> str:
        size = f"{self.size_kib}KiB" if self.size_kib else "-"
        return f"{self.style}/{self.transport}/{size}/c{self.conns}"


# --------------------------------------------------------------------------
# Cell selection
# --------------------------------------------------------------------------


def csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def select_cells(only: list[str], mode: str, quick: bool) -> list[Cell]:
    """Build the matrix of `mode`, narrowed by --only tokens.

    Tokens name values of one dimension: a style or app name, tcp/unix/tls,
    a size such as 1k or 100k, a connection count (spawn concurrency) such
    as c1 or c16.  Within a dimension the named values are kept; a dimension
    with no tokens keeps its default values.  Sizes and counts outside the
    defaults are allowed.
    """
    styles: list[str] = []
    transports: list[str] = []
    sizes: list[int] = []
    conns: list[int] = []
    for token in (t.lower() for t in only):
        if token in STYLES or token in HTTP_APPS:
            styles.append(token)
        elif token in TRANSPORTS or token == "tls":
            transports.append(token)
        elif token.endswith("k") and token[:-1].isdigit() and int(token[:-1]) > 0:
            sizes.append(int(token[:-1]))
        elif token.startswith("c") and token[1:].isdigit() and int(token[1:]) > 0:
            conns.append(int(token[1:]))
        else:
            raise ValueError(f"unknown --only token {token!r}")
    if mode == "http":
        apps = [s for s in styles if s in HTTP_APPS] or list(HTTP_APPS)
        return [Cell(app, "http", None, HTTP_CONNS) for app in apps]
    if mode == "spawn":
        return [Cell(SPAWN_COMMAND, "spawn", None, n) for n in conns or SPAWN_CONCURRENCY]
    if mode == "client":
        return [Cell(CLIENT_APP, "client", None, n) for n in conns or CLIENT_CONNS]
    if mode == "tls":
        if "sock" in styles:
            raise ValueError("the sock style has no TLS (loop.sock_* work on raw sockets)")
        if any(t != "tls" for t in transports):
            raise ValueError("--tls runs TLS over TCP only: drop tcp/unix from --only")
        styles = [s for s in styles if s in TLS_STYLES] or list(TLS_STYLES)
        transports = ["tls"]
        sizes = sizes or list(TLS_SIZES_KIB)
    elif "tls" in transports:
        raise ValueError("use --tls for TLS cells")
    styles = [s for s in styles if s in STYLES] or list(STYLES)
    transports = transports or list(TRANSPORTS)
    sizes = sizes or list(QUICK_SIZES_KIB if quick else SIZES_KIB)
    conns = conns or list(QUICK_CONNS if quick else CONNS)
    return [
        Cell(style, transport, size, n)
        for style in styles
        for transport in transports
        for size in sizes
        for n in conns
    ]


# --------------------------------------------------------------------------
# One measurement
# --------------------------------------------------------------------------


def _sample(
    requests: int, rps: float, p50_us: float, p99_us: float, cpu_us_per_req: float, **extra
) -> dict:
    """One run's numbers, under the names summarize() and the tables use."""
    return {
        "requests": requests,
        "rps": rps,
        "p50_us": p50_us,
        "p99_us": p99_us,
        "cpu_us_per_req": cpu_us_per_req,
        **extra,
    }


def measure_echo(loop: str, cell: Cell, timing: dict, seq: int) -> dict:
    server_cmd = [
        sys.executable,
        str(proc.BENCHES / "echo_servers.py"),
        "--loop",
        loop,
        "--style",
        cell.style,
    ]
    path = None
    client_tls: list[str] = []
    if cell.transport == "unix":
        path = f"/tmp/tokioloop-net-{os.getpid()}-{seq}.sock"
        server_cmd += ["--unix", path]
    else:
        server_cmd += ["--tcp", "127.0.0.1:0"]
    if cell.transport == "tls":
        server_cmd += ["--tls", timing["tls_server_pem"]]
        client_tls = ["--tls", timing["tls_ca_pem"]]
    try:
        with proc.server(server_cmd) as server:
            flag = "--unix" if cell.transport == "unix" else "--tcp"
            report = proc.run_echo_client(
                [flag, server.ready_words[0], *client_tls],
                size=cell.size_kib * 1024,
                conns=cell.conns,
                warmup=timing["warmup"],
                duration=timing["duration"],
                pid=server.pid,
            )
            if not server.alive():
                raise CellError(server.stderr_tail() or "server died during the run")
            if report["requests"] == 0 or report["errors"]:
                reason = report.get("first_error") or "no requests completed"
                raise CellError(f"{report['errors']} client errors: {reason}")
            if report["server_cpu_us_per_req"] is None:
                raise CellError(f"could not read /proc/{server.pid}/stat")
    finally:
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass
    return _sample(
        report["requests"],
        report["rps"],
        report["p50_us"],
        report["p99_us"],
        report["server_cpu_us_per_req"],
        client_cpu_us_per_req=report["client_cpu_us_per_req"],
    )


def closed_loop_worker(script: str, loop: str, timing: dict, *args: str) -> list[str]:
    """The command of one `_closed_loop.py` worker (`spawn_worker.py`,
    `http_client_worker.py`) on `loop`, with the cell's timing."""
    return [
        sys.executable,
        str(proc.BENCHES / script),
        "--loop",
        loop,
        *args,
        "--warmup",
        str(timing["warmup"]),
        "--duration",
        str(timing["duration"]),
    ]


def check_worker_report(report: dict, count_key: str, what: str) -> None:
    """A worker's run counts only if something completed and nothing failed."""
    if report[count_key] == 0 or report["failures"]:
        reason = report.get("first_error") or f"no {what} completed"
        raise CellError(f"{report['failures']} failed {what}s: {reason}")


def measure_spawn(loop: str, cell: Cell, timing: dict, seq: int) -> dict:
    cmd = closed_loop_worker(
        "spawn_worker.py", loop, timing, "--concurrency", str(cell.conns), "--command", cell.style
    )
    # Interpreter start-up and imports come on top of the run itself.
    report = proc.run_json(cmd, timing["warmup"] + timing["duration"], "spawn worker")
    check_worker_report(report, "spawns", "spawn")
    # A spawn is the request, and the CPU is the spawning process's own.
    return _sample(
        report["spawns"],
        report["rate"],
        report["p50_us"],
        report["p99_us"],
        report["cpu_us_per_spawn"],
        children_cpu_us_per_req=report["children_cpu_us_per_spawn"],
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_server(loop: str, app: str) -> tuple[list[str], str]:
    """The command that serves `app`'s hello-world on `loop` at a free port,
    and its URL."""
    port = free_port()
    cmd = [
        sys.executable,
        str(proc.BENCHES / "http_servers.py"),
        "--loop",
        loop,
        "--app",
        app,
        "--port",
        str(port),
    ]
    return cmd, f"http://127.0.0.1:{port}/"


def measure_http(loop: str, cell: Cell, timing: dict, seq: int) -> dict:
    server_cmd, url = http_server(loop, cell.style)
    with proc.server(server_cmd) as server:
        loop_class = server.ready_words[1] if len(server.ready_words) > 1 else "?"
        # uvicorn builds its own loop: make sure it is the one we asked for.
        if loop_class.split(".")[0] != loop:
            raise CellError(f"server runs on {loop_class}, not {loop}")
        proc.run_wrk(url, cell.conns, timing["warmup"], latency=False)
        # The server is idle between wrk runs, so sampling around the
        # measured run bills it only for that run's requests.
        before = proc.cpu_us(server.pid)
        result = proc.run_wrk(url, cell.conns, timing["duration"])
        cpu = proc.cpu_us(server.pid) - before
        if not server.alive():
            raise CellError(server.stderr_tail() or "server died during the run")
    if result["requests"] == 0 or result["errors"]:
        raise CellError(f"wrk: {result['errors']} errors, {result['requests']} requests")
    return _sample(
        result["requests"],
        result["rps"],
        result["p50_us"],
        result["p99_us"],
        cpu / result["requests"],
    )


def measure_client(loop: str, cell: Cell, timing: dict, seq: int) -> dict:
    server_cmd, url = http_server(CLIENT_SERVER_LOOP, "aiohttp")
    worker_cmd = closed_loop_worker(
        "http_client_worker.py", loop, timing, "--url", url, "--conns", str(cell.conns)
    )
    with proc.server(server_cmd) as server:
        report = proc.run_json(worker_cmd, timing["warmup"] + timing["duration"], "client worker")
        if not server.alive():
            raise CellError(server.stderr_tail() or "server died during the run")
    check_worker_report(report, "requests", "request")
    return _sample(
        report["requests"],
        report["rps"],
        report["p50_us"],
        report["p99_us"],
        report["cpu_us_per_req"],
    )


# --------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------


def check_loop(loop: str) -> tuple[str | None, str | None]:
    """(version, None) if `loop` imports and makes a loop in a child, else (None, reason).

    TARGET's version ends with the UTC time of the newest file in its
    package directory, so a rebuild during a run shows (see main).
    """
    code = (
        "import importlib, os, platform, time\n"
        "from importlib.metadata import version\n"
        f"m = importlib.import_module({loop!r}); m.new_event_loop().close()\n"
        "if m.__name__ == 'asyncio':\n"
        "    print('CPython ' + platform.python_version())\n"
        f"elif m.__name__ != {TARGET!r}:\n"
        "    print(version(m.__name__))\n"
        "else:\n"
        "    d = os.path.dirname(m.__file__)\n"
        "    files = [f for f in os.listdir(d) if f.endswith(('.py', '.so'))]\n"
        "    t = max(os.stat(os.path.join(d, f)).st_mtime for f in files)\n"
        "    stamp = time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(t))\n"
        "    print(f'{version(m.__name__)} (files of {stamp})')\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env=proc.server_env(),
        )
    except subprocess.TimeoutExpired:
        return None, "import timed out"
    if out.returncode != 0:
        return None, proc.last_line(out.stderr)
    return out.stdout.strip(), None


MEASURE = {
    "echo": measure_echo,
    "tls": measure_echo,
    "http": measure_http,
    "spawn": measure_spawn,
    "client": measure_client,
}
# A loop package being rebuilt in place fails to import for a moment: such
# a run is retried (up to IMPORT_RETRIES times, IMPORT_RETRY_WAIT s apart).
IMPORT_RETRIES = 4
IMPORT_RETRY_WAIT = 15.0


def _measure_retrying(measure, loop: str, cell: Cell, timing: dict, seq: int) -> dict:
    for attempt in range(IMPORT_RETRIES + 1):
        try:
            return measure(loop, cell, timing, seq)
        except CellError as exc:
            text = str(exc)
            if attempt == IMPORT_RETRIES or not (
                "ImportError" in text or "ModuleNotFoundError" in text
            ):
                raise
            print(
                f"  {loop} did not import ({text}); retrying in {IMPORT_RETRY_WAIT:g}s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(IMPORT_RETRY_WAIT)
    raise AssertionError("unreachable")


def run_matrix(loops: list[str], cells: list[Cell], rounds: int, timing: dict, mode: str):
    measure = MEASURE[mode]
    runs = [(c, lp) for c in cells for lp in loops if c.supported_by(lp)]
    total = len(runs) * rounds
    samples = []
    done = 0
    for rnd in range(rounds):
        # Rotate the loop order each round so no loop always runs first
        # (right after another loop's server exits) or last.
        order = loops[rnd % len(loops) :] + loops[: rnd % len(loops)]
        for cell in cells:
            for loop in order:
                if not cell.supported_by(loop):
                    continue
                done += 1
                t0 = time.monotonic()
                try:
                    result = _measure_retrying(measure, loop, cell, timing, done)
                    unit = LABELS[mode]["unit"]
                    note = (
                        f"{result['rps']:,.0f} {LABELS[mode]['rate']}, "
                        f"{result['cpu_us_per_req']:.1f} us/{unit}"
                    )
                except CellError as exc:
                    result = {"error": str(exc)}
                    note = f"err: {exc}"
                took = time.monotonic() - t0
                print(
                    f"[{done}/{total}] round {rnd + 1} {cell.key} {loop}: {note} ({took:.1f}s)",
                    file=sys.stderr,
                    flush=True,
                )
                samples.append({**asdict(cell), "loop": loop, "round": rnd + 1, **result})
    return samples


METRICS = (
    "rps",
    "p50_us",
    "p99_us",
    "cpu_us_per_req",
    "client_cpu_us_per_req",
    "children_cpu_us_per_req",
)


def _of_cell(cell: Cell, samples: list[dict]) -> list[dict]:
    """The samples measured in CELL, by every loop."""
    key = asdict(cell)
    return [s for s in samples if all(s[k] == v for k, v in key.items())]


def summarize(cells: list[Cell], loops: list[str], samples: list[dict]) -> list[dict]:
    """Median of each metric over rounds per (cell, loop); any failed round makes it err."""
    rows = []
    for cell in cells:
        for loop in loops:
            row = {**asdict(cell), "loop": loop}
            mine = [s for s in _of_cell(cell, samples) if s["loop"] == loop]
            if not cell.supported_by(loop):
                row["status"] = "n/a"
            elif not mine:
                row["status"] = "skipped"
            elif any("error" in s for s in mine):
                row["status"] = "err"
                row["error"] = next(s["error"] for s in mine if "error" in s)
            else:
                row["status"] = "ok"
                row["rounds"] = len(mine)
                for metric in METRICS:
                    values = [s[metric] for s in mine if s.get(metric) is not None]
                    row[metric] = statistics.median(values) if values else None
                cpu = [s["cpu_us_per_req"] for s in mine]
                row["cpu_us_per_req_min"], row["cpu_us_per_req_max"] = min(cpu), max(cpu)
                if loop == TARGET:
                    row["best_by_round"] = _paired_ratios(cell, mine, samples)
            rows.append(row)
    return rows


def _paired_ratios(cell: Cell, mine: list[dict], samples: list[dict]) -> list[float]:
    """TARGET's CPU/req over the best of BASELINES in the same round, one
    ratio per round that has both. Loops run back to back within a round,
    so a slow drift of the machine's load cancels out of these, where it
    can still tilt a ratio of medians taken over different rounds."""
    same_cell = [s for s in _of_cell(cell, samples) if s["loop"] in BASELINES and "error" not in s]
    ratios = []
    for sample in mine:
        best = [s["cpu_us_per_req"] for s in same_cell if s["round"] == sample["round"]]
        if best and min(best) > 0:
            ratios.append(sample["cpu_us_per_req"] / min(best))
    return ratios


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(num: float | None, den: float | None) -> str:
    return "-" if num is None or not den else f"{num / den:.2f}"


def _cell_cols(row: dict) -> list[str]:
    if row["transport"] in ("http", "client"):
        return [row["style"], f"c{row['conns']}"]
    if row["transport"] == "spawn":
        return [row["style"], str(row["conns"])]
    return [row["style"], row["transport"], str(row["size_kib"]), str(row["conns"])]


def _markdown(header: list[str], right: int, rows: list[list[str]]) -> str:
    """Left-align the first `len(header) - right` columns, right-align the rest."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    left = len(header) - right

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i < left else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            )
            + " |"
        )

    rule = ["-" * (w - 1) + (":" if i >= left else "-") for i, w in enumerate(widths)]
    rule = [(":" + r[1:]) if i < left else r for i, r in enumerate(rule)]
    return "\n".join([line(header), line(rule), *(line(r) for r in rows)])


def _cpu(row: dict | None) -> float | None:
    return row.get("cpu_us_per_req") if row and row["status"] == "ok" else None


BEST = "best(" + ",".join(BASELINES) + ")"

# Per mode: the cell columns, the rate and what one unit of work is, the
# title of the pivot table, and what the ratios divide by ("best" is the
# lower of the BASELINES on that row).
_SERVER = {"rate": "req/s", "unit": "req", "title": "Server CPU µs per request"}
_ECHO_CELLS = ["style", "net", "KiB", "conns"]
LABELS = {
    "echo": {**_SERVER, "cells": _ECHO_CELLS, "vs": ("asyncio", "best")},
    "tls": {**_SERVER, "cells": _ECHO_CELLS, "vs": ("asyncio", "uvloop")},
    "http": {**_SERVER, "cells": ["app", "conns"], "vs": ("asyncio", "best")},
    "client": {
        "cells": ["client", "conns"],
        "rate": "req/s",
        "unit": "req",
        "title": f"Client CPU µs per request (server: aiohttp on {CLIENT_SERVER_LOOP})",
        "vs": ("asyncio", "best"),
    },
    "spawn": {
        "cells": ["command", "in flight"],
        "rate": "spawns/s",
        "unit": "spawn",
        "title": "CPU µs per spawn of the spawning process",
        "vs": ("asyncio", "uvloop", "best"),
    },
}


def _baseline(by_loop: dict[str, dict], name: str) -> float | None:
    """CPU/unit of loop `name` on this row, or of the best of BASELINES."""
    names = BASELINES if name == "best" else (name,)
    values = [v for v in (_cpu(by_loop.get(b)) for b in names) if v is not None]
    return min(values) if values else None


def _paired_cols(row: dict | None) -> list[str]:
    """The same-round columns of the pivot for TARGET's row."""
    ratios = row.get("best_by_round") if row and row["status"] == "ok" else None
    if not ratios:
        return ["-", "-"]
    median = statistics.median(ratios)
    below = sum(r < 1 for r in ratios)
    return [f"{median:.2f} ({min(ratios):.2f}-{max(ratios):.2f})", f"{below}/{len(ratios)}"]


def _vs_label(name: str) -> str:
    return BEST if name == "best" else name


def _status(row: dict | None, value: str) -> str:
    if row is None:
        return "-"
    return value if row["status"] == "ok" else row["status"]


def format_tables(rows: list[dict], loops: list[str], mode: str) -> str:
    labels = LABELS[mode]
    groups: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        groups.setdefault(tuple(_cell_cols(row)), {})[row["loop"]] = row
    cell_header = labels["cells"]
    unit, vs = labels["unit"], labels["vs"]

    # 1. Pivot: CPU µs per unit, one column per loop.
    with_target = TARGET in loops
    header = cell_header + [f"{lp} µs/{unit}" for lp in loops]
    paired = with_target and "best" in vs
    if with_target:
        header += [f"{TARGET}/{_vs_label(name)}" for name in vs]
    if paired:
        header += ["same round: median (range)", "rounds below 1"]
    pivot = []
    for cols, by_loop in groups.items():
        line = list(cols) + [
            _status(by_loop.get(lp), _num(_cpu(by_loop.get(lp)), 1)) for lp in loops
        ]
        if with_target:
            mine = _cpu(by_loop.get(TARGET))
            line += [_ratio(mine, _baseline(by_loop, name)) for name in vs]
        if paired:
            line += _paired_cols(by_loop.get(TARGET))
        pivot.append(line)
    right = len(header) - len(cell_header)
    out = [f"{labels['title']} (median over rounds; lower is better):", ""]
    out += [_markdown(header, right, pivot), ""]
    if paired:
        note = (
            f"`same round`: {TARGET}'s CPU/{unit} over {BEST}'s in each round (the loops "
            "run back to back within a round), median and range over rounds; `rounds "
            "below 1`: in how many of them it was lower."
        )
        out += [note, ""]

    # 2. Detail: one line per (cell, loop).  Spawn rows add the CPU time of
    # the reaped children (fork/exec cost that the parent does not pay).
    children = mode == "spawn"
    header = cell_header + [
        "loop",
        labels["rate"],
        "p50 µs",
        "p99 µs",
        f"CPU µs/{unit}",
        *([f"child CPU µs/{unit}"] if children else []),
        *(f"vs {_vs_label(name)}" for name in vs),
    ]
    detail = []
    for cols, by_loop in groups.items():
        for lp in loops:
            row = by_loop[lp]
            if row["status"] != "ok":
                detail.append([*cols, lp, row["status"], *["-"] * (len(header) - len(cols) - 2)])
                continue
            cpu = row["cpu_us_per_req"]
            detail.append(
                [
                    *cols,
                    lp,
                    _num(row["rps"]),
                    _num(row["p50_us"]),
                    _num(row["p99_us"]),
                    _num(cpu, 1),
                    *([_num(row.get("children_cpu_us_per_req"), 1)] if children else []),
                    *(_ratio(cpu, _baseline(by_loop, name)) for name in vs),
                ]
            )
    out += [f"Detail (medians; ratios are CPU µs/{unit}, below 1.00 = less CPU):", ""]
    out += [_markdown(header, len(header) - len(cell_header) - 1, detail)]

    spread = [r for r in rows if r["status"] == "ok" and r["rounds"] > 1]
    if spread:
        ratios = [r["cpu_us_per_req_max"] / r["cpu_us_per_req_min"] for r in spread]
        out.append(
            f"\nSpread of CPU µs/{unit} over rounds (slowest / fastest round, per cell "
            f"and loop): median {statistics.median(ratios):.2f}x, max {max(ratios):.2f}x."
        )

    errors = [r for r in rows if r["status"] == "err"]
    if errors:
        out += ["", "Errors:", ""]
        out += [f"- {'/'.join(_cell_cols(r))} {r['loop']}: {r['error']}" for r in errors]
    return "\n".join(out)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark of event loops: echo servers (default), --tls echo "
        "servers, --http hello-worlds or --spawn subprocess spawns.",
    )
    which = parser.add_mutually_exclusive_group()
    for mode, text in (
        ("tls", "TLS echo servers (ssl=) under the TLS echo client"),
        ("http", "aiohttp/FastAPI under wrk"),
        ("spawn", f"create_subprocess_exec({SPAWN_COMMAND!r}) + wait() rate"),
        ("client", f"{CLIENT_APP} client requests against one server"),
    ):
        which.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode, help=text)
    parser.set_defaults(mode="echo")
    parser.add_argument("--quick", action="store_true", help="smaller matrix, shorter runs")
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds per cell (default: "
        + ", ".join(f"{n} for {mode}" for mode, n in ROUNDS.items())
        + ")",
    )
    parser.add_argument(
        "--loops",
        type=csv_list,
        default=list(LOOP_NAMES),
        help=f"comma-separated loops (default {','.join(LOOP_NAMES)}; also "
        f"{','.join(EXTRA_LOOPS)} if installed)",
    )
    parser.add_argument(
        "--only",
        type=csv_list,
        default=[],
        help="comma-separated cell filters: styles/apps, tcp/unix, sizes (1k), "
        "conns or spawns in flight (c16)",
    )
    parser.add_argument("--duration", type=float, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per run")
    parser.add_argument("--json", metavar="PATH", help="also write samples and medians as JSON")
    parser.add_argument(
        "--server-env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="set an environment variable for every server/worker process (repeatable), "
        "e.g. MALLOC_MMAP_THRESHOLD_=1048576",
    )
    args = parser.parse_args(argv)

    bad = [lp for lp in args.loops if lp not in KNOWN_LOOPS]
    if bad:
        parser.error(f"unknown loop(s): {', '.join(bad)}")
    mode = args.mode
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--server-env wants NAME=VALUE, got {item!r}")
        proc.EXTRA_ENV[name] = value
    if args.rounds is None:
        args.rounds = 3 if args.quick else ROUNDS[mode]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        cells = select_cells(args.only, mode, args.quick)
    except ValueError as exc:
        parser.error(str(exc))
    defaults = (QUICK if args.quick else FULL)[mode]
    timing = {
        "warmup": args.warmup if args.warmup is not None else defaults["warmup"],
        "duration": args.duration if args.duration is not None else defaults["duration"],
    }

    started = time.monotonic()
    versions, skipped = {}, {}
    for loop in args.loops:
        version, reason = check_loop(loop)
        if version is None:
            skipped[loop] = reason
            print(f"skipping {loop}: {reason}", file=sys.stderr)
        else:
            versions[loop] = version
    loops = [lp for lp in args.loops if lp in versions]
    if not loops:
        print("no loop could be imported", file=sys.stderr)
        return 1
    if mode in ("echo", "tls"):
        proc.ensure_client()
    if mode == "tls":
        versions["OpenSSL (servers)"] = ssl.OPENSSL_VERSION.removeprefix("OpenSSL ")
        versions["rustls (client)"] = proc.client_rustls_version()

    with contextlib.ExitStack() as stack:
        settings = dict(timing)
        if mode == "tls":
            try:
                ca_pem, server_pem = stack.enter_context(proc.tls_files())
            except CellError as exc:
                print(exc, file=sys.stderr)
                return 1
            settings.update(tls_ca_pem=ca_pem, tls_server_pem=server_pem)
        samples = run_matrix(loops, cells, args.rounds, settings, mode)
    rows = summarize(cells, loops, samples)
    elapsed = time.monotonic() - started
    # A loop whose files changed during the run was measured on two builds.
    changed = {}
    for loop in loops:
        after, _ = check_loop(loop)
        if after != versions[loop]:
            changed[loop] = f"{versions[loop]} -> {after}"

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"{now}; CPython {platform.python_version()} on {platform.platform()}, "
        f"{os.cpu_count()} CPUs; " + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    print(
        f"{args.rounds} rounds, {timing['warmup']:g} s warm-up + {timing['duration']:g} s "
        f"measured per run; total {elapsed:.0f} s"
        + "".join(f"; {k}={v}" for k, v in proc.EXTRA_ENV.items())
        + "\n"
    )
    print(format_tables(rows, loops, mode))
    if skipped:
        print("\nSkipped loops: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if changed:
        print(
            "\nWARNING: changed during the run, so rounds mixed builds: "
            + "; ".join(f"{k}: {v}" for k, v in changed.items())
        )
    print(f"total wall time {elapsed:.0f} s", file=sys.stderr)
    if args.json:
        meta = {
            "date": now,
            "mode": mode,
            "argv": sys.argv,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": versions,
            "skipped": skipped,
            "changed_during_run": changed,
            "rounds": args.rounds,
            "timing": timing,
            "server_env": proc.EXTRA_ENV,
            "total_seconds": round(elapsed, 1),
        }
        data = {"meta": meta, "medians": rows, "samples": samples}
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
