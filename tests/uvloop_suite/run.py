"""uvloop's own test suite, in its asyncio mode, on tokioloop.

uvloop's tests (tests/ of its source distribution) run each scenario twice:
on uvloop (`UVTestCase`, uvloop's behaviour expected) and on stock asyncio
(`AIOTestCase`, asyncio's behaviour expected, including where uvloop
differs). tokioloop promises asyncio's behaviour, so this runner routes the
`AIOTestCase` classes to tokioloop and runs them: several hundred network,
TLS, process, signal, DNS and executor scenarios written by another loop's
authors.

    python tests/uvloop_suite/run.py [--cache DIR] [pytest args...]

The source distribution of the installed uvloop's version (its
`_testbase` must match the tests) is fetched once with `pip download`, and
its tests/ unpacked into the cache directory (default
`.cache/uvloop-tests/` under the project root). The uvloop wheel itself is
only the test base; no test here runs on uvloop. Exit code: pytest's.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

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

# The suite's own rootdir and settings; the warnings ignored are aiohttp's
# about the suite's use of its API.
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


def fetch_tests(version: str, cache: Path) -> Path:
    """tests/ of uvloop `version`'s sdist, unpacked under `cache`."""
    target = cache / f"uvloop-{version}"
    if (target / "tests" / "__init__.py").exists():
        return target
    download = cache / "download"
    shutil.rmtree(download, ignore_errors=True)
    # pip, not PyPI's JSON API: it honours the machine's index settings and
    # checks what it downloads.
    subprocess.check_call(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"uvloop=={version}",
            "-d",
            str(download),
        ]
    )
    (sdist,) = download.glob("uvloop-*.tar.gz")
    shutil.rmtree(target, ignore_errors=True)
    top = f"uvloop-{version}/"
    with tarfile.open(sdist) as tar:
        for m in tar.getmembers():
            if m.isreg() and m.name.startswith(top + "tests/"):
                dest = target / m.name[len(top) :]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(m).read())
    shutil.rmtree(download)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "uvloop-tests")
    args, pytest_args = parser.parse_known_args()

    import uvloop

    suite = fetch_tests(uvloop.__version__, args.cache)
    (suite / "tests" / "conftest.py").write_text(CONFTEST)
    # Its own rootdir: not the project's pytest settings (pyproject.toml).
    (suite / "pytest.ini").write_text(PYTEST_INI)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:asyncio",
        "--timeout",
        "120",
        "-k",
        "(AIO or aio) and not _UV_",
        "tests",
        *(f"--deselect={t}" for t in sorted(DESELECT)),
        *pytest_args,
    ]
    return subprocess.call(command, cwd=suite)


if __name__ == "__main__":
    sys.exit(main())
