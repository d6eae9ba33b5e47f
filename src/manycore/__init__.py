"""manycore: run Python functions on every core, fast, without hangs.

>>> import manycore as mc
>>> mc.map(abs, [-1, -2, 3], backend="threads")
[1, 2, 3]
"""

from ._api import imap, map, shutdown_default_pools, starmap
from ._cpus import usable_cpus
from ._errors import (
    ManycoreError,
    PoolBroken,
    PoolClosed,
    RemoteError,
    RemoteTraceback,
    SerializationError,
    WorkerCrashed,
)
from ._launch import START_METHODS
from ._pool import Pool, PoolState
from .backends import Backend, BackendOptions, backend_names, register_backend

__version__ = "0.1.0"

__all__ = [
    "START_METHODS",
    "Backend",
    "BackendOptions",
    "ManycoreError",
    "Pool",
    "PoolBroken",
    "PoolClosed",
    "PoolState",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "WorkerCrashed",
    "__version__",
    "backend_names",
    "imap",
    "map",
    "register_backend",
    "shutdown_default_pools",
    "starmap",
    "usable_cpus",
]
