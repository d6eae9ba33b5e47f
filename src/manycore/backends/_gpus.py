"""``gpus=``: which device each worker gets, and what a cluster task asks for.

A pool's devices are shared evenly by its workers: worker slot ``i`` gets device
``i mod n`` of the ``n`` given (round-robin), so no device has more than
``ceil(workers / n)`` workers, and a replacement worker gets the device of the
slot it replaces. A process worker is pinned by its environment, set before it
imports anything (a GPU runtime reads the variable once, as it loads):

* ``CUDA_VISIBLE_DEVICES`` (NVIDIA CUDA: CuPy, PyTorch, JAX, Numba, PyCUDA) and
  ``HIP_VISIBLE_DEVICES`` (AMD ROCm/HIP) name the device;
* ``MANYCORE_GPU`` keeps the id as given, for :func:`manycore.worker_gpu`.

``ROCR_VISIBLE_DEVICES`` and Intel's ``ZE_AFFINITY_MASK`` are left alone: each
filters the devices again below the variables above, so setting both would pick
the wrong device (or none).

Ids count the devices this process sees: where ``CUDA_VISIBLE_DEVICES`` (or
``HIP_VISIBLE_DEVICES``) is set already, id ``k`` is its ``k``-th entry, so a pool
started inside a pinned worker stays on that worker's device.

On a cluster the engine places tasks on devices: each task asks for its share of
one device (``1 / ceil(workers / n)``) as a resource, ``GPU`` (Dask worker
resources, Ray's ``num_gpus``); ids mean nothing there, only a count is taken.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping

from manycore._core import GPU_VAR

__all__ = [
    "GPU_ENV",
    "check_cluster_gpus",
    "check_gpus",
    "device_ids",
    "require_gpus",
    "slot_envs",
    "task_share",
]

#: the variables that pin a worker process to its device (besides GPU_VAR)
GPU_ENV = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
# Where each variable's device list is read from in this process: HIP also
# honours CUDA_VISIBLE_DEVICES when its own variable is not set.
_SEEN_THROUGH: dict[str, tuple[str, ...]] = {
    "CUDA_VISIBLE_DEVICES": ("CUDA_VISIBLE_DEVICES",),
    "HIP_VISIBLE_DEVICES": ("HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"),
}

Gpus = int | tuple[int, ...]  # a count, or the ids (checked: see manycore._api._validate)


def device_ids(gpus: Gpus) -> tuple[int, ...]:
    """The ids ``gpus`` names: a count ``n`` is the first ``n`` devices."""
    return tuple(range(gpus)) if isinstance(gpus, int) else gpus


def check_gpus(workers: int | None, gpus: Gpus) -> int:
    """The workers a process pool on ``gpus`` has (by default one per device),
    after checking that each device is seen here and none would go unused."""
    ids = device_ids(gpus)
    for device in ids:
        _pin(device)  # raises for an id this process does not see
    if workers is not None and workers < len(ids):
        raise ValueError(
            f"gpus={_shown(gpus)} names {len(ids)} devices but workers={workers}: some would "
            f"get no worker; give workers of at least {len(ids)} (or leave it out: one "
            "per device), or fewer devices"
        )
    return len(ids) if workers is None else workers


def _shown(gpus: Gpus) -> str:
    """``gpus`` as the user most likely wrote it (ids as a list)."""
    return repr(list(gpus) if isinstance(gpus, tuple) else gpus)


def slot_envs(gpus: Gpus | None, workers: int) -> tuple[dict[str, str], ...]:
    """What each worker slot adds to its environment: its device, round-robin.
    Empty without ``gpus`` (no worker is pinned)."""
    if gpus is None:
        return ()
    ids = device_ids(gpus)
    return tuple(_pin(ids[slot % len(ids)]) for slot in range(workers))


def _pin(device: int) -> dict[str, str]:
    env = {GPU_VAR: str(device)}
    for name in GPU_ENV:
        env[name] = _as_seen(device, name)
    return env


def _as_seen(device: int, name: str) -> str:
    """Device ``device`` of this process, as a child's ``name`` must say it."""
    for source in _SEEN_THROUGH[name]:
        listed = os.environ.get(source)
        if listed is None:
            continue
        entries = [e.strip() for e in listed.split(",") if e.strip()]
        if device >= len(entries):
            raise ValueError(
                f"gpus: device {device} is not among the {len(entries)} this process "
                f"sees ({source}={listed!r}); ids count those devices from 0"
            )
        return entries[device]
    return str(device)


def task_share(gpus: Gpus | None, workers: int) -> float | None:
    """The part of one device each cluster task asks for, so that ``workers``
    tasks fit on the devices at once; None without ``gpus``."""
    if gpus is None:
        return None
    return 1 / math.ceil(workers / len(device_ids(gpus)))


def check_cluster_gpus(workers: int | None, given: Mapping[str, object]) -> int | None:
    """A cluster takes a count of devices (where tasks run is the engine's
    choice); a cluster the pool starts has one worker per device by default.
    Returns the workers."""
    gpus = given.get("gpus")
    if isinstance(gpus, tuple):
        raise ValueError(
            f"gpus={_shown(gpus)}: on a cluster the engine places tasks on its devices, so "
            f"device ids cannot be chosen; give a count (gpus={len(gpus)})"
        )
    existing = given.get("address") is not None or given.get("client") is not None
    if isinstance(gpus, int) and workers is None and not existing:
        return gpus
    return workers


def require_gpus(found: float, engine: str, how: str, close: Callable[[], None]) -> None:
    """Refuse a cluster pool with ``gpus=`` whose workers advertise ``found``
    GPUs in all (tasks asking for one would wait forever); ``close`` what was
    started first. ``how``: how to start workers that advertise them."""
    if found > 0:
        return
    close()
    raise ValueError(
        f"gpus= was given but no worker of the {engine} cluster advertises a GPU "
        f"resource, so no task could ever start: {how}"
    )
