"""A/B of tokioloop builds on one echo cell: server CPU µs per request.

Usage: python benches/ab.py VARIANTS STYLE TRANSPORT KIB CONNS [ROUNDS] [SECONDS]

VARIANTS is a comma-separated list of loop names (asyncio, uvloop, rloop,
tokioloop) and snapshot directories (a path holding a copy of the
``tokioloop`` package, .so included, e.g. made with
``cp -rL python/tokioloop /tmp/base/``); a directory runs the tokioloop
server with ``PYTHONPATH`` set to it. The variants are interleaved round by
round, so a change in machine load hits them alike. Prints the median and
every round's CPU µs/request (the Rust client reads the server's
/proc/PID/stat at the start and end of its measured phase).

Example: python benches/ab.py /tmp/base,/tmp/new,rloop protocol tcp 100 16 3 3
"""

from __future__ import annotations

import os
import statistics
import sys

import _netproc as proc


def run_one(variant: str, style: str, transport: str, kib: int, conns: int, secs: float) -> float:
    loop = "tokioloop" if os.sep in variant else variant
    proc.EXTRA_ENV.clear()
    if os.sep in variant:
        proc.EXTRA_ENV["PYTHONPATH"] = variant
    cmd = [sys.executable, str(proc.BENCHES / "echo_servers.py"), "--loop", loop, "--style", style]
    if transport == "unix":
        cmd += ["--unix", f"/tmp/tokioloop-ab-{os.getpid()}.sock"]
        flag = "--unix"
    else:
        cmd += ["--tcp", "127.0.0.1:0"]
        flag = "--tcp"
    with proc.server(cmd) as server:
        report = proc.run_echo_client(
            [flag, server.ready_words[0]], kib * 1024, conns, 1.0, secs, server.pid
        )
    return report["server_cpu_us_per_req"]


def main(argv: list[str]) -> int:
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    variants = argv[0].split(",")
    style, transport, kib, conns = argv[1], argv[2], int(argv[3]), int(argv[4])
    rounds = int(argv[5]) if len(argv) > 5 else 3
    secs = float(argv[6]) if len(argv) > 6 else 3.0
    proc.ensure_client()
    samples: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            samples[variant].append(run_one(variant, style, transport, kib, conns, secs))
    print(f"{style} {transport} {kib} KiB, {conns} conns: server CPU us/request")
    for variant, values in samples.items():
        rounds_text = " ".join(f"{v:.1f}" for v in values)
        print(f"  {variant:24s} median {statistics.median(values):7.1f}   rounds {rounds_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
