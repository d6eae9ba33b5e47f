"""Top-level ``map``/``imap``/``starmap``: one warm default pool per backend.

The first call starts the pool; later calls reuse it, so ``mc.map`` in a loop pays
process start-up once. The pools are shut down at interpreter exit, and forgotten
in a child created by ``os.fork`` (their threads do not exist there).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from . import _validate as v
from ._pool import Pool, PoolState

__all__ = ["imap", "map", "shutdown_default_pools", "starmap"]

T = TypeVar("T")
_MAX_DEFAULT_POOLS = 4

_lock = threading.Lock()
# (backend, workers, start_method) -> pool; most recently used last.
_pools: dict[tuple[str, int | None, str | None], Pool] = {}


def _default_pool(
    backend: str, workers: int | None, start_method: str | None, concurrency: int | None = None
) -> Pool:
    v.check_backend(backend)
    workers = v.check_workers(workers, concurrency, backend)
    v.check_start_method(start_method, backend)
    key = (backend, workers, start_method)
    evicted: list[Pool] = []
    with _lock:
        pool = _pools.pop(key, None)
        if pool is None or pool.state is not PoolState.RUNNING:
            pool = Pool(workers, backend=backend, start_method=start_method)
        _pools[key] = pool
        while len(_pools) > _MAX_DEFAULT_POOLS:
            evicted.append(_pools.pop(next(iter(_pools))))
    for old in evicted:
        old.shutdown(wait=False)
    return pool


def map(
    fn: Callable[..., T],
    *iterables: Iterable[Any],
    workers: int | None = None,
    backend: str = "processes",
    concurrency: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    start_method: str | None = None,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    on_error: str = "raise",
) -> list[T]:
    """``fn`` over the inputs in parallel; a list in input order (``ordered=False``:
    completion order). Several iterables are zipped, as with the built-in ``map``.
    ``backend="asyncio"`` runs an ``async def`` ``fn``, ``concurrency`` (default
    100) coroutines at once; from a coroutine, ``await mc.amap(...)``.
    ``timeout``: seconds an item may run (it then fails with
    :class:`manycore.TaskTimeout`). ``retries``: times an item failing with one of
    ``retry_on`` is run again. ``on_error``: "raise" (default), "skip" failed
    items, or "collect" a :class:`manycore.Failure` in their place."""
    v.check_callable(fn, "fn")
    v.check_iterables(iterables, "map")
    pool = _default_pool(backend, workers, start_method, concurrency)
    with _stop_on_interrupt(pool):
        return pool.map(
            fn,
            *iterables,
            chunksize=chunksize,
            ordered=ordered,
            timeout=timeout,
            retries=retries,
            retry_on=retry_on,
            on_error=on_error,
        )


def imap(
    fn: Callable[..., T],
    *iterables: Iterable[Any],
    workers: int | None = None,
    backend: str = "processes",
    concurrency: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    start_method: str | None = None,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    on_error: str = "raise",
) -> Iterator[T]:
    """Lazy ``map``: the input is read as needed (an endless generator works) and
    results are yielded as they are ready."""
    v.check_callable(fn, "fn")
    v.check_iterables(iterables, "imap")
    pool = _default_pool(backend, workers, start_method, concurrency)
    results = pool.imap(
        fn,
        *iterables,
        chunksize=chunksize,
        ordered=ordered,
        timeout=timeout,
        retries=retries,
        retry_on=retry_on,
        on_error=on_error,
    )
    return _guarded(pool, results)


def starmap(
    fn: Callable[..., T],
    iterable: Iterable[Iterable[Any]],
    *,
    workers: int | None = None,
    backend: str = "processes",
    concurrency: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    start_method: str | None = None,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    on_error: str = "raise",
) -> list[T]:
    """``[fn(*args) for args in iterable]`` in parallel, as a list."""
    v.check_callable(fn, "fn")
    v.check_iterables((iterable,), "starmap")
    pool = _default_pool(backend, workers, start_method, concurrency)
    with _stop_on_interrupt(pool):
        return pool.starmap(
            fn,
            iterable,
            chunksize=chunksize,
            ordered=ordered,
            timeout=timeout,
            retries=retries,
            retry_on=retry_on,
            on_error=on_error,
        )


@contextlib.contextmanager
def _stop_on_interrupt(pool: Pool) -> Iterator[None]:
    """Ctrl-C during a call: kill the default pool's workers at once (no process
    is left behind, whatever the caller does next); the next call starts afresh."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        with _lock:
            for key, known in list(_pools.items()):
                if known is pool:
                    del _pools[key]
        pool.terminate()
        raise


def _guarded(pool: Pool, results: Iterator[T]) -> Iterator[T]:
    with _stop_on_interrupt(pool):
        yield from results


def shutdown_default_pools(wait: bool = True) -> None:
    """Shut down the warm pools behind ``mc.map``; the next call starts fresh ones."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.shutdown(wait=wait, cancel_pending=True)


def _stop_at_exit() -> None:
    # At exit nobody is left to read results: a task still running (a hang, or a
    # map interrupted by Ctrl-C) must not hold the interpreter open.
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.terminate()


def _forget_in_child() -> None:
    # The pools' I/O threads and pipes belong to the parent; a forked child starts over.
    _pools.clear()
    global _lock
    _lock = threading.Lock()


atexit.register(_stop_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
