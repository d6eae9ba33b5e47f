"""on_error="raise" | "skip" | "collect" on every backend."""

from __future__ import annotations

from collections import Counter

import pytest

import manycore as mc
from helpers import add, crash_on, fail_on, square


def test_skip_leaves_failed_items_out(pool: mc.Pool) -> None:
    assert pool.map(fail_on, range(12), on_error="skip") == [x for x in range(12) if x != 7]


@pytest.mark.parametrize("chunksize", [None, 1, 5])
def test_collect_puts_a_failure_in_place(pool: mc.Pool, chunksize: int | None) -> None:
    out = pool.map(fail_on, range(12), chunksize=chunksize, on_error="collect")
    assert out[:7] == list(range(7)) and out[8:] == list(range(8, 12))
    failure = out[7]
    assert isinstance(failure, mc.Failure)
    assert failure.index == 7 and failure.input == 7
    assert isinstance(failure.exception, ValueError)
    assert "bad input 7" in failure.traceback and "fail_on" in failure.traceback
    assert "index=7" in repr(failure)


def test_collect_with_several_failures_and_star_inputs(pool: mc.Pool) -> None:
    out = pool.starmap(add, [(1, 2), (1, "x"), (3, 4), (None, 1)], on_error="collect")
    assert out[0] == 3 and out[2] == 7
    assert [f.index for f in out if isinstance(f, mc.Failure)] == [1, 3]
    assert out[1].input == (1, "x")


def test_unordered_collect_and_skip(pool: mc.Pool) -> None:
    out = pool.map(fail_on, range(30), ordered=False, on_error="collect")
    failures = [f for f in out if isinstance(f, mc.Failure)]
    assert [f.index for f in failures] == [7]
    assert Counter(x for x in out if not isinstance(x, mc.Failure)) == Counter(
        x for x in range(30) if x != 7
    )
    skipped = pool.map(fail_on, range(30), ordered=False, on_error="skip")
    assert sorted(skipped) == [x for x in range(30) if x != 7]


def test_imap_collect_keeps_going_after_a_failure(pool: mc.Pool) -> None:
    out = list(pool.imap(fail_on, iter(range(10)), on_error="collect"))
    assert len(out) == 10 and isinstance(out[7], mc.Failure)


def test_crash_is_collected_and_innocent_items_computed(process_pool: mc.Pool) -> None:
    out = process_pool.map(crash_on, range(6), chunksize=3, on_error="collect")
    assert [x for i, x in enumerate(out) if i != 3] == [0, 10, 20, 40, 50]
    assert isinstance(out[3], mc.Failure) and isinstance(out[3].exception, mc.WorkerCrashed)
    assert process_pool.map(square, range(4)) == [0, 1, 4, 9]


def test_top_level_on_error(backend: tuple[str, str | None]) -> None:
    name, method = backend
    out = mc.map(fail_on, range(9), backend=name, start_method=method, on_error="skip")
    assert out == [0, 1, 2, 3, 4, 5, 6, 8]


def test_bad_on_error_is_refused_before_work(pool: mc.Pool) -> None:
    with pytest.raises(ValueError, match=r"on_error='ignore' is not valid; choose one of"):
        pool.map(square, [1], on_error="ignore")
    with pytest.raises(ValueError, match="on_error"):
        mc.map(square, [1], on_error="nope")


def test_unpicklable_input_fails_only_its_item(process_pool: mc.Pool) -> None:
    import threading

    items = [1, 2, threading.Lock(), 4, 5]
    out = process_pool.map(square, items, chunksize=5, on_error="collect")
    assert [out[i] for i in (0, 1, 3, 4)] == [1, 4, 16, 25]
    assert isinstance(out[2], mc.Failure)
    assert isinstance(out[2].exception, mc.SerializationError)
    assert "input item 2" in str(out[2].exception)
    assert process_pool.map(square, items, on_error="skip") == [1, 4, 16, 25]
    with pytest.raises(mc.SerializationError, match="input item 2"):
        process_pool.map(square, items)
