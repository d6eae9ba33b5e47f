"""``backend="dask"``: batches run as tasks of a Dask distributed cluster.

``address=`` names a running scheduler (``"tcp://host:8786"``); ``client=`` reuses
a ``distributed.Client``; with neither, the pool starts a ``LocalCluster`` of
``workers`` single-threaded worker processes on the loopback interface and
closes it with the pool. See :mod:`manycore.backends._cluster` for what this
backend shares with Ray's.

* A timed-out task is stopped by restarting the worker (through its nanny) that
  runs it: Dask cannot stop a running task otherwise. Its slot comes back once
  the worker has.
* The pool counts the cluster's worker threads as they come and go, and fails
  what is out when the scheduler is lost or no worker is left for a while
  (``_GRACE`` seconds), naming the scheduler's address.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

from manycore._core import PoolBroken
from manycore.backends._base import BackendOptions, register_backend
from manycore.backends._cluster import ClusterBackend, _Running
from manycore.backends._gpus import require_gpus, task_share
from manycore.backends._remote_run import Answer, Box, run_boxed

__all__ = ["DaskBackend"]

# distributed's Client and Future: untyped (their calls are Any), so named only.
Client = Any
Future = Any


_CONNECT_TIMEOUT = 5.0  # seconds for a scheduler to answer when the pool starts
_GRACE = 10.0  # seconds without a scheduler, or without any worker, before giving up
_RESTART_TIMEOUT = 60.0  # seconds for a nanny to restart a worker
_SETTLE = 10.0  # seconds for the scheduler to see a restarted worker go and come back
_HANDSHAKE_MAX = 1 << 20  # bytes: a Dask handshake is far smaller
_REFRESH = 1.0  # seconds between two readings of the cluster's size


def _import() -> Any:  # the distributed module
    try:
        import distributed
    except ImportError:
        raise ImportError(
            "backend='dask' needs dask.distributed: pip install 'dask[distributed]'"
        ) from None
    return distributed


def _check_scheduler(address: str) -> None:
    """Ask ``address`` before Dask does, within seconds: where nothing listens,
    Dask's own connect retries for its whole timeout, and a service that is not
    Dask (a Ray or HTTP port) gives it a garbled handshake or none at all."""
    scheme, _, rest = address.rpartition("://")
    if scheme not in ("", "tcp", "tls"):
        return  # another transport (ucx, inproc): Dask's own check only
    host, _, port = rest.rpartition(":")
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT)
    except (OSError, ValueError) as exc:
        raise ConnectionError(
            f"address={address!r}: nothing accepts connections there ({exc}); start a "
            "scheduler with `dask scheduler`, or check the host and port"
        ) from None
    with conn:
        if scheme != "tls":  # (over TLS the client speaks first)
            _check_greeting(address, conn)


def _check_greeting(address: str, conn: socket.socket) -> None:
    """A Dask scheduler greets a new connection at once with its handshake, a
    message whose first 8 bytes are its (small) length."""
    head = b""
    try:
        while len(head) < 8:
            got = conn.recv(8 - len(head))
            if not got:
                break
            head += got
    except OSError:  # (a timeout: it says nothing)
        pass
    length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
    if not 0 < length < _HANDSHAKE_MAX:
        said = f"it sent {head!r}" if head else f"it said nothing for {_CONNECT_TIMEOUT:g} s"
        raise ConnectionError(
            f"address={address!r} is not a Dask scheduler ({said}): is it another "
            "service, such as a Ray or HTTP port? Check the port `dask scheduler` printed"
        )


def _open_client(distributed: Any, address: str) -> Client:
    _check_scheduler(address)
    try:
        return distributed.Client(address, set_as_default=False, timeout=_CONNECT_TIMEOUT)
    except Exception as exc:  # CommClosedError, a timeout, a garbled handshake
        raise ConnectionError(
            f"address={address!r}: something listens there, but not a Dask scheduler "
            f"that answered within {_CONNECT_TIMEOUT:g} s ({type(exc).__name__}: {exc!s:.200}); "
            "is it another service (a Ray or HTTP port)?"
        ) from exc


def _import_error_in(exc: BaseException) -> ImportError | None:
    """An ImportError among the causes of ``exc`` (a task that could not be
    unpickled on a worker: Dask wraps it in its own error)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ImportError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _ran_for(key: str, dask_worker: Any = None) -> float | None:
    """On a Dask worker (``client.run``): seconds task ``key`` has run here, or
    None if it does not run here (yet)."""
    if key not in dask_worker.active_keys:
        return None
    task = dask_worker.state.tasks.get(key)
    if not hasattr(task, "start_time"):  # (a Dask that does not say: its whole time)
        return float("inf")
    start = task.start_time
    return 0.0 if start is None else time.time() - start  # (None: it is starting now)


@register_backend
class DaskBackend(ClusterBackend[Future]):
    name = "dask"
    supports_kill = False  # pool.cancel(force=True) does not restart a worker
    timed_out_how = "its Dask worker was restarted"
    accepts = frozenset({"address", "client", "gpus"})
    # The engine's own package: true however manycore was installed.
    needs_package = ("distributed", "dask[distributed]")

    def __init__(self, options: BackendOptions):
        self._client: Client = None
        self._owned: list[Client] = []  # what this pool started (a cluster too): closed with it
        self._resources: dict[str, float] | None = None  # each task's (gpus=: its GPU share)
        self._where = "the pool's local cluster"  # named in errors
        self._live = options.workers  # the cluster's worker threads, as last read
        self._counted = 0.0  # when they were read
        self._no_workers_since: float | None = None
        self._lost_since: float | None = None  # the scheduler unreachable since
        self._replacing: set[int] = set()  # ids of timed-out records whose worker restarts
        super().__init__(options)

    def _connect(self) -> None:
        distributed = _import()
        opts = self.options
        if opts.client is not None:
            self._client = opts.client
        elif opts.address is not None:
            self._client = _open_client(distributed, opts.address)
            self._owned.append(self._client)
        else:
            import dask

            # A task whose worker dies is not run again by the scheduler (it would
            # be, three times, by default): manycore's retries= decide that.
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                cluster = distributed.LocalCluster(
                    n_workers=opts.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",  # (":0" is every interface)
                )
            self._owned.append(cluster)
            self._client = distributed.Client(cluster, set_as_default=False)
            self._owned.insert(0, self._client)
        if opts.client is not None or opts.address is not None:
            self._where = f"the Dask scheduler at {self._client.scheduler.address}"
        self._count()
        self._resources = self._gpu_resources()

    def _gpu_resources(self) -> dict[str, float] | None:
        """``gpus=``: each task asks for its share of a GPU, which only workers
        that advertise a ``GPU`` resource can give (refused up front if none does)."""
        share = task_share(self.options.gpus, self.workers)
        if share is None:
            return None
        workers = self._client.scheduler_info(n_workers=-1)["workers"].values()
        advertised = sum(w.get("resources", {}).get("GPU", 0) for w in workers)
        how = (
            "start each worker with `dask worker ADDRESS --resources GPU=1` and its own "
            "CUDA_VISIBLE_DEVICES (or `dask cuda worker ADDRESS --resources GPU=1`), and "
            "pass address="
        )
        require_gpus(advertised, "Dask", how, self._disconnect)
        return {"GPU": share}

    @property
    def workers(self) -> int:
        """The cluster's worker threads now (read again at most once a second;
        at least 1, for the scheduler's sake: a cluster left with none fails
        what is out, see _health)."""
        if time.monotonic() - self._counted >= _REFRESH:
            self._count()
        return max(1, self._live)

    def _count(self) -> None:
        """Read the cluster's worker threads (kept as they were if it does not answer)."""
        self._counted = time.monotonic()
        if self._client.status != "running":
            return
        try:
            info = self._client.scheduler_info(n_workers=0)
            self._live = int(info.get("total_threads", self._live))
        except Exception:  # the scheduler is going: _health says so
            pass

    def _put(self, obj: object) -> Future:
        # In a list: scatter() would split a list, tuple or dict into its elements.
        return self._client.scatter([obj], broadcast=False, hash=False)[0]

    def _send(self, args: tuple[object, ...], record: _Running[Future]) -> Future:
        # fn (or its ref), the items and options in one box, the shared object's and
        # the other refs as they are: Dask finds refs among the top-level arguments.
        fn, items, how, kwargs, setup, *refs = args
        box = Box((items, how, kwargs, setup))
        future = self._client.submit(
            run_boxed, fn, box, *refs, pure=False, retries=0, resources=self._resources
        )
        future.add_done_callback(lambda done: self._finished(record, done))
        return future

    def _outcome(self, handle: Future) -> Answer:
        try:
            answer: Answer = handle.result()
        except Exception as exc:
            if getattr(exc, "reason", None) == "scheduler-connection-lost":
                raise self._scheduler_lost("the client's connection to it closed") from exc
            missing = _import_error_in(exc)
            if missing is None or missing is exc:
                raise
            # The workers cannot import the function's module: that first, with
            # Dask's "Error during deserialization" below it.
            error = type(missing)(*missing.args, name=missing.name, path=missing.path)
            raise error from exc
        return answer

    def _stop(self, handle: Future | None, force: bool) -> None:
        if handle is None:
            return
        try:
            handle.cancel()
        except Exception:  # the client is closed already: nothing left to stop
            pass

    def _alive(self) -> bool:
        return self._client is not None and self._client.status == "running"

    # ------------------------------------------------------- timeouts, health

    def _running_for(self, record: _Running[Future]) -> float | None:
        """Asked of the worker that has the task: a task that waited there (or
        at the scheduler) behind others has run only since it started."""
        assert record.batch.timeout is not None
        if record.handle is None or not self._alive():
            return record.batch.timeout
        key = record.handle.key
        try:
            where = [w for w, keys in self._client.processing().items() if key in keys]
            ran = self._client.run(_ran_for, key, workers=where) if where else {}
        except Exception:  # the scheduler is going: _health says so
            return record.batch.timeout
        seconds = [s for s in ran.values() if s is not None]
        return max(seconds) if seconds else None

    def _halting(self, record: _Running[Future]) -> None:
        with self._lock:
            self._replacing.add(id(record))  # its slot stays taken, and shutdown waits

    def _halt(self, record: _Running[Future]) -> None:
        name = f"manycore-dask-restart-{record.batch.key}"
        threading.Thread(target=self._replace, args=(record,), name=name, daemon=True).start()

    def _replace(self, record: _Running[Future]) -> None:
        """Restart the worker that runs ``record``'s task, then free its slot."""
        try:
            assert record.handle is not None  # (a timed-out task was sent)
            key = record.handle.key
            where = [w for w, keys in self._client.processing().items() if key in keys]
            self._stop(record.handle, force=False)  # the scheduler forgets it: not run again
            if where:
                threads = self._live
                self._client.restart_workers(where, timeout=_RESTART_TIMEOUT, raise_for_error=False)
                self._wait_replaced(where, threads)
                self._lost(record)  # what the pool had put there went with the worker
        except Exception:  # the cluster is going: _health says so
            pass
        finally:
            with self._lock:
                self._replacing.discard(id(record))
                self._alarm.notify_all()
            super()._ended(record)

    def _wait_replaced(self, old: list[str], threads: int) -> None:
        """Until the scheduler has dropped the ``old`` workers and has ``threads``
        again (bounded): restart_workers can return while it still lists an old
        one, which would then be given work, or data, that dies with it. (A worker
        on a fixed port comes back at its old address: the bound ends the wait.)"""
        deadline = time.monotonic() + _SETTLE
        while time.monotonic() < deadline:
            workers = self._client.scheduler_info(n_workers=-1).get("workers", {})
            live = sum(int(w.get("nthreads", 0)) for w in workers.values())
            if live >= threads and not set(old) & set(workers):
                break
            time.sleep(0.1)
        self._count()

    def _ended(self, record: _Running[Future]) -> None:
        with self._lock:
            if id(record) in self._replacing:
                return  # the slot comes back once the worker has been restarted
        super()._ended(record)

    def _scheduler_lost(self, how: str) -> PoolBroken:
        """The pool's error once its scheduler is gone: this batch's, and every later one's."""
        error = PoolBroken(
            f"lost the connection to {self._where} ({how}): the scheduler stopped, or "
            "the network to it is down; the tasks that were out are lost"
        )
        with self._lock:
            self._broken = self._broken or error
        return error

    def _health(self) -> BaseException | None:
        now = time.monotonic()
        if self._client.status != "running":
            self._lost_since = self._lost_since or now
            if now - self._lost_since < _GRACE:
                return None
            status = self._client.status
            return self._scheduler_lost(
                f"the client is {status!r} for {now - self._lost_since:.0f} s"
            )
        self._lost_since = None
        if now - self._counted >= _REFRESH:
            self._count()
        if self._live > 0:
            self._no_workers_since = None
            return None
        self._no_workers_since = self._no_workers_since or now
        if now - self._no_workers_since < _GRACE:
            return None
        return ConnectionError(
            f"{self._where} has had no workers for {now - self._no_workers_since:.0f} s "
            "(they died or left): nothing can run the tasks"
        )

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        if wait:  # the cluster whole again first (a later pool counts its workers)
            deadline = time.monotonic() + _RESTART_TIMEOUT + _SETTLE
            with self._lock:
                while self._replacing and time.monotonic() < deadline:
                    self._alarm.wait(0.5)
        super().shutdown(wait, cancel_pending)

    def _disconnect(self) -> None:
        for thing in self._owned:
            try:
                thing.close(timeout=_CONNECT_TIMEOUT)
            except Exception:  # closing twice, a scheduler already gone: nothing to do
                pass
        self._owned = []
