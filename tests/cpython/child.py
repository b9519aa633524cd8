"""Child process: run one ``test.test_asyncio`` module on the chosen loop.

Started by run.py, one interpreter per module.  It installs the loop routing
(routing.py) *before* importing the test module, drops excluded and
already-finished tests, runs the rest with unittest, and appends one JSON
object per line to the ``--results`` file as it goes:

* ``{"event": "plan", "count": N, "excluded": K, "hooks": [...]}`` once;
* ``{"event": "start", "id": ...}`` before each test, so that if the process
  crashes or hangs the parent knows which test did it;
* ``{"event": "result", "id": ..., "outcome": ..., "loops": ...}`` after each
  test; ``loops`` is how many chosen-type loops the test created;
* ``{"event": "done", "loops": N}`` at the end.

A test that hangs longer than ``--test-timeout`` makes faulthandler dump all
thread stacks to stderr and exit; the parent then restarts the module
without the finished tests and the hanging one.  After the last test the
same watchdog limits interpreter shutdown to EXIT_TIMEOUT seconds.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import signal
import sys
import time
import traceback
import unittest
from pathlib import Path

import exclusions
import routing

# Outcome precedence: a test is as bad as the worst thing reported for it
# (a subtest failure, or an error in a cleanup after the body passed).
_RANK = {"pass": 0, "xfail": 0, "skip": 1, "fail": 2, "error": 3}
TRACEBACK_LINES = 30
EXIT_TIMEOUT = 20  # seconds the interpreter may take to shut down after the last test


def trim_traceback(text: str) -> str:
    """Keep the start and the end of a long traceback (the end has the exception)."""
    lines = text.rstrip().splitlines()
    if len(lines) <= TRACEBACK_LINES:
        return "\n".join(lines)
    return "\n".join(lines[:6] + ["    ..."] + lines[-(TRACEBACK_LINES - 7) :])


def summary_line(text: str) -> str:
    """The exception line of a traceback: its last non-blank line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


class Recorder:
    """Appends JSON events to the results file, flushing each one."""

    def __init__(self, path: str):
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run

    def write(self, **event) -> None:
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()


def make_result_class(recorder: Recorder, router: routing.Router, test_timeout: float):
    class StreamingResult(unittest.TextTestResult):
        """TextTestResult (for the log) that also streams per-test JSON records."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._current = None
            self._outcome_kind = None
            self._tb = []
            self._started = time.monotonic()
            # Loops are charged to the next test that finishes, counting from
            # the end of the previous one: IsolatedAsyncioTestCase on 3.10
            # builds its loop in run(), before startTest() is called.
            self._loops_mark = router.created

        def startTest(self, test):
            self._current = test
            self._outcome_kind = None
            self._tb = []
            self._started = time.monotonic()
            recorder.write(event="start", id=test.id())
            if test_timeout > 0:
                faulthandler.dump_traceback_later(test_timeout, exit=True)
            super().startTest(test)

        def stopTest(self, test):
            super().stopTest(test)
            faulthandler.cancel_dump_traceback_later()
            if test is not self._current:
                return  # never started (e.g. a skipped class); _note recorded it
            tb = "\n".join(self._tb)
            loops, self._loops_mark = router.created - self._loops_mark, router.created
            recorder.write(
                event="result",
                id=test.id(),
                outcome=self._outcome_kind or "pass",
                loops=loops,
                time=round(time.monotonic() - self._started, 3),
                summary=summary_line(tb) if tb else "",
                traceback=trim_traceback(tb),
            )
            self._current = None

        def _note(self, test, kind: str, text: str = "") -> None:
            if test is not self._current:
                # setUpClass/tearDownModule errors (and skips of whole classes
                # on some versions) arrive outside any startTest/stopTest.
                recorder.write(
                    event="result",
                    id=getattr(test, "description", None) or test.id(),
                    outcome=kind,
                    loops=0,
                    summary=summary_line(text),
                    traceback=trim_traceback(text),
                )
                return
            if self._outcome_kind is None or _RANK[kind] > _RANK[self._outcome_kind]:
                self._outcome_kind = kind
            if text:
                self._tb.append(text)

        def addSuccess(self, test):
            super().addSuccess(test)
            self._note(test, "pass")

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._note(test, "fail", self._exc_info_to_string(err, test))

        def addError(self, test, err):
            super().addError(test, err)
            self._note(test, "error", self._exc_info_to_string(err, test))

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            self._note(test, "skip", f"skipped: {reason}")

        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err)
            self._note(test, "xfail")

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self._note(test, "fail", "unexpected success of an expectedFailure test")

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None:
                kind = "fail" if issubclass(err[0], test.failureException) else "error"
                self._note(test, kind, f"{subtest}\n{self._exc_info_to_string(err, test)}")

    return StreamingResult


def iter_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", required=True, choices=routing.LOOP_KINDS)
    parser.add_argument("--module", required=True, help="e.g. test_tasks")
    parser.add_argument("--results", required=True, help="JSON-lines file to append to")
    parser.add_argument("--skip", help="file with test ids (one a line) not to run")
    parser.add_argument("--exclusions", default=str(exclusions.DEFAULT_PATH))
    parser.add_argument("--test-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    faulthandler.enable()
    # A shell starts background jobs with SIGINT ignored, and Python then
    # leaves it so; test_runners' interrupt tests (on any loop) assume the
    # default handler and would spin until the per-test timeout.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    recorder = Recorder(args.results)
    module_name = f"test.test_asyncio.{args.module}"
    excluded = exclusions.load(Path(args.exclusions))
    skip = set(Path(args.skip).read_text().splitlines()) if args.skip else set()

    # Routing must be in place before the test module (and its helpers) import.
    router = routing.install(args.loop)
    try:
        module = importlib.import_module(module_name)
    except unittest.SkipTest as exc:
        recorder.write(event="plan", count=1, excluded=0, hooks=[])
        recorder.write(
            event="result",
            id=module_name,
            outcome="skip",
            loops=0,
            summary=f"module skipped: {exc}",
            traceback="",
        )
        recorder.write(event="done", loops=router.created)
        return 0
    except Exception:  # noqa: BLE001 - any import failure is reported as the module's error
        text = traceback.format_exc()
        recorder.write(event="plan", count=1, excluded=0, hooks=[])
        recorder.write(
            event="result",
            id=module_name,
            outcome="error",
            loops=0,
            summary=summary_line(text),
            traceback=trim_traceback(text),
        )
        recorder.write(event="done", loops=router.created)
        return 1
    router.route_hooks(module)

    tests, n_excluded = [], 0
    for test in iter_tests(unittest.defaultTestLoader.loadTestsFromModule(module)):
        if exclusions.find(excluded, test.id()):
            n_excluded += 1
        elif test.id() not in skip:
            tests.append(test)
    recorder.write(event="plan", count=len(tests), excluded=n_excluded, hooks=router.routed_hooks)

    runner = unittest.TextTestRunner(
        stream=sys.stderr,
        verbosity=2,
        resultclass=make_result_class(recorder, router, args.test_timeout),
    )
    result = runner.run(unittest.TestSuite(tests))
    recorder.write(event="done", loops=router.created)
    # A loop that leaves threads or processes behind can hang interpreter
    # shutdown; dump the stacks and leave instead of waiting for the module
    # timeout (the parent reports it as an error).
    faulthandler.dump_traceback_later(EXIT_TIMEOUT, exit=True)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
