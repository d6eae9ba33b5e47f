"""How many CPUs this process may really use.

``os.cpu_count()`` counts the machine's CPUs. A process may be pinned to fewer
(CPU affinity, ``taskset``) or limited by a cgroup quota (containers, Kubernetes,
``docker --cpus``); starting more workers than that only adds contention.
"""

from __future__ import annotations

import math
import os

from manycore._core._public import public

__all__ = ["cpu_budget", "pools_per_call", "set_worker_share", "usable_cpus", "worker_share"]

__all__ = [
    "BLAS_ENV",
    "cpu_budget",
    "pools_per_call",
    "set_worker_share",
    "usable_cpus",
    "worker_share",
]

# The variables that BLAS and OpenMP libraries read for their thread count when
# they load. (Libraries already loaded, in a forked worker, are limited with
# threadpoolctl instead; see _worker.)
BLAS_ENV = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "BLIS_NUM_THREADS",
)


def affinity() -> int | None:
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:
        return None
    try:
        return len(getter(0)) or None
    except OSError:
        return None


def cgroup_quota(root: str | os.PathLike[str] = "/sys/fs/cgroup") -> int | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max``, else v1 CFS quota), if limited."""
    try:
        quota, period = _read(root, "cpu.max").split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        q = int(_read(root, "cpu", "cpu.cfs_quota_us"))
        p = int(_read(root, "cpu", "cpu.cfs_period_us"))
        if q > 0 and p > 0:
            return max(1, math.ceil(q / p))
    except (OSError, ValueError):
        pass
    return None


def _read(*path: str | os.PathLike[str]) -> str:
    # (Not pathlib: every worker imports this module, and pathlib costs it ~3 ms.)
    with open(os.path.join(*path), encoding="utf-8") as f:
        return f.read()


@public
def usable_cpus() -> int:
    """CPUs available to this process: affinity and cgroup quota respected, at least 1."""
    limits = [n for n in (os.cpu_count(), affinity(), cgroup_quota()) if n]
    return max(1, min(limits)) if limits else 1


# Set in a manycore worker process: the CPUs that worker may use, its share of the
# machine (the pool's BLAS thread count: CPUs divided by workers, by default).
_worker_share: int | None = None
_pools_per_call = False


def set_worker_share(cpus: int, pools_per_call: bool = False) -> None:
    """This process is a worker that may use ``cpus``. ``pools_per_call``: it
    outlives the pools it serves (a cluster's worker), so a pool that a nested
    call starts here lasts for that call only."""
    global _worker_share, _pools_per_call
    _worker_share = max(1, cpus)
    _pools_per_call = pools_per_call


def worker_share() -> int | None:
    """In a manycore worker process, the CPUs it may use; None elsewhere."""
    return _worker_share


def pools_per_call() -> bool:
    """In a cluster's worker process: pools that nested calls start last for the call."""
    return _pools_per_call


def cpu_budget() -> int:
    """CPUs that workers started from here may use between them: inside a worker
    process only its share (nested pools must not multiply the processes and
    threads on the machine), elsewhere :func:`usable_cpus`."""
    return usable_cpus() if _worker_share is None else _worker_share
