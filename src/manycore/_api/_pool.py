"""``Pool``: a set of warm workers with ``map``/``imap``/``starmap``/``submit``.

``submit`` returns a standard ``concurrent.futures.Future`` that works with
``as_completed``, ``wait`` and ``asyncio.wrap_future``. A Pool is not a
``concurrent.futures.Executor``: its ``map`` returns a list and its ``timeout=``
limits each item. Code written for an Executor takes :class:`manycore.Executor`.
"""

from __future__ import annotations

import enum
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, Literal, TypeVar, overload

from manycore._api import _validate as v
from manycore._api._foreign import foreign_method, refuse_foreign_options
from manycore._api._options import (
    MapCall,
    MapWork,
    call_options,
    default_blas_threads,
    default_workers,
    map_call,
)
from manycore._api._pool_sync import SharedPrimitives
from manycore._core import Batch, pool_closed, pool_of_another_process, public
from manycore._observe import Stats, StatsRecorder
from manycore._scheduler import CallOptions, InputSource, MapRun, Scheduler
from manycore.backends import DEFAULT_BACKEND, Backend, BackendOptions, backend_for, get_backend

__all__ = ["Pool", "PoolState"]

T = TypeVar("T")


# This process's id, kept current across os.fork(): every submit asks whether
# the pool is its process's, and os.getpid() is a system call.
_this_pid = os.getpid()


def _forked() -> None:
    global _this_pid
    _this_pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


@public
class PoolState(enum.Enum):
    RUNNING = "running"
    CLOSED = "closed"


@public
class Pool(SharedPrimitives):
    """Workers that stay up between calls.

    ``workers``: how many (default: the CPUs this process may use). ``backend``:
    ``"processes"``, ``"threads"``, ``"asyncio"`` (``async def`` functions on an
    event loop of the pool's own) or ``"serial"``. ``concurrency``: for asyncio,
    how many coroutines run at once (default 100); the same as ``workers`` there,
    so give either (both only if equal). ``start_method``: ``"spawn"``
    (default), ``"forkserver"`` (workers forked from a small server process: safe,
    and quick to replace) or ``"fork"``, processes only. ``init(*init_args)`` runs once in each
    worker (and each replacement) before its first task; what it returns is that
    worker's state, :func:`manycore.worker_state` in tasks. ``exit()`` runs in
    each worker as it stops normally. ``shared``: an object every task can read
    with :func:`manycore.shared`, sent to each worker once (large arrays in it
    through shared memory, read-only).

    ``timeout``, ``retries``, ``retry_on`` and ``on_error`` are the defaults of
    every ``map``/``imap``/``starmap``/``submit`` on this pool (each call may
    override them). ``max_tasks_per_worker``: a worker is replaced after running
    that many items (for leaky C extensions). ``max_memory_per_worker``: a worker
    whose resident memory passes this many bytes (or ``"2GB"``-style string) is
    replaced after its current item. Both apply to the processes backend.
    ``blas_threads``: threads each BLAS/OpenMP library (NumPy's linear algebra,
    MKL, OpenBLAS) may use in a worker; by default the CPUs divided by the
    workers, so that workers x threads never oversubscribes the machine.

    ``gpus``: a count of GPUs or a list of device ids: each worker process is
    pinned to one (``CUDA_VISIBLE_DEVICES``, ``HIP_VISIBLE_DEVICES``) before it
    imports anything, round-robin, so the workers share the devices evenly
    (``workers`` defaults to one per device); a replaced worker keeps its device.
    Tasks see theirs with :func:`manycore.worker_gpu`. On Dask and Ray each task
    asks for its share of a device instead (see docs/gpus.md).

    The backend is fixed for the pool's life: ``backend="auto"``, which picks one
    per call, is for ``mc.map``/``imap``/``starmap``.
    """

    def __new__(cls, *args: object, **kwargs: object) -> Pool:
        refuse_foreign_options(kwargs)  # before __init__'s bare TypeError
        return super().__new__(cls)

    def __getattr__(self, name: str) -> Any:  # only for names that are not there
        raise AttributeError(foreign_method(type(self).__name__, name), name=name, obj=self)

    def __init__(
        self,
        workers: int | None = None,
        *,
        backend: str = DEFAULT_BACKEND,
        concurrency: int | None = None,
        start_method: str | None = None,
        init: Callable[..., object] | None = None,
        init_args: Iterable[object] = (),
        exit: Callable[[], object] | None = None,
        shared: object = None,
        timeout: float | None = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        on_error: str = "raise",
        max_tasks_per_worker: int | None = None,
        max_memory_per_worker: int | str | None = None,
        blas_threads: int | None = None,
        address: str | None = None,
        client: object = None,
        gpus: int | Sequence[int] | None = None,
    ):
        workers = v.check_workers(workers, concurrency, backend)
        v.check_cluster(backend, address, client, workers)
        devices = v.check_gpus(gpus)
        workers = v.check_gpus_on(backend, workers, devices, address, client)
        v.check_backend(backend)
        v.check_start_method(start_method, backend)
        v.check_callable(init, "init", optional=True)
        v.check_callable(exit, "exit", optional=True)
        init_args = v.check_init_args(init_args)
        max_tasks = v.check_positive_int(max_tasks_per_worker, "max_tasks_per_worker")
        max_memory = v.check_memory(max_memory_per_worker, "max_memory_per_worker")
        backend_cls = get_backend(backend)
        limits = {"max_tasks_per_worker": max_tasks, "max_memory_per_worker": max_memory}
        for name, value in limits.items():
            if value is not None and not backend_cls.replaces_workers:
                raise ValueError(
                    f"{name} needs a backend whose workers can be restarted "
                    f"(backend={backend_for('process')!r}), not backend={backend!r}"
                )
        blas_threads = v.check_positive_int(blas_threads, "blas_threads")
        self._defaults = call_options(
            CallOptions(), on_error=on_error, retries=retries, retry_on=retry_on, timeout=timeout
        )
        workers = workers or default_workers(backend)
        if blas_threads is None and backend_cls.needs_pickling:
            blas_threads = default_blas_threads(workers)
        self._options = BackendOptions(
            workers=workers,
            start_method=start_method,
            init=init,
            init_args=init_args,
            max_tasks_per_worker=max_tasks,
            max_memory_per_worker=max_memory,
            blas_threads=blas_threads,
            exit=exit,
            shared=shared,
            address=address,
            client=client,
            gpus=devices,
        )
        self._lock = threading.Lock()
        self._state = PoolState.RUNNING
        self._pid = os.getpid()  # a forked child's copy of the pool must not close it
        self._backend: Backend = backend_cls(self._options)
        self.backend_name = backend
        self._recorder = self._new_recorder(whole_pool=True)
        self._scheduler = Scheduler(self._backend, self._recorder, self._check_open)
        # A pool dropped without shutdown() still releases its workers (the
        # finalizer holds the backend, not the pool, so it does not keep it alive).
        weakref.finalize(self, _release, self._backend, os.getpid())

    # ------------------------------------------------------------------ info

    @property
    def workers(self) -> int:
        return self._backend.workers

    @property
    def start_method(self) -> str | None:
        return self._options.start_method

    @property
    def state(self) -> PoolState:
        # In a child made by os.fork() the copy of a pool has no workers: closed.
        return self._state if os.getpid() == self._pid else PoolState.CLOSED

    def pids(self) -> list[int]:
        """Process ids of the current workers (empty for threads and serial)."""
        return self._backend.pids()

    def stats(self, *, reset: bool = False) -> Stats:
        """What the workers did since the pool started (or the last ``reset``): per
        worker, seconds busy running the function, moving data and idle, items
        run and restarts; the slowest items with their input indices. See
        :class:`manycore.Stats`. ``reset``: start counting afresh after this."""
        v.check_bool(reset, "reset")
        restarts = self._backend.restarts()
        stats = self._recorder.snapshot(restarts)
        if reset:
            self._recorder.reset(restarts)
        return stats

    def _new_recorder(self, whole_pool: bool = False) -> StatsRecorder:
        backend = self._backend
        # Serial runs one call at a time whatever its worker count says.
        capacity = backend.workers if backend.concurrent else 1
        slots = capacity if backend.numbered_workers else 0
        return StatsRecorder(slots, backend.restarts(), capacity, whole_pool)

    def __repr__(self) -> str:
        return (
            f"<manycore.Pool backend={self.backend_name!r} workers={self.workers} "
            f"state={self._state.value}>"
        )

    # ------------------------------------------------------------------ work

    def submit(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on a worker; returns a ``concurrent.futures.Future``.

        The pool's ``timeout``, ``retries`` and ``retry_on`` apply; use
        :meth:`schedule` to set them for one call.
        """
        v.check_callable(fn, "fn")
        self._backend.check_fn(fn)
        return self._submit(fn, args, kwargs, self._defaults)

    def schedule(
        self,
        fn: Callable[..., T],
        args: Iterable[object] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    ) -> Future[T]:
        """``submit`` with options for this call: ``timeout`` (seconds; the item
        fails with :class:`~manycore.TaskTimeout`), ``retries`` and ``retry_on``."""
        v.check_callable(fn, "fn")
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"args must be a tuple of arguments for fn, got {args!r:.80}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict of keyword arguments, got {kwargs!r:.80}")
        self._backend.check_fn(fn)
        policy = self.call_options(timeout=timeout, retries=retries, retry_on=retry_on)
        return self._submit(fn, tuple(args), kwargs or {}, policy)

    def _submit(
        self,
        fn: Callable[..., T],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        policy: CallOptions,
        fn_blob: bytes | None = None,
        on_batch: Callable[[Batch], None] | None = None,
    ) -> Future[T]:
        """``fn_blob``: ``fn`` pickled already (a task's, pickled once for all its
        calls). ``on_batch``: told each batch sent for this call (a retry sends another)."""
        return self._scheduler.submit(fn, args, kwargs, policy, fn_blob, on_batch)

    @property
    def scheduler(self) -> Scheduler:
        """The pool's scheduler: the door task graphs use to send their calls to the
        pool's backend (ordinary code needs only ``submit`` and ``map``)."""
        return self._scheduler

    def call_options(self, **given: object) -> CallOptions:
        """The options of one call (``timeout=``, ``retries=``, ... by their
        keywords), checked over the pool's defaults."""
        return call_options(self._defaults, **given)

    def cancel(self, future: Future[Any], *, force: bool = False) -> bool:
        """Cancel a ``submit`` future. A task that has not started is dropped (as
        ``future.cancel()`` does). With ``force=True`` a running task is stopped too,
        where the backend can (processes: its worker is killed and replaced;
        asyncio: its coroutine is cancelled); its
        future then raises ``CancelledError``. True if the task will not complete."""
        v.check_bool(force, "force")
        return self._scheduler.cancel(future, force)

    @overload
    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[object],
        stats: Literal[False] = ...,
        **options: object,
    ) -> list[T]: ...

    @overload
    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[object],
        stats: Literal[True],
        **options: object,
    ) -> tuple[list[T], Stats]: ...

    @overload
    def map(
        self, fn: Callable[..., T], *iterables: Iterable[object], stats: bool, **options: object
    ) -> list[T] | tuple[list[T], Stats]: ...

    # The overloads above only tell ``stats=True`` apart (it returns a pair);
    # the keywords themselves are checked here, at run time.
    def map(  # type: ignore[misc]
        self,
        fn: Callable[..., T],
        *iterables: Iterable[object],
        chunksize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
        retries: int | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        on_error: str | None = None,
        progress: bool | str = False,
        stats: bool = False,
        checkpoint: str | os.PathLike[str] | None = None,
        resume: bool | str = True,
    ) -> list[T] | tuple[list[T], Stats]:
        """``[fn(x) for x in iterable]`` in parallel, as a list (in input order by default).

        ``timeout``: seconds one item may run before it fails with
        :class:`~manycore.TaskTimeout` (processes: its worker is killed and
        replaced). ``retries``: run an item failing with one of ``retry_on``
        (default: any exception, a timeout or a crash) up to that many more times,
        after a short exponential backoff (0.05 s, 0.1 s, ... at most 2 s).
        ``on_error``: ``"raise"`` the first failure, ``"skip"`` failed items, or
        ``"collect"`` a :class:`manycore.Failure` in each failed item's place.
        ``progress``: show a tqdm bar (items done, rate, ETA, failures so far);
        a string labels the bar (``progress="Downloading"``).
        ``stats``: return ``(results, stats)``, the :class:`manycore.Stats` of
        this call (each item timed, to name the slowest).
        Options left at ``None`` take the pool's defaults.

        ``checkpoint``: an SQLite file where each finished item is stored as it
        arrives; the same call run again (after a crash, a Ctrl-C, even a
        ``kill -9``) computes only what the file does not hold. ``resume``: True
        (use the file if it was written by this function for these inputs, else
        raise :class:`~manycore.CheckpointMismatch`), ``"force"`` (use it even
        though the function changed; items whose input changed are computed
        again) or False (start over). With a checkpoint, the result is always in
        input order, every item is run before ``on_error="raise"`` raises the
        first failure, and failures stored by an earlier run are computed again.
        (``imap`` takes no checkpoint.)
        """
        return self.run_map(MapWork(fn, iterables), map_call(self._defaults, locals()))

    def imap(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[object],
        chunksize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
        retries: int | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        on_error: str | None = None,
        progress: bool | str = False,
    ) -> Iterator[T]:
        """Lazy ``map``: reads the input as needed, yields results as they are ready."""
        options = map_call(self._defaults, locals()).options
        return values_of(self.start_map(MapWork(fn, iterables, False, "imap"), options), self)

    @overload
    def starmap(
        self,
        fn: Callable[..., T],
        iterable: Iterable[Iterable[object]],
        *,
        stats: Literal[False] = ...,
        **options: object,
    ) -> list[T]: ...

    @overload
    def starmap(
        self,
        fn: Callable[..., T],
        iterable: Iterable[Iterable[object]],
        *,
        stats: Literal[True],
        **options: object,
    ) -> tuple[list[T], Stats]: ...

    @overload
    def starmap(
        self,
        fn: Callable[..., T],
        iterable: Iterable[Iterable[object]],
        *,
        stats: bool,
        **options: object,
    ) -> list[T] | tuple[list[T], Stats]: ...

    def starmap(  # type: ignore[misc]  # (see map)
        self,
        fn: Callable[..., T],
        iterable: Iterable[Iterable[object]],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
        retries: int | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        on_error: str | None = None,
        progress: bool | str = False,
        stats: bool = False,
        checkpoint: str | os.PathLike[str] | None = None,
        resume: bool | str = True,
    ) -> list[T] | tuple[list[T], Stats]:
        """``[fn(*args) for args in iterable]`` in parallel, as a list (``stats``,
        ``checkpoint`` and ``resume``: as for :meth:`map`)."""
        call = map_call(self._defaults, locals())
        return self.run_map(MapWork(fn, (iterable,), True, "starmap"), call)

    def run_map(self, work: MapWork[T], call: MapCall) -> list[T] | tuple[list[T], Stats]:
        """A ``map`` (or ``starmap``) whose options are checked already: this
        pool's own, and ``mc.map``'s on a default pool."""
        if call.checkpoint is not None:
            return self._checkpointed(work, call)
        run = self.start_map(work, call.options)
        out: list[T] = []
        for values in run:
            out.extend(values)
        return (out, run.stats()) if run.call_stats is not None else out

    def start_map(
        self, work: MapWork[object], options: CallOptions, source: InputSource | None = None
    ) -> MapRun:
        """The run of one map call, its options checked already (iterate it for
        lists of values); ``source``: go on reading one that an earlier run
        (``backend="auto"``'s inline sample) started on."""
        self._check_call(work)
        if source is None:
            source = InputSource(work.iterables, work.star)
        return self._start(work.fn, source, options)

    def _check_call(self, work: MapWork[object]) -> None:
        v.check_callable(work.fn, "fn")
        self._backend.check_fn(work.fn)
        v.check_iterables(work.iterables, work.name)
        self._check_open()

    def _start(
        self, fn: Callable[..., object], source: InputSource, options: CallOptions
    ) -> MapRun:
        """A run of ``fn`` over what ``source`` hands out."""
        recorders = [self._recorder]
        if options.stats:
            recorders.append(self._new_recorder())
        return self._scheduler.run(fn, source, options, recorders)

    def _checkpointed(self, work: MapWork[T], call: MapCall) -> list[T] | tuple[list[T], Stats]:
        """A map whose finished items are kept in the file ``call.checkpoint`` (see
        ``manycore._scheduler._checkpoint``); the scheduler runs what is not done yet."""
        from manycore._scheduler import run_checkpointed

        self._check_call(work)
        runs: list[MapRun] = []

        def start(source: InputSource, options: CallOptions) -> MapRun:
            runs.append(self._start(work.fn, source, options))
            return runs[-1]

        path, policy = call.checkpoint, call.options
        assert path is not None  # (run_map sends only a call with a checkpoint here)
        out = run_checkpointed(work.fn, work.iterables, work.star, policy, path, call.resume, start)
        return (out, runs[-1].stats()) if policy.stats else out

    # ------------------------------------------------------------- lifecycle

    def _check_open(self) -> None:
        if _this_pid != self._pid:
            raise pool_of_another_process(self._pid)
        if self._state is not PoolState.RUNNING:
            raise pool_closed()

    def shutdown(
        self,
        wait: bool = True,
        *,
        cancel_pending: bool = False,
        cancel_futures: bool | None = None,
    ) -> None:
        """Stop accepting work. ``wait``: return when running work is done.

        ``cancel_pending`` (or the ``Executor`` spelling ``cancel_futures``) cancels
        what has not started. Calling it again is harmless.
        """
        if cancel_futures is not None:
            cancel_pending = cancel_pending or cancel_futures
        if os.getpid() != self._pid:
            return  # a child made by os.fork(): the workers are its parent's
        with self._lock:
            self._state = PoolState.CLOSED
        self._scheduler.settle_retries(wait and not cancel_pending)
        self._backend.shutdown(wait=wait, cancel_pending=cancel_pending)

    def terminate(self) -> None:
        """Stop at once: pending work is cancelled; running process tasks are killed
        and running coroutines cancelled (their futures fail with ``CancelledError``).
        Threads cannot be killed: they finish their current task in the background."""
        if os.getpid() != self._pid:
            return  # a child made by os.fork(): the workers are its parent's
        with self._lock:
            self._state = PoolState.CLOSED
        self._scheduler.settle_retries(False)
        self._backend.terminate()

    def close(self) -> None:
        """Same as ``shutdown(wait=True)``."""
        self.shutdown(wait=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if isinstance(exc_info[1], (KeyboardInterrupt, SystemExit)):
            self.terminate()  # Ctrl-C: stop now, leave no process behind
            return
        # Leaving the block because of an error: do not run the queued rest.
        self.shutdown(wait=True, cancel_pending=exc_info[0] is not None)


def _release(backend: Backend, owner: int) -> None:
    """A pool dropped without shutdown(). Not in a child made by os.fork(): its
    copy of the pool has no workers, and closing it would touch the parent's."""
    if os.getpid() == owner:
        backend.shutdown(wait=False, cancel_pending=True)


def values_of(run: MapRun, pool: Pool) -> Iterator[Any]:
    """The values of ``run``. The iterator holds its ``pool``: one made just for it
    (``list(mc.Pool(2).imap(f, xs))``) must not be finalized, its workers shut
    down, while the iterator still runs; both go once neither is reachable. (The
    generator's frame holds it, as an argument, until the generator is dropped.)"""
    for values in run:
        yield from values
