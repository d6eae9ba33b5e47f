"""``backend="mpi"``: batches run on the ranks of an MPI job, through
``mpi4py.futures``.

Two ways of running, as ``mpi4py.futures`` has them:

* under ``mpiexec -n N python -m mpi4py.futures script.py``, rank 0 runs the
  script and the pool's workers are the other N-1 ranks of the job (a pool's
  ``workers=`` must then be left out, or match);
* from a plain ``python script.py``, the pool spawns ``workers`` ranks
  (``MPI_Comm_spawn``) and they exit when it closes.

What MPI lacks, manycore adds: MPI aborts the whole job when one rank dies, and
cannot stop a task that runs. So a rank never runs an item itself: it hands its
batch to a one-worker pool of manycore's own process engine, and that worker
runs it. The engine kills and replaces the worker for an item past its
timeout (``TaskTimeout``) or fails only the item that killed it
(``WorkerCrashed``), and the rank lives on; retries and ``on_error`` are the
scheduler's, as on every backend. ``init=``/``shared=`` reach each rank once,
through the executor's initializer, and make that worker's state.

::

    client ─► MPIPoolExecutor.submit(_on_rank, token, cloudpickled batch)
                 │ (MPI)
                 ▼
    rank:  _on_rank ─► one-worker process engine (its pool per token) ─► run_batch
                 │ values + packed errors, cloudpickled
    done ◄───────┘
"""

from __future__ import annotations

import atexit
import os
import queue
import socket
import sys
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import cloudpickle

from manycore._core import (
    Batch,
    BatchResult,
    PoolBroken,
    WorkerCrashed,
    pack_exception,
    pool_closed,
    rebuild,
)
from manycore.backends._base import (
    Backend,
    BackendOptions,
    Done,
    backend_for,
    get_backend,
    register_backend,
)

__all__ = ["MPIBackend"]

# mpi4py is untyped: its executor and futures are Any here, named only.
Executor = Any
MPIFuture = Any

_BOOT_SECONDS = float(os.environ.get("MANYCORE_MPI_BOOT_TIMEOUT", "60"))


def _futures() -> Any:  # the mpi4py.futures module
    try:
        import mpi4py.futures
    except ImportError:
        raise ImportError(
            "backend='mpi' needs mpi4py and an MPI library: install Open MPI (e.g. "
            "apt-get install openmpi-bin libopenmpi-dev), then pip install mpi4py"
        ) from None
    return mpi4py.futures


def _world() -> tuple[int, str]:
    """The size of MPI's world here and the MPI library's vendor."""
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_size(), MPI.get_vendor()[0]


@register_backend
class MPIBackend(Backend):
    name = "mpi"
    needs_pickling = True
    numbered_workers = False  # results name the rank (host:pid) that ran them
    batch_seconds = 0.05  # a round trip to a rank and its worker costs about a millisecond
    needs_package = ("mpi4py", "mpi4py")

    @classmethod
    def default_workers(cls) -> int:
        """Under ``mpiexec``: the job's other ranks; else the usable CPUs."""
        _futures()
        size, _ = _world()
        return size - 1 if size > 1 else super().default_workers()

    @classmethod
    def describe(cls) -> dict[str, object]:
        """mpi4py's version, where installed (importing ``mpi4py.MPI`` would start
        MPI in this process: ``manycore info`` does not)."""
        try:
            import mpi4py
        except ImportError:
            return {}
        return {"mpi4py": mpi4py.__version__}

    def __init__(self, options: BackendOptions):
        super().__init__(options)
        futures = _futures()
        self._lock = threading.Lock()
        self._closed = False
        self._running: dict[int, MPIFuture] = {}  # id(batch) -> its future
        self._token = uuid.uuid4().hex
        self._executor: Executor = futures.MPIPoolExecutor(
            max_workers=options.workers,
            initializer=_install,
            initargs=(self._token, cloudpickle.dumps(_inner_options(options))),
            main=False,  # functions travel by value: the ranks need not run the script
            path=list(sys.path),
            **_spawn_info(),
        )
        self._workers = self._boot()
        if self._workers == 0:
            self._executor.shutdown(wait=False)
            raise PoolBroken("the MPI pool could not start its ranks (see the MPI errors above)")

    def _boot(self) -> int:
        """The ranks serving this pool, once one answers: bounded, since an MPI
        spawn that cannot place its ranks waits forever. (A first task, waited
        for with a timeout: ``num_workers`` would wait holding the executor's
        lock, and its shutdown would then wait for that too.)"""
        try:
            self._executor.submit(abs, 0).result(timeout=_BOOT_SECONDS)
            return int(self._executor.num_workers)
        except FutureTimeout:
            pass
        self._executor.shutdown(wait=False, cancel_futures=True)
        raise PoolBroken(
            f"the MPI ranks did not start within {_BOOT_SECONDS:g} s (MANYCORE_MPI_BOOT_TIMEOUT). "
            "An MPI spawn waits forever for ranks it cannot place: allow oversubscription "
            "(Open MPI: OMPI_MCA_rmaps_base_oversubscribe=1) or give a hostfile. Open MPI "
            "4.1 with an external PMIx also hangs in MPI_Comm_spawn now and then, and no "
            "later spawn of this process can start: run under mpiexec -n N python -m "
            "mpi4py.futures, which spawns nothing"
        )

    @property
    def workers(self) -> int:
        return self._workers

    # ---------------------------------------------------------------- batches

    def submit(self, batch: Batch, done: Done) -> None:
        with self._lock:
            if self._closed:
                raise pool_closed()
        if batch.claim is not None and not batch.claim():
            return
        what = (batch.fn, batch.items, batch.start, batch.star, batch.kwargs)
        how = (batch.submit, batch.timeout, batch.time_items)
        future = self._executor.submit(_on_rank, self._token, cloudpickle.dumps((what, how)))
        with self._lock:
            self._running[id(batch)] = future
        future.add_done_callback(lambda f: self._finished(batch, done, f))

    def _finished(self, batch: Batch, done: Done, future: MPIFuture) -> None:
        with self._lock:
            self._running.pop(id(batch), None)
        done(batch, self._outcome(batch, future))

    def _outcome(self, batch: Batch, future: MPIFuture) -> BatchResult | BaseException:
        if future.cancelled():
            return CancelledError()
        error = future.exception()
        if error is not None:
            return self._crashed(batch, error)
        return _unpack(future.result())

    def _crashed(self, batch: Batch, exc: BaseException) -> BaseException:
        err = WorkerCrashed(
            f"{batch.name_item(0)}: the MPI task running it failed ({exc!r:.300}); its "
            "items were not computed. The rank could not run the batch (see the cause)."
        )
        err.__cause__ = exc
        return err

    def cancel(self, batch: Batch) -> bool:
        with self._lock:
            future = self._running.get(id(batch))
        return future is not None and bool(future.cancel())

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=cancel_pending)


def _spawn_info() -> dict[str, object]:
    """Spawn mode with Open MPI: place ranks beyond the slots it counts (the
    cores) as a process pool would, rather than wait forever for slots."""
    size, vendor = _world()
    if size > 1 or vendor != "Open MPI":
        return {}
    return {"mpi_info": {"map_by": "core:OVERSUBSCRIBE"}}


def _inner_options(options: BackendOptions) -> BackendOptions:
    """The options of the one-worker engine pool each rank runs its batches in."""
    return BackendOptions(
        workers=1,
        init=options.init,
        init_args=options.init_args,
        max_tasks_per_worker=options.max_tasks_per_worker,
        max_memory_per_worker=options.max_memory_per_worker,
        blas_threads=options.blas_threads,
        exit=options.exit,
        shared=options.shared,
    )


# --------------------------------------------------------------- rank side

_KEEP_POOLS = 4  # pools whose worker one rank of a long-lived job keeps, at most
_options: dict[str, bytes] = {}  # token -> pickled options, from the initializer
_pools: OrderedDict[str, Backend] = OrderedDict()  # token -> its engine pool, newest last
_pools_lock = threading.Lock()


def _install(token: str, options: bytes) -> None:
    """The executor's initializer, once per rank: this pool's options."""
    if not _options:
        atexit.register(_close_all)  # (after mpi4py's own: so it runs before MPI ends)
    _options[token] = options


def _close_all() -> None:
    """As the rank exits: stop the workers of its engine pools, which would
    otherwise hold the rank's exit up."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.terminate()


def _inner(token: str) -> Backend:
    """This pool's one-worker engine pool on this rank, started on first use; the
    oldest of a long-lived rank's pools are closed beyond :data:`_KEEP_POOLS`."""
    with _pools_lock:
        pool = _pools.get(token)
        if pool is not None:
            _pools.move_to_end(token)
            return pool
        options: BackendOptions = cloudpickle.loads(_options[token])
        pool = _pools[token] = get_backend(backend_for("process"))(options)
        old = [_pools.popitem(last=False)[1] for _ in range(len(_pools) - _KEEP_POOLS)]
    for stale in old:
        stale.shutdown(wait=False, cancel_pending=True)
    return pool


def _on_rank(token: str, payload: bytes) -> bytes:
    """Run one batch on this rank, in its engine pool's worker; the outcome packed."""
    try:
        (fn, items, start, star, kwargs), (submit, timeout, time_items) = cloudpickle.loads(payload)
        batch = Batch(fn, items, start, star, kwargs)
        batch.submit, batch.timeout, batch.time_items = submit, timeout, time_items
        outcome = _run(_inner(token), batch)
    except Exception as exc:  # the batch never reached a worker (its function did not load)
        outcome = exc
    return _pack(outcome)


def _run(pool: Backend, batch: Batch) -> BatchResult | BaseException:
    box: queue.SimpleQueue[BatchResult | BaseException] = queue.SimpleQueue()
    pool.submit(batch, lambda _batch, outcome: box.put(outcome))
    if pool.drive(lambda: not box.empty()) and not box.empty():
        return box.get()
    with pool.passive():  # another thread of the engine delivers it
        return box.get()


_WHERE = f"{socket.gethostname()}:{os.getpid()}"


def _pack(outcome: BatchResult | BaseException) -> bytes:
    blob: bytes
    if isinstance(outcome, BaseException):
        blob = cloudpickle.dumps(pack_exception(outcome))
        return blob
    failures = outcome.failures
    packed = {k: pack_exception(e) for k, e in failures.items()} if failures else None
    fields = (outcome.values, packed, outcome.elapsed, outcome.unrun, outcome.slowest)
    blob = cloudpickle.dumps((*fields, outcome.moving, _WHERE))
    return blob


def _unpack(blob: bytes) -> BatchResult | BaseException:
    answer = cloudpickle.loads(blob)
    if len(answer) == 4:  # an ErrorWire: the whole batch failed
        return rebuild(answer)
    values, packed, elapsed, unrun, slowest, moving, where = answer
    failures = {k: rebuild(w) for k, w in packed.items()} if packed else None
    return BatchResult(values, failures, elapsed, unrun, slowest, moving, where)
