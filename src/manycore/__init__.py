"""manycore: run Python functions on every core, fast, without hangs.

>>> import manycore as mc
>>> mc.map(abs, [-1, -2, 3], backend="threads")
[1, 2, 3]

Names are loaded on first use (PEP 562): a worker process imports only the few
modules it runs, which keeps worker start-up short, and ``import manycore`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "START_METHODS",
    "Backend",
    "BackendOptions",
    "CheckpointMismatch",
    "Counter",
    "Failure",
    "Lock",
    "ManycoreError",
    "Pool",
    "PoolBroken",
    "PoolClosed",
    "PoolState",
    "Profile",
    "Queue",
    "RemoteError",
    "RemoteTraceback",
    "Semaphore",
    "SerializationError",
    "SlowItem",
    "Stats",
    "Task",
    "TaskFuture",
    "TaskGraph",
    "TaskTimeout",
    "UpstreamFailed",
    "Value",
    "WorkerCrashed",
    "WorkerStats",
    "__version__",
    "aimap",
    "amap",
    "as_completed",
    "backend_names",
    "graph",
    "imap",
    "map",
    "profile",
    "register_backend",
    "shared",
    "shared_array",
    "shutdown_default_pools",
    "starmap",
    "task",
    "usable_cpus",
    "wait",
    "worker_state",
]

# Where each public name lives; resolved by __getattr__ on first access.
_SOURCES = {
    "aimap": "_amap",
    "amap": "_amap",
    "imap": "_api",
    "map": "_api",
    "shutdown_default_pools": "_api",
    "starmap": "_api",
    "usable_cpus": "_cpus",
    "CheckpointMismatch": "_errors",
    "ManycoreError": "_errors",
    "PoolBroken": "_errors",
    "PoolClosed": "_errors",
    "RemoteError": "_errors",
    "RemoteTraceback": "_errors",
    "SerializationError": "_errors",
    "TaskTimeout": "_errors",
    "UpstreamFailed": "_errors",
    "WorkerCrashed": "_errors",
    "START_METHODS": "_launch",
    "Failure": "_failure",
    "Pool": "_pool",
    "PoolState": "_pool",
    "Profile": "_profile",
    "profile": "_profile",
    "Backend": "backends",
    "BackendOptions": "backends",
    "backend_names": "backends",
    "register_backend": "backends",
    "shared_array": "_shared",
    "shared": "_state",
    "SlowItem": "_stats",
    "Stats": "_stats",
    "WorkerStats": "_stats",
    "Counter": "_sync",
    "Lock": "_sync",
    "Queue": "_sync",
    "Semaphore": "_sync",
    "Value": "_sync",
    "worker_state": "_state",
    "Task": "_taskdef",
    "as_completed": "_taskdef",
    "task": "_taskdef",
    "wait": "_taskdef",
    "TaskGraph": "_taskgraph",
    "graph": "_taskgraph",
    "TaskFuture": "_tasks",
}

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, eagerly
    from ._amap import aimap, amap
    from ._api import imap, map, shutdown_default_pools, starmap
    from ._cpus import usable_cpus
    from ._errors import (
        CheckpointMismatch,
        ManycoreError,
        PoolBroken,
        PoolClosed,
        RemoteError,
        RemoteTraceback,
        SerializationError,
        TaskTimeout,
        UpstreamFailed,
        WorkerCrashed,
    )
    from ._failure import Failure
    from ._launch import START_METHODS
    from ._pool import Pool, PoolState
    from ._profile import Profile, profile
    from ._shared import shared_array
    from ._state import shared, worker_state
    from ._stats import SlowItem, Stats, WorkerStats
    from ._sync import Counter, Lock, Queue, Semaphore, Value
    from ._taskdef import Task, as_completed, task, wait
    from ._taskgraph import TaskGraph, graph
    from ._tasks import TaskFuture
    from .backends import Backend, BackendOptions, backend_names, register_backend


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'manycore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{source}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
