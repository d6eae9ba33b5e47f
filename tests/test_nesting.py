"""Parallel calls inside tasks: they keep within the CPUs and never deadlock.

A map inside a process worker runs in that worker (it holds its share of the
CPUs already); a pool made there is sized to that share. Work that a thread of a
threads pool gives its own pool runs in that thread when no other is free (each
waiting thread would otherwise hold the slot its work needs).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import manycore as mc
from conftest import PROCESS_BACKENDS
from helpers import bounded, square
from stdlibfns import nested_map, nested_pool_sizes, nested_timed_map

_BOUND = 30.0  # seconds: a call that takes longer is taken as hung


@pytest.fixture
def fresh_defaults() -> Iterator[None]:
    mc.shutdown_default_pools()
    yield
    mc.shutdown_default_pools(wait=False)


# ------------------------------------------------------- inside a process worker


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_map_inside_a_process_worker_starts_no_processes(backend: tuple[str, str]) -> None:
    with mc.Pool(2, start_method=backend[1]) as pool:
        results = pool.map(nested_map, [8, 3], timeout=_BOUND)
    assert results == [(list(range(8, 0, -1)), 0), ([3, 2, 1], 0)]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_map_with_a_timeout_inside_a_process_worker_still_stops_the_item(
    backend: tuple[str, str],
) -> None:
    # Run in the worker itself, the item could not be stopped: timeout=0.5 would
    # have waited out the whole call (or for ever, for a hung one).
    with mc.Pool(1, start_method=backend[1]) as pool:
        [(error, seconds)] = pool.map(nested_timed_map, [20], timeout=_BOUND)
    assert error == "TaskTimeout"
    assert seconds < 10


def test_a_pool_made_inside_a_worker_is_sized_to_its_share() -> None:
    if mc.usable_cpus() < 2:
        pytest.skip("a share smaller than the machine needs 2 CPUs")
    with mc.Pool(1, blas_threads=1, start_method="fork") as pool:
        workers, blas, out = pool.submit(nested_pool_sizes, None).result(timeout=_BOUND)
    # Its share is 1 CPU: one worker of one BLAS thread, not one per CPU.
    assert (workers, blas, out) == (1, 1, [1, 2])


# ------------------------------------------------------------- inside a thread


def test_a_nested_threads_map_on_the_default_pool_does_not_deadlock(
    fresh_defaults: None,
) -> None:
    def outer(x: int) -> int:
        return x + sum(mc.map(square, range(8), backend="threads"))

    n = mc.Pool(backend="threads").workers * 3  # more outer items than threads
    out = bounded(lambda: mc.map(outer, range(n), backend="threads", timeout=_BOUND))
    assert out == [x + 140 for x in range(n)]


def test_a_one_thread_pool_whose_task_maps_on_it() -> None:
    with mc.Pool(1, backend="threads") as pool:

        def outer(x: int) -> int:
            nested = pool.map(square, range(4))
            return x + sum(nested) + pool.submit(square, 3).result(timeout=_BOUND)

        assert bounded(lambda: pool.map(outer, range(3))) == [23, 24, 25]
        assert bounded(lambda: pool.submit(outer, 10).result(timeout=_BOUND)) == 33
        stats = pool.stats()
    assert stats.items == 3 + 1 + 3 * 5 + 5  # nested items are counted, on the one slot


def test_nested_work_still_uses_free_threads() -> None:
    barrier = threading.Barrier(2, timeout=_BOUND)

    with mc.Pool(3, backend="threads") as pool:

        def outer(_: int) -> int:
            # Two nested items that must run at once: each waits for the other.
            return sum(pool.map(lambda _: barrier.wait() + 1, range(2), chunksize=1))

        assert bounded(lambda: pool.submit(outer, 0).result(timeout=_BOUND)) == 3


def test_a_nested_submit_retried_on_a_busy_threads_pool_does_not_deadlock() -> None:
    # The retry is sent by a timer thread, not by the pool's thread that waits for
    # it: it must not queue behind that thread, which holds the only slot.
    tries = iter(range(10))

    def flaky() -> int:
        if next(tries) == 0:
            raise ValueError("first try fails")
        return 7

    with mc.Pool(1, backend="threads") as pool:

        def outer(_: int) -> int:
            return pool.schedule(flaky, retries=2).result(timeout=_BOUND)  # type: ignore[no-any-return]

        assert bounded(lambda: pool.map(outer, [0])) == [7]


def test_nested_work_with_a_timeout_on_a_busy_threads_pool_times_out_in_time() -> None:
    # Run in the waiting thread itself, the item could not be given up on: its
    # timeout would go unnoticed (a result after 3 s, or a hang for a hung call).
    import time

    release = threading.Event()

    def stuck(_: int) -> int:
        release.wait(_BOUND)
        return 1

    with mc.Pool(1, backend="threads") as pool:

        def outer(_: int) -> str:
            try:
                pool.map(stuck, [0], timeout=0.3)
            except mc.TaskTimeout:
                return "timed out"
            return "not timed out"

        began = time.monotonic()
        try:
            assert bounded(lambda: pool.map(outer, [0])) == ["timed out"]
            assert time.monotonic() - began < 10
        finally:
            release.set()


def test_a_waiting_thread_lends_its_slot_to_one_thread_only() -> None:
    # Each batch of a nested timed map is new work: one thread per batch would
    # start dozens. The waiting thread lends its slot once; its work queues there.
    import time

    peak = [0]

    def count_threads(x: int) -> int:
        names = [t.name for t in threading.enumerate()]
        peak[0] = max(peak[0], sum(n[len("manycore-thread-") :].isdigit() for n in names))
        time.sleep(0.005)
        return x

    with mc.Pool(2, backend="threads") as pool:

        def outer(_: int) -> int:
            return len(pool.map(count_threads, range(100), timeout=_BOUND, chunksize=1))

        assert bounded(lambda: pool.map(outer, [0, 1])) == [100, 100]
    assert peak[0] <= 4  # two waiting threads, and one thread in each one's slot


@pytest.mark.parametrize("timeout", [None, _BOUND], ids=["in-the-thread", "lent-slot"])
def test_the_pools_stats_count_nested_time_once(timeout: float | None) -> None:
    import time

    with mc.Pool(1, backend="threads") as pool:
        inner: list[mc.Stats] = []

        def outer(_: int) -> list[None]:
            values, stats = pool.map(time.sleep, [0.2, 0.2], stats=True, timeout=timeout)
            inner.append(stats)
            return values

        bounded(lambda: pool.map(outer, [0]))
        stats = pool.stats()
    # The outer item's 0.4 s include the nested items': one slot, busy once.
    assert 0.35 < stats.busy < 0.6
    assert stats.items == 3
    assert inner[0].busy > 0.35  # the nested call's own stats count its items' time
