"""aioquic's own test suite on tokioloop, compared with stock asyncio.

aioquic is QUIC and HTTP/3 on asyncio's datagram transports: its
`tests/test_asyncio.py` runs clients and servers over loopback UDP
(`create_datagram_endpoint` on "::" and IPv4, `sendto` bursts, retries,
connection migration with a changed local address, stateless resets,
timers for loss recovery and idle timeouts); the rest of its tests are
the protocol's own, loop-free. Each async test runs in `asyncio.run()`
(tests/utils.py's `asynctest`), whose loop comes from the event loop
policy, so tests/policy_suite.py runs the suite with tokioloop's policy
installed, then its failures on stock asyncio, and counts a test as failing
only when it fails on tokioloop alone and again when re-run alone. A check
test asserts each session's loop from inside a QUIC round trip.

    python tests/aioquic_suite/run.py [pytest args...]

The tests come from aioquic's sdist (pinned below, the version installed),
downloaded from PyPI and checked against its SHA-256 (`pip download` would
build its C extension); they run against the installed aioquic. Needs
aioquic and pytest-timeout; the whole suite takes about a minute a session.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

VERSION = "1.7.2"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/7a/9a/"
    "e62685ca8f24e6cefa554f2cda6aa5363822391f945c264289a1e236ca8a/aioquic-1.7.2.tar.gz"
)
SDIST_SHA256 = "4def7cb0a692dc12c995cc397a93f41b78cc30b7bf078769c3a3bb1ba9dcf362"

LOOP_CHECK = f"""\
import asyncio
import os
from unittest import TestCase

from . import test_asyncio  # not its class: pytest would collect it here
from .utils import asynctest

EXPECTED = os.environ["{policy_suite.VAR}"]


class TokioloopCheck(TestCase):
    \"\"\"Which loop this session's tests run on.\"\"\"

    setUp = test_asyncio.HighLevelTest.setUp
    run_client = test_asyncio.HighLevelTest.run_client
    run_server = test_asyncio.HighLevelTest.run_server

    @asynctest
    async def test_loop(self):
        loop = asyncio.get_running_loop()
        self.assertEqual(type(loop).__module__.split(".")[0], EXPECTED)
        async with self.run_server() as server_port:
            self.assertEqual(await self.run_client(port=server_port), b"gnip")
"""
CHECK = "tests.test_zz_tokioloop."


def main() -> int:
    if not sdist_suite.installed("aioquic", VERSION):
        return 1
    suite = sdist_suite.fetch_url(
        "aioquic",
        VERSION,
        SDIST_URL,
        SDIST_SHA256,
        keep=lambda path: path.startswith("tests/"),
        edits={},
        extra=policy_suite.bare_suite_files("tests/test_zz_tokioloop.py", LOOP_CHECK),
    )
    # pytest-asyncio (installed for tests/integration) off: the tests run
    # their own loops through asyncio.run().
    args = ["-p", "no:asyncio", "--timeout", "120", "--tb=short", "-rN", *sys.argv[1:]]
    stock, ours = policy_suite.run(suite, args, CHECK)
    return policy_suite.report("aioquic", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
