"""Process-engine edge cases found in review: each once lost, misrouted or hung a result."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import CancelledError, as_completed, wait

import pytest

import manycore as mc
from helpers import crash_on, pause_then, square, unrebuildable_at


def test_result_that_cannot_be_unpickled_fails_only_its_item(process_pool: mc.Pool) -> None:
    first = process_pool.submit(unrebuildable_at, 3)
    second = process_pool.submit(unrebuildable_at, 4)
    with pytest.raises(mc.SerializationError, match="could not be unpickled in the parent"):
        first.result(timeout=30)
    assert second.result(timeout=30) == 4  # not misrouted to the failed one
    with pytest.raises(mc.SerializationError):
        process_pool.map(unrebuildable_at, range(6), chunksize=1)
    assert process_pool.map(square, range(8)) == [x * x for x in range(8)]


def test_callback_waiting_on_a_result_read_in_the_same_step() -> None:
    with mc.Pool(1) as pool:
        pool.submit(abs, 1).result(timeout=30)
        blocker = pool.submit(pause_then, (0.1, "blocker"))
        blocker.add_done_callback(lambda f: time.sleep(0.5))  # A and B land meanwhile
        a = pool.submit(pause_then, (0.0, "A"))
        b = pool.submit(pause_then, (0.0, "B"))
        seen: list[str] = []
        a.add_done_callback(lambda f: seen.append(b.result(timeout=20)))
        assert a.result(timeout=30) == "A"
        assert b.result(timeout=30) == "B"
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == ["B"]


def test_shutdown_from_a_done_callback_does_not_deadlock() -> None:
    pool = mc.Pool(1)
    fut = pool.submit(square, 3)
    fut.add_done_callback(lambda f: pool.shutdown(wait=True))
    assert fut.result(timeout=30) == 9
    pool.shutdown()


@pytest.mark.parametrize("how", ["shutdown", "terminate"])
def test_cancelled_futures_wake_their_waiters(how: str) -> None:
    pool = mc.Pool(1)
    running = pool.submit(pause_then, (0.5, "slow"))
    queued = [pool.submit(square, i) for i in range(4)]
    results: dict[str, object] = {}

    def waiter() -> None:
        done, _ = wait(queued, timeout=20)
        results["wait"] = len(done)
        results["as_completed"] = len(list(as_completed(queued, timeout=20)))

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    if how == "shutdown":
        pool.shutdown(wait=False, cancel_pending=True)
    else:
        pool.terminate()
    t.join(30)
    assert not t.is_alive()
    assert results == {"wait": 4, "as_completed": 4}
    if how == "terminate":
        with pytest.raises(CancelledError):
            running.result(timeout=10)
    pool.shutdown()


def test_shutting_down_twice_touches_no_other_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pool = mc.Pool(1)
    pool.shutdown()
    victim = tmp_path / "victim.bin"
    with open(victim, "wb") as fh:  # may reuse the pool's old wake-up fd number
        pool.shutdown()
        pool.terminate()
        fh.flush()
    assert victim.read_bytes() == b""


@pytest.mark.slow  # seconds long: make test-slow (CI runs it)
def test_result_is_not_held_back_by_other_work_while_closing() -> None:
    pool = mc.Pool(2)
    slow = pool.submit(pause_then, (3.0, "slow"))
    fast = pool.submit(pause_then, (0.2, "fast"))
    pool.shutdown(wait=False)
    started = time.monotonic()
    assert fast.result(timeout=30) == "fast"
    assert time.monotonic() - started < 2.5
    assert slow.result(timeout=30) == "slow"


def test_idle_worker_death_is_not_blamed_on_the_next_task() -> None:
    with mc.Pool(1) as pool:
        assert pool.submit(abs, -1).result(timeout=30) == 1
        time.sleep(0.4)  # the I/O thread goes idle
        os.kill(pool.pids()[0], signal.SIGKILL)
        time.sleep(0.3)
        assert pool.submit(abs, -2).result(timeout=30) == 2
        assert pool.map(abs, [-3]) == [3]


def test_task_queued_behind_a_crash_is_run_again_not_failed() -> None:
    with mc.Pool(1) as pool:
        pool.submit(abs, 1).result(timeout=30)
        culprit = pool.submit(crash_on, 3)
        innocent = pool.submit(square, 5)  # waits in the same worker's pipe
        with pytest.raises(mc.WorkerCrashed):
            culprit.result(timeout=30)
        assert innocent.result(timeout=30) == 25


def test_task_queued_behind_a_known_short_task_that_crashes_is_run_again() -> None:
    # The same, once the culprit's function is known to be quick: the innocent
    # task is then queued in the worker's pipe behind it (prefetch).
    with mc.Pool(1) as pool:
        assert pool.submit(crash_on, 1).result(timeout=30) == 10
        culprit = pool.submit(crash_on, 3)
        innocent = pool.submit(square, 5)
        with pytest.raises(mc.WorkerCrashed):
            culprit.result(timeout=30)
        assert innocent.result(timeout=30) == 25


def test_dropped_pool_releases_its_workers() -> None:
    import gc

    import psutil

    pool = mc.Pool(2)
    pool.submit(abs, 1).result(timeout=30)
    pids = pool.pids()
    del pool
    gc.collect()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
        time.sleep(0.05)
    assert not [p for p in pids if psutil.pid_exists(p)]


def test_fork_based_pool_of_another_library_does_not_delay_shutdown() -> None:
    # Children of a fork-based pool once inherited our task pipes: workers never
    # saw end of file and each shutdown waited out the grace period.
    import multiprocessing

    pool = mc.Pool(2)
    assert pool.submit(square, 2).result(timeout=30) == 4
    other = multiprocessing.get_context("fork").Pool(2)
    try:
        assert other.apply(square, (3,)) == 9
        started = time.monotonic()
        pool.shutdown()
        assert time.monotonic() - started < 3
    finally:
        other.close()
        other.join()
