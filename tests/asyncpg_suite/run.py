"""asyncpg's own test suite on tokioloop, compared with stock asyncio.

asyncpg is the PostgreSQL driver most often run on uvloop. Its protocol is
Cython on asyncio transports (a `BufferedProtocol`-style reader over
`create_connection`/`create_unix_connection`, `start_tls` for SSL), and its
tests exercise pools, cancellation, timeouts, COPY streams, LISTEN/NOTIFY
and connection loss against a real server. Every test case makes its loop
with `asyncio.new_event_loop()` (asyncpg/_testbase's `TestCase`, which
switches to uvloop the same way under USE_UVLOOP), so
tests/policy_suite.py runs the suite with tokioloop's policy installed, then
its failures on stock asyncio, and counts a test as failing only when it
fails on tokioloop alone and again when re-run alone. A check test asserts
each session's loop from inside a test that queries the server.

    eval "$(bash scripts/services.sh start)"   # PostgreSQL on loopback
    python tests/asyncpg_suite/run.py [pytest args...]

The server is the one scripts/services.sh starts (TOKIOLOOP_PG_DSN): the
suite uses a running cluster when PGHOST is set, as asyncpg's own CI can.
Tests that manage a cluster of their own (standbys, pg_hba changes) need
initdb, which refuses to run as root: where they cannot, they error on both
loops alike. The tests come from asyncpg's sdist (the installed version),
downloaded from PyPI and checked against its SHA-256 (`pip download`
would build the sdist's metadata, which needs Cython); they run against the
installed, compiled asyncpg. Needs asyncpg (pinned below), distro and
pytest-timeout.

One test is deselected: `test_pool_config_persistence` ends with
`Pool.close()` cancelling the pool's maintenance task, which may be in the
middle of opening a connection. When the cancel lands while
`create_connection` waits for its transport's waiter (between
`connection_made` and the waiter's result, one iteration on any loop),
asyncpg's SSL-negotiation protocol is left holding a future whose exception
nobody retrieves, and the test's check for "exception was never retrieved"
fails it. That is a race in asyncpg, on any loop: run alone 40 times on
stock asyncio here, it failed 8 times (on tokioloop, 3 of 12).
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

VERSION = "0.32.0"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/80/4e/"
    "59dc964f962f09e3ed472e5d2d3ba670a41a2be25080dc62ab3db507ff5e/asyncpg-0.32.0.tar.gz"
)
SDIST_SHA256 = "45e64e56714d888330b884aad1dfb363d0bf43fb343e3d1a8968525f3bade478"

DESELECT = ["tests/test_pool.py::TestPool::test_pool_config_persistence"]

LOOP_CHECK = f"""\
import asyncio
import os

from asyncpg import _testbase as tb

EXPECTED = os.environ["{policy_suite.VAR}"]


class TestTokioloopCheck(tb.ConnectedTestCase):
    \"\"\"Which loop this session's tests run on.\"\"\"

    async def test_loop(self):
        loop = asyncio.get_running_loop()
        self.assertIs(loop, self.loop)
        self.assertEqual(type(loop).__module__.split(".")[0], EXPECTED)
        self.assertEqual(await self.con.fetchval("SELECT 1 + 1"), 2)
"""
CHECK = "tests.test_zz_tokioloop."


def suite_dir() -> Path:
    return sdist_suite.fetch_url(
        "asyncpg",
        VERSION,
        SDIST_URL,
        SDIST_SHA256,
        keep=lambda path: path.startswith("tests/"),
        edits={},
        extra=policy_suite.bare_suite_files("tests/test_zz_tokioloop.py", LOOP_CHECK),
    )


def main() -> int:
    if not sdist_suite.installed("asyncpg", VERSION):
        return 1
    dsn = os.environ.get("TOKIOLOOP_PG_DSN")
    if not dsn:
        print("asyncpg-suite needs TOKIOLOOP_PG_DSN (scripts/services.sh start)", file=sys.stderr)
        return 1
    server = urllib.parse.urlsplit(dsn)
    env = {
        "PGHOST": server.hostname or "127.0.0.1",
        "PGPORT": str(server.port or 5432),
        "PGUSER": server.username or "postgres",
    }
    suite = suite_dir()
    deselect = [arg for test in DESELECT for arg in ("--deselect", test)]
    args = ["-p", "no:asyncio", "--timeout", "120", "--tb=short", "-rN", *deselect, *sys.argv[1:]]
    stock, ours = policy_suite.run(suite, args, CHECK, env=env)
    return policy_suite.report("asyncpg", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
