"""Server instructions per echo request, counted by callgrind.

Usage: python benches/instructions.py [--loops asyncio,uvloop,rloop,tokioloop]
           [--style protocol] [--size-kib 1] [--conns 1] [--duration 4]
           [--transport tcp|unix]

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
"""

from __future__ import annotations

import argparse
import re
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--style", default="protocol", choices=("sock", "streams", "protocol"))
    parser.add_argument("--transport", default="tcp", choices=("tcp", "unix"))
    parser.add_argument("--size-kib", type=int, default=1)
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind dumps in DIR")
    args = parser.parse_args()
    proc.ensure_client()
    # Python starts slowly under valgrind.
    proc.READY_TIMEOUT = 180.0
    print(
        f"{args.style} {args.transport} {args.size_kib} KiB, {args.conns} conns: instructions/request"
    )
    with tempfile.TemporaryDirectory() as tmp:
        outdir = Path(args.keep or tmp)
        outdir.mkdir(parents=True, exist_ok=True)
        for loop in args.loops.split(","):
            try:
                value = f"{measure(loop, args, outdir):,.0f}"
            except proc.CellError as exc:
                value = f"error: {exc}"
            print(f"  {loop:10s} {value}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
