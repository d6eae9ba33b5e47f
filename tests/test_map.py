"""map / imap / starmap give the built-in results on every backend."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

import manycore as mc
from helpers import add, identity, square


def test_map_matches_builtin(pool: mc.Pool) -> None:
    assert pool.map(square, range(1000)) == [x * x for x in range(1000)]


def test_map_list_input_and_fixed_chunksize(pool: mc.Pool) -> None:
    xs = list(range(-50, 50))
    assert pool.map(abs, xs, chunksize=7) == [abs(x) for x in xs]


def test_unordered_map_has_every_result(pool: mc.Pool) -> None:
    out = pool.map(square, range(500), ordered=False)
    assert Counter(out) == Counter(x * x for x in range(500))


def test_several_iterables_are_zipped(pool: mc.Pool) -> None:
    assert pool.map(add, [1, 2, 3], [10, 20, 30, 40]) == [11, 22, 33]


def test_starmap(pool: mc.Pool) -> None:
    assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]


def test_empty_input(pool: mc.Pool) -> None:
    assert pool.map(square, []) == []
    assert list(pool.imap(square, iter([]))) == []


def test_lambda_and_closure(pool: mc.Pool) -> None:
    k = 3
    assert pool.map(lambda x: x + k, range(5)) == [3, 4, 5, 6, 7]


def test_numpy_array_input_is_sliced(pool: mc.Pool) -> None:
    arr = np.arange(1000, dtype=np.int64)
    out = pool.map(square, arr)
    assert [int(v) for v in out] == [x * x for x in range(1000)]


def test_numpy_2d_rows(pool: mc.Pool) -> None:
    arr = np.arange(12.0).reshape(4, 3)
    assert pool.map(float, (r.sum() for r in arr)) == [3.0, 12.0, 21.0, 30.0]
    assert [float(s) for s in pool.map(np.sum, arr)] == [3.0, 12.0, 21.0, 30.0]


def test_imap_is_lazy_on_an_endless_generator(pool: mc.Pool) -> None:
    results = pool.imap(square, itertools.count())
    assert list(itertools.islice(results, 200)) == [x * x for x in range(200)]


def test_imap_reads_input_with_bounded_lookahead(pool: mc.Pool) -> None:
    pulled = []

    def source():
        for i in itertools.count():
            pulled.append(i)
            yield i

    it = pool.imap(identity, source())
    assert [next(it) for _ in range(10)] == list(range(10))
    # The input is read only a bounded distance ahead of what was consumed.
    assert len(pulled) < 10_000
    it.close()


def test_imap_unordered_yields_everything(pool: mc.Pool) -> None:
    out = list(pool.imap(square, range(300), ordered=False))
    assert sorted(out) == [x * x for x in range(300)]


def test_generator_input_for_map(pool: mc.Pool) -> None:
    assert pool.map(square, (x for x in range(100))) == [x * x for x in range(100)]


def test_top_level_functions(backend: tuple[str, str | None]) -> None:
    name, method = backend
    assert mc.map(square, range(10), backend=name, start_method=method) == [
        x * x for x in range(10)
    ]
    assert list(mc.imap(square, range(10), backend=name, start_method=method)) == [
        x * x for x in range(10)
    ]
    assert mc.starmap(add, [(1, 1)], backend=name, start_method=method) == [2]


def test_default_pool_is_reused() -> None:
    first = mc.map(square, range(4), workers=2)
    pids = mc._api._calls._pools[("processes", 2, None, None, None)].pids()
    second = mc.map(square, range(4), workers=2)
    assert first == second
    assert mc._api._calls._pools[("processes", 2, None, None, None)].pids() == pids


@pytest.mark.parametrize("n", [1, 2, 3, 17, 4096])
def test_many_sizes(shared_pool: mc.Pool, n: int) -> None:
    assert shared_pool.map(square, range(n)) == [x * x for x in range(n)]
