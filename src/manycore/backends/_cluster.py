"""What the Dask and Ray backends share: batches as remote calls, timeouts kept
by the client, and large objects sent to the cluster once.

::

    batch ─► big arrays in its items? ─► put once (scatter / ray.put), by identity
        │                                         │ refs, as top-level arguments
        └─► engine.submit(run_remote, fn_ref, items with placeholders, *refs)
                   │ (the engine resolves the refs on the worker)
                   ▼
            run_remote: placeholders ─► objects; run_batch; errors packed
                   │
    done-callback ◄┘  values + packed errors ─► BatchResult ─► done(batch, ...)

* Per-item timeouts: a timed run goes one item per batch (see
  ``Backend.one_item_when_timed``); a watchdog thread here fails an item whose
  deadline passes with ``TaskTimeout`` at once, whatever the engine does with it
  (Ray kills the worker running it; Dask cannot stop a running task: it runs on,
  and its result is dropped).
* Worker state: ``init`` runs once per worker process, on its first batch of
  this pool (engines have no hook that runs before it); ``mc.worker_state()``
  and ``mc.shared()`` work in tasks.
"""

from __future__ import annotations

import abc
import heapq
import itertools
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from concurrent.futures import CancelledError
from typing import Any

from .._batch import Batch, BatchResult, pinned
from .._errors import PoolClosed, TaskTimeout, WorkerCrashed
from .._remote import pack_exception, rebuild
from ._base import Backend, BackendOptions, Done

__all__ = ["ClusterBackend", "run_remote"]

BIG = 1 << 20  # an argument array at least this big is put on the cluster once
_FN_CACHE = 32  # functions (and shared arrays) kept on the cluster by one pool


class _Placeholder:
    """Stands in a batch's items for an object sent apart (index in refs); with
    ``first_value``, the ref is another batch's outcome, and its first value is meant."""

    __slots__ = ("first_value", "index")

    def __init__(self, index: int, first_value: bool = False):
        self.index = index
        self.first_value = first_value

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Placeholder, (self.index, self.first_value))


class ResultRef:
    """A task's argument that is the result of a finished one-item batch of the
    same pool, left on the cluster (see ``ClusterBackend.result_ref``)."""

    __slots__ = ("handle",)

    def __init__(self, handle: Any):
        self.handle = handle


# ---------------------------------------------------------------- worker side

_inited: dict[str, tuple[Any, Any]] = {}  # pool token -> (state, shared), per process
_init_lock = threading.Lock()


def run_remote(
    fn: Any, items: Any, star: bool, kwargs: Any, setup: Any, shared: Any, *refs: Any
) -> tuple[list[Any], dict[int, Any] | None, float]:
    """Run a batch on a cluster worker (the engine has resolved ``refs``)."""
    from .. import _state
    from .._batch import run_batch

    if refs:
        items = [_fill(x, refs) for x in items]
        kwargs = _fill(kwargs, refs) if kwargs else kwargs
    previous = _state.set_thread(*_worker_state(setup, shared))
    try:
        result = run_batch(fn, items, star, kwargs, Exception)
    finally:
        _state.set_thread(*previous)
    packed = None
    if result.failures:
        packed = {k: pack_exception(e) for k, e in result.failures.items()}
    return result.values, packed, result.elapsed


def _worker_state(setup: Any, shared: Any) -> tuple[Any, Any]:
    if setup is None:
        return None, shared
    token, init, init_args = setup
    with _init_lock:  # several threads of one Dask worker: init once
        if token not in _inited:
            _inited[token] = (init(*init_args) if init is not None else None, shared)
        return _inited[token]


def _fill(item: Any, refs: tuple[Any, ...]) -> Any:
    if isinstance(item, _Placeholder):
        ref = refs[item.index]
        return ref[0][0] if item.first_value else ref
    if isinstance(item, tuple):
        return tuple(_fill(x, refs) for x in item)
    if isinstance(item, list):
        return [_fill(x, refs) for x in item]
    if isinstance(item, dict):
        return {k: _fill(x, refs) for k, x in item.items()}
    return item


# ---------------------------------------------------------------- client side


class _Running:
    __slots__ = ("batch", "done", "handle", "settled")

    def __init__(self, batch: Batch, done: Done):
        self.batch = batch
        self.done = done
        self.handle: Any = None
        self.settled = False


class ClusterBackend(Backend):
    """A backend whose batches run as tasks of a cluster engine."""

    needs_pickling = True
    one_item_when_timed = True
    batch_seconds = 0.2  # a remote task costs milliseconds: batches take longer

    def __init__(self, options: BackendOptions):
        super().__init__(options)
        if options.exit is not None:
            raise ValueError(
                f"exit= is not supported on backend={self.name!r}: the engine gives no "
                "hook that runs as its workers stop"
            )
        self._lock = threading.Lock()
        self._closed = False
        self._running: dict[int, _Running] = {}  # id(batch) -> its record
        # Each batch's handle while the batch lives: a later task can take its
        # result on the cluster (the handle keeps it there).
        self._handles: weakref.WeakKeyDictionary[Batch, Any] = weakref.WeakKeyDictionary()
        self._put_cache: OrderedDict[int, tuple[Any, Any]] = OrderedDict()  # id -> (obj, ref)
        self._deadlines: list[tuple[float, int, _Running]] = []
        self._seq = itertools.count()
        self._alarm = threading.Condition(self._lock)
        self._watchdog: threading.Thread | None = None
        token = uuid.uuid4().hex
        self._setup = (
            None if options.init is None else (token, options.init, tuple(options.init_args))
        )
        self._connect()
        self._shared_ref = None if options.shared is None else self._put(options.shared)

    # ------------------------------------------------------- engine-specific

    @abc.abstractmethod
    def _connect(self) -> None:
        """Connect to (or start) the engine; set ``self.options.workers`` if unset."""

    @abc.abstractmethod
    def _put(self, obj: Any) -> Any:
        """Send ``obj`` to the cluster once; a reference tasks can take."""

    @abc.abstractmethod
    def _send(self, args: tuple[Any, ...], record: _Running) -> Any:
        """Start ``run_remote(*args)``; its handle. Call ``self._finished(record)``
        when it is done (from any thread)."""

    @abc.abstractmethod
    def _outcome(self, handle: Any) -> Any:
        """The finished handle's value (raises what the remote call raised)."""

    @abc.abstractmethod
    def _stop(self, handle: Any, force: bool) -> None:
        """Cancel a remote call (``force``: even if it runs, where the engine can)."""

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Close what this backend started (a local cluster, its client)."""

    # ---------------------------------------------------------------- batches

    def submit(self, batch: Batch, done: Done) -> None:
        with self._lock:
            if self._closed:
                raise PoolClosed("the pool has been shut down and accepts no new work")
        if batch.claim is not None and not batch.claim():
            return
        items, kwargs, refs = self._lift_big(list(batch.items), batch.kwargs)
        shared = self._shared_ref
        args = (self._fn_ref(batch), items, batch.star, kwargs, self._setup, shared)
        record = _Running(batch, done)
        with self._lock:
            self._running[id(batch)] = record
        try:
            record.handle = self._send((*args, *refs), record)
            self._handles[batch] = record.handle
        except BaseException:
            with self._lock:
                self._running.pop(id(batch), None)
            raise
        if batch.timeout is not None:
            self._arm(record, time.monotonic() + batch.timeout * max(1, len(batch)))

    def _finished(self, record: _Running) -> None:
        """The remote call ended: report it, unless a timeout or kill already did."""
        if record.settled:
            return
        try:
            values, packed, elapsed = self._outcome(record.handle)
            failures = {k: rebuild(w) for k, w in packed.items()} if packed else None
            outcome: BatchResult | BaseException = BatchResult(values, failures, elapsed)
        except CancelledError as exc:
            outcome = exc
        except BaseException as exc:  # the engine lost the task: a worker died, ...
            outcome = self._lost(record.batch, exc)
        self._settle(record, outcome)

    def _lost(self, batch: Batch, exc: BaseException) -> BaseException:
        err = WorkerCrashed(
            f"{batch.name_item(0)}: the {self.name} task running it failed ({exc!r:.300}); "
            "its items were not computed. A worker died, or the engine could not run "
            "the task (see the cause, and the cluster's worker logs)."
        )
        err.__cause__ = exc
        return err

    def _settle(self, record: _Running, outcome: BatchResult | BaseException) -> None:
        with self._lock:
            if record.settled:
                return
            record.settled = True
            self._running.pop(id(record.batch), None)
            self._alarm.notify_all()
        record.done(record.batch, outcome)

    def result_ref(self, batch: Batch) -> ResultRef | None:
        """A reference to the value of a finished one-item ``batch`` of this pool,
        on the cluster, for another task's arguments."""
        handle = self._handles.get(batch)
        return None if handle is None or len(batch) != 1 else ResultRef(handle)

    def kill(self, batch: Batch) -> bool:
        with self._lock:
            record = self._running.get(id(batch))
        if record is None or not self.supports_kill:
            return False
        # Settled first: stopping it may call _finished at once, with the engine's error.
        self._settle(record, CancelledError())
        self._stop(record.handle, force=True)
        return True

    # --------------------------------------------------------------- timeouts

    def _arm(self, record: _Running, deadline: float) -> None:
        with self._lock:
            heapq.heappush(self._deadlines, (deadline, next(self._seq), record))
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name=f"manycore-{self.name}-timeouts", daemon=True
                )
                self._watchdog.start()
            self._alarm.notify_all()

    def _watch(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._closed and not self._running:
                        return
                    now = time.monotonic()
                    while self._deadlines and self._deadlines[0][2].settled:
                        heapq.heappop(self._deadlines)
                    if self._deadlines and self._deadlines[0][0] <= now:
                        record = heapq.heappop(self._deadlines)[2]
                        break
                    wait = self._deadlines[0][0] - now if self._deadlines else 1.0
                    self._alarm.wait(min(wait, 1.0))
            self._settle(record, self._timed_out(record.batch))
            self._stop(record.handle, force=True)

    def _timed_out(self, batch: Batch) -> BatchResult:
        assert batch.timeout is not None
        what = (
            "its worker was killed"
            if self.supports_kill
            else "a running Dask task cannot be stopped: it runs on, and its result is dropped"
        )
        error = TaskTimeout(
            f"{batch.name_item(0)} ran longer than timeout={batch.timeout:g} s ({what})",
            timeout=batch.timeout,
            index=batch.start,
        )
        return pinned(batch, 0, error)

    # ------------------------------------------------------------ big objects

    def _lift_big(
        self, items: list[Any], kwargs: dict[str, Any] | None
    ) -> tuple[list[Any], dict[str, Any] | None, list[Any]]:
        """Large arrays (and results left on the cluster) in ``items`` and
        ``kwargs`` replaced by placeholders; their refs, each array put on the
        cluster once for all the batches that carry it."""
        refs: list[Any] = []
        seen: dict[int, int] = {}

        def lift(x: Any) -> Any:
            if isinstance(x, ResultRef):
                refs.append(x.handle)
                return _Placeholder(len(refs) - 1, first_value=True)
            nbytes = getattr(x, "nbytes", None)
            if isinstance(nbytes, int) and nbytes >= BIG and hasattr(x, "__array_interface__"):
                key = id(x)
                if key not in seen:
                    seen[key] = len(refs)
                    refs.append(self._cached_put(x))
                return _Placeholder(seen[key])
            if isinstance(x, tuple):
                return tuple(lift(y) for y in x)
            if isinstance(x, list):
                return [lift(y) for y in x]
            if isinstance(x, dict):
                return {k: lift(y) for k, y in x.items()}
            return x

        lifted = [lift(x) for x in items]
        return lifted, (None if kwargs is None else lift(kwargs)), refs

    def _fn_ref(self, batch: Batch) -> Any:
        """The function, or for a big one (a closure over a large array) its ref:
        the engine pickles what it is given once per task."""
        blob = batch.fn_blob
        if blob is None or len(blob) < BIG:
            return batch.fn
        return self._cached_put(batch.fn)

    def _cached_put(self, obj: Any) -> Any:
        """``obj`` on the cluster, once while this pool holds it (by identity: the
        cache keeps the object, so its id is not reused meanwhile)."""
        key = id(obj)
        with self._lock:
            hit = self._put_cache.get(key)
            if hit is not None and hit[0] is obj:
                self._put_cache.move_to_end(key)
                return hit[1]
        ref = self._put(obj)
        with self._lock:
            self._put_cache[key] = (obj, ref)
            while len(self._put_cache) > _FN_CACHE:
                self._put_cache.popitem(last=False)
        return ref

    # --------------------------------------------------------------- shutdown

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        with self._lock:
            first = not self._closed
            self._closed = True
            records = list(self._running.values())
            self._alarm.notify_all()
        if cancel_pending:
            for record in records:
                self._settle(record, CancelledError())
                self._stop(record.handle, force=self.supports_kill)
        if wait:
            with self._lock:
                while self._running:
                    self._alarm.wait(1.0)
        if first:
            with self._lock:
                self._put_cache.clear()
            self._disconnect()

    def terminate(self) -> None:
        self.shutdown(wait=False, cancel_pending=True)
