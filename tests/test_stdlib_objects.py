"""The standard library's multiprocessing objects with manycore pools: Manager
proxies as arguments, queues and locks in ``init_args``, and clear refusals of
what cannot travel (a Pipe end as an argument)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any

import pytest

import manycore as mc
from conftest import PROCESS_BACKENDS
from stdlibfns import store_square


@pytest.fixture(scope="module")
def manager() -> Iterator[Any]:
    # A spawn context: the manager's server process must not fork this (threaded) one.
    with multiprocessing.get_context("spawn").Manager() as m:
        yield m


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_manager_proxy_as_an_argument(backend: tuple[str, str], manager: Any) -> None:
    shared = manager.dict()
    with mc.Pool(2, start_method=backend[1]) as pool:
        assert pool.map(store_square, [shared] * 4, range(4), timeout=30) == [0, 1, 2, 3]
        assert pool.submit(store_square, shared, 5).result(timeout=30) == 5
    assert dict(shared) == {0: 0, 1: 1, 2: 4, 3: 9, 5: 25}
