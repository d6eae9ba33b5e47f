"""``manycore info``: what this machine and this Python give manycore.

CPUs (counted, allowed by affinity, allowed by a cgroup quota, and what manycore
uses), start methods, BLAS/OpenMP libraries and their threads, whether this is a
free-threading build, shared memory, and which backends can run here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import sysconfig
from typing import TypedDict, cast

__all__ = ["collect", "render"]

# (a key that is no identifier: the functional form)
Cpus = TypedDict(
    "Cpus",
    {"os.cpu_count": int | None, "affinity": int | None, "cgroup_quota": int | None, "usable": int},
)


class Blas(TypedDict):
    library: str | None
    threads: int | None
    version: str | None


class Facts(TypedDict):
    manycore: str
    python: str
    platform: str
    free_threading_build: bool
    gil_enabled: bool
    cpus: Cpus
    start_methods: list[str]
    shared_memory: bool
    blas: list[Blas]
    backends: dict[str, bool]


def collect() -> Facts:
    """The facts, as plain data (``manycore info --json`` prints them)."""
    from manycore import __version__
    from manycore._core import cpus
    from manycore._transport import shmem
    from manycore.backends import backend_names, get_backend

    classes = [get_backend(name) for name in backend_names()]
    facts: dict[str, object] = {
        "manycore": __version__,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "free_threading_build": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "gil_enabled": _gil_enabled(),
        "cpus": {
            "os.cpu_count": os.cpu_count(),
            "affinity": cpus.affinity(),
            "cgroup_quota": cpus.cgroup_quota(),
            "usable": cpus.usable_cpus(),
        },
        "shared_memory": shmem.available(),
        "blas": _blas(),
        "backends": {cls.name: _installed(cls.needs_package) for cls in classes},
    }
    for cls in classes:
        facts.update(cls.describe())  # the process engine's start methods
    return cast("Facts", facts)


def _installed(package: tuple[str, str] | None) -> bool:
    return package is None or importlib.util.find_spec(package[0]) is not None


def _gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def _blas() -> list[Blas]:
    """BLAS/OpenMP libraries loaded once NumPy is imported (threadpoolctl)."""
    if importlib.util.find_spec("numpy") is None:
        return []
    import numpy  # noqa: F401 - loads its BLAS, which threadpoolctl then sees
    from threadpoolctl import threadpool_info

    return [
        {
            "library": lib.get("internal_api"),
            "threads": lib.get("num_threads"),  # a count: not a backend name
            "version": lib.get("version"),
        }
        for lib in threadpool_info()
    ]


def render(facts: Facts) -> str:
    """The facts as aligned text for a terminal."""
    cpus = facts["cpus"]
    lines = [
        f"manycore {facts['manycore']} on {facts['python']} ({facts['platform']})",
        f"  free-threading build: {'yes' if facts['free_threading_build'] else 'no'}"
        f" (GIL {'on' if facts['gil_enabled'] else 'off'})",
        f"  CPUs: {cpus['usable']} usable (os.cpu_count {cpus['os.cpu_count']}, "
        f"affinity {cpus['affinity'] or '-'}, cgroup quota {cpus['cgroup_quota'] or 'none'})",
        f"  start methods: {', '.join(facts['start_methods'])}",
        f"  shared memory: {'yes' if facts['shared_memory'] else 'no'}",
    ]
    if facts["blas"]:
        for lib in facts["blas"]:
            name = f"{lib['library']} {lib['version'] or ''}".rstrip()
            threads = lib["threads"]  # not a backend name
            lines.append(f"  BLAS/OpenMP: {name} — {threads} threads in this process")
    else:
        lines.append("  BLAS/OpenMP: none loaded (NumPy not installed)")
    from manycore.backends import get_backend

    for name, ok in facts["backends"].items():
        hint = get_backend(name).needs_package or ("", "")
        status = "ready" if ok else f"not installed (pip install '{hint[1]}')"
        lines.append(f"  backend {name}: {status}")
    return "\n".join(lines)


def main(as_json: bool) -> int:
    facts = collect()
    print(json.dumps(facts, indent=2) if as_json else render(facts))
    return 0
