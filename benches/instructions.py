"""Server instructions per echo request, counted by callgrind.

Usage: python benches/instructions.py [--loops asyncio,uvloop,rloop,tokioloop]
           [--style protocol] [--size-kib 1] [--conns 1] [--duration 4]
           [--transport tcp|unix]
       python benches/instructions.py --http aiohttp|fastapi [--conns 16]
           [--duration 5] [--loops ...]

Wall-clock CPU time per request on a shared two-core machine moves by
10-20% from run to run; instruction counts do not. Each loop's echo server
(benches/echo_servers.py) runs under ``valgrind --tool=callgrind``; after a
warm-up load the counters are zeroed (``callgrind_control -z``), the Rust
load client runs for DURATION seconds, and the counters are dumped
(``callgrind_control -d``). The dump's total instruction count divided by
the client's request count is the server's instructions per request (the
connection set-up of the measured run is included; over thousands of
requests it is noise). Instructions are not time: cache misses, syscalls
and wake-ups are not weighed, so read this beside net.py's CPU columns.

With ``--http APP`` the server is APP's hello-world from
benches/http_servers.py (uvicorn+FastAPI with httptools, or aiohttp) and the
load is ``wrk -t1 -cCONNS`` (2 s of warm-up, then DURATION seconds counted),
as net.py --http runs them. ``--close`` makes wrk send ``Connection: close``,
so every request also pays for accepting and closing its connection.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import _netproc as proc

LOOPS = ("asyncio", "uvloop", "rloop", "tokioloop")


def _total_instructions(dump: Path) -> int:
    text = dump.read_text(errors="replace")
    match = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.MULTILINE)
    if match is None:
        raise proc.CellError(f"no totals in {dump}")
    return int(match.group(1))


def measure(loop: str, args: argparse.Namespace, outdir: Path) -> float:
    """Server instructions per request for one loop."""
    out = outdir / f"{loop}.%p"
    server_cmd = [
        "valgrind",
        "--tool=callgrind",
        "--quiet",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(proc.BENCHES / "echo_servers.py"),
        "--loop",
        loop,
        "--style",
        args.style,
    ]
    if args.transport == "unix":
        target_flag, address = "--unix", str(outdir / f"{loop}.sock")
        server_cmd += ["--unix", address]
    else:
        target_flag = "--tcp"
        server_cmd += ["--tcp", "127.0.0.1:0"]
    with proc.server(server_cmd) as server:
        address = server.ready_words[0]

        def load(warmup: float, duration: float) -> dict:
            return proc.run_echo_client(
                [target_flag, address],
                size=args.size_kib * 1024,
                conns=args.conns,
                warmup=warmup,
                duration=duration,
                pid=server.pid,
            )

        load(0.5, 1.0)
        subprocess.run(
            ["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True
        )
        report = load(0.0, args.duration)
        subprocess.run(
            ["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True
        )
        dumps = sorted(outdir.glob(f"{loop}.{server.pid}.*"))
        if not dumps or report["requests"] == 0:
            raise proc.CellError("no dump or no requests")
        return _total_instructions(dumps[-1]) / report["requests"]


def _dump_total(outdir: Path, loop: str, pid: int) -> int:
    dumps = sorted(outdir.glob(f"{loop}.{pid}.*"))
    if not dumps:
        raise proc.CellError("no dump")
    return _total_instructions(dumps[-1])


def measure_http(loop: str, args: argparse.Namespace, outdir: Path) -> float:
    """Server instructions per HTTP request (wrk) for one loop."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = outdir / f"{loop}.%p"
    server_cmd = [
        "valgrind",
        "--tool=callgrind",
        "--quiet",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(proc.BENCHES / "http_servers.py"),
        "--loop",
        loop,
        "--app",
        args.http,
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}/"
    with proc.server(server_cmd) as server:
        loop_class = server.ready_words[1] if len(server.ready_words) > 1 else "?"
        if loop_class.split(".")[0] != loop:
            raise proc.CellError(f"server runs on {loop_class}, not {loop}")
        headers = ("Connection: close",) if args.close else ()
        proc.run_wrk(url, args.conns, 2.0, latency=False, headers=headers)
        subprocess.run(
            ["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True
        )
        report = proc.run_wrk(url, args.conns, args.duration, latency=False, headers=headers)
        subprocess.run(
            ["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True
        )
        if report["requests"] == 0 or report["errors"]:
            raise proc.CellError(f"{report['requests']} requests, {report['errors']} errors")
        return _dump_total(outdir, loop, server.pid) / report["requests"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--style", default="protocol", choices=("sock", "streams", "protocol"))
    parser.add_argument("--transport", default="tcp", choices=("tcp", "unix"))
    parser.add_argument("--size-kib", type=int, default=1)
    parser.add_argument("--conns", type=int, help="default 1 (echo), 16 (--http)")
    parser.add_argument("--duration", type=float, help="default 4 (echo), 5 (--http)")
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind dumps in DIR")
    parser.add_argument(
        "--http",
        choices=("aiohttp", "fastapi"),
        help="measure this hello-world HTTP server under wrk instead of an echo server",
    )
    parser.add_argument(
        "--close",
        action="store_true",
        help="with --http: wrk sends 'Connection: close', so each request is a new connection",
    )
    args = parser.parse_args()
    if args.conns is None:
        args.conns = 16 if args.http else 1
    if args.duration is None:
        args.duration = 5.0 if args.http else 4.0
    # Python starts slowly under valgrind.
    proc.READY_TIMEOUT = 180.0
    if args.http:
        measure_one = measure_http
        close = ", Connection: close" if args.close else ""
        print(f"{args.http} under wrk, {args.conns} conns{close}: instructions/request")
    else:
        proc.ensure_client()
        measure_one = measure
        print(
            f"{args.style} {args.transport} {args.size_kib} KiB, {args.conns} conns:"
            " instructions/request"
        )
    with tempfile.TemporaryDirectory() as tmp:
        outdir = Path(args.keep or tmp)
        outdir.mkdir(parents=True, exist_ok=True)
        for loop in args.loops.split(","):
            try:
                value = f"{measure_one(loop, args, outdir):,.0f}"
            except proc.CellError as exc:
                value = f"error: {exc}"
            print(f"  {loop:10s} {value}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
