"""manycore: run Python functions on every core, fast, without hangs.

>>> import manycore as mc
>>> mc.map(abs, [-1, -2, 3], backend="threads")
[1, 2, 3]

Names are loaded on first use (PEP 562): a worker process imports only the few
modules it runs, which keeps worker start-up short, and ``import manycore`` is cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = [
    "START_METHODS",
    "Backend",
    "BackendOptions",
    "CheckpointMismatch",
    "Counter",
    "Executor",
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
    "register_joblib",
    "shared",
    "shared_array",
    "shutdown_default_pools",
    "starmap",
    "task",
    "usable_cpus",
    "wait",
    "worker_gpu",
    "worker_state",
]

# Where each public name lives; resolved by __getattr__ on first access.
_SOURCES = {
    "aimap": "_api._amap",
    "amap": "_api._amap",
    "imap": "_api._calls",
    "map": "_api._calls",
    "shutdown_default_pools": "_api._calls",
    "starmap": "_api._calls",
    "usable_cpus": "_core._cpus",
    "CheckpointMismatch": "_core._errors",
    "ManycoreError": "_core._errors",
    "PoolBroken": "_core._broken",
    "PoolClosed": "_core._errors",
    "RemoteError": "_core._errors",
    "RemoteTraceback": "_core._errors",
    "SerializationError": "_core._errors",
    "TaskTimeout": "_core._errors",
    "UpstreamFailed": "_core._errors",
    "WorkerCrashed": "_core._broken",
    "START_METHODS": "_engine._launch",
    "Failure": "_core._failure",
    "Executor": "_api._executor",
    "Pool": "_api._pool",
    "PoolState": "_api._pool",
    "Profile": "_api._profile",
    "register_joblib": "_api._joblib",
    "profile": "_api._profile",
    "Backend": "backends",
    "BackendOptions": "backends",
    "backend_names": "backends",
    "register_backend": "backends",
    "shared_array": "_transport._shared",
    "shared": "_core._state",
    "SlowItem": "_observe._stats",
    "Stats": "_observe._stats",
    "WorkerStats": "_observe._stats",
    "Counter": "_transport._sync",
    "Lock": "_transport._sync",
    "Queue": "_transport._sync",
    "Semaphore": "_transport._sync",
    "Value": "_transport._sync",
    "worker_state": "_core._state",
    "worker_gpu": "_core._gpus",
    "Task": "_tasks._define",
    "as_completed": "_tasks._define",
    "task": "_tasks._define",
    "wait": "_tasks._define",
    "TaskGraph": "_tasks._graph",
    "graph": "_tasks._graph",
    "TaskFuture": "_tasks._nodes",
}

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, eagerly
    from ._api._amap import aimap, amap
    from ._api._calls import imap, map, shutdown_default_pools, starmap
    from ._api._executor import Executor
    from ._api._joblib import register_joblib
    from ._api._pool import Pool, PoolState
    from ._api._profile import Profile, profile
    from ._core._broken import PoolBroken, WorkerCrashed
    from ._core._cpus import usable_cpus
    from ._core._errors import (
        CheckpointMismatch,
        ManycoreError,
        PoolClosed,
        RemoteError,
        RemoteTraceback,
        SerializationError,
        TaskTimeout,
        UpstreamFailed,
    )
    from ._core._failure import Failure
    from ._core._gpus import worker_gpu
    from ._core._state import shared, worker_state
    from ._engine._launch import START_METHODS
    from ._observe._stats import SlowItem, Stats, WorkerStats
    from ._tasks._define import Task, as_completed, task, wait
    from ._tasks._graph import TaskGraph, graph
    from ._tasks._nodes import TaskFuture
    from ._transport._shared import shared_array
    from ._transport._sync import Counter, Lock, Queue, Semaphore, Value
    from .backends import Backend, BackendOptions, backend_names, register_backend


def __getattr__(name: str) -> object:  # (the names above have their own types)
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'manycore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{source}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
