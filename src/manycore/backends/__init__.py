"""Backends, registered by name; a built-in one is imported the first time it is named.

What a backend of one's own needs (see docs/backends.md): :class:`Backend` to
subclass, :func:`register_backend`, and the :class:`Batch` it runs with
:func:`run_batch`, reporting a :class:`BatchResult` to ``done``."""

from __future__ import annotations

import importlib
from typing import Any

from manycore._core._batch import Batch, BatchResult, run_batch
from manycore.backends._base import (
    DEFAULT_BACKEND,
    Backend,
    BackendOptions,
    Done,
    backend_for,
    backend_names,
    get_backend,
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
    "DaskBackend",
    "Done",
    "ProcessBackend",
    "RayBackend",
    "SerialBackend",
    "ThreadBackend",
    "backend_for",
    "backend_names",
    "get_backend",
    "refuse_option",
    "register_backend",
    "run_batch",
]

_CLASSES = {
    "AsyncioBackend": "aio",
    "DaskBackend": "cluster_dask",
    "ProcessBackend": "processes",
    "RayBackend": "cluster_ray",
    "SerialBackend": "serial",
    "ThreadBackend": "threads",
}


def __getattr__(name: str) -> Any:
    if name not in _CLASSES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_CLASSES[name]}")
    return getattr(module, name)
