"""Backends, registered by name. Importing this package registers the built-in ones."""

from manycore.backends._base import (
    Backend,
    BackendOptions,
    backend_names,
    get_backend,
    register_backend,
)
from manycore.backends.aio import AsyncioBackend
from manycore.backends.cluster_dask import DaskBackend
from manycore.backends.cluster_ray import RayBackend
from manycore.backends.processes import ProcessBackend
from manycore.backends.serial import SerialBackend
from manycore.backends.threads import ThreadBackend

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
