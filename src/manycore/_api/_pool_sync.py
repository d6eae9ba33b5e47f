"""A pool's shared primitives: locks, semaphores, values, counters and queues its
tasks can share, made by the pool's backend (the engine's own on a cluster)."""

from __future__ import annotations

from typing import Any

from manycore._api import _validate as v
from manycore.backends import Backend

__all__ = ["SharedPrimitives"]


class SharedPrimitives:
    """The ``Lock()``, ``Semaphore()``, ``Value()``, ``Counter()`` and ``Queue()``
    methods of :class:`manycore.Pool`."""

    _backend: Backend

    def Lock(self) -> Any:
        """A lock this pool's tasks can share: an ``mc.Lock`` on this machine, the
        engine's own on ``backend="dask"``/``"ray"`` (it works across machines)."""
        return self._backend.make_sync("Lock", ())

    def Semaphore(self, value: int = 1) -> Any:
        """A semaphore for this pool's tasks (see :meth:`Lock`)."""
        v.check_count(value, "value")
        return self._backend.make_sync("Semaphore", (value,))

    def Value(self, typecode: str = "q", value: Any = 0) -> Any:
        """A shared value for this pool's tasks (see :meth:`Lock`)."""
        return self._backend.make_sync("Value", (typecode, value))

    def Counter(self, value: int = 0) -> Any:
        """A counter for this pool's tasks, ``increment()`` without lost updates."""
        return self._backend.make_sync("Counter", (value,))

    def Queue(self, maxsize: int = 0) -> Any:
        """A queue for this pool's tasks (see :meth:`Lock`)."""
        v.check_count(maxsize, "maxsize")
        return self._backend.make_sync("Queue", (maxsize,))
