"""Run CPython's own asyncio test suite (``test.test_asyncio``) on a chosen loop.

Each test module runs in its own child interpreter (child.py) under the
Python that runs this script, with the loop under test routed in as the
event loop (routing.py).  Results stream back as JSON lines, so a child
that crashes or hangs is restarted without the tests it already finished
and the culprit is reported as an error.  See README.md.

    python tests/cpython/run.py --loop uvloop -j 2
    python tests/cpython/run.py --loop tokioloop --modules test_tasks,test_futures -v
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pkgutil
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The helpers live beside this script; run.py is started as a plain script.
sys.path.insert(0, str(HERE))

import exclusions
import report
import routing

PACKAGE = "test.test_asyncio"
# Started first so that -j packs the long modules in early.
SLOW_MODULES = (
    "test_events",
    "test_tasks",
    "test_sendfile",
    "test_ssl",
    "test_subprocess",
    "test_sslproto",
    "test_base_events",
    "test_sock_lowlevel",
    "test_unix_events",
)
MAX_RESTARTS = 10
LOG_TAIL_LINES = 40


def discover_modules() -> list[str]:
    import test.test_asyncio as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("test_")]
    return sorted(names)


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the child and anything it spawned (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def log_tail(path: Path, start: int) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        fh.seek(start)
        lines = fh.read().splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])


def describe_death(rc: int, tail: str, test_timeout: float) -> str:
    if "Timeout (" in tail:  # faulthandler.dump_traceback_later's banner
        return f"hung: no result after {test_timeout:g}s (per-test timeout)"
    if rc < 0:
        try:
            return f"child crashed with {signal.Signals(-rc).name}"
        except ValueError:
            return f"child killed by signal {-rc}"
    return f"child exited with code {rc} before finishing"


class ModuleRun:
    """Runs one module, restarting its child after crashes and hangs."""

    def __init__(self, module: str, args, log_dir: Path, global_deadline: float):
        self.module = module
        self.args = args
        self.global_deadline = global_deadline
        self.log = log_dir / f"{module}.log"
        self.results_path = log_dir / f"{module}.jsonl"
        self.skip_path = log_dir / f"{module}.skip"
        self.result = report.ModuleResult(module, log=str(self.log))
        self.records: dict[str, dict] = {}
        self.planned: int | None = None

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-X",
            "faulthandler",
            str(HERE / "child.py"),
            "--loop",
            self.args.loop,
            "--module",
            self.module,
            "--results",
            str(self.results_path),
            "--exclusions",
            str(self.args.exclusions),
            "--test-timeout",
            str(self.args.test_timeout),
        ]
        if self.records:
            self.skip_path.write_text("\n".join(self.records) + "\n")
            cmd += ["--skip", str(self.skip_path)]
        return cmd

    def read_events(self, offset: int) -> tuple[list[dict], int]:
        if not self.results_path.exists():
            return [], offset
        with open(self.results_path, encoding="utf-8") as fh:
            fh.seek(offset)
            text = fh.read()
        # A killed child may leave a half-written last line; it is dropped.
        events = []
        for line in text.splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return events, offset + len(text.encode("utf-8"))

    def run(self) -> report.ModuleResult:
        start = time.monotonic()
        deadline = min(start + self.args.timeout, self.global_deadline)
        workdir = tempfile.mkdtemp(prefix=f"tokioloop-cpython-{self.module}-")
        offset, crashes = 0, 0
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining < 1:
                    self._abandon("TIMEOUT", "time budget used up before finishing")
                    break
                log_start = self.log.stat().st_size if self.log.exists() else 0
                cmd = self.command()
                with open(self.log, "a", encoding="utf-8") as logf:
                    logf.write(f"===== {' '.join(cmd)}\n")
                    logf.flush()
                    proc = subprocess.Popen(
                        cmd,
                        stdout=logf,
                        stderr=subprocess.STDOUT,
                        cwd=workdir,
                        start_new_session=True,
                    )
                    try:
                        rc, timed_out = proc.wait(timeout=remaining), False
                    except subprocess.TimeoutExpired:
                        kill_group(proc)
                        rc, timed_out = proc.wait(), True
                    kill_group(proc)  # stray grandchildren of a finished child
                events, offset = self.read_events(offset)
                finished, running = self._absorb(events)
                tail = log_tail(self.log, log_start)
                if finished:
                    # Everything ran, but did the interpreter then exit?  The
                    # child arms faulthandler after its last test; its banner
                    # after unittest's summary means shutdown hung.
                    after_summary = tail.rsplit("\nRan ", 1)[-1]
                    if timed_out or "Timeout (" in after_summary:
                        self._record_death(
                            f"{PACKAGE}.{self.module} (interpreter exit)",
                            "child hung at interpreter exit after its last test",
                            tail,
                        )
                    break
                if timed_out:
                    self._record_death(
                        running,
                        f"module time budget ({deadline - start:.0f}s) ran out in this test",
                        "",
                    )
                    self._abandon("TIMEOUT", f"timed out after {deadline - start:.0f}s")
                    break
                crashes += 1
                self._record_death(running, describe_death(rc, tail, self.args.test_timeout), tail)
                if running is None or crashes > MAX_RESTARTS:
                    self._abandon("CRASH", describe_death(rc, tail, self.args.test_timeout))
                    break
                self.result.restarts += 1
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self._tally()
        self.result.duration = time.monotonic() - start
        if crashes and self.result.status not in ("CRASH", "TIMEOUT"):
            self.result.note = f"{crashes} crash/hang, restarted"
        self.result.finish()
        return self.result

    def _absorb(self, events: list[dict]) -> tuple[bool, str | None]:
        """Fold one attempt's events in; return (finished, id of an unfinished test)."""
        running, finished, attempt_loops = None, False, 0
        for ev in events:
            kind = ev["event"]
            if kind == "plan":
                if self.planned is None:
                    self.planned = ev["count"]
                    self.result.excluded = ev["excluded"]
                    self.result.hooks = ev["hooks"]
            elif kind == "start":
                running = ev["id"]
            elif kind == "result":
                self.records[ev["id"]] = ev
                attempt_loops += ev["loops"]
                if ev["id"] == running:
                    running = None
            elif kind == "done":
                finished = True
                attempt_loops = ev["loops"]  # also counts loops made outside tests
        self.result.loops += attempt_loops
        return finished, running

    def _record_death(self, test_id: str | None, summary: str, tail: str) -> None:
        if test_id is not None:
            self.records[test_id] = {
                "id": test_id,
                "outcome": "error",
                "loops": 0,
                "summary": summary,
                "traceback": tail,
            }

    def _abandon(self, status: str, note: str) -> None:
        self.result.status = status
        self.result.note = note
        planned = self.planned if self.planned is not None else 1
        self.result.unrun = max(planned - len(self.records), 0)
        if not any(r["outcome"] == "error" for r in self.records.values()):
            self.result.unrun = max(self.result.unrun, 1)

    def _tally(self) -> None:
        r = self.result
        for rec in self.records.values():
            outcome = rec["outcome"]
            if outcome in ("pass", "xfail"):
                if rec["loops"] > 0:
                    r.passed += 1
                else:
                    r.stock += 1
            elif outcome == "skip":
                r.skipped += 1
            else:
                if outcome == "fail":
                    r.failed += 1
                else:
                    r.errors += 1
                r.failures.append(
                    report.Failure(
                        rec["id"], outcome, rec.get("summary", ""), rec.get("traceback", "")
                    )
                )


def run_one(module: str, args, excluded, log_dir: Path, global_deadline: float):
    exc = exclusions.find(excluded, f"{PACKAGE}.{module}")
    if exc:
        return report.ModuleResult(module, status="excluded", note=exc.reason)
    if time.monotonic() >= global_deadline:
        return report.ModuleResult(
            module, status="not-run", unrun=1, note="total time budget used up"
        )
    return ModuleRun(module, args, log_dir, global_deadline).run()


def retry_bad_modules(results: dict, args, excluded, log_dir: Path) -> list[str]:
    """Re-run each failing module alone, up to ``args.retries`` times (a
    loaded 2-core CI machine can time out a subprocess test). Returns the
    modules that passed on a retry; their first failure stays in the log."""
    flaky = []
    for module, first in sorted(results.items()):
        if first.status in report.GOOD_STATUSES and not first.bad:
            continue
        for attempt in range(1, args.retries + 1):
            print(f"retrying {module} ({attempt}/{args.retries})", flush=True)
            deadline = time.monotonic() + args.timeout
            retry_dir = log_dir / f"retry{attempt}"
            retry_dir.mkdir(exist_ok=True)
            again = run_one(module, args, excluded, retry_dir, deadline)
            print(f"        {report.format_row(again)}", flush=True)
            if again.status in report.GOOD_STATUSES and not again.bad:
                results[module] = again
                flaky.append(module)
                break
    return flaky


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loop", default="tokioloop", choices=routing.LOOP_KINDS)
    p.add_argument("--modules", help="comma-separated modules, e.g. test_tasks,test_futures")
    p.add_argument("--timeout", type=float, default=300, help="seconds per module (default 300)")
    p.add_argument(
        "--test-timeout",
        type=float,
        default=60,
        help="seconds one test may take before it counts as hung (default 60)",
    )
    p.add_argument(
        "--total-timeout",
        type=float,
        default=840,
        help="seconds for the whole run; later modules are not started (default 840)",
    )
    p.add_argument("-j", "--jobs", type=int, default=2, help="modules run in parallel")
    p.add_argument("--json", help="write the full results to this file")
    p.add_argument("--log-dir", help="child logs and result files (default: a temp dir)")
    p.add_argument("--exclusions", default=str(exclusions.DEFAULT_PATH))
    p.add_argument("--report-only", action="store_true", help="always exit 0")
    p.add_argument(
        "--retries",
        type=int,
        default=0,
        help="re-run a failing module up to N times, alone; a module that then passes "
        "counts as passed and is listed as flaky (default 0)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="list every failure")
    return p.parse_args(argv)


def select_modules(args, available: list[str]) -> list[str]:
    if not args.modules:
        return available
    wanted = [m.strip().rsplit(".", 1)[-1] for m in args.modules.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in available]
    if unknown:
        sys.exit(f"unknown module(s) for this Python: {', '.join(unknown)}")
    return wanted


def main(argv=None) -> int:
    args = parse_args(argv)
    pyver = platform.python_version()
    try:
        _, _, loop_version = routing.load_factory(args.loop)
    except (ImportError, AttributeError) as exc:  # the loop under test does not even import
        print(f"cannot load loop {args.loop!r}: {exc!r}")
        print("0 passed, 1 failed")
        return 0 if args.report_only else 1

    excluded = exclusions.load(Path(args.exclusions))
    modules = select_modules(args, discover_modules())
    log_dir = Path(
        args.log_dir or Path(tempfile.gettempdir()) / "tokioloop-cpython" / f"{args.loop}-py{pyver}"
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    for stale in log_dir.glob("test_*.*"):
        stale.unlink()

    print(
        f"CPython {pyver} {PACKAGE} on {args.loop} {loop_version}: {len(modules)} modules, "
        f"-j {args.jobs}; logs in {log_dir}",
        flush=True,
    )
    start = time.monotonic()
    global_deadline = start + args.total_timeout
    order = sorted(modules, key=lambda m: (m not in SLOW_MODULES, m))
    results = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {
            pool.submit(run_one, m, args, excluded, log_dir, global_deadline): m for m in order
        }
        for n, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            r = fut.result()
            results[r.module] = r
            print(f"[{n:2}/{len(modules)}] {report.format_row(r)}", flush=True)
    flaky = retry_bad_modules(results, args, excluded, log_dir)
    elapsed = time.monotonic() - start

    ordered = [results[m] for m in modules]
    print()
    report.print_table(ordered, args.verbose)
    t = report.totals(ordered)
    print(
        f"\n{args.loop} {loop_version} on CPython {pyver}: {elapsed:.0f}s wall; "
        f"{t['loops']} {args.loop} loops created; {t['stock']} passed without one (not counted); "
        f"{t['skipped']} skipped; {t['excluded']} excluded tests; "
        f"bad modules: {', '.join(t['bad_modules']) or 'none'}"
    )
    if args.json:
        meta = {
            "python": pyver,
            "loop": args.loop,
            "loop_version": loop_version,
            "elapsed": round(elapsed, 1),
            "argv": sys.argv,
        }
        report.write_json(args.json, meta, ordered)
    if flaky:
        print(f"flaky (failed, then passed alone): {', '.join(flaky)}")
    print(f"{t['passed']} passed, {t['bad']} failed")
    if args.report_only:
        return 0
    return 1 if t["bad"] or t["bad_modules"] else 0


if __name__ == "__main__":
    sys.exit(main())
