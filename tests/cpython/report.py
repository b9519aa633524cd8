"""Per-module results of a run, and how they are printed and saved.

Counting rules (see README.md):

* ``passed`` counts only tests that passed *and* created at least one loop of
  the chosen type; tests that passed without one (they ran on TestLoop, a
  mocked loop, or no loop at all) are ``stock`` and are not counted as passes.
* ``failed`` is failures + errors; a test that crashed or hung the child is an
  error, and tests a timed-out or abandoned module never reached count as
  failed too (at least 1 per module).
* A module that created no chosen loop at all is ``ran-on-stock``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

# Statuses that do not make the run fail.
GOOD_STATUSES = ("ok", "ran-on-stock", "excluded", "skipped")


@dataclass
class Failure:
    id: str
    outcome: str  # fail | error
    summary: str
    traceback: str = ""


@dataclass
class ModuleResult:
    module: str
    status: str = "pending"
    passed: int = 0  # passed on a chosen loop
    stock: int = 0  # passed without creating a chosen loop
    failed: int = 0  # assertion failures (incl. unexpected successes)
    errors: int = 0  # errors, crashes, hangs
    skipped: int = 0
    excluded: int = 0
    unrun: int = 0  # planned but never reached (timeout / abandoned)
    loops: int = 0  # chosen-type loops created by the module
    duration: float = 0.0
    restarts: int = 0
    note: str = ""
    failures: list[Failure] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    log: str = ""

    @property
    def bad(self) -> int:
        """Tests counted as failed for the closing line."""
        return self.failed + self.errors + self.unrun

    def finish(self) -> None:
        """Derive the status from the counts (crash/timeout notes are kept)."""
        if self.status in ("excluded", "not-run", "TIMEOUT", "CRASH"):
            return
        if self.bad:
            self.status = "FAIL"
        elif self.loops == 0 and self.passed + self.stock == 0 and self.skipped:
            self.status = "skipped"
        elif self.loops == 0:
            self.status = "ran-on-stock"
        else:
            self.status = "ok"


COLUMNS = [
    ("module", 24, "module"),
    ("passed", 7, "passed"),
    ("stock", 6, "stock"),
    ("failed", 7, "failed"),
    ("errors", 7, "errors"),
    ("skipped", 8, "skipped"),
    ("excl", 5, "excluded"),
    ("loops", 6, "loops"),
    ("time", 7, "duration"),
]


def format_row(r: ModuleResult) -> str:
    cells = []
    for _title, width, attr in COLUMNS:
        value = getattr(r, attr)
        if attr == "module":
            cells.append(f"{value:<{width}}")
        elif attr == "duration":
            cells.append(f"{value:>{width - 1}.1f}s")
        elif attr == "failed":
            cells.append(f"{r.failed + r.unrun:>{width}}")
        else:
            cells.append(f"{value:>{width}}")
    status = r.status + (f" ({r.note})" if r.note else "")
    return " ".join(cells) + "  " + status


def header() -> str:
    cells = [
        f"{title:<{width}}" if attr == "module" else f"{title:>{width}}"
        for title, width, attr in COLUMNS
    ]
    return " ".join(cells) + "  status"


def print_table(results: list[ModuleResult], verbose: bool, max_failures: int = 8) -> None:
    print(header())
    print("-" * len(header()))
    for r in results:
        print(format_row(r))
    shown_any = False
    for r in results:
        if not r.failures:
            continue
        if not shown_any:
            print("\nFailures (test id: exception):")
            shown_any = True
        limit = len(r.failures) if verbose else max_failures
        print(f"  {r.module}  [{r.log}]")
        for f in r.failures[:limit]:
            print(f"    {f.outcome.upper():5} {f.id}: {f.summary}")
        if len(r.failures) > limit:
            print(f"    ... {len(r.failures) - limit} more (use --verbose or --json)")


def totals(results: list[ModuleResult]) -> dict:
    keys = ("passed", "stock", "failed", "errors", "skipped", "excluded", "unrun", "loops")
    out = {k: sum(getattr(r, k) for r in results) for k in keys}
    out["bad"] = sum(r.bad for r in results)
    out["bad_modules"] = [r.module for r in results if r.status not in GOOD_STATUSES]
    return out


def write_json(path: str, meta: dict, results: list[ModuleResult]) -> None:
    data = dict(meta)
    data["totals"] = totals(results)
    data["modules"] = {r.module: asdict(r) for r in results}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
