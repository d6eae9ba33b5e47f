"""A child made by ``os.fork()`` in the parent: the parent's pools are not its own.

An explicitly created pool refuses work there with a clear error naming both
processes; the top-level functions (``mc.map``...) start fresh default pools in
the child. Each case runs in a forked child whose exit code tells the outcome,
with a bounded wait: a hang is a failure, not a stuck test run.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable

import pytest

import manycore as mc
from conftest import BACKENDS
from helpers import square

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

_HUNG = -1000
_REFUSED, _RAN, _OTHER_ERROR = 10, 11, 12


def _in_forked_child(body: Callable[[], int], wait: float = 30.0) -> int:
    """Run ``body`` in a child made by os.fork(); its exit code (``_HUNG``: killed
    after ``wait`` seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: forking a threaded process
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            code = body()
        finally:
            os._exit(code)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return _HUNG


def _use(pool: mc.Pool, how: str) -> int:
    try:
        if how == "map":
            pool.map(square, range(4), timeout=10)
        else:
            pool.submit(square, 3).result(timeout=10)
    except mc.PoolClosed as exc:
        parent, child = str(pool._pid), str(os.getpid())
        return _REFUSED if parent in str(exc) and child in str(exc) else _OTHER_ERROR
    except BaseException:
        return _OTHER_ERROR
    return _RAN


@pytest.mark.parametrize("how", ["map", "submit"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_parents_pool_refuses_work_in_a_forked_child(
    backend: tuple[str, str | None], how: str
) -> None:
    with mc.Pool(2, backend=backend[0], start_method=backend[1]) as pool:
        assert pool.map(square, range(4)) == [0, 1, 4, 9]  # warm: workers, threads running
        assert _in_forked_child(lambda: _use(pool, how)) == _REFUSED
        # The parent's pool is untouched by all this.
        assert pool.state is mc.PoolState.RUNNING
        assert pool.map(square, range(4)) == [0, 1, 4, 9]


def _default_map(backend: str) -> int:
    ok = mc.map(square, range(6), backend=backend, timeout=10) == [0, 1, 4, 9, 16, 25]
    mc.shutdown_default_pools()
    return _RAN if ok else _OTHER_ERROR


@pytest.mark.parametrize("backend", ["processes", "threads"])
def test_mc_map_in_a_forked_child_gets_a_default_pool_of_its_own(backend: str) -> None:
    assert mc.map(square, range(3), backend=backend) == [0, 1, 4]  # the parent's is warm
    assert _in_forked_child(lambda: _default_map(backend)) == _RAN
    assert mc.map(square, range(3), backend=backend) == [0, 1, 4]  # and still works here


async def _negate(x: int) -> int:
    return -x


def _default_imap_and_amap() -> int:
    import asyncio

    ok = list(mc.imap(square, range(4), timeout=10)) == [0, 1, 4, 9]
    ok = ok and asyncio.run(mc.amap(_negate, [1, 2])) == [-1, -2]  # (asyncio's default pool)
    ok = ok and asyncio.run(mc.amap(square, [3], timeout=10)) == [9]
    mc.shutdown_default_pools()
    return _RAN if ok else _OTHER_ERROR


def test_mc_imap_and_amap_in_a_forked_child_get_default_pools_of_their_own() -> None:
    import asyncio

    # The parent's default pools are warm: processes, and asyncio with its loop thread.
    assert list(mc.imap(square, range(3))) == [0, 1, 4]
    assert mc.map(_negate, [1]) == [-1]
    assert asyncio.run(mc.amap(square, [2])) == [4]
    assert _in_forked_child(_default_imap_and_amap) == _RAN


def test_the_parents_pool_refuses_an_imap_in_a_forked_child() -> None:
    def body() -> int:
        try:
            list(pool.imap(square, range(4)))
        except mc.PoolClosed as exc:
            return _REFUSED if str(pool._pid) in str(exc) else _OTHER_ERROR
        except BaseException:
            return _OTHER_ERROR
        return _RAN

    with mc.Pool(2) as pool:
        assert list(pool.imap(square, range(3))) == [0, 1, 4]
        assert _in_forked_child(body) == _REFUSED
