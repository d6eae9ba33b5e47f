"""What a pool hands out keeps what it needs alive, and nothing more: an imap
iterator keeps its pool; a finished task's future and result are freed as soon
as the user drops them (no reference cycle, no idle thread holding them)."""

from __future__ import annotations

import gc

import pytest

import manycore as mc
from helpers import square


async def async_abs(x: int) -> int:
    return abs(x)


def test_imap_keeps_a_pool_made_for_it(backend: tuple[str, str | None]) -> None:
    name, method = backend
    xs = range(-20, 20)
    assert list(mc.Pool(2, backend=name, start_method=method).imap(abs, xs)) == [abs(x) for x in xs]
    it = mc.Pool(2, backend=name, start_method=method).imap(square, range(10), chunksize=1)
    gc.collect()  # even a full collection leaves the pool alone while its iterator lives
    assert next(it) == 0
    gc.collect()
    assert list(it) == [x * x for x in range(1, 10)]


def test_imap_keeps_an_asyncio_pool_made_for_it() -> None:
    assert list(mc.Pool(2, backend="asyncio").imap(async_abs, [-1, -2, 3])) == [1, 2, 3]


def test_a_pool_dropped_with_its_iterator_is_shut_down(backend: tuple[str, str | None]) -> None:
    from manycore._batch import Batch

    name, method = backend
    pool = mc.Pool(2, backend=name, start_method=method)
    engine = pool._backend
    it = pool.imap(square, range(4))
    assert next(it) == 0
    del pool
    gc.collect()
    assert next(it) == 1  # the iterator still holds its pool
    del it  # now both are unreachable: the pool's finalizer shuts its workers down
    gc.collect()
    with pytest.raises(mc.PoolClosed):
        engine.submit(Batch(square, [1]), lambda batch, result: None)
