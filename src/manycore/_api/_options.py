"""A pool's sizes and a call's options: how many workers and BLAS threads by
default, and the checked :class:`~manycore._scheduler.CallOptions` of one call (its
options over the pool's defaults; a bad one fails before any work)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar

from manycore._api import _validate as v
from manycore._core import BLAS_ENV, ERROR_POLICIES, cpu_budget
from manycore._scheduler import CallOptions
from manycore.backends import get_backend

__all__ = [
    "MapCall",
    "MapWork",
    "call_options",
    "default_blas_threads",
    "default_workers",
    "map_call",
]

T_co = TypeVar("T_co", covariant=True)


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


@dataclasses.dataclass(frozen=True)
class MapWork(Generic[T_co]):
    """What a map call runs: ``fn`` over the ``iterables`` zipped (``star``: each
    item of the one iterable holds fn's arguments); ``name``: the call's, for errors."""

    fn: Callable[..., T_co]
    iterables: tuple[Iterable[object], ...]
    star: bool = False
    name: str = "map"


@dataclasses.dataclass(frozen=True)
class MapCall:
    """A map call's checked options: the scheduler's, and where its finished
    items are kept (``checkpoint``, a path, and ``resume``; see ``Pool.map``)."""

    options: CallOptions
    checkpoint: str | None = None
    resume: bool | str = True


def map_call(defaults: CallOptions, args: Mapping[str, object]) -> MapCall:
    """A map call's options, taken by name from ``args`` (the call's ``locals()``,
    so that each option is named once, in the public signature) and checked over
    ``defaults``: the scheduler's options first, then the checkpoint's."""
    given = {f.name: args[f.name] for f in dataclasses.fields(CallOptions) if f.name in args}
    options = call_options(defaults, **given)
    resume = args.get("resume", True)
    checkpoint = v.check_checkpoint(args.get("checkpoint"), resume)
    return MapCall(options, checkpoint, resume if isinstance(resume, str) else bool(resume))


def call_options(
    defaults: CallOptions,
    *,
    chunksize: object = None,
    ordered: object = True,
    progress: object = False,
    stats: object = False,
    on_error: object = None,
    retries: object = None,
    retry_on: object = None,
    timeout: object = None,
) -> CallOptions:
    """One call's options checked over ``defaults`` (a pool's): a clear error
    before any work, the first bad option in this order named. ``on_error``,
    ``retries``, ``retry_on`` and ``timeout`` left at None keep the defaults'."""
    return dataclasses.replace(
        defaults,
        chunksize=v.check_positive_int(chunksize, "chunksize"),
        ordered=v.check_bool(ordered, "ordered"),
        progress=v.check_progress(progress),
        stats=v.check_bool(stats, "stats"),
        on_error=(
            defaults.on_error
            if on_error is None
            else v.check_choice(on_error, "on_error", ERROR_POLICIES)
        ),
        retries=defaults.retries if retries is None else v.check_count(retries, "retries"),
        retry_on=(
            defaults.retry_on if retry_on is None else v.check_exception_types(retry_on, "retry_on")
        ),
        timeout=defaults.timeout if timeout is None else v.check_timeout(timeout),
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
