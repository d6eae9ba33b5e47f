"""What the Dask and Ray backends share: batches as remote calls, timeouts kept
by the client, and large objects sent to the cluster once.

::

    batch ─► big arrays in its items? ─► put once per run (scatter / ray.put)
        │                                         │ refs, as top-level arguments
        └─► engine.submit(run_remote, fn, items with placeholders, *refs)
                   │ (the engine resolves the refs on the worker)
                   ▼
            run_remote: placeholders ─► objects; run_batch; errors packed
                   │                      (manycore.backends._remote_run)
    done-callback ◄┘  values + packed errors ─► BatchResult ─► done(batch, ...)

* Timeouts. A timed run goes one item per batch, and only as many timed tasks
  are out as the cluster has worker slots, so that an item's clock starts about
  when it does (not while it waits in the engine's queue). A watchdog thread
  fails an item past its deadline with ``TaskTimeout`` at once (unless the
  engine says it started late, or not yet: its clock runs from its start), and the engine
  stops it (``_halt``): Ray kills the worker running it, Dask restarts it; its
  slot comes back once the task has really stopped.
* Health. The same thread asks the engine, about once a second while batches
  are out, whether it can still run them (``_health``): a cluster whose
  scheduler is gone, or that has had no workers for a while, fails them with
  ``PoolBroken`` or ``WorkerCrashed`` rather than leaving the caller waiting.
* Objects put on the cluster are shared by the batches in flight that carry
  them, and dropped when the last such batch ends: a later run sends them again
  (an array changed in place between two maps is seen changed).
* Worker state: ``init`` runs once per worker process, on its first batch of
  this pool; a failing ``init`` fails the batch with ``PoolBroken``.
"""

from __future__ import annotations

import abc
import os
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Mapping
from concurrent.futures import CancelledError
from typing import Generic, TypeVar

from manycore._core import (
    Batch,
    BatchResult,
    Deadlines,
    PoolBroken,
    PoolClosed,
    WorkerCrashed,
    init_raised,
    pinned,
    pool_closed,
    rebuild,
    timed_out,
)
from manycore.backends._base import Backend, BackendOptions, Done, backend_names, get_backend
from manycore.backends._gpus import check_cluster_gpus
from manycore.backends._remote_run import (
    Answer,
    Placeholder,
    ResultRef,
    all_scalars,
    replace,
    replace_values,
)

__all__ = ["ClusterBackend"]

BIG = 1 << 20  # an argument array at least this big is put on the cluster once
_RECHECK = 0.25  # seconds between looks at a timed task that has not started yet
H = TypeVar("H")  # the engine's handle of a remote call (a Dask future, a Ray object ref)


class _Running(Generic[H]):
    __slots__ = (
        "batch",
        "done",
        "handle",
        "puts",
        "sent",
        "settled",
        "stop_asked",
        "timed",
        "waited",
    )

    def __init__(self, batch: Batch, done: Done):
        self.batch = batch
        self.done = done
        self.handle: H | None = None
        self.settled = False
        self.stop_asked = False  # a CancelledError from the engine is then ours
        self.timed = batch.timeout is not None
        self.waited = False  # its deadline passed before it had started
        self.sent = 0.0  # when (time.monotonic()) it was sent
        self.puts: list[int] = []  # keys of the cached puts this batch uses


class _Put:
    """An object put on the cluster: its ref, and how many batches in flight use it
    (the entry holds the object, so its id is not reused meanwhile)."""

    __slots__ = ("obj", "ref", "users")

    def __init__(self, obj: object, ref: object):
        self.obj = obj
        self.ref = ref
        self.users = 1


class ClusterBackend(Backend, Generic[H]):
    """A backend whose batches run as tasks of a cluster engine, which knows each
    remote call by a handle ``H``."""

    needs_pickling = True
    one_item_when_timed = True
    numbered_workers = False  # stats name the cluster worker (host:pid) that ran a batch
    batch_seconds = 0.2  # a remote task costs milliseconds: batches take longer
    batch_growth = 64  # each size step costs a round trip: few steps to that size
    batch_overhead = 0.1  # about a remote task's round trip, on a busy cluster
    opening_budget = 0.2  # a one-item probe would cost a round trip of idle workers
    timed_out_how = "its worker was killed"  # what became of a task that timed out
    accepts = frozenset({"address", "gpus"})

    @classmethod
    def check_options(cls, workers: int | None, given: Mapping[str, object]) -> int | None:
        """``address=`` (and ``client=``, dask) name an existing cluster, whose size
        then decides the workers."""
        address, client = given.get("address"), given.get("client")
        if address is not None and (not isinstance(address, str) or not address):
            raise TypeError(f"address must be a cluster address string, got {address!r:.80}")
        if address is not None and client is not None:
            raise ValueError("give address= or client=, not both")
        if workers is not None and (address is not None or client is not None):
            raise ValueError(
                f"workers={workers} with an existing cluster: its workers are the cluster's "
                "(start more workers there instead)"
            )
        return check_cluster_gpus(workers, given)  # gpus=: a count (see backends._gpus)

    @classmethod
    def misplaced(cls, name: str, value: object, backend: str) -> str:
        takers = [repr(n) for n in backend_names() if name in get_backend(n).accepts]
        named = " or ".join(filter(None, (", ".join(takers[:-1]), takers[-1])))
        return f"{name}= is for a cluster engine: it needs backend={named}, not {backend!r}"

    def __init__(self, options: BackendOptions):
        super().__init__(options)
        if options.exit is not None:
            raise ValueError(
                f"exit= is not supported on backend={self.name!r}: the engine gives no "
                "hook that runs as its workers stop"
            )
        self._lock = threading.Lock()
        self._closed = False
        self._running: dict[int, _Running[H]] = {}  # id(batch) -> its record
        # Each batch's handle while the batch lives: a later task can take its
        # result on the cluster (the handle keeps it there).
        self._handles: weakref.WeakKeyDictionary[Batch, H] = weakref.WeakKeyDictionary()
        self._puts: dict[int, _Put] = {}  # by id(obj)
        self._timed_waiting: deque[tuple[_Running[H], tuple[object, ...]]] = deque()
        self._timed_out = 0  # timed tasks out on the cluster (also ones that timed out)
        self._deadlines: Deadlines[_Running[H]] = Deadlines()
        self._alarm = threading.Condition(self._lock)
        self._watchdog: threading.Thread | None = None
        self._broken: BaseException | None = None  # a PoolBroken the engine gave
        token = uuid.uuid4().hex
        self._setup = (
            None if options.init is None else (token, options.init, tuple(options.init_args))
        )
        self._connect()
        try:
            self._shared_ref = None if options.shared is None else self._put(options.shared)
        except BaseException:
            self._disconnect()  # nothing may stay up behind a pool that failed to start
            raise

    # ------------------------------------------------------- engine-specific

    @abc.abstractmethod
    def _connect(self) -> None:
        """Connect to (or start) the engine; set ``self._workers``."""

    @abc.abstractmethod
    def _put(self, obj: object) -> object:
        """Send ``obj`` to the cluster once; a reference tasks can take (as an argument)."""

    @abc.abstractmethod
    def _send(self, args: tuple[object, ...], record: _Running[H]) -> H:
        """Start ``run_remote(*args)``; its handle. Call ``self._finished(record)``
        when it is done (from any thread)."""

    @abc.abstractmethod
    def _outcome(self, handle: H | None) -> Answer:
        """The finished handle's value (raises what the remote call raised)."""

    @abc.abstractmethod
    def _stop(self, handle: H | None, force: bool) -> None:
        """Cancel a remote call (``force``: even if it runs, where the engine can);
        never raises."""

    @abc.abstractmethod
    def _alive(self) -> bool:
        """Whether the engine can still report on tasks (not shut down under us)."""

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Close what this backend started (a local cluster, its client)."""

    def _health(self) -> BaseException | None:
        """Why the batches out cannot finish (asked about once a second while
        some are): a ``PoolBroken`` fails them and every later batch, another
        error fails each of them as a crash of its worker. None: all is well."""
        return None

    def _has_started(self, record: _Running[H]) -> bool:
        """Whether the timed-out task of ``record`` has started on a worker
        (False: it waited for a slot, and its clock starts again)."""
        return True

    def _running_for(self, record: _Running[H]) -> float | None:
        """Seconds the task of ``record``, at its deadline, has run on a worker;
        None: it has not started. An engine that can say when the task started
        tells; by default, asked ``_has_started``: its whole time, or none of it
        when it started since the last look (a recheck ago at most)."""
        if not self._has_started(record):
            return None
        assert record.batch.timeout is not None
        return 0.0 if record.waited else record.batch.timeout

    def _halting(self, record: _Running[H]) -> None:
        """A timed-out task is about to be reported (then stopped by ``_halt``):
        whatever waits for the report must find the stop under way."""

    def _halt(self, record: _Running[H]) -> None:
        """Stop a timed-out task; its slot comes back when it has stopped."""
        self._stop(record.handle, force=True)

    # ---------------------------------------------------------------- batches

    def submit(self, batch: Batch, done: Done) -> None:
        with self._lock:
            if self._closed:
                raise pool_closed()
            if self._broken is not None:
                raise self._broken
        if batch.claim is not None and not batch.claim():
            return
        record: _Running[H] = _Running(batch, done)
        items, kwargs, refs = self._lift(record, list(batch.items), batch.kwargs)
        # (The submitting process: a worker that is another process runs nested calls there.)
        how = (batch.star, batch.time_items, os.getpid(), batch.budget)
        args = (self._fn_ref(record), items, how, kwargs, self._setup, self._shared_ref)
        with self._lock:
            self._running[id(batch)] = record
            self._watch_locked()
            if record.timed and self._timed_out >= self.workers:
                self._timed_waiting.append((record, (*args, *refs)))
                return  # sent when a timed task ends
            if record.timed:
                self._timed_out += 1
        self._launch(record, (*args, *refs))

    def _launch(self, record: _Running[H], args: tuple[object, ...]) -> None:
        record.sent = time.monotonic()
        try:
            record.handle = self._send(args, record)
            self._handles[record.batch] = record.handle
        except BaseException as exc:
            if not record.timed:
                with self._lock:
                    self._running.pop(id(record.batch), None)
                self._release_puts(record)
                raise
            self._settle(record, exc)  # (from the queue: nobody to raise to)
            self._ended(record)
            return
        if record.timed:
            assert record.batch.timeout is not None
            self._arm(record, record.sent + record.batch.timeout)

    def _finished(self, record: _Running[H], handle: H | None = None) -> None:
        """The remote call ``handle`` ended (done-callback): report it, unless a
        timeout or a kill already did; free its timed slot. (A task that ends at
        once can call back before ``_launch`` has stored its handle: the engine
        passes it.)"""
        try:
            if not record.settled:
                self._settle(record, self._read(record, handle))
        finally:
            self._ended(record)

    def _read(self, record: _Running[H], handle: H | None) -> BatchResult | BaseException:
        try:
            answer = self._outcome(record.handle if handle is None else handle)
        except BaseException as exc:  # the engine lost it, or we cancelled it
            if record.stop_asked and isinstance(exc, CancelledError):
                return CancelledError()
            if isinstance(exc, PoolBroken):  # the engine is gone: no worker to blame
                return exc
            self._lost(record)
            return self._crashed(record.batch, exc)
        if len(answer) == 2:  # (INIT_FAILED, error)
            return init_raised(rebuild(answer[1]), "the pool's")
        values, packed, elapsed, where, slowest = answer
        failures = {k: rebuild(w) for k, w in packed.items()} if packed else None
        n, ran = len(record.batch), len(values)
        unrun = [(ran, n)] if ran < n else None  # a budget ran out (Batch.budget)
        values = values + [None] * (n - ran) if unrun else values
        return BatchResult(values, failures, elapsed, unrun, slowest, worker=where)

    def _crashed(self, batch: Batch, exc: BaseException) -> BaseException:
        err = WorkerCrashed(
            f"{batch.name_item(0)}: the {self.name} task running it failed ({exc!r:.300}); "
            "its items were not computed. A worker died, or the engine could not run "
            "the task (see the cause, and the cluster's worker logs)."
        )
        err.__cause__ = exc
        return err

    def _lost(self, record: _Running[H]) -> None:
        """A task the engine lost: what it carried may be lost with its worker
        (scattered data cannot be recomputed), so send it again next time."""
        with self._lock:
            for key in record.puts:
                self._puts.pop(key, None)
            record.puts = []
        shared = self.options.shared
        if shared is not None:
            try:
                self._shared_ref = self._put(shared)
            except Exception:  # the engine is going: later batches will say so
                pass

    def _settle(self, record: _Running[H], outcome: BatchResult | BaseException) -> None:
        with self._lock:
            if record.settled:
                return
            record.settled = True
            self._deadlines.disarm(record)
            self._running.pop(id(record.batch), None)
            self._alarm.notify_all()
        self._release_puts(record)
        record.done(record.batch, outcome)

    def _ended(self, record: _Running[H]) -> None:
        """A timed task left the cluster: its slot goes to the next one waiting."""
        if not record.timed:
            return
        with self._lock:
            record.timed = False  # count each task once
            self._timed_out -= 1
            nxt = self._timed_waiting.popleft() if self._timed_waiting else None
            if nxt is not None:
                self._timed_out += 1
        if nxt is not None:
            self._launch(*nxt)

    def make_sync(self, kind: str, args: tuple[object, ...]) -> object:
        """``pool.Lock()`` and friends: built on the engine's own primitives."""
        from manycore.backends._cluster_sync import make

        return make(self.name, kind, args, getattr(self, "_client", None))

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
        self._cancel(record)
        return True

    def _cancel(self, record: _Running[H]) -> None:
        # Settled first: stopping it may call _finished at once, with the engine's error.
        record.stop_asked = True
        self._settle(record, CancelledError())
        with self._lock:
            waiting = [w for w in self._timed_waiting if w[0] is record]
            for w in waiting:
                self._timed_waiting.remove(w)
        if waiting:
            return  # never sent
        if record.handle is not None:
            self._stop(record.handle, force=self.supports_kill)

    # --------------------------------------------------------------- timeouts

    def _arm(self, record: _Running[H], deadline: float) -> None:
        with self._lock:
            if record.settled:
                return  # reported (a kill) before its deadline was set
            self._deadlines.arm(record, deadline)
            self._watch_locked()
            self._alarm.notify_all()

    def _watch_locked(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch, name=f"manycore-{self.name}-watchdog", daemon=True
            )
            self._watchdog.start()

    def _watch(self) -> None:
        checked = time.monotonic()
        while True:
            with self._lock:
                if self._closed and not self._running:
                    return
                now = time.monotonic()
                expired = self._deadlines.due(now)
                if not expired:
                    wait = self._deadlines.wait(now)
                    self._alarm.wait(1.0 if wait is None else min(wait, 1.0))
                    expired = self._deadlines.due(time.monotonic())
            self._expire(expired)
            del expired  # (no finished batch kept alive while the watchdog sleeps)
            if time.monotonic() - checked >= 1.0:
                checked = time.monotonic()
                self._check_health()

    def _expire(self, records: list[_Running[H]]) -> None:
        for record in records:
            ran = self._running_for(record)
            if ran is None:
                record.waited = True  # its clock starts once it does: look again soon
                self._arm(record, time.monotonic() + _RECHECK)
                continue
            assert record.batch.timeout is not None
            if ran < record.batch.timeout:  # it started late: the rest of its time
                record.waited = False
                self._arm(record, time.monotonic() + record.batch.timeout - ran)
                continue
            record.stop_asked = True
            self._halting(record)
            self._settle(record, self._timed_out_result(record.batch))
            self._halt(record)

    def _check_health(self) -> None:
        with self._lock:
            if not self._running:
                return
        problem = self._health()
        if problem is None:
            return
        with self._lock:
            if isinstance(problem, PoolBroken):
                self._broken = problem
            records = list(self._running.values())
            self._timed_waiting.clear()
        for record in records:
            error = problem if isinstance(problem, PoolBroken) else None
            record.stop_asked = True
            self._settle(record, error or self._crashed(record.batch, problem))
            self._stop(record.handle, force=False)  # not run later, should workers come back

    def _timed_out_result(self, batch: Batch) -> BatchResult:
        assert batch.timeout is not None
        error = timed_out(batch.name_item(0), batch.timeout, batch.start, self.timed_out_how)
        return pinned(batch, 0, error, batch.timeout)

    # ------------------------------------------------------------ big objects

    def _lift(
        self, record: _Running[H], items: list[object], kwargs: dict[str, object] | None
    ) -> tuple[list[object], dict[str, object] | None, list[object]]:
        """Large arrays (and results left on the cluster) in ``items`` and
        ``kwargs`` replaced by placeholders; their refs, each array put on the
        cluster once for all the batches in flight that carry it."""
        refs: list[object] = []
        seen: dict[int, int] = {}

        def leaf(x: object) -> object:
            if isinstance(x, ResultRef):
                refs.append(x.handle)
                return Placeholder(len(refs) - 1, first_value=True)
            nbytes = getattr(x, "nbytes", None)
            if not (isinstance(nbytes, int) and nbytes >= BIG):
                return x
            if not hasattr(x, "__array_interface__"):
                return x
            if id(x) not in seen:
                seen[id(x)] = len(refs)
                refs.append(self._cached_put(record, x))
            return Placeholder(seen[id(x)])

        # (Most maps' items are plain scalars: nothing to look into.)
        lifted = items if all_scalars(items) else [replace(x, leaf) for x in items]
        return lifted, (None if kwargs is None else replace_values(kwargs, leaf)), refs

    def _fn_ref(self, record: _Running[H]) -> object:
        """The function, or for a big one (a closure over a large array) its ref:
        the engine pickles what it is given once per task."""
        blob = record.batch.fn_blob
        # (A script function's large globals are not in its blob but beside it.)
        if blob is None or (len(blob) < BIG and not getattr(blob, "shipments", None)):
            return record.batch.fn
        return self._cached_put(record, record.batch.fn)

    def _cached_put(self, record: _Running[H], obj: object) -> object:
        """``obj`` on the cluster: put once while batches in flight carry it."""
        key = id(obj)
        with self._lock:
            entry = self._puts.get(key)
            if entry is not None and entry.obj is obj:
                entry.users += 1
                record.puts.append(key)
                return entry.ref
        ref = self._put(obj)
        with self._lock:
            entry = self._puts.get(key)
            if entry is not None and entry.obj is obj:
                entry.users += 1  # another thread put it meanwhile: share that one
                ref = entry.ref
            else:
                self._puts[key] = _Put(obj, ref)
            record.puts.append(key)
        return ref

    def _release_puts(self, record: _Running[H]) -> None:
        with self._lock:
            for key in record.puts:
                entry = self._puts.get(key)
                if entry is not None:
                    entry.users -= 1
                    if entry.users <= 0:
                        del self._puts[key]
            record.puts = []

    # --------------------------------------------------------------- shutdown

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        with self._lock:
            first = not self._closed
            self._closed = True
            records = list(self._running.values())
            self._alarm.notify_all()
        if cancel_pending:
            for record in records:
                self._cancel(record)
        if wait:
            self._wait_for_running()
        if first:
            self._disconnect()

    def _wait_for_running(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    return
                self._alarm.wait(1.0)
                records = list(self._running.values())
            if records and not self._alive():  # the engine went away under us
                for record in records:
                    self._settle(record, self._crashed(record.batch, PoolClosed("engine gone")))

    def terminate(self) -> None:
        self.shutdown(wait=False, cancel_pending=True)
