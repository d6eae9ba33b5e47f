"""``backend="ipyparallel"``: batches run as tasks of an IPython parallel cluster,
through a load-balanced view.

``address=`` names a running cluster by its client connection file
(``ipcontroller-client.json``) or its profile directory; ``client=`` reuses an
``ipyparallel.Client``. With neither, the pool starts and owns a cluster of
``workers`` engines on 127.0.0.1 (``ipyparallel.Cluster``, a private profile
directory) and stops it with the pool. See :mod:`manycore.backends._cluster`
for what this backend shares with Dask's and Ray's.

* Each task is ``_run_packed(blob, shared, *refs)``: the batch cloudpickled
  once (ipyparallel's own canning does not carry closures or ``__main__``
  functions' globals), the pushed objects as ``ipyparallel.Reference`` top-level
  arguments, which each engine resolves in its namespace.
* A timed-out task is interrupted (SIGINT, through the engine's nanny); if it
  ignores that for ``_GRACE_INT`` seconds its engine is killed, and a cluster the
  pool owns starts a new engine (as it does for an engine that died). Its slot
  comes back once the task has really stopped.
* An engine that dies under a task (``EngineError``) fails that batch with
  ``WorkerCrashed``; retries are manycore's (the view's own ``retries`` stays 0:
  a task that fails on every engine would stay pending there).
* ipyparallel calls done-callbacks on its I/O thread: they only hand the task to
  the pool's reader thread, which reports it and sends what that frees.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import queue
import shutil
import signal
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from manycore._core import Batch
from manycore.backends._base import BackendOptions, register_backend
from manycore.backends._cluster import ClusterBackend, _Running
from manycore.backends._ray_connect import connect_bound
from manycore.backends._remote_run import Answer, ResultRef, run_remote

__all__ = ["IPyParallelBackend"]

# ipyparallel's AsyncResult, Client and Cluster: untyped here (their calls are Any).
AsyncResult = Any
Client = Any

_START_BOUND = 120.0  # seconds for an owned cluster's controller and engines (busy cores)
_GRACE_INT = 2.0  # seconds a timed-out task has to stop after SIGINT, before its engine dies
_DEATH_BOUND = 30.0  # seconds for the controller to see a killed engine gone
_GRACE = 10.0  # seconds with no engine before what is out fails
_STOP_GRACE = 3.0  # seconds for an owned cluster's processes to end once told to
_SETTLE = 2.0  # seconds a refill watches the engines before it may end
_REFRESH = 1.0  # seconds between two readings of the engines
_PREFIX = "_manycore_"  # names of pushed objects in the engines' namespaces
_log = logging.getLogger(__name__)


def _import() -> Any:  # the ipyparallel module
    try:
        return importlib.import_module("ipyparallel")  # (untyped: no stubs needed)
    except ImportError:
        raise ImportError(
            "backend='ipyparallel' needs ipyparallel: pip install ipyparallel"
        ) from None


def _run_packed(
    blob: bytes, fn: Callable[..., object] | None, shared: object, *refs: object
) -> Answer:
    """On an engine: the batch out of its cloudpickle, run by ``run_remote``
    (``fn``: a pushed function, or None: it is in the blob)."""
    import cloudpickle

    packed, items, how, kwargs, setup = cloudpickle.loads(blob)
    return run_remote(fn or packed, items, how, kwargs, setup, shared, *refs)


_loaded: dict[str, object] = {}  # on an engine: pushed objects, loaded


def loaded(name: str, namespace: dict[str, object]) -> object:
    """On an engine: the object pushed as ``name`` into its ``namespace``
    (loaded once)."""
    import cloudpickle

    if name not in _loaded:
        _loaded[name] = cloudpickle.loads(namespace[name])
    return _loaded[name]


def forget(name: str, namespace: dict[str, object]) -> None:
    """On an engine: drop the object pushed as ``name``."""
    _loaded.pop(name, None)
    namespace.pop(name, None)


def _connection_file(path: Path) -> Path | None:
    """The client connection file ``path`` names: itself, or the one in a
    profile directory (``ipcontroller-client.json``, or the one cluster's)."""
    if path.is_file():
        return path
    security = path / "security"
    if (security / "ipcontroller-client.json").is_file():
        return security / "ipcontroller-client.json"
    found = sorted(security.glob("ipcontroller-*-client.json")) if security.is_dir() else []
    return found[0] if len(found) == 1 else None


def _open_client(ipp: Any, address: str) -> Client:
    """A client of the cluster at ``address`` (a connection file or a profile
    directory), connected within the bound, with an engine registered."""
    bound = connect_bound()
    path = _connection_file(Path(address).expanduser())
    if path is None:
        raise ConnectionError(
            f"address={address!r}: no such connection file, or no single one in that profile "
            "directory; give the ipcontroller-client.json that `ipcluster start` wrote (in "
            "the profile's security/ folder)"
        )
    try:
        client = ipp.Client(str(path), timeout=bound)
    except Exception as exc:
        raise ConnectionError(
            f"address={address!r}: no IPython parallel controller answered within {bound:g} s "
            f"({type(exc).__name__}: {exc!s:.200}); is `ipcluster start` running, and is "
            "this its current connection file? MANYCORE_CONNECT_TIMEOUT sets the wait"
        ) from exc
    try:
        client.wait_for_engines(1, timeout=bound)
    except Exception as exc:
        client.close()
        raise ConnectionError(
            f"address={address!r}: the controller has no engine after {bound:g} s "
            f"({exc!s:.200}); start engines with `ipcluster engines` or `ipengine`"
        ) from exc
    return client


class _Owned:
    """A cluster the pool started: its controller and engines on 127.0.0.1, in a
    private profile directory that goes with it."""

    def __init__(self, ipp: Any, engines: int):
        self.wanted = engines
        self.profile = tempfile.mkdtemp(prefix="manycore-ipp-")
        self.cluster = ipp.Cluster(
            n=engines,
            profile_dir=self.profile,
            cluster_id=f"manycore-{uuid.uuid4().hex[:12]}",
            controller_ip="127.0.0.1",
            log_level=logging.WARNING,
            shutdown_atexit=True,
        )

    def start(self) -> Client:
        try:
            self.cluster.start_controller_sync()
            self.cluster.start_engines_sync(n=self.wanted)
            client = self.cluster.connect_client_sync()
            client.wait_for_engines(self.wanted, timeout=_START_BOUND)
        except BaseException as exc:
            self.stop()
            raise RuntimeError(
                f"could not start a local IPython parallel cluster of {self.wanted} engines "
                f"within {_START_BOUND:g} s ({type(exc).__name__}: {exc!s:.300})"
            ) from exc
        return client

    def refill(self, client: Client, dead: int | None, closed: Callable[[], bool]) -> list[int]:
        """Start engines for those that died (once the controller has dropped
        ``dead``) until there are as many as wanted; the new engines' ids.
        Bounded; stops early once ``closed()``. (Not ``client.wait_for_engines``:
        it raises if an engine leaves meanwhile, as others may.)"""
        deadline = time.monotonic() + _START_BOUND
        while dead in client.ids and time.monotonic() < deadline and not closed():
            time.sleep(0.1)
        before, started, joined = set(client.ids), 0, set()
        # (The controller may drop a dead engine just after its task's error came.)
        settled = time.monotonic() + _SETTLE
        while time.monotonic() < deadline and not closed():
            ids = set(client.ids)
            joined |= ids - before  # (one that joined and died since counts as joined)
            missing = self.wanted - len(ids) - max(0, started - len(joined))
            if missing > 0:
                self.cluster.start_engines_sync(n=missing)
                started += missing
            elif len(ids) >= self.wanted and time.monotonic() > settled:
                break
            time.sleep(0.1)
        return sorted(set(client.ids) - before)

    def pids(self) -> list[int]:
        """The controller's and the engines' (nannies') processes."""
        launchers = [self.cluster.controller] if self.cluster.controller else []
        for engine_set in self.cluster.engines.values():
            launchers.extend(engine_set.launchers.values())
        return [launcher.pid for launcher in launchers if launcher.pid > 0]

    def stop(self) -> None:
        """Stop the cluster, and wait (bounded) until its processes are gone:
        ipyparallel only signals them."""
        import psutil  # (ipyparallel's dependency)

        procs = []
        for pid in self.pids():  # and their children: schedulers, each engine's nanny
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                procs += [proc, *proc.children(recursive=True)]
        try:
            self.cluster.stop_cluster_sync()
        except Exception:  # (already stopping, or half started)
            _log.debug("manycore: stopping the ipyparallel cluster failed", exc_info=True)
        _, left = psutil.wait_procs(procs, timeout=_STOP_GRACE)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=_STOP_GRACE)
        shutil.rmtree(self.profile, ignore_errors=True)


@register_backend
class IPyParallelBackend(ClusterBackend[AsyncResult]):
    name = "ipyparallel"
    supports_kill = True  # pool.cancel(force=True): interrupt, then kill the engine
    timed_out_how = "its engine was interrupted (and replaced if it ignored that)"
    accepts = frozenset({"address", "client"})
    needs_package = ("ipyparallel", "ipyparallel")

    def __init__(self, options: BackendOptions):
        self._ipp: Any = None
        self._client: Client = None
        self._view: Any = None
        self._owned: _Owned | None = None
        self._opened = False  # the client is this pool's (closed with it)
        self._live = options.workers or 1
        self._counted = 0.0
        self._no_engines_since: float | None = None
        self._pushed: dict[str, object] = {}  # name -> object, on every engine
        self._replacing: set[int] = set()  # ids of records whose engine is being stopped
        self._refill_lock = threading.Lock()
        # Finished tasks for the reader thread; a str: a pushed name to drop; None: stop.
        self._inbox: queue.SimpleQueue[tuple[_Running[AsyncResult], AsyncResult] | str | None]
        self._inbox = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        super().__init__(options)

    # ------------------------------------------------------------- connecting

    def _connect(self) -> None:
        ipp = self._ipp = _import()
        opts = self.options
        if opts.client is not None:
            self._client = opts.client
        elif opts.address is not None:
            self._client, self._opened = _open_client(ipp, opts.address), True
        else:
            self._owned = _Owned(ipp, opts.workers or 2)
            self._client, self._opened = self._owned.start(), True
        self._view = self._client.load_balanced_view()
        self._view.retries = 0  # manycore's retries= decide (see the module's note)
        self._count()
        self._reader = threading.Thread(
            target=self._read_answers, name="manycore-ipyparallel-answers", daemon=True
        )
        self._reader.start()

    @property
    def workers(self) -> int:
        """The cluster's engines now (read again at most once a second)."""
        if time.monotonic() - self._counted >= _REFRESH:
            self._count()
        return max(1, self._live)

    def _count(self) -> None:
        self._counted = time.monotonic()
        with contextlib.suppress(Exception):  # the controller is going: _health says so
            self._live = len(self._client.ids)
        owned = self._owned
        if owned is not None and self._live < owned.wanted and not self._refill_lock.locked():
            self._start_refill(None)  # an engine left that no task saw die

    def _start_refill(self, dead: int | None) -> None:
        name = "manycore-ipp-refill"
        threading.Thread(target=self._refill, args=(dead,), name=name, daemon=True).start()

    # ---------------------------------------------------------------- objects

    def _put(self, obj: object) -> object:
        import cloudpickle

        # Pushed cloudpickled (ipyparallel's pickle refuses a memoryview, which
        # a function's blob holds); each engine loads it once, on first use.
        name = f"{_PREFIX}{uuid.uuid4().hex}"
        blob = cloudpickle.dumps(obj)
        self._client[:].push({name: blob}, block=True)
        self._pushed[name] = blob
        ref = self._ipp.Reference(
            f"__import__({__name__!r}, fromlist=['_']).loaded({name!r}, globals())"
        )
        weakref.finalize(ref, self._inbox.put, name)  # dropped from the engines when unused
        return ref

    def _drop(self, name: str) -> None:
        if self._pushed.pop(name, None) is None:
            return
        code = f"__import__({__name__!r}, fromlist=['_']).forget({name!r}, globals())"
        with contextlib.suppress(Exception):  # engines gone: nothing to drop
            self._client[:].execute(code, block=False)

    def _repush(self, engines: list[int]) -> None:
        """New engines get what the others hold (tasks name it)."""
        pushed = dict(self._pushed)
        if engines and pushed:
            self._client[engines].push(pushed, block=True)

    def result_ref(self, batch: Batch) -> ResultRef | None:
        return None  # an engine cannot take another task's result: values travel back

    def make_sync(self, kind: str, args: tuple[object, ...]) -> object:
        raise NotImplementedError(
            f"pool.{kind}() is not available on backend='ipyparallel' (IPython parallel has "
            "no cluster-wide locks or queues); use backend='dask' or 'ray' for those"
        )

    # ---------------------------------------------------------------- batches

    def _send(self, args: tuple[object, ...], record: _Running[AsyncResult]) -> AsyncResult:
        import cloudpickle

        fn, items, how, kwargs, setup, shared, *refs = args
        # A pushed object is named by a Reference, which engines resolve only
        # among a task's own arguments: the function too, when it was pushed.
        pushed = isinstance(fn, self._ipp.Reference)
        blob = cloudpickle.dumps((None if pushed else fn, items, how, kwargs, setup))
        handle = self._view.apply_async(_run_packed, blob, fn if pushed else None, shared, *refs)
        handle.add_done_callback(lambda _: self._inbox.put((record, handle)))
        return handle

    def _read_answers(self) -> None:
        """The reader thread: each finished task reported, off ipyparallel's thread."""
        while (item := self._inbox.get()) is not None:
            try:
                if isinstance(item, str):
                    self._drop(item)
                else:
                    self._finished(*item)
                    self._after(item[1])
            except Exception:  # (a bug: the other tasks are still to be reported)
                _log.exception("manycore: reporting an ipyparallel task failed")

    def _outcome(self, handle: AsyncResult) -> Answer:
        try:
            answer: Answer = handle.get(timeout=60)
        except Exception as exc:
            if getattr(exc, "ename", None) == "EngineError":
                raise ConnectionError(f"the engine running it died ({exc!s:.200})") from exc
            raise
        return answer

    def _after(self, handle: AsyncResult) -> None:
        """An engine died under ``handle``: an owned cluster starts another."""
        try:
            handle.get(timeout=0)
        except Exception as exc:
            died = getattr(exc, "ename", None) == "EngineError"
            info = getattr(exc, "engine_info", None) or {}
        else:
            died = False
        if died and self._owned is not None:
            self._start_refill(info.get("engine_id", self._engine_of(handle)))

    def _refill(self, dead: int | None) -> None:
        with self._refill_lock:  # (shutdown takes it too: nothing starts after the stop)
            if self._owned is None or self._closed:
                return
            try:
                new = self._owned.refill(self._client, dead, lambda: self._closed)
                self._repush(new)
            except Exception:  # the cluster is going: _health says so
                _log.debug("manycore: replacing an ipyparallel engine failed", exc_info=True)
            self._count()

    def _stop(self, handle: AsyncResult | None, force: bool) -> None:
        if handle is None:
            return
        if force:
            threading.Thread(target=self._halt_task, args=(handle,), daemon=True).start()
            return
        with contextlib.suppress(Exception):  # already done, or the client is closed
            self._client.abort(handle, block=False)

    def _alive(self) -> bool:
        return self._client is not None and self._reader is not None

    # ------------------------------------------------------- timeouts, health

    def _engine_of(self, handle: AsyncResult) -> int | None:
        """The engine running ``handle``'s task (None: it has not started; the
        engine's "busy" message names it)."""
        metadata = self._client.metadata.get(handle.msg_ids[0], {})
        engine: int | None = metadata.get("engine_id")
        return engine

    def _has_started(self, record: _Running[AsyncResult]) -> bool:
        if record.handle is None:
            return True
        return record.handle.ready() or self._engine_of(record.handle) is not None

    def _halting(self, record: _Running[AsyncResult]) -> None:
        with self._lock:
            self._replacing.add(id(record))  # its slot stays taken, and shutdown waits

    def _halt(self, record: _Running[AsyncResult]) -> None:
        name = f"manycore-ipp-halt-{record.batch.key}"
        threading.Thread(target=self._halt_record, args=(record,), name=name, daemon=True).start()

    def _halt_record(self, record: _Running[AsyncResult]) -> None:
        try:
            if record.handle is not None:
                self._halt_task(record.handle)
        finally:
            with self._lock:
                self._replacing.discard(id(record))
                self._alarm.notify_all()
            super()._ended(record)

    def _halt_task(self, handle: AsyncResult) -> None:
        """Stop ``handle``'s task: interrupt it; kill its engine if it goes on."""
        try:
            engine = self._engine_of(handle)
            if engine is None:
                self._client.abort(handle, block=False)
                return
            self._client.send_signal(signal.SIGINT, targets=[engine], block=True)
            if handle.wait(_GRACE_INT):
                return
            self._client.send_signal(signal.SIGKILL, targets=[engine], block=True)
            handle.wait(_DEATH_BOUND)  # EngineError, once the controller sees it gone
            self._refill(engine)
        except Exception:  # the cluster is going: _health says so
            _log.debug("manycore: stopping an ipyparallel task failed", exc_info=True)

    def _ended(self, record: _Running[AsyncResult]) -> None:
        with self._lock:
            if id(record) in self._replacing:
                return  # the slot comes back once the task has stopped
        super()._ended(record)

    def _health(self) -> BaseException | None:
        now = time.monotonic()
        self._count()
        if self._live > 0 or self._refill_lock.locked():
            self._no_engines_since = None
            return None
        self._no_engines_since = self._no_engines_since or now
        if now - self._no_engines_since < _GRACE:
            return None
        return ConnectionError(
            f"the IPython parallel cluster has had no engines for "
            f"{now - self._no_engines_since:.0f} s: nothing can run the tasks"
        )

    # --------------------------------------------------------------- shutdown

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        if wait:  # engines whole again first (a later pool counts them)
            deadline = time.monotonic() + _START_BOUND
            with self._lock:
                while self._replacing and time.monotonic() < deadline:
                    self._alarm.wait(0.5)
        super().shutdown(wait, cancel_pending)

    def _disconnect(self) -> None:
        self._inbox.put(None)
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(connect_bound())
        for name in list(self._pushed):
            self._drop(name)
        if self._opened:
            with contextlib.suppress(Exception):
                self._client.close()
        if self._owned is not None:
            got = self._refill_lock.acquire(timeout=_START_BOUND)  # an engine starting
            try:
                self._owned.stop()
                self._owned = None
            finally:
                if got:
                    self._refill_lock.release()
