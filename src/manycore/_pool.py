"""``Pool``: a set of warm workers with ``map``/``imap``/``starmap``/``submit``.

A Pool is a :class:`concurrent.futures.Executor`, so ``submit`` returns a standard
``Future`` that works with ``as_completed``, ``wait`` and ``asyncio.wrap_future``.
"""

from __future__ import annotations

import enum
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Executor, Future
from typing import Any, TypeVar

from . import _validate as v
from ._batch import Batch, BatchResult
from ._cpus import usable_cpus
from ._errors import PoolClosed
from ._failure import ERROR_POLICIES
from ._scheduler import ChunkPlanner, InputSource, MapRun, Policy
from ._serialize import dumps_fn
from .backends import Backend, BackendOptions, get_backend

__all__ = ["Pool", "PoolState"]

T = TypeVar("T")


class PoolState(enum.Enum):
    RUNNING = "running"
    CLOSED = "closed"


def default_workers(backend: str) -> int:
    """CPUs usable by this process; threads get a few more for I/O-bound work."""
    cpus = usable_cpus()
    return min(32, cpus + 4) if backend == "threads" else cpus


class Pool(Executor):
    """Workers that stay up between calls.

    ``workers``: how many (default: the CPUs this process may use). ``backend``:
    ``"processes"``, ``"threads"`` or ``"serial"``. ``start_method``: ``"spawn"``
    (default) or ``"fork"``, processes only. ``init(*init_args)`` runs once in each
    worker before its first task.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        backend: str = "processes",
        start_method: str | None = None,
        init: Callable[..., Any] | None = None,
        init_args: Iterable[Any] = (),
    ):
        workers = v.check_positive_int(workers, "workers")
        v.check_backend(backend)
        v.check_start_method(start_method, backend)
        v.check_callable(init, "init", optional=True)
        init_args = v.check_init_args(init_args)
        backend_cls = get_backend(backend)
        self._options = BackendOptions(
            workers=workers or default_workers(backend),
            start_method=start_method,
            init=init,
            init_args=init_args,
        )
        self._lock = threading.Lock()
        self._state = PoolState.RUNNING
        self._backend: Backend = backend_cls(self._options)
        self.backend_name = backend
        # A pool dropped without shutdown() still releases its workers (the
        # finalizer holds the backend, not the pool, so it does not keep it alive).
        weakref.finalize(self, self._backend.shutdown, False, True)

    # ------------------------------------------------------------------ info

    @property
    def workers(self) -> int:
        return self._options.workers

    @property
    def start_method(self) -> str | None:
        return self._options.start_method

    @property
    def state(self) -> PoolState:
        return self._state

    def pids(self) -> list[int]:
        """Process ids of the current workers (empty for threads and serial)."""
        return self._backend.pids()

    def __repr__(self) -> str:
        return (
            f"<manycore.Pool backend={self.backend_name!r} workers={self.workers} "
            f"state={self._state.value}>"
        )

    # ------------------------------------------------------------------ work

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on a worker; returns a ``concurrent.futures.Future``."""
        v.check_callable(fn, "fn")
        self._check_open()
        future: Future[T] = self._backend.new_future()
        batch = Batch(fn, [args], 0, True, kwargs or None, submit=True)
        batch.claim = future.set_running_or_notify_cancel

        def done(_: Batch, result: BatchResult | BaseException) -> None:
            _settle(future, result)

        self._backend.submit(batch, done)
        return future

    def map(  # type: ignore[override]
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        ordered: bool = True,
        on_error: str = "raise",
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    ) -> list[T]:
        """``[fn(x) for x in iterable]`` in parallel, as a list (in input order by default).

        ``on_error``: ``"raise"`` the first failure, ``"skip"`` failed items, or
        ``"collect"`` a :class:`manycore.Failure` in each failed item's place.
        ``retries``: run an item failing with one of ``retry_on`` up to that many
        more times, after a short exponential backoff (0.05 s, 0.1 s, ... at most 2 s).
        """
        out: list[T] = []
        options = _options(chunksize, ordered, on_error, retries, retry_on)
        for values in self._run(fn, iterables, False, "map", options):
            out.extend(values)
        return out

    def imap(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        ordered: bool = True,
        on_error: str = "raise",
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    ) -> Iterator[T]:
        """Lazy ``map``: reads the input as needed, yields results as they are ready."""
        options = _options(chunksize, ordered, on_error, retries, retry_on)
        return _flatten(self._run(fn, iterables, False, "imap", options))

    def starmap(
        self,
        fn: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        on_error: str = "raise",
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    ) -> list[T]:
        """``[fn(*args) for args in iterable]`` in parallel, as a list."""
        out: list[T] = []
        options = _options(chunksize, ordered, on_error, retries, retry_on)
        for values in self._run(fn, (iterable,), True, "starmap", options):
            out.extend(values)
        return out

    def _run(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        star: bool,
        name: str,
        options: tuple[int | None, Policy],
    ) -> MapRun:
        v.check_callable(fn, "fn")
        v.check_iterables(iterables, name)
        self._check_open()
        chunksize, policy = options
        fn_blob = dumps_fn(fn) if self._backend.needs_pickling else None
        source = InputSource(iterables, star)
        planner = ChunkPlanner(self.workers, chunksize)
        return MapRun(self._backend, fn, source, planner, policy, fn_blob)

    # ------------------------------------------------------------- lifecycle

    def _check_open(self) -> None:
        if self._state is not PoolState.RUNNING:
            raise PoolClosed("the pool has been shut down and accepts no new work")

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
        with self._lock:
            self._state = PoolState.CLOSED
        self._backend.shutdown(wait=wait, cancel_pending=cancel_pending)

    def terminate(self) -> None:
        """Stop at once: pending work is cancelled; running process tasks are killed
        (their futures fail with ``CancelledError``). Threads cannot be killed: they
        finish their current task in the background."""
        with self._lock:
            self._state = PoolState.CLOSED
        self._backend.terminate()

    def close(self) -> None:
        """Same as ``shutdown(wait=True)``."""
        self.shutdown(wait=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Leaving the block because of an error: do not run the queued rest.
        self.shutdown(wait=True, cancel_pending=exc_info[0] is not None)


def _options(
    chunksize: Any, ordered: Any, on_error: Any, retries: Any, retry_on: Any
) -> tuple[int | None, Policy]:
    """Check a map call's options (clear errors before any work) and bundle them."""
    chunksize = v.check_positive_int(chunksize, "chunksize")
    v.check_bool(ordered, "ordered")
    v.check_choice(on_error, "on_error", ERROR_POLICIES)
    retries = v.check_count(retries, "retries")
    retry_on = v.check_exception_types(retry_on, "retry_on")
    return chunksize, Policy(ordered, on_error, retries, retry_on)


def _flatten(run: MapRun) -> Iterator[Any]:
    for values in run:
        yield from values


def _settle(future: Future[Any], result: BatchResult | BaseException) -> None:
    """Give a submit() future its outcome (from whichever thread reports it)."""
    if isinstance(result, CancelledError):
        if future.cancel():
            # cancel() alone does not wake wait()/as_completed(); this does.
            try:
                future.set_running_or_notify_cancel()
            except RuntimeError:
                pass  # already notified
        elif not future.done():  # it was running: the cancellation is its error
            future.set_exception(result)
        return
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    elif result.failures:
        future.set_exception(result.failures[0])
    else:
        future.set_result(result.values[0])
