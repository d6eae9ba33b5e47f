"""Top-level ``map``/``imap``/``starmap``: one warm default pool per backend.

The first call starts the pool; later calls reuse it, so ``mc.map`` in a loop pays
process start-up once. The pools are shut down at interpreter exit, and forgotten
in a child created by ``os.fork`` (their threads do not exist there). At most
``_MAX_DEFAULT_POOLS`` are kept: the least recently used is shut down to make
room, or, while calls still use it, as soon as the last of them ends.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from manycore._api import _validate as v
from manycore._api._options import MapCall, MapWork, map_call
from manycore._api._pool import Pool, PoolState, values_of
from manycore._core import cpus, public, worker_share
from manycore._observe import Stats
from manycore._scheduler import CallOptions
from manycore.backends import DEFAULT_BACKEND, backend_for, get_backend, is_async_callable

if TYPE_CHECKING:
    from manycore._api._auto import AutoMap

__all__ = ["imap", "map", "shutdown_default_pools", "starmap"]

T = TypeVar("T")
_MAX_DEFAULT_POOLS = 4
Gpus = int | tuple[int, ...] | None

_lock = threading.Lock()
# (backend, workers, start_method, address, gpus) -> pool; most recently used last.
_pools: dict[tuple[str, int | None, str | None, str | None, Gpus], Pool] = {}
_leases: dict[Pool, int] = {}  # pools that calls still use, and how many calls
_retired: set[Pool] = set()  # evicted while in use: shut down when the last call ends


class Lease:
    """A default pool held open for one call (a map, an imap, an amap): evicting
    it meanwhile defers its shutdown to the end of its last call."""

    def __init__(self, pool: Pool, held: bool):
        self.pool = pool
        self._held = held

    def release(self) -> None:
        """The call is over (calling it again is harmless)."""
        with _lock:
            if not self._held:
                return
            self._held = False
            left = _leases.pop(self.pool, 1) - 1
            if left:
                _leases[self.pool] = left
                return
            if self.pool not in _retired:
                return
            _retired.discard(self.pool)
        self.pool.shutdown(wait=False)


def _default_pool(
    backend: str, workers: int | None, start_method: str | None, concurrency: int | None = None
) -> Pool:
    return _get_pool(backend, workers, start_method, concurrency, False).pool


def lease_default_pool(
    backend: str,
    workers: int | None,
    start_method: str | None,
    concurrency: int | None = None,
    address: str | None = None,
    timed: bool = False,
    gpus: object = None,
) -> Lease:
    """The default pool, held open for a call until ``release()``. ``timed``: the
    call has a ``timeout`` (which a map run inside a worker must still enforce);
    ``gpus``: its workers' devices (see :class:`Pool`)."""
    return _get_pool(backend, workers, start_method, concurrency, True, address, timed, gpus)


def _get_pool(
    backend: str,
    workers: int | None,
    start_method: str | None,
    concurrency: int | None,
    lease: bool,
    address: str | None = None,
    timed: bool = False,
    gpus: object = None,
) -> Lease:
    v.check_backend(backend)
    workers = v.check_workers(workers, concurrency, backend)
    v.check_start_method(start_method, backend)
    v.check_cluster(backend, address, None, workers)
    devices = v.check_gpus(gpus)
    # With gpus, workers is set (one per device): a nested map gets its own pool.
    workers = v.check_gpus_on(backend, workers, devices, address)
    share = worker_share()
    if backend == backend_for("process") and workers is None and share is not None:
        # A nested map in a worker process: it runs in the worker itself, which
        # holds its share of the CPUs already (a pool per worker would start
        # workers x CPUs processes). An explicit workers= still gets its pool,
        # and so does a timeout= (only a process can be stopped), of that share.
        if timed:
            workers = share
        else:
            backend, start_method = backend_for("inline"), None
    if share is not None and lease and cpus.pools_per_call():
        own = Pool(workers, backend=backend, start_method=start_method, gpus=devices)
        return _pool_for_the_call(own)
    key = (backend, workers, start_method, address, devices)
    evicted: list[Pool] = []
    with _lock:
        pool = _pools.pop(key, None)
        if pool is None or pool.state is not PoolState.RUNNING:
            pool = Pool(
                workers, backend=backend, start_method=start_method, address=address, gpus=devices
            )
        _pools[key] = pool
        if lease:  # taken here, under the lock: no eviction can come in between
            _leases[pool] = _leases.get(pool, 0) + 1
        while len(_pools) > _MAX_DEFAULT_POOLS:
            old = _pools.pop(next(iter(_pools)))
            if old in _leases:
                _retired.add(old)  # calls still use it: the last one to end closes it
            else:
                evicted.append(old)
    for old in evicted:
        old.shutdown(wait=False)
    return Lease(pool, lease)


def _pool_for_the_call(pool: Pool) -> Lease:
    """A lease on a pool that no later call reuses: retired, it shuts down when
    the call ends (a nested call in a cluster's worker, which outlives pools)."""
    with _lock:
        _leases[pool] = 1
        _retired.add(pool)
    return Lease(pool, True)


@overload
def map(
    fn: Callable[..., T],
    *iterables: Iterable[object],
    stats: Literal[False] = ...,
    **options: object,
) -> list[T]: ...


@overload
def map(
    fn: Callable[..., T], *iterables: Iterable[object], stats: Literal[True], **options: object
) -> tuple[list[T], Stats]: ...


@overload
def map(
    fn: Callable[..., T], *iterables: Iterable[object], stats: bool, **options: object
) -> list[T] | tuple[list[T], Stats]: ...


# The overloads above only tell ``stats=True`` apart (it returns a pair); the
# keywords themselves are checked here, at run time.
@public  # type: ignore[misc]
def map(
    fn: Callable[..., T],
    *iterables: Iterable[object],
    workers: int | None = None,
    backend: str | None = None,
    concurrency: int | None = None,
    address: str | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    start_method: str | None = None,
    gpus: int | Sequence[int] | None = None,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    on_error: str = "raise",
    progress: bool | str = False,
    stats: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool | str = True,
    explain: bool = False,
) -> list[T] | tuple[list[T], Stats]:
    """``fn`` over the inputs in parallel; a list in input order (``ordered=False``:
    completion order). Several iterables are zipped, as with the built-in ``map``.
    ``backend``: "processes" by default, "asyncio" for an ``async def`` ``fn``.
    ``backend="asyncio"`` runs an ``async def`` ``fn``, ``concurrency`` (default
    100) coroutines at once; from a coroutine, ``await mc.amap(...)``.
    ``backend="dask"`` or ``"ray"`` runs it on a cluster: ``address`` names a
    running one, else a local cluster is started (kept, like every default pool,
    until :func:`shutdown_default_pools` or exit).
    ``timeout``: seconds an item may run (it then fails with
    :class:`manycore.TaskTimeout`). ``retries``: times an item failing with one of
    ``retry_on`` is run again. ``on_error``: "raise" (default), "skip" failed
    items, or "collect" a :class:`manycore.Failure` in their place. ``progress``:
    a tqdm bar (items done, rate, ETA, failures so far); a string labels it
    (``progress="Downloading"``). ``stats``: return
    ``(results, stats)``, a :class:`manycore.Stats` of this call (per worker:
    busy, moving and idle seconds, items, restarts; the slowest items).
    ``gpus``: pin each worker process to a GPU (a count, or device ids; see
    :class:`manycore.Pool`).
    ``checkpoint``: an SQLite file keeping each finished item, so that the same
    call run again after a crash or a kill computes only the rest; ``resume``:
    True, "force" or False (see :meth:`manycore.Pool.map`; ``imap`` takes no
    checkpoint).

    ``backend="auto"``: the first items (about 0.2 s of work) run inline, timed;
    the rest runs inline, on threads (calls that mostly wait) or on processes
    (calls that compute), whichever is estimated fastest; ``async def`` functions
    go to asyncio. ``explain=True`` (with "auto" only) writes one line to stderr
    saying what was picked and why. ``mc.profile`` measures this more thoroughly."""
    return _map(MapWork(fn, iterables, False, "map"), locals())  # every argument, by name


@public
def imap(
    fn: Callable[..., T],
    *iterables: Iterable[object],
    workers: int | None = None,
    backend: str | None = None,
    concurrency: int | None = None,
    address: str | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    start_method: str | None = None,
    gpus: int | Sequence[int] | None = None,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    on_error: str = "raise",
    progress: bool | str = False,
    explain: bool = False,
) -> Iterator[T]:
    """Lazy ``map``: the input is read as needed (an endless generator works) and
    results are yielded as they are ready. ``backend="auto"``: as for ``map``
    (the sample is taken when iteration starts)."""
    v.check_callable(fn, "fn")
    v.check_iterables(iterables, "imap")
    work = MapWork(fn, iterables, False, "imap")
    backend = pick_backend(fn, backend)
    if _is_auto(backend, explain):
        auto = _auto_map(work, locals())
        return (x for values in auto.run() for x in values)
    options = check_call(fn, backend, locals()).options
    lease = lease_for_call(backend, locals())
    try:
        run = lease.pool.start_map(work, options)
    except BaseException:
        lease.release()
        raise
    guarded = _guarded(lease, values_of(run, lease.pool))
    # An iterator dropped before it was started never runs its finally block.
    weakref.finalize(guarded, lease.release).atexit = False
    return guarded


@overload
def starmap(
    fn: Callable[..., T],
    iterable: Iterable[Iterable[object]],
    *,
    stats: Literal[False] = ...,
    **options: object,
) -> list[T]: ...


@overload
def starmap(
    fn: Callable[..., T],
    iterable: Iterable[Iterable[object]],
    *,
    stats: Literal[True],
    **options: object,
) -> tuple[list[T], Stats]: ...


@overload
def starmap(
    fn: Callable[..., T], iterable: Iterable[Iterable[object]], *, stats: bool, **options: object
) -> list[T] | tuple[list[T], Stats]: ...


@public  # type: ignore[misc]  # (see map)
def starmap(
    fn: Callable[..., T],
    iterable: Iterable[Iterable[object]],
    *,
    workers: int | None = None,
    backend: str | None = None,
    concurrency: int | None = None,
    address: str | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    start_method: str | None = None,
    gpus: int | Sequence[int] | None = None,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    on_error: str = "raise",
    progress: bool | str = False,
    stats: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool | str = True,
    explain: bool = False,
) -> list[T] | tuple[list[T], Stats]:
    """``[fn(*args) for args in iterable]`` in parallel, as a list (``stats``,
    ``checkpoint``, ``resume``, ``backend="auto"`` and ``explain``: as for
    :func:`map`)."""
    return _map(MapWork(fn, (iterable,), True, "starmap"), locals())


def pick_backend(fn: Callable[..., object], backend: str | None) -> str:
    """The backend the user named; if none, asyncio for an ``async def`` function
    (nothing else can run it) and processes for the rest."""
    if backend is None:
        return backend_for("coroutine") if is_async_callable(fn) else DEFAULT_BACKEND
    return backend


def _map(work: MapWork[T], args: Mapping[str, Any]) -> list[T] | tuple[list[T], Stats]:
    """``mc.map`` (or ``mc.starmap``) on a default pool; ``args``: the call's
    arguments by name, as the user gave them (checked here)."""
    v.check_callable(work.fn, "fn")
    v.check_iterables(work.iterables, work.name)
    v.check_checkpoint(args["checkpoint"], args["resume"])
    backend = pick_backend(work.fn, args["backend"])
    if _is_auto(backend, args["explain"], args["stats"], args["checkpoint"]):
        auto = _auto_map(work, args)
        return [x for values in auto.run() for x in values]
    call = check_call(work.fn, backend, args)
    lease = lease_for_call(backend, args)
    with stop_on_interrupt(lease):
        return lease.pool.run_map(work, call)


def check_call(fn: Callable[..., object], backend: str, args: Mapping[str, object]) -> MapCall:
    """A call's options (``args``: its arguments by name), checked before the
    default pool is started (its workers are not started for a call that fails),
    and whether the backend can run ``fn``."""
    v.check_backend(backend)
    get_backend(backend).check_fn(fn)
    return map_call(CallOptions(), args)


def lease_for_call(backend: str, args: Mapping[str, Any]) -> Lease:
    """The default pool for a call's ``workers``, ``start_method``, ... (``args``:
    its arguments by name), held open for it (see :func:`lease_default_pool`)."""
    return lease_default_pool(
        backend,
        args["workers"],
        args["start_method"],
        args["concurrency"],
        args.get("address"),
        args["timeout"] is not None,
        args.get("gpus"),
    )


def _is_auto(
    backend: object, explain: object, stats: object = False, checkpoint: object = None
) -> bool:
    """``backend="auto"``: the call picks its backend (see :mod:`manycore._api._auto`)."""
    v.check_bool(explain, "explain")
    v.check_backend(backend, auto=True)
    if backend == "auto":
        for name, given in (("stats=True", stats is True), ("checkpoint=", checkpoint)):
            if given:
                raise ValueError(
                    f"backend='auto' runs a call on two backends in turn, which {name} "
                    "does not follow: name the backend (mc.profile can tell which)"
                )
        return True
    if explain:
        raise ValueError(
            f"explain=True tells what backend='auto' picked; with backend={backend!r} "
            "nothing is picked: pass backend='auto' or leave explain out"
        )
    return False


def _auto_map(work: MapWork[T], args: Mapping[str, Any]) -> AutoMap[T]:
    from manycore._api._auto import AutoMap  # loaded on first use: most calls name their backend

    return AutoMap(work, args)


def default_pool_running(backend: str, workers: int | None, start_method: str | None) -> bool:
    """A default pool for these arguments is up already (no start-up to pay)."""
    with _lock:
        pool = _pools.get((backend, workers, start_method, None, None))
    return pool is not None and pool.state is PoolState.RUNNING


@contextlib.contextmanager
def stop_on_interrupt(lease: Lease) -> Iterator[None]:
    """Ctrl-C during a call: kill the default pool's workers at once (no process
    is left behind, whatever the caller does next); the next call starts afresh.
    In any case the call's hold on the pool ends with the call."""
    pool = lease.pool
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        with _lock:
            for key, known in list(_pools.items()):
                if known is pool:
                    del _pools[key]
        pool.terminate()
        raise
    finally:
        lease.release()


def _guarded(lease: Lease, results: Iterator[T]) -> Iterator[T]:
    with stop_on_interrupt(lease):
        yield from results


def _take_all() -> list[Pool]:
    """Every default pool, in use or not; none is known from now on."""
    with _lock:
        pools = [*_pools.values(), *_retired]
        _pools.clear()
        _retired.clear()
    return pools


@public
def shutdown_default_pools(wait: bool = True) -> None:
    """Shut down the warm pools behind ``mc.map``; the next call starts fresh ones."""
    for pool in _take_all():
        pool.shutdown(wait=wait, cancel_pending=True)


def _stop_at_exit() -> None:
    # At exit nobody is left to read results: a task still running (a hang, or a
    # map interrupted by Ctrl-C) must not hold the interpreter open.
    for pool in _take_all():
        pool.terminate()


def _forget_in_child() -> None:
    # The pools' I/O threads and pipes belong to the parent; a forked child starts over.
    _pools.clear()
    _leases.clear()
    _retired.clear()
    global _lock
    _lock = threading.Lock()


atexit.register(_stop_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
