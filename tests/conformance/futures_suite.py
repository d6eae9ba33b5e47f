"""CPython's own ``test_concurrent_futures``, run against ``mc.Executor``.

Nothing of CPython's is copied here: the test modules are imported from the
``test`` package installed with the interpreter (Python 3.13 ships it), and their
executor mixins get manycore's executor as ``executor_type``: ``backend="threads"``
where they test ``ThreadPoolExecutor``, the processes backend with their
``mp_context`` (fork, forkserver, spawn) where they test ``ProcessPoolExecutor``.
Tests that start a fresh interpreter (exit behaviour) get the same substitution
through a preamble put before their script.

Skipped: only tests that read private attributes of the standard executors (or patch
their private classes; ``SKIPS``). Run as expected failures: where manycore deliberately differs
(``DIFFERENCES``, also listed in docs/executor.md). Prints every skip and
difference with its reason, and pass/skip/differ/fail counts per start method.

    python tests/conformance/futures_suite.py [--only thread,fork] [--modules test_wait] [-k text]

Exit status: 0 all passed (or differed as listed), 1 a failure, 77 skipped (no
``test.test_concurrent_futures`` in this interpreter).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
import time
import traceback
import types
import unittest
from collections import Counter
from concurrent import futures
from typing import Any

_SHUTDOWN = "test.test_concurrent_futures.test_shutdown"
SKIPPED_SUITE = 77  # exit status: the suite could not run here (see tests/conformance/run.py)

MODULES = (
    "test_as_completed",
    "test_deadlock",
    "test_init",
    "test_process_pool",
    "test_shutdown",
    "test_thread_pool",
    "test_wait",
)
KINDS = ("thread", "fork", "forkserver", "spawn")

# What a test of theirs names as ThreadPoolExecutor / ProcessPoolExecutor: their
# mixins' executor_type here, and in the fresh interpreters some tests start (with
# SUBSTITUTE after it, put before their scripts).
EXECUTORS = """\
import manycore as _mc


class ThreadPoolExecutor(_mc.Executor):
    def __init__(self, max_workers=None, thread_name_prefix="", initializer=None, initargs=()):
        super().__init__(
            max_workers, initializer=initializer, initargs=initargs,
            backend="threads", thread_name_prefix=thread_name_prefix,
        )


class ProcessPoolExecutor(_mc.Executor):
    pass


"""
SUBSTITUTE = """\
import concurrent.futures as _futures
import multiprocessing  # (test_hang_gh83386's script uses it without importing it)

_futures.ThreadPoolExecutor = ThreadPoolExecutor
_futures.ProcessPoolExecutor = ProcessPoolExecutor
"""
PREAMBLE = EXECUTORS + SUBSTITUTE

_PRIVATE = "reads a private attribute of the standard executor: "

# "module.test" -> why it is skipped (for every start method it runs under).
SKIPS = {
    "test_init.FailingInitializer.test_initializer": _PRIVATE + "executor._broken",
    "test_init.test_spawn": "runs test_init's FailingInitializer test (skipped: reads "
    "executor._broken) in a nested runner, then stops multiprocessing's private _resource_tracker",
    "test_init.test_forkserver": "as test_init.test_spawn",
    "test_process_pool.test_killed_child": _PRIVATE + "executor._processes",
    "test_process_pool.test_saturation": _PRIVATE + "executor._processes, _max_workers",
    "test_process_pool.test_idle_process_reuse_one": _PRIVATE + "executor._processes",
    "test_process_pool.test_idle_process_reuse_multiple": _PRIVATE + "executor._processes",
    "test_process_pool.test_max_tasks_per_child": _PRIVATE
    + "executor._processes (under fork it only checks the ValueError, and runs)",
    "test_process_pool.test_max_tasks_per_child_defaults_to_spawn_context": _PRIVATE
    + "executor._mp_context",
    "test_process_pool.test_traceback": "checks the cause is the private class "
    "concurrent.futures.process._RemoteTraceback and reads its .tb (manycore's cause is "
    "mc.RemoteTraceback, with the same text as .tb_text)",
    "test_process_pool.test_python_finalization_error": "patches the private "
    "threading._start_joinable_thread to fail the standard executor's second thread",
    "test_thread_pool.test_default_workers": _PRIVATE + "executor._max_workers",
    "test_thread_pool.test_saturation": _PRIVATE + "executor._threads, _max_workers",
    "test_thread_pool.test_idle_thread_reuse": _PRIVATE + "executor._threads",
    "test_shutdown.test_threads_terminate": _PRIVATE + "executor._threads",
    "test_shutdown.test_processes_terminate": _PRIVATE + "executor._processes",
    "test_shutdown.test_context_manager_shutdown": _PRIVATE + "executor._threads/_processes",
    "test_shutdown.test_del_shutdown": _PRIVATE
    + "executor._threads/_processes, _call_queue, _executor_manager_thread",
    "test_shutdown.test_shutdown_no_wait": _PRIVATE
    + "executor._threads/_processes, _call_queue, _executor_manager_thread",
    "test_shutdown.test_thread_names_assigned": _PRIVATE
    + "executor._threads (names are checked in tests/test_executor.py)",
    "test_shutdown.test_thread_names_default": _PRIVATE + "executor._threads",
    "test_deadlock.test_shutdown_deadlock_pickle": _PRIVATE + "executor._executor_manager_thread",
    "test_deadlock.test_gh105829_should_not_deadlock_if_wakeup_pipe_full": "patches the "
    "standard executor's private _ExecutorManagerThread and _ThreadWakeup",
}

# Skips that apply under these start methods only (elsewhere the test runs).
SKIP_ONLY_UNDER = {"test_process_pool.test_max_tasks_per_child": {"forkserver", "spawn"}}

_UNPICKLE = (
    "an argument or result that cannot be unpickled fails only its own future, with "
    "mc.SerializationError naming it; the executor is not broken (the standard one "
    "breaks: BrokenProcessPool)"
)
_PICKLE = (
    "an argument or result that cannot be pickled fails its future with "
    "mc.SerializationError (a TypeError naming what it was; the pickling error, here "
    "{}, is its __cause__), not with the pickling error itself"
)
# "module.test" -> how manycore deliberately differs (run, expected to fail).
DIFFERENCES = {
    "test_shutdown.test_submit_after_interpreter_shutdown": "a submit once the interpreter "
    "exits raises mc.PoolClosed, a RuntimeError with the standard message (every error "
    "manycore raises is a ManycoreError); the test reads 'RuntimeError:' in the printed "
    "traceback, which names manycore.PoolClosed",
    "test_deadlock.test_error_at_task_pickle": _PICKLE.format("PicklingError"),
    "test_deadlock.test_error_during_result_pickle_on_worker": _PICKLE.format("PicklingError"),
    "test_deadlock.test_exit_during_result_pickle_on_worker": _PICKLE.format(
        "SystemExit raised by __reduce__"
    ),
    "test_deadlock.test_exit_at_task_unpickle": _UNPICKLE,
    "test_deadlock.test_error_at_task_unpickle": _UNPICKLE,
    "test_deadlock.test_error_during_result_unpickle_in_result_handler": _UNPICKLE,
    "test_deadlock.test_exit_during_result_unpickle_in_result_handler": _UNPICKLE,
}


def load(names: tuple[str, ...]) -> list[Any]:
    """The test modules, with manycore's executor in their mixins, and where they
    name the standard ones (``futures.ThreadPoolExecutor(...)``). Not in
    test_shutdown: its test_hang_gh83386 skips itself when the executor it tests
    is ``futures.ProcessPoolExecutor`` (the standard one hangs there); it runs
    manycore's in a fresh interpreter, where the preamble substitutes it."""
    namespace: dict[str, Any] = {}
    exec(EXECUTORS, namespace)
    util = importlib.import_module("test.test_concurrent_futures.util")
    util.ThreadPoolMixin.executor_type = namespace["ThreadPoolExecutor"]
    for mixin in ("Fork", "Forkserver", "Spawn"):
        getattr(util, f"ProcessPool{mixin}Mixin").executor_type = namespace["ProcessPoolExecutor"]
    substituted = types.ModuleType(futures.__name__)
    substituted.__dict__.update(vars(futures))
    for name in ("ThreadPoolExecutor", "ProcessPoolExecutor"):
        setattr(substituted, name, namespace[name])
    modules = [importlib.import_module(f"test.test_concurrent_futures.{n}") for n in names]
    for module in modules:
        if getattr(module, "futures", None) is futures and module.__name__ != _SHUTDOWN:
            module.futures = substituted
        if hasattr(module, "assert_python_ok"):
            module.assert_python_ok = _with_preamble(module.assert_python_ok)
    return modules


def _with_preamble(run: Any) -> Any:
    """``assert_python_ok`` whose ``-c`` script first substitutes the executors."""

    def run_substituted(*args: Any, **env: Any) -> Any:
        if len(args) >= 2 and args[0] == "-c":
            args = ("-c", PREAMBLE + args[1], *args[2:])
        return run(*args, **env)

    return run_substituted


def kind_of(test: unittest.TestCase) -> str:
    util = sys.modules["test.test_concurrent_futures.util"]
    if isinstance(test, util.ThreadPoolMixin):
        return "thread"
    return getattr(test, "ctx", "other")


def key_of(test: unittest.TestCase, table: dict[str, str]) -> str | None:
    """The key of ``table`` naming ``test``: "module.test", or "module.Part.test"
    where ``Part`` is in its class's name (two classes of a module share a name)."""
    module = type(test).__module__.rsplit(".", 1)[-1]
    for key in table:
        mod, *part, name = key.split(".")
        if (mod, name) == (module, test._testMethodName) and all(
            p in type(test).__name__ for p in part
        ):
            return key
    return None


def mark(test: unittest.TestCase) -> None:
    """Skip or expect to fail, on the test's own class only."""
    name, kind = test._testMethodName, kind_of(test)
    method = getattr(type(test), name)
    skip, differs = key_of(test, SKIPS), key_of(test, DIFFERENCES)
    if skip is not None and kind in SKIP_ONLY_UNDER.get(skip, {kind}):
        setattr(type(test), name, unittest.skip(SKIPS[skip])(method))
    elif differs is not None:
        setattr(type(test), name, unittest.expectedFailure(_releasing(method)))


def _releasing(method: Any) -> Any:
    """``method``, whose error lets go of what its frames held. Where manycore
    deliberately differs, test_deadlock's ``_check_crash`` fails before its own
    ``executor.shutdown()``; its error's traceback (through the frame whose ``res``
    future holds that error: a cycle) would keep that executor running through
    tearDown, whose threading_cleanup() then reports its I/O thread as dangling (as
    it does the standard executor's threads when the same test fails)."""

    @functools.wraps(method)
    def run(self: unittest.TestCase) -> None:
        try:
            method(self)
        except BaseException as exc:
            _clear_frames(exc)
            raise

    return run


def _clear_frames(exc: BaseException | None) -> None:
    """Clear the locals of the finished frames in the tracebacks of ``exc`` and of
    its causes (an executing frame is left as it is)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def collect(modules: list[Any], kinds: set[str], pattern: str) -> unittest.TestSuite:
    suite = unittest.TestSuite()
    for module in modules:
        for test in _flat(unittest.defaultTestLoader.loadTestsFromModule(module)):
            if kind_of(test) in kinds and pattern in test.id():
                mark(test)
                suite.addTest(test)
    return suite


def _flat(suite: unittest.TestSuite) -> list[unittest.TestCase]:
    out: list[unittest.TestCase] = []
    for item in suite:
        out.extend(_flat(item) if isinstance(item, unittest.TestSuite) else [item])
    return out


class Outcomes(unittest.TextTestResult):
    """Records each test's outcome by start method."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.counts: Counter[tuple[str, str, str]] = Counter()  # (module, kind, outcome)
        self.ours: list[tuple[str, str]] = []  # (test id, reason) skipped by SKIPS

    def _count(self, test: Any, outcome: str) -> None:
        if isinstance(test, unittest.TestCase):
            module = type(test).__module__.rsplit(".", 1)[-1]
            self.counts[module, kind_of(test), outcome] += 1

    def addSuccess(self, test: Any) -> None:
        super().addSuccess(test)
        self._count(test, "pass")

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._count(test, "skip")
        if reason in SKIPS.values():
            self.ours.append((test.id(), reason))

    def addExpectedFailure(self, test: Any, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._count(test, "differ")

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._count(test, "fail")

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._count(test, "fail")

    def addUnexpectedSuccess(self, test: Any) -> None:
        super().addUnexpectedSuccess(test)
        self._count(test, "fail")  # a listed difference that no longer differs


def report(result: Outcomes, kinds: list[str], seconds: float) -> None:
    print("\nSkipped (reads the standard executor's private state), by test:")
    for key in sorted(SKIPS):
        print(f"  {key}: {SKIPS[key]}")
    print("Skipped by CPython's tests themselves (their own conditions):")
    for test_id, why in sorted({(t.id(), why) for t, why in result.skipped} - set(result.ours)):
        print(f"  {test_id.removeprefix('test.test_concurrent_futures.')}: {why}")
    print("Deliberate differences (run, expected to fail), by test:")
    for key in sorted(DIFFERENCES):
        print(f"  {key}: {DIFFERENCES[key]}")
    modules = sorted({module for module, _, _ in result.counts})
    print(f"\nconcurrent.futures conformance of mc.Executor ({seconds:.0f} s):")
    for module in [*modules, "all modules"]:
        print(f"  {module}:")
        for kind in [*kinds, "other"]:
            row = {o: _total(result, module, kind, o) for o in ("pass", "skip", "differ", "fail")}
            if any(row.values()):
                print(f"    {kind:>10}: " + ", ".join(f"{n} {o}" for o, n in row.items()))


def _total(result: Outcomes, module: str, kind: str, outcome: str) -> int:
    return sum(
        n
        for (m, k, o), n in result.counts.items()
        if (module in ("all modules", m)) and (k, o) == (kind, outcome)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(KINDS), help="thread,fork,forkserver,spawn")
    parser.add_argument("--modules", default=",".join(MODULES))
    parser.add_argument("-k", default="", help="run tests whose id contains this")
    parser.add_argument("-v", action="store_true", help="name each test as it runs")
    args = parser.parse_args(argv)
    try:
        importlib.import_module("test.test_concurrent_futures")
    except ImportError as exc:
        print(
            f"SKIP futures_suite: this Python ({sys.version.split()[0]}) has no "
            f"test.test_concurrent_futures ({exc}); run it with Python 3.13's"
        )
        return SKIPPED_SUITE
    kinds = [k for k in args.only.split(",") if k]
    modules = load(tuple(m for m in args.modules.split(",") if m))
    suite = collect(modules, {*kinds, "other"}, args.k)
    started = time.monotonic()
    runner = unittest.TextTestRunner(verbosity=2 if args.v else 1, resultclass=Outcomes)
    result = runner.run(suite)
    assert isinstance(result, Outcomes)
    report(result, kinds, time.monotonic() - started)
    return 0 if result.wasSuccessful() and not result.unexpectedSuccesses else 1


if __name__ == "__main__":
    sys.exit(main())
