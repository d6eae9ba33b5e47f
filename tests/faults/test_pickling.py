"""Whatever will not pickle fails its own item, in either direction; nothing else."""

from __future__ import annotations

import threading

import pytest

import manycore as mc
from faulty import GOOD, expected, lock_on, odd_error_on


def fresh_map_works(pool: mc.Pool) -> None:
    assert pool.map(expected, range(30)) == [x * GOOD for x in range(30)]


def test_unpicklable_input(process_pool: mc.Pool) -> None:
    items: list[object] = list(range(8))
    items[5] = threading.Lock()
    out = process_pool.map(expected, items, on_error="collect", chunksize=4)
    err = out[5].exception
    assert type(err) is mc.SerializationError and "lock" in str(err)
    assert [v for i, v in enumerate(out) if i != 5] == [x * GOOD for x in range(8) if x != 5]
    fresh_map_works(process_pool)


def test_unpicklable_submit_argument(process_pool: mc.Pool) -> None:
    with pytest.raises(mc.SerializationError, match="lock"):
        process_pool.submit(expected, threading.Lock())
    fresh_map_works(process_pool)


def test_unpicklable_result(process_pool: mc.Pool) -> None:
    out = process_pool.map(lock_on, range(8), on_error="collect", chunksize=4)
    err = out[4].exception
    assert type(err) is mc.SerializationError
    assert "cannot pickle the result of type 'lock'" in str(err)
    assert [v for i, v in enumerate(out) if i != 4] == [x * GOOD for x in range(8) if x != 4]
    fresh_map_works(process_pool)


@pytest.mark.parametrize(
    ("kind", "type_name", "words"),
    [
        ("init", "TwoArgError", "left and right"),
        ("attr", "LockedError", "has a lock"),
        ("huge", "ValueError", "huge xxx"),
    ],
)
def test_exception_that_will_not_travel(
    process_pool: mc.Pool, kind: str, type_name: str, words: str
) -> None:
    out = process_pool.map(odd_error_on, [(kind, x) for x in range(5)], on_error="collect")
    failure = out[2]
    assert isinstance(failure, mc.Failure)
    err = failure.exception
    assert type(err).__name__ in (type_name, "RemoteError")
    if isinstance(err, mc.RemoteError):
        assert err.type_name.endswith(type_name)
    assert words in str(err)
    assert "odd_error_on" in failure.traceback  # the worker's traceback text came along
    assert [v for i, v in enumerate(out) if i != 2] == [0, 10, 30, 40]
    fresh_map_works(process_pool)
