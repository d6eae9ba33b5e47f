"""``mc.Executor``: a strict :class:`concurrent.futures.Executor` on manycore's engine.

Code written for ``ProcessPoolExecutor`` or ``ThreadPoolExecutor`` gets their
behaviour, word for word where it can tell (judged by CPython's own
``test_concurrent_futures``, see tests/conformance/): ``map`` submits every call
at once and returns a lazy iterator that raises each error when its value is
reached, frees each result once yielded, and takes ``timeout`` as a deadline for
the whole iteration; pending work still runs when the executor is dropped or the
interpreter exits. What manycore adds: a dead worker fails only the futures it
ran (``mc.WorkerCrashed``, a ``BrokenProcessPool``), the executor goes on; tasks
may be lambdas and closures under spawn; ``timeout``/``retries`` per task.

It is a client of the scheduler's door (``Scheduler``, ``CallOptions``), like
``mc.Pool``, and shares none of ``Pool``'s own semantics (lists, per-item
``timeout=`` in ``map``, ``on_error``).
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

from manycore._api import _validate as v
from manycore._api._options import call_options, default_blas_threads
from manycore._core import (
    SerializationError,
    closed_at_exit,
    pool_closed,
    pool_of_another_process,
    public,
    run_chunk,
)
from manycore._observe import StatsRecorder
from manycore._scheduler import CallOptions, Scheduler
from manycore.backends import DEFAULT_BACKEND, Backend, BackendOptions, get_backend

__all__ = ["Executor"]

T = TypeVar("T")

_names = itertools.count()  # default thread names: "manycore.Executor-<n>_<slot>"
_live: weakref.WeakSet[Executor] = weakref.WeakSet()  # their work is finished at exit
# Executors with unfinished futures, held as the standard library's are held by
# their threads: dropping one lets its submitted work run to the end.
_busy: set[Executor] = set()
_exit = threading.Lock()
_exiting = False  # the interpreter began to exit: no new work
_hooked = False  # the exit hook is registered


@public
class Executor(futures.Executor):
    """A ``concurrent.futures.Executor`` running on manycore's workers.

    ``max_workers`` (default: the CPUs this process may use; threads: a few
    more, as ``ThreadPoolExecutor``), ``mp_context`` (a ``multiprocessing``
    context whose start method the workers use; default: the one set with
    ``multiprocessing.set_start_method``, else manycore's), ``initializer(*initargs)``
    (runs in each worker first; if it raises, the executor is broken:
    ``BrokenExecutor``), ``max_tasks_per_child`` (a worker is replaced after that
    many tasks): as ``ProcessPoolExecutor``. ``backend="threads"`` gives a
    ``ThreadPoolExecutor`` (``thread_name_prefix`` names its threads);
    ``"processes"`` is the default.

    manycore's own options: ``timeout`` (seconds a task may run; it fails with
    :class:`~manycore.TaskTimeout`, its worker killed and replaced), ``retries``
    and ``retry_on`` (as for :class:`manycore.Pool`).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        *,
        backend: str = DEFAULT_BACKEND,
        thread_name_prefix: str = "",
        timeout: float | None = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    ):
        v.check_backend(backend)
        backend_cls = get_backend(backend)
        workers = _check_max_workers(max_workers) or backend_cls.default_workers()
        max_tasks = v.check_positive_int(max_tasks_per_child, "max_tasks_per_child")
        v.check_callable(initializer, "initializer", optional=True)
        if not isinstance(initargs, tuple):
            raise TypeError(f"initargs must be a tuple, got {initargs!r:.80}")
        options = BackendOptions(
            workers=workers,
            start_method=_start_method(mp_context, backend, max_tasks),
            init=initializer,
            init_args=initargs,
            max_tasks_per_worker=_check_max_tasks(max_tasks, backend_cls),
            blas_threads=default_blas_threads(workers) if backend_cls.needs_pickling else None,
            thread_name_prefix=_thread_names(thread_name_prefix, backend),
        )
        self._policy = call_options(
            CallOptions(), retries=retries, retry_on=retry_on, timeout=timeout
        )
        self._backend: Backend = backend_cls(options)
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()  # a forked child's copy must not close the workers
        self._unfinished = 0
        self._scheduler = Scheduler(self._backend, _recorder(self._backend), self._gate)
        # Dropped without shutdown(): the workers stop once the queued work is done.
        # (Not at exit: the exit hook finishes that work first, see _finish_at_exit.)
        weakref.finalize(self, _release, self._backend, self._pid).atexit = False
        _watch(self)

    def __repr__(self) -> str:
        state = "shut down" if self._closed else "running"
        return (
            f"<manycore.Executor backend={self._backend.name!r} "
            f"max_workers={self._backend.workers} {state}>"
        )

    # ------------------------------------------------------------------ work

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> futures.Future[T]:
        """Run ``fn(*args, **kwargs)`` on a worker; returns its ``Future``."""
        v.check_callable(fn, "fn")
        self._backend.check_fn(fn)
        # (No lock around it: after shutdown() the gate or the backend refuses it.)
        try:
            future: futures.Future[T] = self._scheduler.submit(fn, args, kwargs, self._policy)
        except SerializationError as exc:
            # An argument that cannot be pickled fails its future, as with the
            # standard executor, not the submit() call.
            future = futures.Future()
            future.set_exception(exc)
            return future
        with self._lock:
            self._unfinished += 1
            _busy.add(self)
        future.add_done_callback(_untracker(weakref.ref(self)))
        return future

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """``map(fn, *iterables)`` on the workers: every call is submitted now; the
        iterator yields the results in order as they are reached, raising a call's
        error at its place. ``timeout``: seconds from this call for the whole
        iteration (``TimeoutError`` once past it). ``chunksize``: calls sent to a
        worker process together (threads ignore it)."""
        v.check_callable(fn, "fn")
        self._backend.check_fn(fn)
        deadline = _deadline(timeout)
        size = _check_chunksize(chunksize)
        if size == 1 or not self._backend.needs_pickling:
            return _results(
                [self.submit(fn, *args) for args in zip(*iterables, strict=False)], deadline
            )
        chunks = _chunks(zip(*iterables, strict=False), size)
        sent = [self.submit(run_chunk, fn, c) for c in chunks]
        return _flatten(_results(sent, deadline))

    # ------------------------------------------------------------- lifecycle

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work. ``wait``: return once the submitted work is done.
        ``cancel_futures``: cancel what has not started. Calling it again is harmless."""
        v.check_bool(wait, "wait")
        v.check_bool(cancel_futures, "cancel_futures")
        if os.getpid() != self._pid:
            return  # a child made by os.fork(): the workers are its parent's
        with self._lock:
            self._closed = True
        self._scheduler.settle_retries(wait and not cancel_futures)
        self._backend.shutdown(wait=wait, cancel_pending=cancel_futures)

    def _gate(self) -> None:
        """Raises when no new work is taken (the scheduler asks on each submit)."""
        if os.getpid() != self._pid:
            raise pool_of_another_process(self._pid)
        if _exiting:  # (first: the exit hook shuts every executor down)
            raise closed_at_exit()
        if self._closed:
            raise pool_closed()

    def _finished(self) -> None:
        with self._lock:
            self._unfinished -= 1
            if not self._unfinished:
                _busy.discard(self)


def _untracker(ref: weakref.ref[Executor]) -> Callable[[futures.Future[Any]], None]:
    """A future's done-callback: the executor no longer waits for it. (A weak
    reference: a future the user keeps must not keep the executor's workers.)"""

    def untrack(_: futures.Future[Any]) -> None:
        executor = ref()
        if executor is not None:
            executor._finished()  # noqa: SLF001  # this module's own executor

    return untrack


def _recorder(backend: Backend) -> StatsRecorder:
    """The record the scheduler keeps of the work (an Executor shows no stats)."""
    capacity = backend.workers if backend.concurrent else 1
    return StatsRecorder(capacity if backend.numbered_workers else 0, backend.restarts(), capacity)


def _release(backend: Backend, owner: int) -> None:
    """An executor dropped without shutdown(): the queued work still runs."""
    if os.getpid() == owner:
        backend.shutdown(wait=False)


# ------------------------------------------------------------------ map


def _results(fs: list[futures.Future[T]], deadline: float | None) -> Iterator[T]:
    """The values of ``fs`` in order. Each future is dropped once its value is
    yielded (the iterator keeps no result); closing the iterator, or an error,
    cancels the calls not started."""
    fs.reverse()
    try:
        while fs:
            yield _result_or_cancel(fs.pop(), deadline)
    finally:
        for future in fs:
            future.cancel()


def _result_or_cancel(future: futures.Future[T], deadline: float | None) -> T:
    try:
        try:
            if deadline is None:
                return future.result()
            return future.result(max(0.0, deadline - time.monotonic()))
        finally:
            future.cancel()
    finally:
        del future  # not in a traceback's frame: the failure must not keep it


def _flatten(chunks: Iterator[list[T]]) -> Iterator[T]:
    """The values of each chunk's list, each dropped once yielded."""
    for values in chunks:
        values.reverse()
        while values:
            yield values.pop()


def _chunks(calls: Iterator[tuple[Any, ...]], size: int) -> Iterator[tuple[tuple[Any, ...], ...]]:
    while chunk := tuple(itertools.islice(calls, size)):
        yield chunk


def _deadline(timeout: object) -> float | None:
    """The end of a ``map``'s iteration: ``timeout`` seconds from now."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r:.80}")
    return time.monotonic() + timeout


def _check_chunksize(chunksize: object) -> int:
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be a whole number, got {chunksize!r:.80}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    return chunksize


# ------------------------------------------------------------ arguments


def _check_max_workers(max_workers: object) -> int | None:
    if max_workers is None:
        return None
    if isinstance(max_workers, bool) or not isinstance(max_workers, int):
        raise TypeError(f"max_workers must be a whole number or None, got {max_workers!r:.80}")
    if max_workers <= 0:
        raise ValueError(f"max_workers must be greater than 0, got {max_workers}")
    return max_workers


def _start_method(mp_context: object, backend: str, max_tasks: int | None) -> str | None:
    """The start method of ``mp_context`` (None: spawn where workers are replaced
    after ``max_tasks`` tasks, as the standard executor does; else the one the
    program set with ``multiprocessing.set_start_method``, if any), checked
    against ``backend``."""
    if "start_method" not in get_backend(backend).accepts:
        if mp_context is not None:
            raise ValueError(f"mp_context applies to processes, not backend={backend!r}")
        return None
    if mp_context is None and max_tasks is not None:
        method: str | None = "spawn"
    elif mp_context is None:
        method = multiprocessing.get_start_method(allow_none=True)
    elif isinstance(mp_context, BaseContext):
        method = mp_context.get_start_method()
    else:
        raise TypeError(
            f"mp_context must be a multiprocessing context (multiprocessing.get_context("
            f"'spawn'), ...) or None, got {mp_context!r:.80}"
        )
    if method == "fork" and max_tasks is not None:
        raise ValueError(
            "max_tasks_per_child is incompatible with the 'fork' start method (a "
            "replacement worker would be forked from a process running threads); "
            "give mp_context=multiprocessing.get_context('spawn') or 'forkserver'"
        )
    v.check_start_method(method, backend)
    return method


def _check_max_tasks(max_tasks: int | None, backend: type[Backend]) -> int | None:
    if max_tasks is not None and not backend.replaces_workers:
        raise ValueError(
            f"max_tasks_per_child needs a backend whose workers can be replaced, "
            f"not backend={backend.name!r}"
        )
    return max_tasks


def _thread_names(prefix: object, backend: str) -> str | None:
    """``thread_name_prefix``, or the standard library's kind of default name."""
    named = v.check_thread_name_prefix(prefix, backend)
    if named is None and "thread_name_prefix" in get_backend(backend).accepts:
        named = f"manycore.Executor-{next(_names)}"
    return named


# ------------------------------------------------------------------ exit


def _watch(executor: Executor) -> None:
    """Have the exit hook finish ``executor``'s work. The hook is registered with
    the first executor, after the program's own earlier ``atexit`` functions:
    it runs before them (``atexit`` runs last-registered first), so that they
    find their executors shut down, as with the standard library's."""
    global _hooked
    with _exit:
        _live.add(executor)
        if not _hooked:
            atexit.register(_finish_at_exit)
            _hooked = True


def _finish_at_exit() -> None:
    """The interpreter exits: no new work; what was submitted runs to the end,
    even on an executor shut down with ``wait=False`` (the standard library's
    threads are joined at exit; manycore's are daemons, so the hook waits)."""
    global _exiting
    with _exit:
        _exiting = True
        executors = list(_live)
    for executor in executors:
        executor.shutdown(wait=True)
