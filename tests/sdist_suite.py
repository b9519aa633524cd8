"""Other projects' test suites, run on tokioloop: what the runners in
tests/*_suite/ share.

Each runner takes a project's tests from its source distribution (fetched
once with `pip download`, which honours the machine's index settings and
checks what it downloads; `unpack` alone where the tests come in another
source archive), edits the project's conftest to put tokioloop in
(every edit must apply, so a changed conftest fails loudly instead of
silently testing the wrong loop), runs pytest on it, and re-runs each
failing test once, alone, before it counts (timing-sensitive tests on a
loaded 2-core machine). Every pytest session has a wall-clock limit
(`SESSION_LIMIT`): a session that hangs (a test that blocks its thread
where pytest-timeout's signal cannot reach, or a thread that never ends and
holds up the interpreter's exit) gets SIGABRT, whose faulthandler dump
shows every thread's stack, and its tests count as not passed: one hang
fails its suite instead of running CI out of time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"


def installed(project: str, version: str | None = None) -> bool:
    """Whether `project` is importable (at exactly `version`, if given: the
    version whose tests are pinned); if not, says so on stderr."""
    if importlib.util.find_spec(project) is None:
        found = None
    else:
        found = importlib.metadata.version(project)
    if found is not None and version in (None, found):
        return True
    wanted = project if version is None else f"{project}=={version}"
    print(f"{project}-suite needs {wanted} installed (found: {found})", file=sys.stderr)
    return False


def tests_and_settings(path: str) -> bool:
    """A `keep` for `fetch`: the tests, and the project's pytest settings
    (its pyproject.toml)."""
    return path.startswith("tests/") or path == "pyproject.toml"


def fetch(
    project: str,
    version: str,
    keep: Callable[[str], bool],
    edits: dict[str, list[tuple[str, str]]],
    extra: dict[str, str] | None = None,
) -> Path:
    """`project` `version`'s sdist files for which `keep(path)` holds,
    unpacked under .cache/<project>-tests/, with `edits` ({path: [(old,
    new)]}) applied and the `extra` files ({path: text}) written."""
    target = CACHE / f"{project}-tests" / f"{project}-{version}"
    if (target / ".complete").exists():
        return target
    with tempfile.TemporaryDirectory() as download:
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
                f"{project}=={version}",
                "-d",
                download,
            ]
        )
        (sdist,) = Path(download).glob("*.tar.gz")
        return unpack(sdist, target, keep, edits, extra)


def fetch_url(
    project: str,
    version: str,
    url: str,
    sha256: str,
    keep: Callable[[str], bool],
    edits: dict[str, list[tuple[str, str]]],
    extra: dict[str, str] | None = None,
) -> Path:
    """As `fetch`, from the sdist at `url` (checked against `sha256`), for
    projects whose sdist `pip download` cannot take without building it
    (pip prepares an sdist's metadata, which for a C or Cython extension
    needs its whole build toolchain)."""
    target = CACHE / f"{project}-tests" / f"{project}-{version}"
    if (target / ".complete").exists():
        return target
    with tempfile.TemporaryDirectory() as download:
        tarball = Path(download) / f"{project}-{version}.tar.gz"
        with urllib.request.urlopen(url, timeout=120) as response, tarball.open("wb") as out:
            shutil.copyfileobj(response, out)
        if hashlib.sha256(tarball.read_bytes()).hexdigest() != sha256:
            raise SystemExit(f"{tarball.name}: SHA-256 mismatch")
        return unpack(tarball, target, keep, edits, extra)


def unpack(
    tarball: Path,
    target: Path,
    keep: Callable[[str], bool],
    edits: dict[str, list[tuple[str, str]]],
    extra: dict[str, str] | None = None,
) -> Path:
    """`tarball`'s files (paths below its top folder) for which `keep(path)`
    holds, unpacked anew into `target`, with `edits` applied and `extra`
    written as `fetch` says; `target` is marked complete last."""
    shutil.rmtree(target, ignore_errors=True)
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            name = member.name.split("/", 1)[-1]
            if member.isreg() and keep(name):
                dest = target / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(member).read())
    for path, changes in edits.items():
        text = (target / path).read_text()
        for old, new in changes:
            if old not in text:
                raise SystemExit(f"{target.name}: {path} has no {old.strip()!r} to edit")
            text = text.replace(old, new)
        (target / path).write_text(text)
    for path, text in (extra or {}).items():
        (target / path).write_text(text)
    (target / ".complete").touch()
    return target


def outcomes(junit: Path) -> dict[str, str]:
    """Test id -> "passed", "failed" or "skipped", from a JUnit XML report
    (none when pytest did not get as far as writing one)."""
    result = {}
    if not junit.exists():
        return result
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
    if not classname:  # a module that failed to import: "tests.test_x"
        return name.replace(".", "/") + ".py"
    parts = classname.split(".")
    for i in range(len(parts), 0, -1):
        path = Path(*parts[:i]).with_suffix(".py")
        if (suite / path).is_file():
            return "::".join([path.as_posix(), *parts[i:], name])
    return test_id


@dataclass
class Run:
    """One suite run: every test's first outcome, and what the re-run of
    the failures made of them."""

    results: dict[str, str]
    flaky: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def count(self, outcome: str, only: Callable[[str], bool] = lambda t: True) -> int:
        return sum(1 for t, o in self.results.items() if o == outcome and only(t))

    def report(self) -> None:
        for t in self.flaky:
            print(f"  flaky (passed when re-run alone): {t}")
        for t in self.failed:
            print(f"  FAILED: {t}")


PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
# Seconds a pytest session may take; the longest (AsyncSSH's) takes ~270.
SESSION_LIMIT = 900


def pytest_session(command: list[str], suite: Path) -> None:
    """Runs one pytest session in `suite`, within SESSION_LIMIT seconds."""
    with subprocess.Popen(command, cwd=suite) as session:
        try:
            session.wait(SESSION_LIMIT)
        except subprocess.TimeoutExpired:
            print(f"pytest session over {SESSION_LIMIT} s: aborted", file=sys.stderr, flush=True)
            session.send_signal(signal.SIGABRT)
            try:
                session.wait(30)
            except subprocess.TimeoutExpired:
                session.kill()


# The options among the suites' pytest arguments that take a value.
WITH_VALUE = {"-k", "-m", "-p", "-o", "-W", "--timeout", "--deselect", "--ignore"}


def options(args: list[str]) -> list[str]:
    """`args` without its positional arguments (the paths to collect): what
    a run of chosen tests keeps, so that they run as they did in the whole
    suite (plugins off, timeouts, ini overrides)."""
    kept, value = [], False
    for arg in args:
        if value or arg.startswith("-"):
            kept.append(arg)
            value = not value and arg in WITH_VALUE
    return kept


def pytest_run(
    suite: Path, args: list[str], recheck: Callable[[dict[str, str]], list[str]] | None = None
) -> Run:
    """pytest `args` in `suite`; the tests `recheck(results)` picks (none
    without `recheck`) are re-run once, alone: those that pass then are
    flaky, the rest failed."""
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(tmp) / "first.xml"
        pytest_session([*PYTEST, "--junit-xml", str(first), *args], suite)
        run = Run(outcomes(first))
    if recheck is not None:
        recheck_alone(suite, args, run, recheck(run.results))
    return run


def pytest_nodes(suite: Path, args: list[str], tests: list[str]) -> dict[str, str]:
    """The outcomes of `tests` (JUnit ids) run on their own, in one pytest
    session with the options of `args`: none when `tests` is empty."""
    if not tests:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        nodes = [node_id(suite, t) for t in dict.fromkeys(tests)]
        command = [*PYTEST, "--junit-xml", str(report), *options(args), "--tb=short", *nodes]
        pytest_session(command, suite)
        return outcomes(report)


def recheck_alone(suite: Path, args: list[str], run: Run, suspects: list[str]) -> None:
    """Re-runs `suspects` (failures of `run`, made with `args`) once, alone:
    those that pass then go to `run.flaky`, the rest to `run.failed`."""
    retried = pytest_nodes(suite, args, suspects)
    for t in suspects:
        (run.flaky if retried.get(t) == "passed" else run.failed).append(t)


def failures(results: dict[str, str]) -> list[str]:
    return [t for t, o in results.items() if o == "failed"]
