"""``backend="processes"`` (the default): manycore's own process engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from contextlib import AbstractContextManager

from manycore._core import Batch
from manycore._engine import START_METHODS, EngineFuture, ProcessEngine, default_start_method
from manycore.backends._base import (
    Backend,
    BackendOptions,
    Done,
    backend_names,
    get_backend,
    register_backend,
)
from manycore.backends._gpus import Gpus, check_gpus, slot_envs

__all__ = ["ProcessBackend"]


@register_backend
class ProcessBackend(Backend):
    name = "processes"
    needs_pickling = True
    supports_kill = True
    replaces_workers = True
    accepts = frozenset({"start_method", "gpus"})

    @classmethod
    def check_options(cls, workers: int | None, given: Mapping[str, object]) -> int | None:
        """``start_method``: one this platform has; ``gpus``: devices this process
        sees, and by default one worker each (see :mod:`manycore.backends._gpus`)."""
        method = given.get("start_method")
        if method is not None and method not in START_METHODS:
            valid = ", ".join(repr(m) for m in START_METHODS)
            raise ValueError(
                f"start_method={method!r} is not available here; choose one of {valid}"
            )
        gpus: Gpus | None = given.get("gpus")  # type: ignore[assignment]  # checked by the API
        return workers if gpus is None else check_gpus(workers, gpus)

    @classmethod
    def misplaced(cls, name: str, value: object, backend: str) -> str:
        if name != "gpus":
            return super().misplaced(name, value, backend)
        takes = ", ".join(repr(n) for n in backend_names() if name in get_backend(n).accepts)
        return (
            f"gpus={value!r:.80} pins each worker to a device, which backend={backend!r} "
            f"cannot do (threads and coroutines share one process; some engines have no "
            f"device resources to ask for); use backend= one of {takes}"
        )

    @classmethod
    def describe(cls) -> dict[str, object]:
        """What ``manycore info`` reports of this backend."""
        return {"start_methods": list(START_METHODS)}

    def __init__(self, options: BackendOptions):
        super().__init__(options)
        self._engine = ProcessEngine(
            options.workers,
            options.start_method or default_start_method(),
            options.init,
            options.init_args,
            options.max_tasks_per_worker,
            options.max_memory_per_worker,
            options.blas_threads,
            options.exit,
            options.shared,
            slot_envs(options.gpus, options.workers),
        )

    def submit(self, batch: Batch, done: Done) -> None:
        self._engine.submit(batch, done)

    def new_future(self, origin: object = None) -> Future[object]:
        return EngineFuture(self._engine)

    def drive(self, ready: Callable[[], bool], deadline: float | None = None) -> bool:
        return self._engine.drive(ready, deadline)

    def passive(self) -> AbstractContextManager[None]:
        return self._engine.passive()

    def cancel(self, batch: Batch) -> bool:
        return self._engine.cancel(batch)

    def wake(self) -> None:
        self._engine.wake()

    def kill(self, batch: Batch) -> bool:
        return self._engine.kill(batch)

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        self._engine.shutdown(wait=wait, cancel_pending=cancel_pending)

    def terminate(self) -> None:
        self._engine.terminate()

    def pids(self) -> list[int]:
        return self._engine.pids()

    def restarts(self) -> dict[int | str, int]:
        return dict(self._engine.restarts_by_slot.items())
