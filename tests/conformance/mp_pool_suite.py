"""CPython's own Pool tests, run against ``manycore.multiprocessing.Pool``.

    python tests/conformance/mp_pool_suite.py [fork|forkserver|spawn ...] [-k NAME] [-v]

Imports ``test._test_multiprocessing`` from the interpreter's installed test package
(Python 3.13 ships it; most distributions' 3.11 does not) and runs its Pool test
classes with the pool factory replaced: ``self.Pool`` through the processes mixin,
and the module-level ``multiprocessing.Pool`` the other classes call, patched for
the duration of each test. Nothing of the test module is copied here. Prints the
pass/skip/fail counts per start method and every skip with its reason; exits 1 on
a failure, 0 with a message when the test package is absent.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import unittest
from pathlib import Path
from typing import Any
from unittest import mock

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
METHODS = ("fork", "forkserver", "spawn")

# Tests left out, each with its reason: they read or call private attributes of
# the standard pool, or test something other than the pool.
SKIPS = {
    "_TestPool.test_make_pool": (
        "reads pool._pool, the standard pool's list of worker processes (its "
        "ValueError checks for Pool(-1) and Pool(0) are in tests/test_mp_facade.py)"
    ),
    "_TestPoolWorkerLifetime.test_pool_worker_lifetime": (
        "reads pool._pool and calls pool._repopulate_pool(), the standard pool's "
        "worker list and its private refill method (worker replacement after "
        "maxtasksperchild is in tests/test_mp_facade.py)"
    ),
    "_TestPoolWorkerLifetime.test_worker_finalization_via_atexit_handler_of_multiprocessing": (
        "runs a script that imports the standard multiprocessing.Pool in a child "
        "interpreter: no manycore code is under test"
    ),
}

# Where manycore deliberately differs (docs/migrate.md): run as expected failures,
# so that one which starts to pass is reported.
DIFFERENCES = {
    "_TestPoolWorkerErrors.test_unpickleable_result": (
        "a result plain pickle refuses (here a lambda) is sent with cloudpickle, "
        "so get() returns it instead of raising MaybeEncodingError"
    ),
    "_TestPool.test_map_no_failfast": (
        "an exception whose pickle is over 400 kB (here a 1 MB message) arrives as "
        "manycore.RemoteError naming its type, with the message cut to 100,000 "
        "characters, not as itself (the test's point, no deadlock, holds)"
    ),
}

# (class, test) pairs of the classes below that are not Pool tests.
ONLY = {"TestInitializers": {"test_pool_initializer"}}


def load() -> Any:
    """The installed test module, or None (the reason printed)."""
    try:
        import test._test_multiprocessing as tm
    except ImportError as exc:
        print(f"mp_pool_suite: SKIPPED: no test._test_multiprocessing here ({exc})")
        return None
    return tm


def import_manycore() -> Any:
    # Spawned and forkserver workers import manycore and this module too.
    for path in (str(SRC), str(HERE)):
        if path not in sys.path:
            sys.path.insert(0, path)
            os.environ["PYTHONPATH"] = os.pathsep.join(
                p for p in (path, os.environ.get("PYTHONPATH")) if p
            )
    import manycore.multiprocessing as mcmp

    return mcmp


def build(tm: Any, pool: Any) -> list[type[unittest.TestCase]]:
    """Test classes: the standard ones with manycore's pool in the standard's place.
    They are globals of this module, known as ``mp_pool_suite`` (also when run
    as ``__main__``), so that a test's classmethod sent to a worker pickles by
    reference, as the standard suite's do."""

    class ManycoreMixin(tm.ProcessesMixin):  # type: ignore[misc,name-defined]
        Pool = staticmethod(pool)

        def setUp(self) -> None:
            patcher = mock.patch.object(multiprocessing, "Pool", pool)
            patcher.start()
            self.addCleanup(patcher.stop)
            super().setUp()

    classes = []
    for base in (tm._TestPool, tm._TestPoolWorkerErrors, tm._TestPoolWorkerLifetime):
        classes.append(_derive(base, (base, ManycoreMixin, unittest.TestCase)))
    classes.append(_derive(tm.TestInitializers, (ManycoreMixin, tm.TestInitializers)))
    return classes


def _derive(base: type, bases: tuple[type, ...]) -> type[unittest.TestCase]:
    name = base.__name__.lstrip("_")
    namespace: dict[str, Any] = {}
    for attr in dir(base):
        if not attr.startswith("test_"):
            continue
        reason = SKIPS.get(f"{base.__name__}.{attr}")
        if base.__name__ in ONLY and attr not in ONLY[base.__name__]:
            namespace[attr] = None  # not a Pool test: not collected, not counted
        elif reason is not None:
            namespace[attr] = unittest.skip(reason)(getattr(base, attr))
        elif f"{base.__name__}.{attr}" in DIFFERENCES:
            namespace[attr] = unittest.expectedFailure(getattr(base, attr))
    cls = type(f"Manycore{name}", bases, namespace)
    cls.__module__ = "mp_pool_suite"
    globals()[cls.__name__] = cls
    return cls


def run(classes: list[Any], method: str, pattern: str | None, verbosity: int) -> Any:
    multiprocessing.set_start_method(method, force=True)
    loader = unittest.TestLoader()
    if pattern:
        loader.testNamePatterns = [f"*{pattern}*"]
    suite = unittest.TestSuite()
    for cls in classes:
        suite.addTests(loader.loadTestsFromTestCase(cls))
    print(f"\n=== start method {method}: {suite.countTestCases()} tests ===", flush=True)
    runner = unittest.TextTestRunner(verbosity=verbosity, stream=sys.stdout)
    return runner.run(suite)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("methods", nargs="*", help=f"start methods (default: {METHODS})")
    parser.add_argument("-k", dest="pattern", help="run only tests whose name contains this")
    parser.add_argument("-v", dest="verbosity", action="count", default=1)
    args = parser.parse_args(argv)
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown start methods {sorted(unknown)}; choose from {METHODS}")
    tm = load()
    if tm is None:
        return 0
    try:
        pool = import_manycore().Pool
    except ImportError as exc:
        print(
            f"mp_pool_suite: FAILED: manycore does not import under {sys.executable} "
            f"({exc}): install its dependencies for this interpreter"
        )
        return 2
    classes = build(tm, pool)
    totals = {}
    for method in args.methods or METHODS:
        result = run(classes, method, args.pattern, args.verbosity)
        skipped = len(result.skipped)
        failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
        differ = len(result.expectedFailures)
        passed = result.testsRun - skipped - failed - differ
        totals[method] = (passed, skipped, differ, failed, result.skipped)
    return report(totals)


def report(totals: dict[str, Any]) -> int:
    print("\nmp_pool_suite: CPython test._test_multiprocessing Pool tests on manycore")
    bad = 0
    for method, (passed, skipped, differ, failed, _) in totals.items():
        print(
            f"  {method}: {passed} passed, {skipped} skipped, "
            f"{differ} deliberate differences (expected failures), {failed} failed"
        )
        bad += failed
    reasons = {(t.id().rpartition(".")[2], why) for m in totals.values() for t, why in m[4]}
    for name, why in sorted(reasons):
        print(f"  skipped {name}: {why}")
    for name, why in sorted(DIFFERENCES.items()):
        print(f"  differs {name.partition('.')[2]}: {why}")
    return 1 if bad else 0


if __name__ == "__main__":
    # Workers find the test classes as mp_pool_suite.<name>: this very module.
    sys.modules["mp_pool_suite"] = sys.modules["__main__"]
    sys.exit(main())
elif __name__ == "mp_pool_suite":
    # A spawned worker unpickling a test's class: build the classes it names.
    _tm = load()
    if _tm is not None:
        build(_tm, import_manycore().Pool)
