"""AsyncSSH's own test suite on tokioloop, compared with stock asyncio.

AsyncSSH is an SSHv2 client and server on asyncio transports, and its
tests drive both ends over loopback in one process: TCP servers and
connections (`create_server`, `create_connection`, `sock=`), Unix sockets
(agent forwarding, Unix-domain port forwarding), TCP and Unix port
forwarding in both directions, X.509 certificates, SFTP and SCP over
channels, subprocesses (`create_subprocess_exec` and pipes as process
redirections), an `ssh-agent` started per test class, `add_reader` on
pipes and ttys, and executors (key generation, file I/O). Every test
class makes its loop with `asyncio.new_event_loop()` (tests/util.py's
`AsyncTestCase`; AsyncSSH switches to uvloop the same way, under
USE_UVLOOP), so tests/policy_suite.py runs the suite with tokioloop's policy
installed, then its failures on stock asyncio, and counts a test as failing
only when it fails on tokioloop alone and again when re-run alone. A check
test asserts each session's loop from inside a test that makes an SSH
connection.

    python tests/asyncssh_suite/run.py [pytest args...]

The tests (tests/) and the package (asyncssh/, the same version as the one
installed) come from the installed version's sdist, fetched as
tests/sdist_suite.py describes; the suite's top comes first on sys.path,
so the sdist's package is the one tested. Needs asyncssh and its test
dependencies (bcrypt, pyOpenSSL, fido2, aiofiles, ifaddr), pytest-timeout,
and OpenSSH's client tools (`ssh-agent`, `ssh-keygen`; tests that need
what is missing skip themselves, on both loops alike). Running as root,
`test_known_hosts_not_readable` fails on both loops (root reads a mode-0
file); it is left in, as both sessions must agree on it.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

LOOP_CHECK = f"""\
import asyncio
import os

from .server import ServerTestCase
from .util import asynctest

EXPECTED = os.environ["{policy_suite.VAR}"]


class _TestTokioloopCheck(ServerTestCase):
    \"\"\"Which loop this session's tests run on.\"\"\"

    @classmethod
    async def start_server(cls):
        return await cls.create_server()

    @asynctest
    async def test_loop(self):
        loop = asyncio.get_running_loop()
        self.assertIs(loop, self.loop)
        self.assertEqual(type(loop).__module__.split(".")[0], EXPECTED)
        async with self.connect() as conn:
            self.assertEqual(conn.get_extra_info("peername")[0], "127.0.0.1")
"""
CHECK = "tests.test_zz_tokioloop."


def keep(path: str) -> bool:
    """The package and its tests."""
    return path.startswith(("asyncssh/", "tests/"))


def main() -> int:
    if not sdist_suite.installed("asyncssh"):
        return 1
    suite = sdist_suite.fetch(
        "asyncssh",
        importlib.metadata.version("asyncssh"),
        keep=keep,
        edits={},
        # AsyncSSH keeps no pytest settings.
        extra=policy_suite.bare_suite_files("tests/test_zz_tokioloop.py", LOOP_CHECK),
    )
    # pytest-asyncio (installed for tests/integration) off: the tests are
    # unittest cases that run their own loops. pytest-timeout: a hang fails
    # one test rather than the session.
    args = ["-p", "no:asyncio", "--timeout", "120", "--tb=short", "-rN", *sys.argv[1:]]
    stock, ours = policy_suite.run(suite, args, CHECK)
    return policy_suite.report("asyncssh", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
