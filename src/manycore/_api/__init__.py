"""What ``import manycore`` offers for running work: ``Pool``, ``Executor`` (a
strict ``concurrent.futures.Executor``), ``mc.map`` and its
siblings, the default pools, ``amap``, ``backend="auto"``, ``mc.profile``, and the
argument checks that run before any work starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from manycore._core import lazy_door

__all__ = [
    "Executor",
    "Lease",
    "Pool",
    "PoolState",
    "lease_default_pool",
    "validate",
]

# The door: names other layers use, loaded on first use (see manycore._core._door).
__getattr__, __dir__ = lazy_door(
    __name__,
    {
        "Executor": "_executor",
        "Lease": "_calls",
        "Pool": "_pool",
        "PoolState": "_pool",
        "lease_default_pool": "_calls",
    },
    modules={
        "validate": "_validate",
    },
)

if TYPE_CHECKING:
    from manycore._api import _validate as validate
    from manycore._api._calls import Lease, lease_default_pool
    from manycore._api._executor import Executor
    from manycore._api._pool import Pool, PoolState
