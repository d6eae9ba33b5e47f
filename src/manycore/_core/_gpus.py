"""The GPU a worker process was pinned to, as its tasks see it.

The processes backend starts each worker of a ``Pool(gpus=...)`` with its device
in the environment (see :mod:`manycore.backends._gpus`); reading it back from
there works the same after ``spawn``, ``fork`` and ``forkserver``, in a
replacement worker, and in a pool started from a task (which inherits it).
"""

from __future__ import annotations

import os

from manycore._core._public import public

__all__ = ["GPU_VAR", "worker_gpu"]

#: the device id (as given to ``gpus=``) of the worker this process is
GPU_VAR = "MANYCORE_GPU"


@public
def worker_gpu() -> int | None:
    """Inside a task of a ``Pool(gpus=...)``: the id of the GPU this worker was
    pinned to, as given to ``gpus=`` (the GPU libraries in the worker see only
    that device, as their device 0: ``cuda:0``). None where no worker was pinned:
    a pool without ``gpus``, a thread, the main process."""
    value = os.environ.get(GPU_VAR)
    return int(value) if value else None
