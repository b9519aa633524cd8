"""anyio's own test suite on tokioloop, compared with stock asyncio.

anyio's tests run every async test once per backend; its conftest has an
"asyncio+uvloop" backend (asyncio with uvloop's loop factory). This runner
points that backend at tokioloop instead ("asyncio+tokioloop") and runs the
plain "asyncio" backend beside it, in the same pytest session. The check is
differential: a test that fails on tokioloop while its twin on stock asyncio
passes (or is skipped) is a failure; one that fails on both (this machine
has no IPv6 name for localhost, for one) is not tokioloop's. Such a test is
first re-run once, alone, before it counts (timing-sensitive tests on a
loaded 2-core machine).

    python tests/anyio_suite/run.py [--cache DIR] [pytest args...]

The source distribution of the installed anyio's version is fetched once
with `pip download` and its tests/ and pyproject.toml (anyio's pytest
settings) unpacked under the cache directory (default `.cache/anyio-tests/`
under the project root). It needs anyio's test dependencies installed
(see scripts/test.sh). Exit code 0 when no test fails only on tokioloop.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = "asyncio+tokioloop"
STOCK = "asyncio"

# anyio's conftest, edited: the uvloop backend becomes tokioloop's. Each
# pattern must be found, so a changed conftest fails loudly, not silently.
CONFTEST_EDITS = [
    ('uvloop_name = "uvloop"', f'uvloop_name = "{OURS.split("+")[1]}"'),
    ("        import uvloop\n", "        import tokioloop as uvloop\n"),
    ("uvloop.loop.Loop,", "uvloop.Loop,"),
]


def fetch_suite(version: str, cache: Path) -> Path:
    """anyio `version`'s tests/ and pyproject.toml, unpacked under `cache`."""
    target = cache / f"anyio-{version}"
    if (target / "tests" / "conftest.py").exists():
        return target
    download = cache / "download"
    shutil.rmtree(download, ignore_errors=True)
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
            f"anyio=={version}",
            "-d",
            str(download),
        ]
    )
    (sdist,) = download.glob("anyio-*.tar.gz")
    shutil.rmtree(target, ignore_errors=True)
    top = f"anyio-{version}/"
    with tarfile.open(sdist) as tar:
        for m in tar.getmembers():
            name = m.name[len(top) :]
            if m.isreg() and (name.startswith("tests/") or name == "pyproject.toml"):
                dest = target / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(m).read())
    conftest = target / "tests" / "conftest.py"
    text = conftest.read_text()
    for old, new in CONFTEST_EDITS:
        if old not in text:
            shutil.rmtree(target)
            raise SystemExit(f"anyio {version}: its conftest has no {old.strip()!r} to edit")
        text = text.replace(old, new)
    conftest.write_text(text)
    shutil.rmtree(download)
    return target


def outcomes(junit: Path) -> dict[str, str]:
    """Test id -> "passed", "failed" or "skipped", from a JUnit XML report."""
    result = {}
    for case in ET.parse(junit).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            result[test_id] = "failed"
        elif case.find("skipped") is not None:
            result.setdefault(test_id, "skipped")
        else:
            result.setdefault(test_id, "passed")
    return result


def node_id(suite: Path, test_id: str) -> str:
    """JUnit's "tests.test_x.TestY::test_z[...]" as a pytest node id."""
    classname, name = test_id.split("::", 1)
    parts = classname.split(".")
    for i in range(len(parts), 0, -1):
        path = Path(*parts[:i]).with_suffix(".py")
        if (suite / path).is_file():
            return "::".join([path.as_posix(), *parts[i:], name])
    return test_id


def run_pytest(suite: Path, junit: Path, args: list[str]) -> None:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--junit-xml",
        str(junit),
    ]
    subprocess.call([*command, *args], cwd=suite)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "anyio-tests")
    args, pytest_args = parser.parse_known_args()

    suite = fetch_suite(importlib.metadata.version("anyio"), args.cache)
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(tmp) / "first.xml"
        # Both asyncio backends (not anyio's eager-task one, 3.12+, nor
        # trio). Not the IPv6 variants: they look up "localhost" for ::1,
        # which machines without that name fail on both loops, and the
        # sockets those failures leave open turn into ResourceWarnings
        # failing whichever tests run when they are collected.
        # Quiet: most failures here fail on both; the re-run shows the rest.
        first_args = ["-k", "asyncio and not eager and not ipv6", "--tb=no", "-rN", "tests"]
        run_pytest(suite, first, [*first_args, *pytest_args])
        results = outcomes(first)
        ours = {t: o for t, o in results.items() if OURS in t}
        only_ours = [
            t
            for t, o in ours.items()
            if o == "failed" and results.get(t.replace(OURS, STOCK)) in ("passed", "skipped")
        ]
        both = sum(1 for t, o in ours.items() if o == "failed") - len(only_ours)
        flaky, failed = [], []
        if only_ours:
            again = Path(tmp) / "again.xml"
            run_pytest(suite, again, ["--tb=short", *(node_id(suite, t) for t in only_ours)])
            retried = outcomes(again)
            for t in only_ours:
                (failed if retried.get(t) != "passed" else flaky).append(t)
    counts = {o: sum(1 for v in ours.values() if v == o) for o in ("passed", "failed", "skipped")}
    print(
        f"anyio-suite on {OURS}: {counts['passed']} passed, {counts['skipped']} skipped, "
        f"{counts['failed']} failed ({both} fail on stock asyncio too, {len(flaky)} passed "
        f"when re-run alone); failing only on tokioloop: {len(failed)}"
    )
    for t in flaky:
        print(f"  flaky: {t}")
    for t in failed:
        print(f"  FAILED only on tokioloop: {t}")
    if not ours:
        print("no test ran on tokioloop", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
