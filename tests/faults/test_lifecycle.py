"""Init failures, callbacks, failing inputs, cancellation and shutdown."""

from __future__ import annotations

import time
from concurrent.futures import CancelledError
from functools import partial

import pytest

import manycore as mc
from faulty import GOOD, broken_input, expected, hang_on
from helpers import failing_init


def test_failing_init_breaks_the_pool(backend: tuple[str, str | None]) -> None:
    name, method = backend
    with mc.Pool(2, backend=name, start_method=method, init=failing_init) as pool:
        with pytest.raises(mc.PoolBroken, match="init function raised RuntimeError") as info:
            pool.map(expected, range(10))
        assert "init exploded" in repr(info.value.__cause__) or "init exploded" in str(
            info.value.__cause__.__cause__  # type: ignore[union-attr]
        )
        with pytest.raises(mc.PoolBroken):  # and stays broken: no restart loop
            pool.submit(expected, 1).result(timeout=30)


def test_raising_done_callback_does_not_break_the_pool(pool: mc.Pool) -> None:
    futures = []
    for x in range(6):
        f = pool.submit(expected, x)
        f.add_done_callback(lambda _: 1 / 0)
        futures.append(f)
    assert [f.result(timeout=30) for f in futures] == [x * GOOD for x in range(6)]
    assert pool.map(expected, range(10)) == [x * GOOD for x in range(10)]


def test_failing_input_iterable_reaches_the_caller(pool: mc.Pool) -> None:
    with pytest.raises(LookupError, match="the input source failed"):
        pool.map(expected, broken_input(50, 23))
    got = []
    with pytest.raises(LookupError):
        for value in pool.imap(expected, broken_input(50, 23)):
            got.append(value)
    assert got == [x * GOOD for x in range(23)]
    assert pool.map(expected, range(10)) == [x * GOOD for x in range(10)]


def test_shutdown_cancels_what_has_not_started(backend: tuple[str, str | None]) -> None:
    name, method = backend
    if name == "serial":
        pytest.skip("serial runs each task inside submit(): nothing is ever pending")
    pool = mc.Pool(1, backend=name, start_method=method)
    futures = [pool.submit(hang_on, 5, seconds=0.5)] + [pool.submit(expected, x) for x in range(20)]
    time.sleep(0.2)
    pool.shutdown(wait=True, cancel_pending=True)
    assert futures[0].result(timeout=0) == 5 * GOOD
    cancelled = [f for f in futures[1:] if f.cancelled()]
    assert len(cancelled) >= 15
    for f in futures[1:]:
        assert f.cancelled() or f.result(timeout=0) in range(0, 200, GOOD)


def test_force_cancel_kills_a_running_task(process_pool: mc.Pool) -> None:
    future = process_pool.submit(hang_on, 5, seconds=60)
    time.sleep(0.3)
    assert not future.cancel()  # running: a plain cancel cannot stop it
    started = time.monotonic()
    assert process_pool.cancel(future, force=True)
    with pytest.raises(CancelledError):
        future.result(timeout=10)
    assert time.monotonic() - started < 5
    assert process_pool.map(expected, range(10)) == [x * GOOD for x in range(10)]
    assert len(process_pool.pids()) == 2


def test_force_cancel_of_a_queued_task_spares_the_running_one(process_pool: mc.Pool) -> None:
    running = [process_pool.submit(hang_on, 5, seconds=0.5) for _ in range(2)]
    queued = process_pool.submit(hang_on, 5, seconds=60)
    time.sleep(0.1)
    assert process_pool.cancel(queued, force=True)
    with pytest.raises(CancelledError):
        queued.result(timeout=10)
    assert [f.result(timeout=30) for f in running] == [5 * GOOD] * 2


def test_cancel_force_on_threads_cannot_stop_a_running_call() -> None:
    with mc.Pool(1, backend="threads") as pool:
        future = pool.submit(hang_on, 5, seconds=0.5)
        time.sleep(0.1)
        assert not pool.cancel(future, force=True)
        assert future.result(timeout=30) == 5 * GOOD


def test_submit_retries(pool: mc.Pool, tmp_path: object) -> None:
    from helpers import flaky

    with mc.Pool(2, backend=pool.backend_name, retries=2) as retrying:
        future = retrying.submit(flaky, (str(tmp_path), 3, 2))
        assert future.result(timeout=30) == 30
    future = pool.schedule(flaky, ((str(tmp_path), 4, 5),), retries=1)
    with pytest.raises(ConnectionError):
        future.result(timeout=30)


def test_shutdown_waits_for_a_submit_retry_in_backoff(
    backend: tuple[str, str | None], tmp_path: object
) -> None:
    from helpers import flaky

    name, method = backend
    pool = mc.Pool(2, backend=name, start_method=method, retries=3)
    future = pool.submit(flaky, (str(tmp_path), 6, 2))
    pool.shutdown(wait=True)
    assert future.result(timeout=0) == 60


def test_terminate_stops_everything(backend: tuple[str, str | None]) -> None:
    name, method = backend
    if name == "serial":
        pytest.skip("serial runs inline")
    pool = mc.Pool(2, backend=name, start_method=method)
    futures = [pool.submit(partial(hang_on, seconds=0.3), 5) for _ in range(6)]
    time.sleep(0.1)
    started = time.monotonic()
    pool.terminate()
    assert time.monotonic() - started < 3
    for f in futures:
        assert f.done() or name == "threads"
