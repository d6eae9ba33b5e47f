"""``backend="ray"``: batches run as Ray tasks.

``address=`` connects to a running cluster (``"auto"``, or ``"ray://host:10001"``);
a Ray runtime the program has already initialised is reused; with neither, the
pool starts a local one with ``workers`` CPUs and shuts it down with the pool.
A task past its timeout is force-cancelled (Ray kills the worker running it).

Ray calls a task's done-callback on a thread of its own; with the Ray Client
(``ray://``) that is the thread that reads every answer from the server, so a
Ray call that waits there (reading the result, sending the next task, a cancel)
waits forever. The callback only hands the task to the pool's reader thread,
and cancels run on threads of their own: neither the caller nor the timeout
watchdog ever waits on Ray.

A timed task says when it starts: it writes the time under a key of its own in
Ray's key-value store, which the watchdog reads when the task's deadline comes
(a task that waited while Ray started a worker process for it gets its full
time from its start). Ray's task state API would say the same, but only with the dashboard
running, and a second or so late.

See :mod:`manycore.backends._cluster` for what this backend shares with Dask's.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from manycore.backends._base import BackendOptions, register_backend
from manycore.backends._cluster import ClusterBackend, _Running
from manycore.backends._gpus import require_gpus, task_share
from manycore.backends._ray_connect import check_cluster, connect_bound
from manycore.backends._remote_run import Answer, Box, run_boxed

__all__ = ["RayBackend"]

# Ray's ObjectRef: ray is untyped here (its calls are Any), so named only.
ObjectRef = Any


# Pools using the Ray runtime that manycore started: the last one to close shuts it
# down (a runtime the program started itself is left alone).
_users = 0
_users_lock = threading.Lock()
_log = logging.getLogger(__name__)
_STAMPS = "manycore"  # the namespace of Ray's key-value store for the start stamps
_LOOK_BOUND = 2.0  # seconds the watchdog waits for a stamp


def _import() -> Any:  # the ray module
    try:
        import ray
    except ImportError:
        raise ImportError("backend='ray' needs ray: pip install ray") from None
    return ray


@register_backend
class RayBackend(ClusterBackend[ObjectRef]):
    name = "ray"
    supports_kill = True  # ray.cancel(force=True) kills the worker running the task
    needs_package = ("ray", "ray")

    def __init__(self, options: BackendOptions):
        self._workers = options.workers
        self._ray: Any = None  # the ray module
        self._remote: Any = None  # run_remote as a Ray remote function
        self._started = False
        # Finished tasks, for the reader thread (None: stop).
        self._inbox: queue.SimpleQueue[tuple[_Running[ObjectRef], ObjectRef] | None]
        self._inbox = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._cancels: list[threading.Thread] = []
        # The start stamp's key of each timed task out, by id(record).
        self._stamps: dict[int, bytes] = {}
        token = uuid.uuid4().hex
        self._stamp_names = (f"{token}:{n}".encode() for n in itertools.count())
        self._looks = ThreadPoolExecutor(1, thread_name_prefix="manycore-ray-stamps")
        super().__init__(options)

    def _connect(self) -> None:
        ray = self._ray = _import()
        opts = self.options
        if opts.client is not None:
            raise ValueError("client= is for backend='dask'; Ray is reused when initialised")
        global _users
        with _users_lock:
            if not ray.is_initialized():
                kwargs: dict[str, object] = {"include_dashboard": False, "log_to_driver": False}
                if opts.address is not None:
                    check_cluster(opts.address)
                    kwargs["address"] = opts.address
                else:
                    kwargs["num_cpus"] = opts.workers
                _init(ray, kwargs)
                _users = 1
                self._started = True
            elif _users > 0:  # manycore's own runtime: shared, closed by its last user
                _users += 1
                self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self._workers = max(1, cpus)  # the runtime's CPUs (workers= when it is ours)
        self._remote = ray.remote(**self._task_options())(_run_stamped)
        self._reader = threading.Thread(
            target=self._read_answers, name="manycore-ray-answers", daemon=True
        )
        self._reader.start()

    def _task_options(self) -> dict[str, float]:
        """Ray's options for each task; with ``gpus=``, its share of a GPU (Ray
        pins the task to that device)."""
        # Ray retries a task whose worker died on its own; manycore's retries=
        # decide that here, as on the other backends.
        options: dict[str, float] = {"max_retries": 0}
        share = task_share(self.options.gpus, self._workers)
        if share is not None:
            found = float(self._ray.cluster_resources().get("GPU", 0))
            how = "start Ray on machines with GPUs (`ray start --num-gpus N`)"
            require_gpus(found, "Ray", how, self._disconnect)
            options["num_gpus"] = share
        return options

    @property
    def workers(self) -> int:
        return self._workers

    def _put(self, obj: object) -> ObjectRef:
        return self._ray.put(obj)

    def _send(self, args: tuple[object, ...], record: _Running[ObjectRef]) -> ObjectRef:
        stamp = None
        if record.timed:
            with self._lock:
                stamp = self._stamps[id(record)] = next(self._stamp_names)
        fn, items, how, kwargs, setup, *refs = args  # (refs: top-level, for Ray to resolve)
        ref = self._remote.remote(stamp, fn, Box((items, how, kwargs, setup)), *refs)
        ref.future().add_done_callback(lambda _: self._inbox.put((record, ref)))
        return ref

    def _running_for(self, record: _Running[ObjectRef]) -> float | None:
        with self._lock:
            stamp = self._stamps.get(id(record))
        if stamp is None:
            return super()._running_for(record)
        get = _kv()._internal_kv_get  # noqa: SLF001  # (see _kv)
        look = self._looks.submit(get, stamp, namespace=_STAMPS)
        try:  # (on a thread of its own, bounded: the watchdog never waits on Ray)
            started = look.result(timeout=_LOOK_BOUND)
        except Exception:  # slow to answer, or the runtime is going: as if it ran
            return super()._running_for(record)
        if started is None:
            return None  # not started yet (or just ended: its answer is on its way)
        # (Clocks of two machines: never more than since it was sent.)
        ran = time.time() - float(started)
        return min(max(ran, 0.0), time.monotonic() - record.sent)

    def _ended(self, record: _Running[ObjectRef]) -> None:
        with self._lock:
            stamp = self._stamps.pop(id(record), None)
        if stamp is not None and record.stop_asked:  # (a task that ran through deletes its own)
            self._stop_thread(_forget, stamp)
        super()._ended(record)

    def _read_answers(self) -> None:
        """The reader thread: each finished task reported, off Ray's threads."""
        while (item := self._inbox.get()) is not None:
            try:
                self._finished(*item)
            except Exception:  # (a bug: the other tasks are still to be reported)
                _log.exception("manycore: reporting a Ray task failed")

    def _outcome(self, handle: ObjectRef | None) -> Answer:
        answer: Answer = self._ray.get(handle, timeout=60)
        return answer

    def _stop(self, handle: ObjectRef | None, force: bool) -> None:
        if handle is not None:
            self._stop_thread(self._cancel_now, handle, force)

    def _stop_thread(self, target: Any, *args: object) -> None:
        """``target(*args)`` on a thread of its own (a Ray call may block: see above)."""
        thread = threading.Thread(target=target, args=args, name="manycore-ray-cancel", daemon=True)
        thread.start()
        with self._lock:
            self._cancels = [t for t in self._cancels if t.is_alive()]
            self._cancels.append(thread)

    def _cancel_now(self, handle: ObjectRef, force: bool) -> None:
        try:
            self._ray.cancel(handle, force=force)
        except Exception:  # already finished, or the runtime is going down
            pass

    def _alive(self) -> bool:
        return bool(self._ray.is_initialized())

    def _disconnect(self) -> None:
        self._inbox.put(None)
        self._looks.shutdown(wait=False)
        deadline = time.monotonic() + connect_bound()
        with self._lock:
            threads = [*self._cancels, self._reader]
        for thread in threads:  # bounded: a cancel that hangs is left behind
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._release()

    def _release(self) -> None:
        global _users
        with _users_lock:
            if not self._started:
                return
            self._started = False
            _users -= 1
            if _users > 0:
                return
        self._ray.shutdown()


def _kv() -> Any:
    """Ray's key-value store: its names are private, but it is the one place a
    task and a Ray Client driver both reach without an actor or the dashboard."""
    from ray.experimental import internal_kv

    return internal_kv


def _run_stamped(stamp: bytes | None, *args: Any) -> Answer:
    """``run_boxed(*args)`` as a Ray task; a timed one first writes its start
    stamp (and deletes it once done: one the pool stopped, the pool deletes)."""
    if stamp is None:
        return run_boxed(*args)
    put = _kv()._internal_kv_put  # noqa: SLF001  # (see _kv)
    put(stamp, repr(time.time()).encode(), namespace=_STAMPS)
    try:
        return run_boxed(*args)
    finally:
        _forget(stamp)


def _forget(stamp: bytes) -> None:
    try:
        _kv()._internal_kv_del(stamp, namespace=_STAMPS)  # noqa: SLF001  # (see _kv)
    except Exception:  # the runtime is going down: its store goes with it
        pass


def _init(ray: Any, kwargs: dict[str, object]) -> None:
    """``ray.init``; one that fails leaves this process's Ray driver half set up
    (the next ``ray.init`` then trips on its stale state), so it is shut down."""
    try:
        ray.init(**kwargs)
    except BaseException:
        ray.shutdown()
        raise
