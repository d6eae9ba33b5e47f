"""Backends, registered by name; a built-in one is imported the first time it is named.

What a backend of one's own needs (see docs/backends.md): :class:`Backend` to
subclass, :func:`register_backend`, and the :class:`Batch` it runs with
:func:`run_batch`, reporting a :class:`BatchResult` to ``done``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from manycore._core import Batch, BatchResult, run_batch
from manycore.backends._base import (
    DEFAULT_BACKEND,
    Backend,
    BackendOptions,
    Done,
    backend_for,
    backend_names,
    get_backend,
    is_async_callable,
    refuse_option,
    register_backend,
)

__all__ = [
    "DEFAULT_BACKEND",
    "AsyncioBackend",
    "Backend",
    "BackendOptions",
    "Batch",
    "BatchResult",
    "CeleryBackend",
    "DaskBackend",
    "Done",
    "IPyParallelBackend",
    "MPIBackend",
    "ProcessBackend",
    "RayBackend",
    "SerialBackend",
    "SparkBackend",
    "ThreadBackend",
    "awaited_from",
    "backend_for",
    "backend_names",
    "get_backend",
    "is_async_callable",
    "refuse_option",
    "register_backend",
    "run_batch",
]

_LAZY = {  # loaded when first asked for: each loads its engine
    "awaited_from": "_caller_loop",
    "AsyncioBackend": "aio",
    "CeleryBackend": "celery",
    "DaskBackend": "cluster_dask",
    "IPyParallelBackend": "ipyparallel",
    "MPIBackend": "mpi",
    "ProcessBackend": "processes",
    "RayBackend": "cluster_ray",
    "SerialBackend": "serial",
    "SparkBackend": "spark",
    "ThreadBackend": "threads",
}

if TYPE_CHECKING:
    from manycore.backends._caller_loop import awaited_from
    from manycore.backends.aio import AsyncioBackend
    from manycore.backends.celery import CeleryBackend
    from manycore.backends.cluster_dask import DaskBackend
    from manycore.backends.cluster_ray import RayBackend
    from manycore.backends.ipyparallel import IPyParallelBackend
    from manycore.backends.mpi import MPIBackend
    from manycore.backends.processes import ProcessBackend
    from manycore.backends.serial import SerialBackend
    from manycore.backends.spark import SparkBackend
    from manycore.backends.threads import ThreadBackend


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
    return getattr(module, name)
