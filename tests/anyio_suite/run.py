"""anyio's own test suite on tokioloop, compared with stock asyncio.

anyio's tests run every async test once per backend; its conftest has an
"asyncio+uvloop" backend (asyncio with uvloop's loop factory). This runner
points that backend at tokioloop instead ("asyncio+tokioloop") and runs its
variants; then the plain "asyncio" twins of those that failed. The check
is differential: a test that fails on tokioloop while its twin on stock
asyncio passes (or is skipped) is a failure, once it fails again when re-run
alone; one that fails on both (this machine has no IPv6 name for localhost,
for one) is not tokioloop's. Only the failures' twins run on stock asyncio,
to keep the suite's share of CI's time small.

    python tests/anyio_suite/run.py [pytest args...]

The tests (and anyio's pytest settings, its pyproject.toml) are those of
the installed anyio's version, fetched as tests/sdist_suite.py describes;
anyio's test dependencies must be installed (see scripts/test.sh).
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sdist_suite  # tests/ is not a package: imported by path

OURS = "asyncio+tokioloop"
STOCK = "asyncio"

# anyio's conftest, edited: the uvloop backend becomes tokioloop's.
CONFTEST_EDITS = [
    ('uvloop_name = "uvloop"', 'uvloop_name = "tokioloop"'),
    ("        import uvloop\n", "        import tokioloop as uvloop\n"),
    ("uvloop.loop.Loop,", "uvloop.Loop,"),
]


def main() -> int:
    suite = sdist_suite.fetch(
        "anyio",
        importlib.metadata.version("anyio"),
        keep=sdist_suite.tests_and_settings,
        edits={"tests/conftest.py": CONFTEST_EDITS},
    )

    # The asyncio backends (not anyio's eager-task one, 3.12+, nor trio),
    # quietly: most failures here fail on both; the re-run shows the rest.
    # Not the IPv6 variants: they look up "localhost" for ::1, which
    # machines without that name fail on both loops, and the sockets those
    # failures leave open turn into ResourceWarnings failing whichever tests
    # run when they are collected.
    both_backends = "asyncio and not eager and not ipv6"
    args = ["--tb=no", "-rN", "tests", *sys.argv[1:]]
    run = sdist_suite.pytest_run(suite, ["-k", f"{both_backends} and tokioloop", *args])
    twins = {t: t.replace(OURS, STOCK) for t in sdist_suite.failures(run.results)}
    stock = sdist_suite.pytest_nodes(suite, ["-k", both_backends, *args], list(twins.values()))
    suspects = [t for t, twin in twins.items() if stock.get(twin) in ("passed", "skipped")]
    sdist_suite.recheck_alone(suite, ["-k", both_backends, *args], run, suspects)

    def ours(t: str) -> bool:
        return OURS in t

    both = run.count("failed", ours) - len(run.flaky) - len(run.failed)
    print(
        f"anyio-suite on {OURS}: {run.count('passed', ours)} passed, "
        f"{run.count('skipped', ours)} skipped, {run.count('failed', ours)} failed "
        f"({both} fail on stock asyncio too, {len(run.flaky)} passed when re-run "
        f"alone); failing only on tokioloop: {len(run.failed)}"
    )
    run.report()
    if not any(OURS in t for t in run.results):
        print("no test ran on tokioloop", file=sys.stderr)
        return 1
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
