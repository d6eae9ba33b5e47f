"""retries= and retry_on=: failing items run again; others are not disturbed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import manycore as mc
from helpers import crash_once, flaky, square, type_error_on
from manycore._scheduler import CallOptions


def _inputs(tmp_path: Path, fails: dict[int, int], n: int = 8) -> list[tuple[str, int, int]]:
    return [(str(tmp_path), x, fails.get(x, 0)) for x in range(n)]


def test_retried_items_succeed_and_keep_their_place(pool: mc.Pool, tmp_path: Path) -> None:
    items = _inputs(tmp_path, {2: 1, 5: 2})
    assert pool.map(flaky, items, retries=2) == [x * 10 for x in range(8)]
    assert (tmp_path / "5.calls").read_text() == "..."  # two failures, then success
    assert (tmp_path / "0.calls").read_text() == "."  # others ran once


def test_retries_exhausted_raise_the_last_failure(pool: mc.Pool, tmp_path: Path) -> None:
    with pytest.raises(ConnectionError, match="flaky failure 2 for 3") as info:
        pool.map(flaky, _inputs(tmp_path, {3: 5}), retries=1)
    assert "input item 3" in " ".join(info.value.__notes__)


def test_retries_with_collect_and_skip(pool: mc.Pool, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    out = pool.map(flaky, _inputs(tmp_path / "a", {1: 9}), retries=1, on_error="collect")
    assert isinstance(out[1], mc.Failure) and out[1].index == 1
    assert [x for i, x in enumerate(out) if i != 1] == [0, 20, 30, 40, 50, 60, 70]
    (tmp_path / "b").mkdir()
    out = pool.map(flaky, _inputs(tmp_path / "b", {1: 9, 4: 1}), retries=1, on_error="skip")
    assert out == [0, 20, 30, 40, 50, 60, 70]


def test_retry_on_limits_what_is_retried(pool: mc.Pool) -> None:
    with pytest.raises(TypeError):
        pool.map(type_error_on, range(5), retries=3, retry_on=ValueError)
    out = pool.map(type_error_on, range(5), retries=1, retry_on=(ValueError,), on_error="skip")
    assert out == [0, 1, 3, 4]


def test_unordered_retries(pool: mc.Pool, tmp_path: Path) -> None:
    out = pool.map(flaky, _inputs(tmp_path, {0: 1, 7: 1}), retries=1, ordered=False)
    assert sorted(out) == [x * 10 for x in range(8)]


def test_imap_with_retries(pool: mc.Pool, tmp_path: Path) -> None:
    out = list(pool.imap(flaky, iter(_inputs(tmp_path, {4: 2})), retries=2))
    assert out == [x * 10 for x in range(8)]


def test_a_crash_is_retried(process_pool: mc.Pool, tmp_path: Path) -> None:
    items = [(str(tmp_path), x) for x in range(5)]
    assert process_pool.map(crash_once, items, chunksize=5, retries=1) == list(range(5))


def test_backoff_grows_and_is_bounded() -> None:
    policy = CallOptions(retries=10)
    delays = [policy.backoff(n) for n in range(1, 10)]
    assert delays[0] == pytest.approx(0.05)
    assert delays == sorted(delays)
    assert max(delays) <= 2.0


def test_retry_waits_for_the_backoff(pool: mc.Pool, tmp_path: Path) -> None:
    started = time.monotonic()
    assert pool.map(flaky, _inputs(tmp_path, {0: 2}, n=1), retries=2) == [0]
    assert time.monotonic() - started >= 0.15  # 0.05 s, then 0.1 s


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"retries": -1}, ValueError, "retries must be at least 0"),
        ({"retries": "2"}, TypeError, "retries must be a whole number"),
        ({"retry_on": 5}, TypeError, "retry_on must be an exception class"),
        ({"retry_on": (ValueError, int)}, TypeError, "retry_on must be an exception class"),
    ],
)
def test_bad_retry_options(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        mc.map(square, [1], backend="serial", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("chunksize", [None, 1])
def test_retry_is_sent_even_when_the_ordered_buffer_is_full(
    pool: mc.Pool, tmp_path: Path, chunksize: int | None
) -> None:
    # Item 0 waits for its retry while every later result piles up behind it; the
    # retry once stayed unsent and map returned a short list without an error.
    items = _inputs(tmp_path, {0: 1}, n=40)
    assert pool.map(flaky, items, retries=1, chunksize=chunksize) == [x * 10 for x in range(40)]


def test_retries_exhausted_in_a_full_buffer_still_raise(pool: mc.Pool, tmp_path: Path) -> None:
    items = _inputs(tmp_path, {x: 9 for x in range(0, 40, 2)}, n=40)
    with pytest.raises(ConnectionError) as info:
        pool.map(flaky, items, retries=1, chunksize=1)
    assert str(info.value) == "flaky failure 2 for 0"  # the first failing item, in order


def test_pool_level_errors_are_raised_not_skipped(backend: tuple[str, str | None]) -> None:
    from helpers import failing_init

    name, method = backend
    with mc.Pool(2, backend=name, start_method=method, init=failing_init) as pool:
        for on_error in ("skip", "collect"):
            with pytest.raises(mc.PoolBroken):
                pool.map(square, range(6), chunksize=3, on_error=on_error, retries=2)
