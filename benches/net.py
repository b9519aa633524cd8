"""Network benchmark: echo servers (and HTTP hello-worlds) on each event loop.

Usage: .venv/bin/python benches/net.py [--quick] [--rounds 3] [--loops asyncio,tokioloop]
       [--only protocol,tcp,1k,c16] [--json out.json]
       .venv/bin/python benches/net.py --http [--only fastapi] [--json out.json]

Echo mode: every cell (style x transport x message size x connections) runs
each loop's `echo_servers.py` in its own process, loaded by the Rust closed-loop
client in `echo_client/` (built on first use).  HTTP mode: aiohttp and
uvicorn+FastAPI hello-worlds from `http_servers.py`, loaded by `wrk`.  Rounds
are interleaved: each round runs every cell on every loop in turn.  The
ranking metric is the server's CPU time per request (utime+stime from
/proc/PID/stat over the measured phase), reported beside req/s and p50/p99.
Prints markdown tables on stdout and progress on stderr.  See benches/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import _netproc as proc
from _netproc import CellError

LOOP_NAMES = ("asyncio", "uvloop", "rloop", "tokioloop")
TARGET = "tokioloop"
BASELINES = ("uvloop", "rloop")
STYLES = ("sock", "streams", "protocol")
TRANSPORTS = ("tcp", "unix")
SIZES_KIB = (1, 10, 100)
CONNS = (1, 16)
HTTP_APPS = ("aiohttp", "fastapi")
HTTP_CONNS = 16
# Loops that cannot serve a transport at all: shown as n/a, never run.
UNSUPPORTED = {("rloop", "unix")}

# Default timings (seconds).  The full echo matrix is 36 cells x (4 loops, 3
# on unix) x 3 rounds = 378 server runs of ~0.1 s start/stop + warm-up +
# measured phase, ~1.9 s each: about 12 minutes.  1.5 s measured keeps the
# 10 ms granularity of /proc CPU times under 1% of a busy server's total.
FULL = {"warmup": 0.3, "duration": 1.5, "http_warmup": 1.0, "http_duration": 5.0}
QUICK = {"warmup": 0.2, "duration": 1.0, "http_warmup": 1.0, "http_duration": 2.0}
QUICK_SIZES_KIB = (1, 100)
QUICK_CONNS = (16,)


@dataclass(frozen=True)
class Cell:
    """One row of the matrix.  For HTTP cells style is the app name."""

    style: str
    transport: str  # tcp | unix | http
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


def select_cells(only: list[str], http: bool, quick: bool) -> list[Cell]:
    """Build the matrix, narrowed by --only tokens.

    Tokens name values of one dimension: a style or app name, tcp/unix, a
    size such as 1k or 100k, a connection count such as c1 or c16.  Within a
    dimension the named values are kept; a dimension with no tokens keeps
    its default values.  Sizes and counts outside the defaults are allowed.
    """
    styles: list[str] = []
    transports: list[str] = []
    sizes: list[int] = []
    conns: list[int] = []
    for token in (t.lower() for t in only):
        if token in STYLES or token in HTTP_APPS:
            styles.append(token)
        elif token in TRANSPORTS:
            transports.append(token)
        elif token.endswith("k") and token[:-1].isdigit() and int(token[:-1]) > 0:
            sizes.append(int(token[:-1]))
        elif token.startswith("c") and token[1:].isdigit() and int(token[1:]) > 0:
            conns.append(int(token[1:]))
        else:
            raise ValueError(f"unknown --only token {token!r}")
    if http:
        apps = [s for s in styles if s in HTTP_APPS] or list(HTTP_APPS)
        return [Cell(app, "http", None, HTTP_CONNS) for app in apps]
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
    if cell.transport == "tcp":
        server_cmd += ["--tcp", "127.0.0.1:0"]
    else:
        path = f"/tmp/tokioloop-net-{os.getpid()}-{seq}.sock"
        server_cmd += ["--unix", path]
    try:
        with proc.server(server_cmd) as server:
            flag = "--tcp" if cell.transport == "tcp" else "--unix"
            report = proc.run_echo_client(
                [flag, server.ready_words[0]],
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
    return {
        "requests": report["requests"],
        "rps": report["rps"],
        "p50_us": report["p50_us"],
        "p99_us": report["p99_us"],
        "cpu_us_per_req": report["server_cpu_us_per_req"],
        "client_cpu_us_per_req": report["client_cpu_us_per_req"],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_http(loop: str, cell: Cell, timing: dict, seq: int) -> dict:
    port = free_port()
    server_cmd = [
        sys.executable,
        str(proc.BENCHES / "http_servers.py"),
        "--loop",
        loop,
        "--app",
        cell.style,
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}/"
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
    return {
        "requests": result["requests"],
        "rps": result["rps"],
        "p50_us": result["p50_us"],
        "p99_us": result["p99_us"],
        "cpu_us_per_req": cpu / result["requests"],
        "client_cpu_us_per_req": None,
    }


# --------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------


def check_loop(loop: str) -> tuple[str | None, str | None]:
    """(version, None) if `loop` imports and makes a loop in a child, else (None, reason)."""
    code = (
        "import importlib, platform, sys\n"
        f"m = importlib.import_module({loop!r}); m.new_event_loop().close()\n"
        "if m.__name__ == 'asyncio': print('CPython ' + platform.python_version())\n"
        "else:\n"
        "    from importlib.metadata import version\n"
        "    print(version(m.__name__))\n"
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


def run_matrix(loops: list[str], cells: list[Cell], rounds: int, timing: dict, http: bool):
    measure = measure_http if http else measure_echo
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
                    result = measure(loop, cell, timing, done)
                    note = f"{result['rps']:,.0f} req/s, {result['cpu_us_per_req']:.1f} us/req"
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


METRICS = ("rps", "p50_us", "p99_us", "cpu_us_per_req", "client_cpu_us_per_req")


def summarize(cells: list[Cell], loops: list[str], samples: list[dict]) -> list[dict]:
    """Median of each metric over rounds per (cell, loop); any failed round makes it err."""
    rows = []
    for cell in cells:
        for loop in loops:
            row = {**asdict(cell), "loop": loop}
            mine = [
                s
                for s in samples
                if s["loop"] == loop and all(s[k] == v for k, v in asdict(cell).items())
            ]
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
            rows.append(row)
    return rows


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(num: float | None, den: float | None) -> str:
    return "-" if num is None or not den else f"{num / den:.2f}"


def _cell_cols(row: dict) -> list[str]:
    if row["transport"] == "http":
        return [row["style"], f"c{row['conns']}"]
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


def _best_baseline(by_loop: dict[str, dict]) -> float | None:
    values = [v for v in (_cpu(by_loop.get(b)) for b in BASELINES) if v is not None]
    return min(values) if values else None


def _status(row: dict | None, value: str) -> str:
    if row is None:
        return "-"
    return value if row["status"] == "ok" else row["status"]


def format_tables(rows: list[dict], loops: list[str], http: bool) -> str:
    groups: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        groups.setdefault(tuple(_cell_cols(row)), {})[row["loop"]] = row
    cell_header = ["app", "conns"] if http else ["style", "net", "KiB", "conns"]

    # 1. Pivot: server CPU µs per request, one column per loop.
    with_target = TARGET in loops
    header = cell_header + [f"{lp} µs/req" for lp in loops]
    if with_target:
        header += [f"{TARGET}/asyncio", f"{TARGET}/best(uvloop,rloop)"]
    pivot = []
    for cols, by_loop in groups.items():
        line = list(cols) + [
            _status(by_loop.get(lp), _num(_cpu(by_loop.get(lp)), 1)) for lp in loops
        ]
        if with_target:
            mine = _cpu(by_loop.get(TARGET))
            line += [
                _ratio(mine, _cpu(by_loop.get("asyncio"))),
                _ratio(mine, _best_baseline(by_loop)),
            ]
        pivot.append(line)
    right = len(header) - len(cell_header)
    out = ["Server CPU µs per request (median over rounds; lower is better):", ""]
    out += [_markdown(header, right, pivot), ""]

    # 2. Detail: one line per (cell, loop).
    header = cell_header + [
        "loop",
        "req/s",
        "p50 µs",
        "p99 µs",
        "CPU µs/req",
        "vs asyncio",
        "vs best(uvloop,rloop)",
    ]
    detail = []
    for cols, by_loop in groups.items():
        best = _best_baseline(by_loop)
        for lp in loops:
            row = by_loop[lp]
            if row["status"] != "ok":
                detail.append([*cols, lp, row["status"], *["-"] * 5])
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
                    _ratio(cpu, _cpu(by_loop.get("asyncio"))),
                    _ratio(cpu, best),
                ]
            )
    out += ["Detail (medians; ratios are CPU µs/req, below 1.00 = less CPU):", ""]
    out += [_markdown(header, 6, detail)]

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
        description="Network benchmark of event loops (echo servers or --http hello-worlds).",
    )
    parser.add_argument("--http", action="store_true", help="aiohttp/FastAPI under wrk")
    parser.add_argument("--quick", action="store_true", help="smaller matrix, shorter runs")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cell (default 3)")
    parser.add_argument(
        "--loops",
        type=csv_list,
        default=list(LOOP_NAMES),
        help=f"comma-separated loops (default {','.join(LOOP_NAMES)})",
    )
    parser.add_argument(
        "--only",
        type=csv_list,
        default=[],
        help="comma-separated cell filters: styles/apps, tcp/unix, sizes (1k), conns (c16)",
    )
    parser.add_argument("--duration", type=float, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per run")
    parser.add_argument("--json", metavar="PATH", help="also write samples and medians as JSON")
    args = parser.parse_args(argv)

    bad = [lp for lp in args.loops if lp not in LOOP_NAMES]
    if bad:
        parser.error(f"unknown loop(s): {', '.join(bad)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        cells = select_cells(args.only, args.http, args.quick)
    except ValueError as exc:
        parser.error(str(exc))
    # Only the two timings of the chosen mode, under the plain names.
    prefix = "http_" if args.http else ""
    defaults = QUICK if args.quick else FULL
    timing = {
        "warmup": args.warmup if args.warmup is not None else defaults[prefix + "warmup"],
        "duration": args.duration if args.duration is not None else defaults[prefix + "duration"],
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
    if not args.http:
        proc.ensure_client()

    samples = run_matrix(loops, cells, args.rounds, timing, args.http)
    rows = summarize(cells, loops, samples)
    elapsed = time.monotonic() - started

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"{now}; CPython {platform.python_version()} on {platform.platform()}, "
        f"{os.cpu_count()} CPUs; " + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    print(
        f"{args.rounds} rounds, {timing['warmup']:g} s warm-up + {timing['duration']:g} s "
        f"measured per run; total {elapsed:.0f} s\n"
    )
    print(format_tables(rows, loops, args.http))
    if skipped:
        print("\nSkipped loops: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    print(f"total wall time {elapsed:.0f} s", file=sys.stderr)
    if args.json:
        meta = {
            "date": now,
            "argv": sys.argv,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": versions,
            "skipped": skipped,
            "rounds": args.rounds,
            "timing": timing,
            "total_seconds": round(elapsed, 1),
        }
        data = {"meta": meta, "medians": rows, "samples": samples}
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
