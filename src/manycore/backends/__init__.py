"""Backends, registered by name. Importing this package registers the built-in ones."""

from ._base import Backend, BackendOptions, backend_names, get_backend, register_backend
from .aio import AsyncioBackend
from .cluster_dask import DaskBackend
from .cluster_ray import RayBackend
from .processes import ProcessBackend
from .serial import SerialBackend
from .threads import ThreadBackend

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
