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
    "mp_pool",
    "mp_results",
    "register_joblib",
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
        "register_joblib": "_joblib",
    },
    modules={
        "mp_pool": "_mp_pool",
        "mp_results": "_mp_results",
        "validate": "_validate",
    },
)

if TYPE_CHECKING:
    from manycore._api import _mp_pool as mp_pool
    from manycore._api import _mp_results as mp_results
    from manycore._api import _validate as validate
    from manycore._api._calls import Lease, lease_default_pool
    from manycore._api._executor import Executor
    from manycore._api._joblib import register_joblib
    from manycore._api._pool import Pool, PoolState
