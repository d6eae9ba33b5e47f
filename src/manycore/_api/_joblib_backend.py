"""joblib's ``"manycore"`` backend: ``Parallel`` on a manycore pool.

Imported only by :func:`manycore._api._joblib.register_joblib` (it needs joblib).
Built as joblib builds its own process backends: ``AutoBatchingMixin`` sizes the
batches (joblib's batching protocol), each batch is one ``submit`` to a manycore
pool, and the future's callback hands the outcome back to joblib.

What manycore adds: a worker that dies fails only the batch it ran, with
:class:`~manycore.WorkerCrashed` (the pool goes on, where loky's executor breaks),
aborting a call kills only that call's running batches, and a ``Parallel`` nested
in a worker gets only that worker's share of the CPUs (a sequential run when
the share is one), so nesting never oversubscribes the machine.

Pools are kept between calls, one per configuration (as loky keeps its
executor): a ``Parallel`` call does not pay for starting workers each time.
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import Any

from joblib import register_parallel_backend
from joblib._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
)

from manycore._api._pool import Pool
from manycore._core import cpu_budget

__all__ = ["ManycoreBackend"]


class _Pools:
    """The pools kept between ``Parallel`` calls, one per configuration; a pool
    no call uses is shut down when another configuration needs a pool."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[tuple[Any, ...], tuple[Pool, int]] = {}  # key -> (pool, users)

    def acquire(self, key: tuple[Any, ...], make: Callable[[], Pool]) -> Pool:
        with self._lock:
            pool, users = self._pools.get(key, (None, 0))
            if pool is None or pool.state.value != "running":
                idle = [k for k, (_, n) in self._pools.items() if n == 0 and k != key]
                for stale in idle:
                    self._pools.pop(stale)[0].shutdown(wait=False, cancel_pending=True)
                pool = make()
            self._pools[key] = (pool, users + 1)
            return pool

    def release(self, key: tuple[Any, ...]) -> None:
        with self._lock:
            if key in self._pools:
                pool, users = self._pools[key]
                self._pools[key] = (pool, max(0, users - 1))


_POOLS = _Pools()


class _Batches:
    """The batches of one ``Parallel`` call: at most ``slots`` (its ``n_jobs``) in
    the pool at once, the rest waiting here. The engine queues a few batches per
    worker ahead of time, which saves round trips for a map but would leave a
    batch waiting behind a long one while another worker idles; joblib sizes
    its batches to run long enough that the round trip costs nothing."""

    def __init__(self, pool: Pool, slots: int):
        self.pool = pool
        self.slots = slots
        self._lock = threading.Lock()
        self._waiting: collections.deque[tuple[Callable[[], Any], Future[Any]]] = (
            collections.deque()
        )
        self._running: dict[Future[Any], Future[Any] | None] = {}  # ours -> the pool's

    def submit(self, func: Callable[[], Any]) -> Future[Any]:
        ours: Future[Any] = Future()
        with self._lock:
            self._waiting.append((func, ours))
        self._pump()
        return ours

    def abort(self) -> None:
        """Drop the waiting batches, kill the running ones (their workers replaced).

        Every batch of the call is settled here, before joblib's abort returns:
        joblib resets its "aborting" flag when the next call on the same
        ``Parallel`` starts, a moment before it gives that call a new id, so a
        killed batch landing late in that moment would fail the next call
        (silently: it then returns ``[]`` instead of raising its own error)."""
        with self._lock:
            waiting, self._waiting = list(self._waiting), collections.deque()
            running = list(self._running.items())
        for _, ours in waiting:
            ours.cancel()
        for ours, theirs in running:
            _settle(ours, CancelledError())
            if theirs is not None:
                self.pool.cancel(theirs, force=True)

    def _pump(self) -> None:
        while (picked := self._next()) is not None:
            func, ours = picked
            try:
                theirs = self.pool.submit(func)
            except BaseException as exc:  # the pool closed meanwhile, ...
                with self._lock:
                    self._running.pop(ours, None)
                _settle(ours, exc)
                continue
            with self._lock:
                self._running[ours] = theirs
            if ours.done():  # aborted while it was being sent
                self.pool.cancel(theirs, force=True)
            theirs.add_done_callback(functools.partial(self._landed, ours))

    def _next(self) -> tuple[Callable[[], Any], Future[Any]] | None:
        with self._lock:
            while len(self._running) < self.slots and self._waiting:
                func, ours = self._waiting.popleft()
                if ours.set_running_or_notify_cancel():
                    self._running[ours] = None  # its slot, taken before it is sent
                    return func, ours
        return None

    def _landed(self, ours: Future[Any], theirs: Future[Any]) -> None:
        with self._lock:
            self._running.pop(ours, None)
        if theirs.cancelled():
            _settle(ours, CancelledError())
        elif (exc := theirs.exception()) is not None:
            _settle(ours, exc)
        else:
            _settle(ours, theirs.result(), failed=False)
        self._pump()  # the slot is free (joblib's callback may have filled it already)


def _settle(future: Future[Any], outcome: Any, failed: bool = True) -> None:
    """Give ``future`` its outcome unless it has one: an aborted batch is settled
    by the abort, and its own outcome, landing later, is dropped."""
    try:
        if failed:
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except InvalidStateError:
        pass


class ManycoreBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """``parallel_config(backend="manycore", **options)``: ``options`` go to
    :class:`manycore.Pool` (``start_method``, ``max_tasks_per_worker``, ...)."""

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True
    supports_sharedmem = False
    uses_threads = False
    default_n_jobs = 1

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        **options: Any,
    ):
        super().__init__(
            nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads, **options
        )
        self._key: tuple[Any, ...] | None = None
        self._batches: _Batches | None = None

    def __reduce__(self) -> Any:
        # Sent to workers inside joblib's batches (the backend of nested calls):
        # only its settings travel, never a pool.
        settings = {"nesting_level": self.nesting_level, **self.backend_kwargs}
        settings["inner_max_num_threads"] = self.inner_max_num_threads
        return (_rebuild, (settings,))

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """``n_jobs``; a negative one counts back from the CPUs (-1: all of them).
        In a worker "the CPUs" are that worker's share, and a nested call gets
        no more than the share whatever it asks."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        budget = cpu_budget()
        if n_jobs < 0:
            return max(budget + 1 + n_jobs, 1)
        return min(n_jobs, budget) if self.nesting_level else n_jobs

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: Any = None,
        require: Any = None,
        **kw: Any,
    ) -> int:
        """The pool for this call. ``kw``: what ``Parallel`` passes its own process
        backends (memmapping options, a multiprocessing context), left unused:
        manycore moves large arrays through shared memory itself and keeps its
        own start method (``start_method=`` in ``parallel_config`` sets it)."""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        options = _pool_options({**self.backend_kwargs, **_pool_keywords(kw)})
        if self.inner_max_num_threads is not None:
            options["blas_threads"] = self.inner_max_num_threads
        self._key = (n_jobs, *sorted((k, _key_part(v)) for k, v in options.items()))
        pool = _POOLS.acquire(self._key, lambda: Pool(n_jobs, **options))
        self._batches = _Batches(pool, n_jobs)
        return n_jobs

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None) -> Any:
        assert self._batches is not None, "configure() first"
        future = self._batches.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: Future[Any]) -> Any:
        return future.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Stop this call's batches: those queued are dropped, those running are
        killed (their workers replaced). The pool itself stays up."""
        if self._batches is not None:
            self._batches.abort()
        if not ensure_ready:
            self.terminate()

    def terminate(self) -> None:
        if self._key is not None:
            _POOLS.release(self._key)
        self._key = self._batches = None
        self.reset_batch_stats()

    def get_nested_backend(self) -> tuple[ManycoreBackend, None]:
        """A ``Parallel`` inside a batch: this backend again, one level down (its
        ``n_jobs`` capped to the worker's share of the CPUs)."""
        level = (self.nesting_level or 0) + 1
        settings = {**self.backend_kwargs, "inner_max_num_threads": self.inner_max_num_threads}
        return ManycoreBackend(nesting_level=level, **settings), None


def _rebuild(settings: dict[str, Any]) -> ManycoreBackend:
    """The backend of nested calls, in a worker: there the name "manycore" is
    registered too, for code that asks for it by name."""
    register_parallel_backend("manycore", ManycoreBackend)
    return ManycoreBackend(**settings)


def _pool_keywords(kw: dict[str, Any]) -> dict[str, Any]:
    """Of what ``Parallel(...)`` passes to ``configure``, the pool's options (the
    rest is for joblib's memmapping backends)."""
    return {k: v for k, v in kw.items() if k in ("initializer", "initargs")}


def _pool_options(options: dict[str, Any]) -> dict[str, Any]:
    """joblib's option names (``parallel_config(initializer=..., initargs=...)``)
    in :class:`manycore.Pool`'s spelling."""
    renamed = {"initializer": "init", "initargs": "init_args"}
    return {renamed.get(k, k): v for k, v in options.items()}


def _key_part(value: Any) -> Any:
    """A pool option as part of a dict key: itself where hashable, else its id."""
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value
