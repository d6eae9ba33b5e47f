"""``run_batch``, the loop every backend runs a batch with, without processes: each
item's value in its place, each failure at its own offset, the items after a
failure still run, and a failure's traceback starts at the user's function."""

from __future__ import annotations

import traceback

import pytest

from manycore._core._batch import run_batch


def fails_on(bad: set[int]):
    def fn(x, y=0):
        if x in bad:
            raise ValueError(x)
        return x * 10 + y

    return fn


@pytest.mark.parametrize("bad", [set(), {0}, {9}, {3}, {3, 4}, {0, 5, 9}, set(range(10))])
@pytest.mark.parametrize("shape", ["plain", "star", "kwargs"])
@pytest.mark.parametrize("timed", [False, True])
def test_values_and_failures_by_offset(bad, shape, timed):
    fn = fails_on(bad)
    xs = list(range(10))
    if shape == "plain":
        result = run_batch(fn, xs, False, None, Exception, timed)
        expected = [x * 10 for x in xs]
    elif shape == "star":
        result = run_batch(fn, [(x, 1) for x in xs], True, None, Exception, timed)
        expected = [x * 10 + 1 for x in xs]
    else:
        result = run_batch(fn, [(x,) for x in xs], True, {"y": 2}, Exception, timed)
        expected = [x * 10 + 2 for x in xs]
    assert result.values == [None if x in bad else e for x, e in zip(xs, expected, strict=True)]
    assert sorted(result.failures or {}) == sorted(bad)
    for offset, exc in (result.failures or {}).items():
        assert isinstance(exc, ValueError) and exc.args == (offset,)


def test_range_and_tuple_inputs():
    fn = fails_on({2})
    for items in (range(5), tuple(range(5))):
        result = run_batch(fn, items, False, None, Exception)
        assert result.values == [0, 10, None, 30, 40]
        assert list(result.failures or {}) == [2]


def test_traceback_starts_at_the_users_function():
    result = run_batch(fails_on({1}), [0, 1, 2], False, None, Exception)
    exc = (result.failures or {})[1]
    frames = traceback.extract_tb(exc.__traceback__)
    assert frames[0].name == "fn"
    assert all(f.name != "run_batch" for f in frames)


def test_an_error_not_caught_propagates_after_nothing_is_lost():
    def fn(x):
        if x == 2:
            raise KeyboardInterrupt
        return x

    with pytest.raises(KeyboardInterrupt):
        run_batch(fn, [0, 1, 2, 3], False, None, Exception)
    result = run_batch(fn, [0, 1, 2, 3], False, None, BaseException)
    assert result.values == [0, 1, None, 3]
    assert isinstance((result.failures or {})[2], KeyboardInterrupt)


def test_each_item_runs_once_in_order():
    seen: list[int] = []

    def fn(x):
        seen.append(x)
        if x % 3 == 0:
            raise ValueError(x)
        return x

    result = run_batch(fn, list(range(10)), False, None, Exception)
    assert seen == list(range(10))
    assert len(result.values) == 10
    assert sorted(result.failures or {}) == [0, 3, 6, 9]
