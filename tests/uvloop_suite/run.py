"""uvloop's own test suite, in its asyncio mode, on tokioloop.

uvloop's tests (tests/ of its source distribution) run each scenario twice:
on uvloop (`UVTestCase`, uvloop's behaviour expected) and on stock asyncio
(`AIOTestCase`, asyncio's behaviour expected, including where uvloop
differs). tokioloop promises asyncio's behaviour, so this runner routes the
`AIOTestCase` classes to tokioloop and runs them: several hundred network,
TLS, process, signal, DNS and executor scenarios written by another loop's
authors.

    python tests/uvloop_suite/run.py [pytest args...]

The tests are those of uvloop 0.23.0, which must be the installed uvloop
(its `_testbase` must match them), fetched as tests/sdist_suite.py
describes. The uvloop wheel is
only the test base; no test here runs on uvloop. Exit code 0 when every
test passes (a failure counts only if it fails again when re-run alone).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sdist_suite  # tests/ is not a package: imported by path

# The uvloop whose tests run (its `_testbase` must match them; scripts/test.sh
# installs it). Its sdist is fetched from its URL: `pip download` would
# prepare its metadata, which takes minutes for uvloop's build (libuv).
VERSION = "0.23.0"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/fa/42/"
    "02c739ce85fb2ee8d99212c61417da8140c6b87e9d97c430bea520d76044/uvloop-0.23.0.tar.gz"
)
SDIST_SHA256 = "28d160f51ab4da3b187063652e643dea6831072add4adc1e6d62afbe73b6be27"

# Routes AIOTestCase to tokioloop. is_asyncio_loop() picks asyncio's
# expectations in the tests where the two loops differ; it looks at the
# loop's module name, which for tokioloop is not asyncio's.
CONFTEST = """\
import tokioloop
from uvloop import _testbase as tb

tb.AIOTestCase.new_loop = lambda self: tokioloop.new_event_loop()
tb.AIOTestCase.new_policy = lambda self: tokioloop.EventLoopPolicy()
tb.AIOTestCase.is_asyncio_loop = lambda self: True
"""

# The suite's own rootdir and settings (not the project's pyproject.toml);
# the warnings ignored are aiohttp's about the suite's use of its API.
PYTEST_INI = """\
[pytest]
filterwarnings =
    ignore:It is recommended to use web.AppKey
    ignore:shutdown_timeout should be set on BaseRunner:DeprecationWarning
"""

# Tests that fail on stock asyncio too, here: not tokioloop's.
DESELECT = {
    # Swaps fds 1 and 2 for files and reads what a child printed; pytest's
    # output capture has already replaced them.
    "tests/test_process.py::Test_AIO_Process::test_process_streams_redirect",
}
if (3, 13) <= sys.version_info < (3, 13, 3):
    # Runs on 3.13+, but asyncio's loop.create_task takes eager_start= only
    # from 3.13.3 (tokioloop follows the running asyncio).
    DESELECT.add("tests/test_base.py::TestBaseAIO::test_loop_create_task_eager_start")


def main() -> int:
    if not sdist_suite.installed("uvloop", VERSION):
        return 1
    suite = sdist_suite.fetch_url(
        "uvloop",
        VERSION,
        SDIST_URL,
        SDIST_SHA256,
        keep=lambda path: path.startswith("tests/"),
        edits={},
        extra={"tests/conftest.py": CONFTEST, "pytest.ini": PYTEST_INI},
    )
    args = [
        "-p",
        "no:asyncio",
        "--timeout",
        "120",
        "-k",
        "(AIO or aio) and not _UV_",
        *(f"--deselect={t}" for t in sorted(DESELECT)),
        "tests",
        *sys.argv[1:],
    ]
    run = sdist_suite.pytest_run(suite, args, recheck=sdist_suite.failures)
    print(
        f"uvloop-suite (asyncio mode) on tokioloop: {run.count('passed')} passed, "
        f"{run.count('skipped')} skipped, {len(run.flaky)} flaky, {len(run.failed)} failed"
    )
    run.report()
    if not run.results:
        print("no test ran", file=sys.stderr)
        return 1
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
