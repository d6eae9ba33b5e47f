"""Backends, registered by name; a built-in one is imported the first time it is named."""

from __future__ import annotations

import importlib
from typing import Any

from manycore.backends._base import (
    Backend,
    BackendOptions,
    backend_names,
    get_backend,
    register_backend,
)

__all__ = [
    "AsyncioBackend",
    "Backend",
    "BackendOptions",
    "DaskBackend",
    "ProcessBackend",
    "RayBackend",
    "SerialBackend",
    "ThreadBackend",
    "backend_names",
    "get_backend",
    "register_backend",
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
