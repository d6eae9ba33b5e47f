"""The vocabulary every layer shares: errors (one helper per message), the batch
contract between scheduler and backends (``Batch``/``BatchResult``), ``Failure``,
remote tracebacks, awaitable futures, CPU counts and the worker's task state.

Imports nothing else of manycore. Other layers use only the names below."""

from __future__ import annotations

from manycore._core._door import lazy_door

__all__ = [
    "BLAS_ENV",
    "ERROR_POLICIES",
    "GPU_VAR",
    "AwaitableFuture",
    "Batch",
    "BatchResult",
    "CheckpointMismatch",
    "Deadlines",
    "Done",
    "ErrorWire",
    "Failure",
    "PoolBroken",
    "PoolClosed",
    "SerializationError",
    "TaskTimeout",
    "UpstreamFailed",
    "WorkerCrashed",
    "bad_wait_timeout",
    "closed_at_exit",
    "cpu_budget",
    "cpus",
    "describe_exit",
    "from_user_code",
    "init_raised",
    "is_pool_broken",
    "is_worker_crash",
    "lazy_door",
    "pack_exception",
    "pinned",
    "pool_closed",
    "pool_of_another_process",
    "public",
    "rebuild",
    "run_batch",
    "run_chunk",
    "run_tracked",
    "set_cause",
    "tag_with_index",
    "task_state",
    "timed_out",
    "usable_cpus",
    "worker_share",
]

# The door: names other layers use, loaded on first use (see manycore._core._door).
__getattr__, __dir__ = lazy_door(
    __name__,
    {
        "AwaitableFuture": "_futures",
        "BLAS_ENV": "_cpus",
        "Batch": "_batch",
        "BatchResult": "_batch",
        "CheckpointMismatch": "_errors",
        "Deadlines": "_deadlines",
        "Done": "_batch",
        "ErrorWire": "_remote",
        "ERROR_POLICIES": "_failure",
        "Failure": "_failure",
        "GPU_VAR": "_gpus",
        "PoolBroken": "_broken",
        "PoolClosed": "_errors",
        "SerializationError": "_errors",
        "TaskTimeout": "_errors",
        "UpstreamFailed": "_errors",
        "WorkerCrashed": "_broken",
        "bad_wait_timeout": "_errors",
        "closed_at_exit": "_errors",
        "cpu_budget": "_cpus",
        "describe_exit": "_errors",
        "from_user_code": "_batch",
        "init_raised": "_broken",
        "is_pool_broken": "_errors",
        "is_worker_crash": "_errors",
        "lazy_door": "_door",
        "pack_exception": "_remote",
        "pinned": "_batch",
        "pool_closed": "_errors",
        "pool_of_another_process": "_errors",
        "public": "_public",
        "rebuild": "_remote",
        "run_batch": "_batch",
        "run_chunk": "_batch",
        "run_tracked": "_batch",
        "set_cause": "_errors",
        "tag_with_index": "_remote",
        "timed_out": "_errors",
        "usable_cpus": "_cpus",
        "worker_share": "_cpus",
    },
    modules={
        "cpus": "_cpus",
        "task_state": "_state",
    },
)

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from manycore._core import _cpus as cpus
    from manycore._core import _state as task_state
    from manycore._core._batch import (
        Batch,
        BatchResult,
        Done,
        from_user_code,
        pinned,
        run_batch,
        run_chunk,
        run_tracked,
    )
    from manycore._core._broken import PoolBroken, WorkerCrashed, init_raised
    from manycore._core._cpus import BLAS_ENV, cpu_budget, usable_cpus, worker_share
    from manycore._core._deadlines import Deadlines
    from manycore._core._door import lazy_door
    from manycore._core._errors import (
        CheckpointMismatch,
        PoolClosed,
        SerializationError,
        TaskTimeout,
        UpstreamFailed,
        bad_wait_timeout,
        closed_at_exit,
        describe_exit,
        is_pool_broken,
        is_worker_crash,
        pool_closed,
        pool_of_another_process,
        set_cause,
        timed_out,
    )
    from manycore._core._failure import ERROR_POLICIES, Failure
    from manycore._core._futures import AwaitableFuture
    from manycore._core._gpus import GPU_VAR
    from manycore._core._public import public
    from manycore._core._remote import ErrorWire, pack_exception, rebuild, tag_with_index
