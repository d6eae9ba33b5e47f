"""``import manycore.multiprocessing as multiprocessing``: the standard module's
spelling, with a :class:`Pool` that runs on manycore's engine.

The pool is manycore's (see ``docs/migrate.md``): a worker that dies fails only the
result it ran, with :class:`manycore.WorkerCrashed`, where the standard pool waits
for ever; functions and arguments that plain pickle refuses (lambdas, closures,
functions of ``__main__``) go with cloudpickle under every start method. The other
names are the standard module's own, re-exported unchanged: manycore adds nothing
to them.
"""

from __future__ import annotations

from multiprocessing import (
    Array,
    AuthenticationError,
    Barrier,
    BoundedSemaphore,
    BufferTooShort,
    Condition,
    Event,
    JoinableQueue,
    Lock,
    Manager,
    Pipe,
    Process,
    ProcessError,
    Queue,
    RawArray,
    RawValue,
    RLock,
    Semaphore,
    SimpleQueue,
    TimeoutError,
    Value,
    active_children,
    cpu_count,
    current_process,
    freeze_support,
    get_all_start_methods,
    get_context,
    get_logger,
    get_start_method,
    log_to_stderr,
    parent_process,
    set_executable,
    set_forkserver_preload,
    set_start_method,
)

from manycore._api import mp_pool, mp_results

Pool = mp_pool.Pool
AsyncResult = mp_results.AsyncResult
ApplyResult = mp_results.ApplyResult
MapResult = mp_results.MapResult
IMapIterator = mp_results.IMapIterator
IMapUnorderedIterator = mp_results.IMapUnorderedIterator

__all__ = [
    "ApplyResult",
    "Array",
    "AsyncResult",
    "AuthenticationError",
    "Barrier",
    "BoundedSemaphore",
    "BufferTooShort",
    "Condition",
    "Event",
    "IMapIterator",
    "IMapUnorderedIterator",
    "JoinableQueue",
    "Lock",
    "Manager",
    "MapResult",
    "Pipe",
    "Pool",
    "Process",
    "ProcessError",
    "Queue",
    "RLock",
    "RawArray",
    "RawValue",
    "Semaphore",
    "SimpleQueue",
    "TimeoutError",
    "Value",
    "active_children",
    "cpu_count",
    "current_process",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_start_method",
    "log_to_stderr",
    "parent_process",
    "set_executable",
    "set_forkserver_preload",
    "set_start_method",
]
