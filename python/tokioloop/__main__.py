"""`python -m tokioloop`: run a program on tokioloop, or a short benchmark.

    python -m tokioloop                       short benchmark vs asyncio (uvloop, rloop)
    python -m tokioloop script.py [args...]   run an asyncio program on tokioloop, unchanged
    python -m tokioloop -m module [args...]   same, for a module (like `python -m`)

Running a program only swaps the event-loop policy before handing over to
runpy, so `asyncio.run()` and friends create tokioloop loops without the
program knowing.  The benchmark reuses tokioloop._microbench, the same code
as benches/micro.py, at smaller sizes.
"""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
import time
import warnings

USAGE = """\
usage: python -m tokioloop                       run a short benchmark (under a minute) of
                                                 tokioloop vs asyncio, and uvloop/rloop if
                                                 installed
       python -m tokioloop script.py [args...]   run an asyncio program on tokioloop
       python -m tokioloop -m module [args...]   run a library module on tokioloop
       python -m tokioloop -h | --help           show this help

The full benchmark lives in benches/micro.py of the source checkout.
"""

BENCH_ROUNDS = 3


def install_policy() -> None:
    """Make asyncio create tokioloop loops from now on, in this process."""
    import tokioloop

    # Event-loop policies are deprecated from Python 3.14 on, but they are
    # still the only way to reach code that calls asyncio.run() unmodified.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        install = getattr(tokioloop, "install", None)
        if install is not None:
            install()
            return

        class TokioloopPolicy(asyncio.DefaultEventLoopPolicy):
            def new_event_loop(self):
                return tokioloop.new_event_loop()

        asyncio.set_event_loop_policy(TokioloopPolicy())


def run_script(path: str, args: list[str]) -> None:
    if not os.path.exists(path):
        print(f"python -m tokioloop: can't open file {path!r}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [path, *args]
    # What `python script.py` does: the script's directory comes first on the path.
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    install_policy()
    runpy.run_path(path, run_name="__main__")


def run_module(module: str, args: list[str]) -> None:
    # runpy replaces argv[0] with the module's file, as `python -m` does; the
    # cwd is already sys.path[0] because we were started with -m ourselves.
    sys.argv = [module, *args]
    install_policy()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def run_benchmark() -> None:
    from tokioloop import _microbench as mb

    started = time.monotonic()
    print(
        "tokioloop quick benchmark: every cell runs in a fresh interpreter, "
        f"median of {BENCH_ROUNDS} rounds.",
        file=sys.stderr,
    )
    results = mb.run_matrix(
        list(mb.LOOP_NAMES),
        list(mb.WORKLOADS),
        mb.QUICK_SIZES,
        BENCH_ROUNDS,
        progress=mb.Progress(sys.stderr),
    )
    versions = ", ".join(f"{name} {v}" for name, v in results["versions"].items())
    print(f"{results['python']}, {results['cpus']} CPUs; {versions}\n")
    print(mb.format_table(results))
    print(f"\n({time.monotonic() - started:.0f} s; full run: benches/micro.py in the checkout)")


def main(argv: list[str]) -> int:
    if not argv:
        run_benchmark()
    elif argv[0] in ("-h", "--help"):
        print(USAGE, end="")
    elif argv[0] == "-m":
        if len(argv) < 2:
            print("python -m tokioloop: -m needs a module name\n\n" + USAGE, file=sys.stderr)
            return 2
        run_module(argv[1], argv[2:])
    elif argv[0].startswith("-"):
        print(f"python -m tokioloop: unknown option {argv[0]}\n\n" + USAGE, file=sys.stderr)
        return 2
    else:
        run_script(argv[0], argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
