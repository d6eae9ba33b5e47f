"""pool.stats() and map(..., stats=True): per-worker time that adds up, the
slowest items, restarts; the recorder itself without processes."""

from __future__ import annotations

import json
import time

import pytest
from tests import faulty

import manycore as mc
from manycore._core._batch import Batch, BatchResult
from manycore._observe._stats import StatsRecorder

SLOW = 7


def nap(x: int) -> int:
    time.sleep(0.1 if x == SLOW else 0.005)
    return x


def fail_odd(x: int) -> int:
    if x % 2:
        raise ValueError(x)
    return x


def echo(blob: bytes) -> bytes:
    return blob


def test_stats_add_up_to_the_wall_time(pool: mc.Pool) -> None:
    out, stats = pool.map(nap, range(20), stats=True)
    assert out == list(range(20))
    assert isinstance(stats, mc.Stats)
    assert stats.items == 20 and stats.failed == 0
    assert stats.slowest[0].index == SLOW
    assert 0.09 < stats.slowest[0].seconds < 1.0
    expected = 19 * 0.005 + 0.1
    assert expected * 0.95 < stats.busy < expected * 1.5 + 0.1
    assert sum(w.items for w in stats.workers) == 20
    for w in stats.workers:
        # Measured apart (busy in the worker, wall in the caller), they still add up:
        # no worker can have run longer than the call lasted.
        assert w.busy + w.moving <= stats.wall * 1.02 + 0.005, (w, stats.wall)
        assert w.busy + w.moving + w.idle == pytest.approx(stats.wall, rel=0.02, abs=0.005)
    if pool.backend_name == "serial":
        assert [w.worker for w in stats.workers] == [0]  # one call at a time
    elif pool.backend_name in ("threads", "processes"):
        assert [w.worker for w in stats.workers] == list(range(pool.workers))
    else:  # a cluster names the worker that ran each batch
        assert all(isinstance(w.worker, str) for w in stats.workers if w.items)


def test_pool_stats_accumulate_and_reset(shared_pool: mc.Pool) -> None:
    shared_pool.stats(reset=True)
    shared_pool.map(abs, range(-10, 10))
    assert shared_pool.submit(nap, SLOW).result() == SLOW
    stats = shared_pool.stats()
    assert stats.items == 21
    assert any(s.index is None and s.seconds >= 0.09 for s in stats.slowest)  # the submit
    assert stats.wall >= stats.busy / max(1, len(stats.workers))
    assert shared_pool.stats(reset=True).items == 21
    assert shared_pool.stats().items == 0


def test_failed_items_are_counted(shared_pool: mc.Pool) -> None:
    out, stats = shared_pool.map(fail_odd, range(10), on_error="collect", stats=True)
    assert sum(isinstance(x, mc.Failure) for x in out) == 5
    assert stats.items == 10 and stats.failed == 5


def test_items_are_timed_once_they_cost_enough() -> None:
    # No stats=True: items of ~5 ms go in batches of several, and are still timed
    # one by one (two clock reads are nothing next to 5 ms).
    with mc.Pool(2, backend="threads") as pool:
        pool.map(nap, range(40))
        slowest = pool.stats().slowest
    assert slowest[0].index == SLOW


def test_moving_data_is_measured(backend: tuple[str, str | None]) -> None:
    name, method = backend
    blob = bytes(4 << 20)
    with mc.Pool(2, backend=name, start_method=method) as pool:
        out, stats = pool.map(echo, [blob] * 6, stats=True)
    assert out == [blob] * 6
    if name == "processes":
        assert stats.moving > 0.0005
    else:
        assert stats.moving == 0.0


def test_restarts_are_counted_per_worker(process_pool: mc.Pool) -> None:
    args = [("exit", x) for x in range(6)]
    out, stats = process_pool.map(faulty.die_on, args, on_error="collect", stats=True)
    assert isinstance(out[3], mc.Failure)
    assert stats.failed == 1 and stats.items == 6  # the crashed item ran, and failed
    assert stats.restarts == 1
    assert sum(w.restarts for w in stats.workers) == 1
    assert process_pool.stats().restarts == 1


def test_max_tasks_restarts_show() -> None:
    with mc.Pool(1, max_tasks_per_worker=4) as pool:
        pool.map(abs, range(12), chunksize=2)
        stats = pool.stats()
    assert stats.items == 12
    assert stats.workers[0].restarts >= 2


def test_asyncio_stats() -> None:
    async def anap(x: int) -> int:
        import asyncio

        await asyncio.sleep(0.01)
        return x

    out, stats = mc.map(anap, range(10), backend="asyncio", stats=True)
    assert out == list(range(10))
    assert stats.items == 10
    assert [w.worker for w in stats.workers] == ["loop"]
    assert 0.0 < stats.utilization <= 1.0  # overlapping coroutines over the slots


def test_report_and_plain_data() -> None:
    out, stats = mc.starmap(pow, [(2, 3), (3, 2)], backend="threads", workers=2, stats=True)
    assert out == [8, 9]
    text = str(stats)
    assert "2 items (0 failed)" in text and "busy s" in text
    data = json.loads(json.dumps(stats.as_dict()))
    assert data["items"] == 2 and len(data["workers"]) == 2
    assert 0.0 <= data["utilization"] <= 1.0


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_stats_must_be_a_bool(bad: object) -> None:
    with pytest.raises(TypeError, match="stats"):
        mc.map(abs, [1], backend="serial", stats=bad)  # type: ignore[call-overload]
    with mc.Pool(1, backend="serial") as pool, pytest.raises(TypeError, match="reset"):
        pool.stats(reset=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------- the recorder alone


def _result(worker: int, elapsed: float, n: int = 1, **extra: object) -> BatchResult:
    result = BatchResult([0] * n, None, elapsed, worker=worker)
    for key, value in extra.items():
        setattr(result, key, value)
    return result


def test_recorder_sums_per_worker() -> None:
    recorder = StatsRecorder(3)
    recorder.record(Batch(abs, [1, 2], 0), _result(0, 0.5, 2, moving=0.1))
    recorder.record(Batch(abs, [3], 2), _result(0, 0.25))
    recorder.record(Batch(abs, [4, 5, 6], 3), _result(1, 0.75, 3, slowest=[(2, 0.5)]))
    recorder.record(Batch(abs, [7], 6), RuntimeError("a crash ran nothing to count"))
    stats = recorder.snapshot({1: 2})
    assert [w.worker for w in stats.workers] == [0, 1, 2]
    w0, w1, w2 = stats.workers
    assert (w0.items, w0.batches, w0.busy, w0.moving) == (3, 2, 0.75, 0.1)
    assert (w1.items, w1.restarts) == (3, 2) and w2.items == 0
    assert w2.idle == pytest.approx(stats.wall)
    assert [(s.index, s.seconds) for s in stats.slowest] == [(5, 0.5), (2, 0.25)]


def test_recorder_counts_only_items_that_ran() -> None:
    recorder = StatsRecorder(1, restarts={0: 4})
    cut = _result(0, 0.1, 5, unrun=[(2, 5)], failures={1: ValueError()})
    recorder.record(Batch(abs, list(range(5)), 10), cut)
    stats = recorder.snapshot({0: 5})
    assert stats.items == 2 and stats.failed == 1
    assert stats.restarts == 1  # counted from the recorder's start
    assert stats.slowest == ()  # a cut-short batch of one slot names no item


@pytest.mark.parametrize("name", ["threads", "processes"])
def test_a_timed_out_item_is_among_the_slowest(name: str) -> None:
    with mc.Pool(2, backend=name) as pool:
        out, stats = pool.map(faulty.hang_on, range(8), timeout=0.3, on_error="collect", stats=True)
    assert isinstance(out[5], mc.Failure)
    assert stats.slowest[0].index == 5 and stats.slowest[0].seconds >= 0.29
    assert stats.failed == 1


def test_serial_counts_one_worker() -> None:
    out, stats = mc.map(abs, range(-3, 3), backend="serial", workers=2, stats=True)
    assert out == [3, 2, 1, 0, 1, 2] and [w.worker for w in stats.workers] == [0]


def test_reset_keeps_counting_a_run_under_way() -> None:
    with mc.Pool(2, backend="threads") as pool:
        results = pool.imap(nap, range(30))
        first = [next(results) for _ in range(5)]
        pool.stats(reset=True)
        rest = list(results)
        assert first + rest == list(range(30))
        assert 20 <= pool.stats().items <= 30  # what ran after the reset, none lost
