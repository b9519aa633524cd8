"""Full event-loop micro-benchmark: asyncio vs uvloop vs rloop vs tokioloop.

Usage: .venv/bin/python benches/micro.py [--rounds 5] [--loops asyncio,tokioloop]
       [--only call_soon,future_chain] [--quick] [--json out.json]

The workloads and the subprocess runner live in tokioloop._microbench (also
used by `python -m tokioloop`).  They are imported from the installed package
when it imports, else loaded by path from this checkout, so the baselines can
be measured before the Rust extension is built.  Prints a markdown table on
stdout and progress on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

MICROBENCH_PATH = Path(__file__).resolve().parent.parent / "python" / "tokioloop" / "_microbench.py"


def load_microbench():
    try:
        from tokioloop import _microbench

        return _microbench
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location("_tokioloop_microbench", MICROBENCH_PATH)
    if spec is None or spec.loader is None:
        sys.exit(f"cannot find {MICROBENCH_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def main(argv: list[str] | None = None) -> int:
    mb = load_microbench()
    parser = argparse.ArgumentParser(
        description="Event-loop micro-benchmarks; each cell runs in a fresh interpreter.",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds per cell, median reported (default 5, 3 with --quick)",
    )
    parser.add_argument(
        "--loops",
        type=csv_list,
        default=list(mb.LOOP_NAMES),
        help=f"comma-separated loops (default {','.join(mb.LOOP_NAMES)}; also "
        f"{','.join(mb.EXTRA_LOOPS)} if installed)",
    )
    parser.add_argument(
        "--only",
        type=csv_list,
        default=list(mb.WORKLOADS),
        help=f"comma-separated workloads (default all: {','.join(mb.WORKLOADS)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes (those of `python -m tokioloop`)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=mb.CELL_TIMEOUT,
        help="seconds before a cell is killed and reported as err (default %(default)s)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    args = parser.parse_args(argv)

    bad_loops = [name for name in args.loops if name not in mb.KNOWN_LOOPS]
    bad_work = [w for w in args.only if w not in mb.WORKLOADS]
    if bad_loops or bad_work:
        parser.error(f"unknown loop/workload: {', '.join(bad_loops + bad_work)}")
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")

    sizes = mb.QUICK_SIZES if args.quick else mb.FULL_SIZES
    results = mb.run_matrix(
        args.loops, args.only, sizes, rounds, progress=mb.Progress(sys.stderr), timeout=args.timeout
    )
    versions = ", ".join(f"{name} {v}" for name, v in results["versions"].items())
    print(f"{results['python']} on {results['platform']}, {results['cpus']} CPUs; {versions}\n")
    print(mb.format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
