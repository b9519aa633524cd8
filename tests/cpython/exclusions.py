"""Parse exclusions.txt: which CPython asyncio tests are not run, and why.

Line format (blank lines and lines starting with ``#`` are ignored)::

    [TAGS] DOTTED.NAME  # reason

``DOTTED.NAME`` is a module (``test.test_asyncio.test_proactor_events``), a
class (``...test_events.PollEventLoopTests``) or a single test id
(``...test_events.PolicyTests.test_foo``); it excludes everything at or
below that name.  Shell-style wildcards are allowed (``*`` also matches
dots), e.g. ``test.test_asyncio.test_events.*.test_timeout_rounding``.  The optional ``[TAGS]`` limit the line to some Python
versions: ``[3.13]``, ``[>=3.12]``, ``[<3.12]``, or several separated by
commas (all must hold).  Every line needs a reason: an entry without one is
an error, so nothing is excluded silently.
"""

from __future__ import annotations

import fnmatch
import operator
import re
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATH = Path(__file__).with_name("exclusions.txt")

_LINE = re.compile(r"^(?:\[(?P<tags>[^\]]*)\]\s*)?(?P<name>[\w.*?]+)\s*#\s*(?P<reason>\S.*)$")
_TAG = re.compile(r"^(?P<op><=|>=|==|<|>)?\s*(?P<major>\d+)\.(?P<minor>\d+)$")
_OPS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Exclusion:
    name: str
    reason: str
    line: int

    def covers(self, test_id: str) -> bool:
        """True if ``test_id`` (module, class or test id) is at or below this name."""
        if "*" in self.name or "?" in self.name:
            parts = test_id.split(".")
            prefixes = (".".join(parts[:n]) for n in range(1, len(parts) + 1))
            return any(fnmatch.fnmatchcase(p, self.name) for p in prefixes)
        return test_id == self.name or test_id.startswith(self.name + ".")


def _tags_match(tags: str, version: tuple[int, int], where: str) -> bool:
    for tag in (t.strip() for t in tags.split(",")):
        m = _TAG.match(tag)
        if not m:
            raise ValueError(f"{where}: bad version tag [{tag}]")
        wanted = (int(m["major"]), int(m["minor"]))
        if not _OPS[m["op"] or "=="](version, wanted):
            return False
    return True


def load(path: Path = DEFAULT_PATH, version: tuple[int, int] | None = None) -> list[Exclusion]:
    """Exclusions from ``path`` that apply to ``version`` (default: this Python)."""
    version = version or sys.version_info[:2]
    result = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name}:{lineno}"
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"{where}: expected '[tags] dotted.name  # reason', got {raw!r}")
        if m["tags"] is not None and not _tags_match(m["tags"], version, where):
            continue
        result.append(Exclusion(m["name"], m["reason"].strip(), lineno))
    return result


def find(exclusions: list[Exclusion], test_id: str) -> Exclusion | None:
    """The first exclusion covering ``test_id``, if any."""
    for exc in exclusions:
        if exc.covers(test_id):
            return exc
    return None
