"""Adversarial checks of the process engine's hand-off rules: what a worker's
death or a timeout costs must stay bounded and be blamed on the right thing."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

import handfns
import manycore as mc
import revfns
from conftest import PROCESS_BACKENDS

# Longer adversarial cases: `make test-slow` (CI runs it too), not `make test`.
pytestmark = pytest.mark.slow


def _uses_big_exit_on_load() -> Any:
    """A script function whose large global ends every worker that loads it."""
    namespace: dict[str, Any] = {"__name__": "__main__", "BIG": revfns.BigExitOnLoad()}
    exec(compile("def f(x):\n    return (BIG, x)\n", "<big-exit>", "exec"), namespace)
    return namespace["f"]


def test_a_batch_whose_workers_all_die_before_reading_it_fails() -> None:
    # The large global is sent ahead of the batch, so each worker dies before it
    # has read the batch: "killed while idle". It must not be re-queued forever.
    f = _uses_big_exit_on_load()
    with mc.Pool(1) as pool:
        with pytest.raises(mc.WorkerCrashed, match="in a row died before they had read"):
            pool.submit(f, 1).result(timeout=30)
        assert pool.map(revfns.add_one, range(3)) == [1, 2, 3]


def test_a_map_whose_workers_all_die_before_reading_ends() -> None:
    f = _uses_big_exit_on_load()
    with mc.Pool(2) as pool:
        out = pool.map(f, range(4), chunksize=2, on_error="collect")
        assert [type(o.exception) for o in out] == [mc.WorkerCrashed] * 4
        assert [o.exception.index for o in out] == [0, 1, 2, 3]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
@pytest.mark.parametrize("init", [None, revfns.no_op])
def test_items_that_end_their_worker_each_fail_alone(backend: tuple[str, str], init: Any) -> None:
    # Fresh workers die one after another right after they start: each is an
    # item's crash, never the pool's (StartWatch judges only deaths before init).
    with mc.Pool(2, backend=backend[0], start_method=backend[1], init=init) as pool:
        out = pool.map(revfns.exit_now, range(8), chunksize=1, on_error="collect")
        assert [type(o.exception) for o in out] == [mc.WorkerCrashed] * 8
        out = pool.map(revfns.exit_now, range(8), on_error="collect", retries=1)
        assert [type(o.exception) for o in out] == [mc.WorkerCrashed] * 8
        assert pool.map(revfns.add_one, range(3)) == [1, 2, 3]


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_a_retiring_workers_hanging_exit_holds_no_batch_for_ever(
    timeout: float | None,
) -> None:
    # A worker that reached max_tasks_per_worker runs the pool's exit before it
    # ends (here: 60 s). The batch already written to its pipe runs elsewhere; the
    # replacement starts once it ended, and it gets the grace a closing worker
    # gets (5 s), not for ever. The pool never has more processes than workers.
    with mc.Pool(1, max_tasks_per_worker=2, exit=revfns.slow_exit) as pool:
        started = time.monotonic()
        futures = [pool.schedule(revfns.add_one, (i,), timeout=timeout) for i in range(3)]
        assert [f.result(timeout=40) for f in futures] == [1, 2, 3]
        assert time.monotonic() - started < 30
        assert len(pool.pids()) == 1
        pool.terminate()  # the second worker, too, sleeps in its exit


def test_a_batch_late_for_a_hanging_init_fails_whole_not_item_by_item() -> None:
    # No item of a batch had a say while the worker's init had not returned:
    # running each alone would restart the worker (and its init) per item.
    with mc.Pool(1, init=handfns.init_that_hangs) as pool:
        out = pool.map(revfns.add_one, range(12), chunksize=4, timeout=0.3, on_error="collect")
        for index, failure in enumerate(out):
            err = failure.exception
            assert type(err) is mc.TaskTimeout and err.index == index
            assert "whose init had not returned" in str(err)
        assert pool.stats().restarts == 3  # one per batch, not one per item
        pool.terminate()


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_function_that_will_not_load_in_the_worker_is_a_serialization_error(
    backend: tuple[str, str],
) -> None:
    # Not a crash of every worker it is sent to (exit code 1, a traceback on
    # stderr, a restart per batch, and an "out of memory?" hint).
    with mc.Pool(2, backend=backend[0], start_method=backend[1]) as pool:
        fn = revfns.FailsToLoadFn()
        out = pool.map(fn, range(6), chunksize=2, on_error="collect")
        for index, failure in enumerate(out):
            err = failure.exception
            assert type(err) is mc.SerializationError and failure.index == index
            assert "function could not be unpickled in the worker" in str(err)
            assert "will not load here" in str(err)
        with pytest.raises(mc.SerializationError, match="function could not be unpickled"):
            pool.submit(fn, 1).result(timeout=30)
        assert pool.stats().restarts == 0
        assert pool.map(revfns.add_one, range(3)) == [1, 2, 3]


def test_a_worker_stopped_before_it_started_does_not_hold_a_timed_item_forever() -> None:
    # Booting does not count against timeout=, but only up to a bound (10 s, or
    # the timeout if larger): it hung for ever.
    with mc.Pool(1, start_method="spawn") as pool:
        os.kill(pool.pids()[0], signal.SIGSTOP)  # a spawned worker boots in ~0.1 s
        started = time.monotonic()
        future = pool.schedule(revfns.add_one, (1,), timeout=1)
        with pytest.raises(mc.TaskTimeout, match="stopped or frozen"):
            future.result(timeout=40)
        assert time.monotonic() - started < 30
        assert pool.map(revfns.add_one, range(3), timeout=5) == [1, 2, 3]
