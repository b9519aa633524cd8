"""Helpers shared by the core-loop test modules.

Kept out of conftest.py so test modules can import them by a unique name
(``tests/cpython/`` has its own conftest.py, so ``from conftest import ...``
would be ambiguous).
"""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from pathlib import Path

LOOP_KINDS = ("asyncio", "tokioloop")

# Python expression (evaluated after ``import asyncio`` and, for tokioloop,
# ``import tokioloop``) that creates a new loop of each kind.  Used by tests
# that have to build a loop in a child interpreter.
FACTORY_EXPR = {
    "asyncio": "asyncio.new_event_loop",
    "tokioloop": "tokioloop.new_event_loop",
}

PY311 = sys.version_info >= (3, 11)
PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)


def import_tokioloop():
    """Import tokioloop, failing loudly (never skipping) when it is absent."""
    return importlib.import_module("tokioloop")


def get_factory(kind: str):
    if kind == "asyncio":
        return asyncio.new_event_loop
    if kind == "tokioloop":
        return import_tokioloop().new_event_loop
    raise AssertionError(kind)


def child_prelude(kind: str) -> str:
    """Source lines a child interpreter needs to build a loop of ``kind``.

    Defines ``factory`` (the loop factory) in the child.
    """
    lines = ["import asyncio"]
    if kind == "tokioloop":
        lines.append("import tokioloop")
    lines.append(f"factory = {FACTORY_EXPR[kind]}")
    return "\n".join(lines) + "\n"


def pytest_in_child(files, env, timeout, *args):
    """pytest on `files` (names in tests/) in a fresh interpreter with the
    environment `env`: for behaviour chosen once per process (an
    environment variable read at start-up). Returns the finished process
    after asserting it passed."""
    tests = Path(__file__).parent
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:asyncio",
            *args,
            *[str(tests / name) for name in files],
        ],
        env=env,
        cwd=tests.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
    return proc
