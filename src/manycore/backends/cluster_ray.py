"""``backend="ray"``: batches run as Ray tasks.

``address=`` connects to a running cluster (``"auto"``, or ``"ray://host:10001"``);
a Ray runtime the program has already initialised is reused; with neither, the
pool starts a local one with ``workers`` CPUs and shuts it down with the pool.
A task past its timeout is force-cancelled (Ray kills the worker running it).
See :mod:`manycore.backends._cluster` for what this backend shares with Dask's.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from manycore.backends._base import BackendOptions, register_backend
from manycore.backends._cluster import ClusterBackend, _Running
from manycore.backends._gpus import require_gpus, task_share
from manycore.backends._remote_run import Answer, run_remote

__all__ = ["RayBackend"]

# Ray's ObjectRef: ray is untyped here (its calls are Any), so named only.
ObjectRef = Any


# Pools using the Ray runtime that manycore started: the last one to close shuts it
# down (a runtime the program started itself is left alone).
_users = 0
_users_lock = threading.Lock()
_CONNECT_TIMEOUT = 5.0


def _check_reachable(address: str) -> None:
    """Fail fast, naming the address, where ``ray.init`` would wait for minutes."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), _CONNECT_TIMEOUT).close()
    except (OSError, ValueError) as exc:
        raise ConnectionError(
            f"address={address!r}: no Ray cluster answers there ({exc}); start one with "
            "`ray start --head`, or check the host and port"
        ) from None


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
                    _check_reachable(opts.address)
                    kwargs["address"] = opts.address
                else:
                    kwargs["num_cpus"] = opts.workers
                ray.init(**kwargs)
                _users = 1
                self._started = True
            elif _users > 0:  # manycore's own runtime: shared, closed by its last user
                _users += 1
                self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self._workers = max(1, cpus)  # the runtime's CPUs (workers= when it is ours)
        self._remote = ray.remote(**self._task_options())(run_remote)

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
        ref = self._remote.remote(*args)
        ref.future().add_done_callback(lambda _: self._finished(record))
        return ref

    def _outcome(self, handle: ObjectRef | None) -> Answer:
        answer: Answer = self._ray.get(handle, timeout=60)
        return answer

    def _stop(self, handle: ObjectRef | None, force: bool) -> None:
        if handle is None:
            return
        try:
            self._ray.cancel(handle, force=force)
        except Exception:  # already finished, or the runtime is going down
            pass

    def _alive(self) -> bool:
        return bool(self._ray.is_initialized())

    def _disconnect(self) -> None:
        global _users
        with _users_lock:
            if not self._started:
                return
            self._started = False
            _users -= 1
            if _users > 0:
                return
        self._ray.shutdown()
