"""A pool's sizes and a call's options: how many workers and BLAS threads by
default, and the checked :class:`~manycore._scheduler.CallOptions` of one call (its
options over the pool's defaults; a bad one fails before any work)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from manycore._api import _validate as v
from manycore._core import BLAS_ENV, ERROR_POLICIES, cpu_budget
from manycore._scheduler import CallOptions
from manycore.backends import get_backend

__all__ = ["call_policy", "default_blas_threads", "default_workers", "map_options"]


def default_workers(backend: str) -> int:
    """Workers when none are asked for: the backend's choice (the CPUs, more
    threads for I/O, many coroutines on an event loop)."""
    return get_backend(backend).default_workers()


def default_blas_threads(workers: int) -> int:
    """Threads each BLAS/OpenMP library may use in a worker: workers x threads
    should not exceed the CPUs (no oversubscription; in a worker process, its
    share of them); a lower limit the user set in the environment is kept."""
    threads = max(1, cpu_budget() // workers)
    return min(threads, _env_threads() or threads)


def map_options(
    defaults: CallOptions,
    chunksize: Any,
    ordered: Any,
    on_error: Any,
    retries: Any,
    retry_on: Any,
    timeout: Any,
    progress: Any = False,
    stats: Any = False,
) -> CallOptions:
    """A map call's options checked (clear errors before any work) over ``defaults``."""
    chunksize = v.check_positive_int(chunksize, "chunksize")
    v.check_bool(ordered, "ordered")
    v.check_progress(progress)
    v.check_bool(stats, "stats")
    policy = call_policy(defaults, ordered, on_error, retries, retry_on, timeout)
    return dataclasses.replace(policy, progress=progress, stats=stats, chunksize=chunksize)


def call_policy(
    base: CallOptions, ordered: bool, on_error: Any, retries: Any, retry_on: Any, timeout: Any
) -> CallOptions:
    """``base`` with the options that are not None checked and put in."""
    if on_error is not None:
        v.check_choice(on_error, "on_error", ERROR_POLICIES)
    if retries is not None:
        retries = v.check_count(retries, "retries")
    if retry_on is not None:
        retry_on = v.check_exception_types(retry_on, "retry_on")
    limit = base.timeout if timeout is None else v.check_timeout(timeout)
    return CallOptions(
        ordered,
        base.on_error if on_error is None else on_error,
        base.retries if retries is None else retries,
        base.retry_on if retry_on is None else retry_on,
        limit,
    )


def _env_threads() -> int | None:
    """The lowest thread count set by OMP_NUM_THREADS and friends, if any."""
    found = []
    for name in BLAS_ENV:
        try:
            found.append(int(os.environ.get(name, "")))
        except ValueError:
            continue
    return min((n for n in found if n > 0), default=None)
