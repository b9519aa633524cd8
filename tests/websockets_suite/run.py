"""websockets' own tests of its asyncio implementations on tokioloop,
compared with stock asyncio.

The tests are those of websockets' asyncio implementation (tests/asyncio/:
client, server, connection, message assembly, routing; TLS and Unix
sockets included) and of its legacy asyncio implementation (tests/legacy/),
all on loopback. They are unittest classes: `IsolatedAsyncioTestCase`
(whose `asyncio.Runner` gets no loop factory, none of these classes
setting one, so it asks the event loop policy) and, in tests/legacy/, a base class calling
`asyncio.new_event_loop()` (the policy again). tests/policy_suite.py runs
them with tokioloop's policy installed, then their failures on stock
asyncio, and counts a test as failing only when it fails on tokioloop alone
(a check test asserts each session's loop).

    python tests/websockets_suite/run.py [pytest args...]

Where the tests come from: websockets' sdists leave them out (its
MANIFEST.in prunes tests/; 13.x-16.x ship only the sans-I/O top-level
tests), and this machine reaches no public repository. Debian's source
package of websockets carries upstream's whole tree, tests included: the
runner takes the pinned upstream tarball (`ORIG`) from the machine's
Debian archive with apt's own downloader, checked against its SHA-256 (as
listed in Debian's signed Sources index), and runs the tests against the
websockets library from that same tarball (src/, pure Python: on
PYTHONPATH, so the venv's websockets is left alone). So this is websockets
15.0.1, whatever websockets the venv has (tests/integration uses that one).

Needs werkzeug (tests/asyncio/test_router.py imports it). The
proxy tests (SocksProxyClientTests, HTTPProxyClientTests) skip themselves
without mitmproxy, which is not installed: it pins cryptography, h11,
pyOpenSSL and wsproto below what the venv's other suites use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

# Debian's python-websockets source package's upstream tarball (trixie's).
ORIG = "python-websockets/python-websockets_15.0.1.orig.tar.gz"
ORIG_SHA256 = "8451495265af3e368f794c4dc15c99ce90c771d95560f542bff8c64b5455af3b"
VERSION = "15.0.1"

# Asserts the loop each session runs its tests on, for both kinds of test
# case; in tests/legacy/ so that it runs last.
LOOP_CHECK = f"""\
import asyncio
import os
import unittest

from .utils import AsyncioTestCase

EXPECTED = os.environ["{policy_suite.VAR}"]


def kind(loop):
    return type(loop).__module__.split(".")[0]


class IsolatedAsyncioLoopTests(unittest.IsolatedAsyncioTestCase):
    async def test_loop(self):
        self.assertEqual(kind(asyncio.get_running_loop()), EXPECTED)


class LegacyLoopTests(AsyncioTestCase):
    def test_loop(self):
        self.assertEqual(kind(self.loop), EXPECTED)
"""
CHECK = "tests.legacy.test_zz_tokioloop."

# websockets runs its tests with unittest and has no pytest settings: this
# makes the suite pytest's rootdir (not tokioloop's checkout above it).
# Unittest classes: pytest-asyncio (installed) has nothing to run.
PYTEST_INI = """\
[pytest]
addopts = -p no:asyncio
timeout = 60
"""


def debian_archive() -> str:
    """The URI of the Debian archive this machine's apt uses for its
    release's main component (the mirror, as configured, not named here)."""
    os_release = Path("/etc/os-release").read_text().splitlines()
    fields = dict(line.split("=", 1) for line in os_release if "=" in line)
    release = fields["VERSION_CODENAME"].strip('"')
    out = subprocess.run(
        ["apt-get", "indextargets", "--no-release-info", "--format", "$(REPO_URI)"]
        + [f"Release: {release}", "Component: main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not out:
        raise SystemExit(f"no Debian archive for {release} main in apt's sources")
    return out[0] if out[0].endswith("/") else out[0] + "/"


def download_orig(dest: Path) -> Path:
    """`ORIG`, downloaded by apt-helper (apt's proxy settings, hash check)
    into `dest` and checked again here."""
    tarball = dest / Path(ORIG).name
    uri = f"{debian_archive()}pool/main/p/{ORIG}"
    subprocess.check_call(
        ["/usr/lib/apt/apt-helper", "download-file", uri, str(tarball), f"SHA256:{ORIG_SHA256}"]
    )
    if hashlib.sha256(tarball.read_bytes()).hexdigest() != ORIG_SHA256:
        raise SystemExit(f"{tarball.name}: SHA-256 mismatch")
    return tarball


def fetch() -> Path:
    """websockets' tests and library source, unpacked once under
    .cache/websockets-tests/."""
    target = sdist_suite.CACHE / "websockets-tests" / f"websockets-{VERSION}"
    if (target / ".complete").exists():
        return target
    with tempfile.TemporaryDirectory() as download:
        return sdist_suite.unpack(
            download_orig(Path(download)),
            target,
            keep=lambda path: path.startswith(("tests/", "src/websockets/")),
            edits={},
            extra={
                **policy_suite.plugin_files(),
                "pytest.ini": PYTEST_INI,
                "tests/legacy/test_zz_tokioloop.py": LOOP_CHECK,
            },
        )


def main() -> int:
    if importlib.util.find_spec("werkzeug") is None:
        # tests/asyncio/test_router.py would fail to import, ending both runs.
        print("websockets-suite needs werkzeug (pip install werkzeug)", file=sys.stderr)
        return 1
    suite = fetch()
    args = [
        "--tb=short",
        "-rN",
        "tests/asyncio",
        "tests/legacy",
        *sys.argv[1:],
    ]
    # Its timeouts are multiples of MS: 1 ms in upstream's CI, times this
    # factor here (its default for a release is 100, minutes of sleeping).
    env = {"WEBSOCKETS_TESTS_TIMEOUT_FACTOR": "10"}
    stock, ours = policy_suite.run(suite, args, CHECK, pythonpath=[suite / "src"], env=env)
    return policy_suite.report("websockets", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
