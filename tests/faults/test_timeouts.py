"""timeout=: an item that runs too long fails alone with TaskTimeout."""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path

import pytest

import manycore as mc
from faulty import GOOD, hang_on, once_slow, spin_in_c_on


def fresh_map_works(pool: mc.Pool) -> None:
    assert pool.map(partial(hang_on, bad=-1), range(30)) == [x * GOOD for x in range(30)]


def test_timeout_fails_only_that_item(pool: mc.Pool) -> None:
    started = time.monotonic()
    out = pool.map(hang_on, range(12), timeout=0.5, on_error="collect")
    took = time.monotonic() - started
    failure = out[5]
    assert isinstance(failure, mc.Failure) and failure.index == 5 and failure.input == 5
    err = failure.exception
    assert type(err) is mc.TaskTimeout and isinstance(err, TimeoutError)
    assert err.index == 5 and err.timeout == 0.5
    assert "input item 5 ran longer than timeout=0.5 s" in str(err) or "took" in str(err)
    assert out[:5] + out[6:] == [x * GOOD for x in range(12) if x != 5]
    if pool.backend_name != "serial":  # the others stop waiting at the deadline
        assert took < 1.8
    fresh_map_works(pool)


def test_process_timeout_kills_and_replaces_the_worker(process_pool: mc.Pool) -> None:
    pids = set(process_pool.pids())
    with pytest.raises(mc.TaskTimeout, match=r"input item 5 .*was killed to stop it"):
        process_pool.map(partial(hang_on, seconds=60), range(10), timeout=0.5)
    assert len(process_pool.pids()) == 2
    assert set(process_pool.pids()) != pids
    fresh_map_works(process_pool)


def test_timeout_stops_c_code_that_holds_the_gil(process_pool: mc.Pool) -> None:
    started = time.monotonic()
    out = process_pool.map(spin_in_c_on, range(8), timeout=0.5, on_error="collect")
    assert time.monotonic() - started < 5
    assert isinstance(out[5], mc.Failure) and type(out[5].exception) is mc.TaskTimeout
    assert [v for i, v in enumerate(out) if i != 5] == [x * GOOD for x in range(8) if x != 5]
    fresh_map_works(process_pool)


def test_timeout_in_a_chunk_reruns_the_innocent_items(process_pool: mc.Pool) -> None:
    out = process_pool.map(
        partial(hang_on, bad=13), range(40), timeout=0.5, chunksize=10, on_error="skip"
    )
    assert out == [x * GOOD for x in range(40) if x != 13]
    fresh_map_works(process_pool)


def test_threads_say_the_call_goes_on(backend: tuple[str, str | None]) -> None:
    if backend[0] != "threads":
        pytest.skip("threads only")
    with mc.Pool(2, backend="threads") as pool:
        with pytest.raises(mc.TaskTimeout, match="cannot be stopped"):
            pool.map(partial(hang_on, seconds=1.0), range(6), timeout=0.3)
        # The hung thread was replaced: the pool still runs two items at once.
        started = time.monotonic()
        assert pool.map(partial(hang_on, seconds=0.5), [5, 5]) == [5 * GOOD] * 2
        assert time.monotonic() - started < 0.95


def test_submit_timeout(pool: mc.Pool) -> None:
    future = pool.schedule(hang_on, (5,), timeout=0.3, kwargs={"seconds": 1.0})
    with pytest.raises(mc.TaskTimeout, match="the call to hang_on"):
        future.result(timeout=30)
    assert pool.submit(hang_on, 1).result(timeout=30) == GOOD


def test_pool_default_timeout_and_override(backend: tuple[str, str | None]) -> None:
    name, method = backend
    with mc.Pool(2, backend=name, start_method=method, timeout=0.3) as pool:
        with pytest.raises(mc.TaskTimeout):
            pool.map(partial(hang_on, seconds=1.0), range(8))
        with pytest.raises(mc.TaskTimeout):
            pool.submit(hang_on, 5, seconds=1.0).result(timeout=30)
        # An explicit per-call limit wins over the pool's; math.inf means none.
        assert pool.map(partial(hang_on, seconds=0.5), [5], timeout=math.inf) == [5 * GOOD]
        assert pool.map(partial(hang_on, seconds=0.5), [5], timeout=5) == [5 * GOOD]


def test_timeout_is_retried(pool: mc.Pool, tmp_path: Path) -> None:
    items = [(str(tmp_path), x) for x in range(6)]
    out = pool.map(once_slow, items, timeout=0.5, retries=1)
    assert out == [x * GOOD for x in range(6)]
    # retry_on without TimeoutError: the timeout is final.
    for f in tmp_path.iterdir():
        f.unlink()
    with pytest.raises(mc.TaskTimeout):
        pool.map(once_slow, items, timeout=0.5, retries=1, retry_on=ValueError)


@pytest.mark.parametrize("value", [0, -1, float("nan"), "1", True])
def test_bad_timeout_is_refused(value: object) -> None:
    with (
        mc.Pool(1, backend="serial") as pool,
        pytest.raises((TypeError, ValueError), match="timeout"),
    ):
        pool.map(hang_on, [1], timeout=value)  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError), match="timeout"):
        mc.Pool(1, backend="serial", timeout=value)  # type: ignore[arg-type]
