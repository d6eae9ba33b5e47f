"""``backend="dask"``: batches run as tasks of a Dask distributed cluster.

``address=`` names a running scheduler (``"tcp://host:8786"``); ``client=`` reuses
a ``distributed.Client``; with neither, the pool starts a ``LocalCluster`` of
``workers`` single-threaded worker processes on the loopback interface and
closes it with the pool. See :mod:`manycore.backends._cluster` for what this
backend shares with Ray's.
"""

from __future__ import annotations

from typing import Any

from manycore.backends._base import BackendOptions, register_backend
from manycore.backends._cluster import ClusterBackend, _Running
from manycore.backends._gpus import require_gpus, task_share
from manycore.backends._remote_run import Answer, run_remote

__all__ = ["DaskBackend"]

# distributed's Client and Future: untyped (their calls are Any), so named only.
Client = Any
Future = Any


def _import() -> Any:  # the distributed module
    try:
        import distributed
    except ImportError:
        raise ImportError(
            "backend='dask' needs dask.distributed: pip install 'dask[distributed]'"
        ) from None
    return distributed


@register_backend
class DaskBackend(ClusterBackend[Future]):
    name = "dask"
    supports_kill = False  # Dask cannot stop a task that runs
    accepts = frozenset({"address", "client", "gpus"})
    # The engine's own package: true however manycore was installed.
    needs_package = ("distributed", "dask[distributed]")

    @classmethod
    def misplaced(cls, name: str, value: object, backend: str) -> str:
        if name != "client":
            return super().misplaced(name, value, backend)
        return f"client= is a distributed.Client, for backend='dask' only, not {backend!r}"

    def __init__(self, options: BackendOptions):
        self._workers = options.workers
        self._client: Client = None
        self._owned: list[Client] = []  # what this pool started (a cluster too): closed with it
        self._resources: dict[str, float] | None = None  # each task's (gpus=: its GPU share)
        super().__init__(options)

    def _connect(self) -> None:
        distributed = _import()
        opts = self.options
        if opts.client is not None:
            self._client = opts.client
        elif opts.address is not None:
            self._client = distributed.Client(opts.address, set_as_default=False)
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
                    dashboard_address=":0",
                )
            self._owned.append(cluster)
            self._client = distributed.Client(cluster, set_as_default=False)
            self._owned.insert(0, self._client)
        if opts.client is not None or opts.address is not None:
            threads = sum(self._client.nthreads().values())
            self._workers = max(1, int(threads))
        else:
            self._workers = opts.workers
        self._resources = self._gpu_resources()

    def _gpu_resources(self) -> dict[str, float] | None:
        """``gpus=``: each task asks for its share of a GPU, which only workers
        that advertise a ``GPU`` resource can give (refused up front if none does)."""
        share = task_share(self.options.gpus, self._workers)
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
        return self._workers

    def _put(self, obj: object) -> Future:
        # In a list: scatter() would split a list, tuple or dict into its elements.
        return self._client.scatter([obj], broadcast=False, hash=False)[0]

    def _send(self, args: tuple[object, ...], record: _Running[Future]) -> Future:
        future = self._client.submit(
            run_remote, *args, pure=False, retries=0, resources=self._resources
        )
        future.add_done_callback(lambda _: self._finished(record))
        return future

    def _outcome(self, handle: Future) -> Answer:
        answer: Answer = handle.result()
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

    def _disconnect(self) -> None:
        for thing in self._owned:
            try:
                thing.close()
            except Exception:  # closing twice, a scheduler already gone: nothing to do
                pass
        self._owned = []
