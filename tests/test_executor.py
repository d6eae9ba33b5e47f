"""mc.Executor: a strict concurrent.futures.Executor (CPython's own suite judges it in
tests/conformance/futures_suite.py, `make conformance`); these are the quick checks."""

from __future__ import annotations

import gc
import multiprocessing
import re
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor, CancelledError
from concurrent.futures.process import BrokenProcessPool

import pytest

import manycore as mc
from helpers import crash_on, fail_on, failing_init, getpid, sleep_then, square


class Box:
    """A result that can be weakly referenced."""


def make_box(_: int) -> Box:
    return Box()


@pytest.fixture(scope="module")
def processes() -> Iterator[mc.Executor]:
    with mc.Executor(2) as executor:
        yield executor


def test_map_submits_at_once_and_raises_at_the_bad_value(processes: mc.Executor) -> None:
    results = processes.map(fail_on, range(10))
    assert [next(results) for _ in range(7)] == list(range(7))
    with pytest.raises(ValueError, match="bad input 7"):
        next(results)


def test_map_chunks_keep_order(processes: mc.Executor) -> None:
    assert list(processes.map(square, range(23), chunksize=5)) == [i * i for i in range(23)]


def test_map_timeout_is_a_deadline_for_the_whole_iteration() -> None:
    # Each item takes 0.3 s, under the timeout; one worker runs them in turn, so
    # the second is not ready 0.5 s after the call.
    got = []
    with mc.Executor(1, backend="threads") as executor:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            for value in executor.map(sleep_then, [0.3, 0.3, 0.3], timeout=0.5):
                got.append(value)
        assert got == [0.3]
        assert time.monotonic() - started < 0.85
        with pytest.raises(TimeoutError):  # timeout=0: only what is done already
            next(executor.map(sleep_then, [0.3], timeout=0))


def test_results_are_freed_once_yielded(processes: mc.Executor) -> None:
    for box in processes.map(make_box, range(5)):
        ref = weakref.ref(box)
        del box
        gc.collect()
        assert ref() is None


def test_a_worker_death_fails_only_its_future(processes: mc.Executor) -> None:
    doomed = processes.submit(crash_on, 3)
    others = [processes.submit(square, i) for i in range(6)]
    error = doomed.exception(timeout=30)
    assert isinstance(error, mc.WorkerCrashed)
    assert isinstance(error, BrokenProcessPool)
    assert [f.result(timeout=30) for f in others] == [i * i for i in range(6)]
    assert processes.submit(square, 9).result(timeout=30) == 81  # not broken


def test_max_tasks_per_child_replaces_the_worker() -> None:
    with mc.Executor(1, max_tasks_per_child=2) as executor:
        pids = [executor.submit(getpid).result(timeout=30) for _ in range(3)]
    assert pids[0] == pids[1] != pids[2]


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_a_failing_initializer_breaks_the_executor(backend: str) -> None:
    with mc.Executor(1, initializer=failing_init, backend=backend) as executor:
        error = executor.submit(square, 2).exception(timeout=30)
        assert isinstance(error, BrokenExecutor)
        assert isinstance(error.__cause__, RuntimeError)
        with pytest.raises(BrokenExecutor):
            executor.submit(square, 2)


def test_shutdown_cancels_what_has_not_started() -> None:
    executor = mc.Executor(1, backend="threads")
    started = threading.Event()
    running = executor.submit(lambda: started.set() or sleep_then(0.1))
    waiting = [executor.submit(sleep_then, 0.1) for _ in range(9)]
    assert started.wait(30)
    executor.shutdown(cancel_futures=True)
    assert running.result() == 0.1
    assert all(f.cancelled() for f in waiting)
    with pytest.raises(CancelledError):
        waiting[-1].result()
    with pytest.raises(RuntimeError):
        executor.submit(square, 1)


def test_thread_name_prefix() -> None:
    with mc.Executor(2, backend="threads", thread_name_prefix="Special") as executor:
        names = executor.map(lambda _: threading.current_thread().name, range(4))
        assert all(re.fullmatch(r"Special_[01]", name) for name in names)


def test_work_of_a_dropped_executor_is_finished() -> None:
    future = mc.Executor(1, backend="threads").submit(sleep_then, 0.2)
    gc.collect()
    assert future.result(timeout=30) == 0.2


def _fail_and_drop() -> weakref.ref[mc.Executor]:
    executor = mc.Executor(1)
    submitted = [executor.submit(fail_on, 7)]
    with pytest.raises(ValueError, match="bad input 7"):
        submitted.pop().result(timeout=30)
    return weakref.ref(executor)


def test_a_dropped_executor_goes_with_its_last_reference() -> None:
    """Dropped without shutdown() after a failed call, an executor is freed (its
    finalizer stops its workers and I/O thread) when its last reference goes, not
    at some later garbage collection: no reference cycle holds it. (Its scheduler
    held a bound method of it; the failed future held itself through the frame of
    its result() in the error's traceback, and so the frames that called it.)"""
    gc.disable()
    try:
        ref = _fail_and_drop()
        deadline = time.monotonic() + 5  # (the future's done-callback may still run)
        while ref() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ref() is None
    finally:
        gc.enable()


def test_work_submitted_before_exit_is_finished() -> None:
    code = (
        "import time, manycore as mc\n"
        "ex = mc.Executor(2, backend='threads')\n"
        "ex.submit(lambda: (time.sleep(0.2), print('done', flush=True)))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert run.stdout.strip() == b"done", run.stderr


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"max_workers": 0}, ValueError, "max_workers must be greater than 0"),
        ({"max_workers": "2"}, TypeError, "max_workers"),
        ({"mp_context": "spawn"}, TypeError, "mp_context"),
        ({"initializer": 3}, TypeError, "initializer"),
        ({"initializer": print, "initargs": [1]}, TypeError, "initargs"),
        ({"max_tasks_per_child": 0}, ValueError, "max_tasks_per_child"),
        ({"backend": "threads", "max_tasks_per_child": 2}, ValueError, "max_tasks_per_child"),
        ({"backend": "threads", "mp_context": "ctx"}, ValueError, "mp_context"),
        ({"thread_name_prefix": "x"}, ValueError, "thread_name_prefix"),
        ({"backend": "nope"}, ValueError, "backend"),
        ({"timeout": -1}, ValueError, "timeout"),
    ],
)
def test_bad_arguments_name_the_argument(
    kwargs: dict[str, object], error: type[Exception], named: str
) -> None:
    if kwargs.get("mp_context") == "ctx":
        kwargs["mp_context"] = multiprocessing.get_context("spawn")
    with pytest.raises(error, match=named):
        mc.Executor(**kwargs)  # type: ignore[arg-type]


def test_fork_with_max_tasks_per_child_is_refused_as_the_standard_library_does() -> None:
    if "fork" not in mc.START_METHODS:
        pytest.skip("no fork here")
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        mc.Executor(1, multiprocessing.get_context("fork"), max_tasks_per_child=2)


def test_bad_map_arguments_name_the_argument() -> None:
    with mc.Executor(1, backend="threads") as executor:
        with pytest.raises(ValueError, match="chunksize"):
            executor.map(square, [1], chunksize=0)
        with pytest.raises(TypeError, match="timeout"):
            executor.map(square, [1], timeout="1")
        with pytest.raises(TypeError, match="fn"):
            executor.submit(3)  # type: ignore[arg-type]
