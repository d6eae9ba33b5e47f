"""Worker processes and their pipes: the engine (data flow drawn at the top of
``_engine.py``), worker handles, crash and timeout verdicts, launching (spawn, fork,
the fork server) and the loop each worker runs.

Only the processes backend uses it. Its door loads lazily: a worker that imports
its own loop from here does not load the parent's side."""

from __future__ import annotations

from manycore._core import lazy_door

__all__ = [
    "BLAS_ENV",
    "START_METHODS",
    "EngineFuture",
    "ProcessEngine",
    "default_start_method",
]

# The door: names other layers use, loaded on first use (see manycore._core._door).
__getattr__, __dir__ = lazy_door(
    __name__,
    {
        "BLAS_ENV": "_launch",
        "EngineFuture": "_future",
        "ProcessEngine": "_engine",
        "START_METHODS": "_launch",
        "default_start_method": "_launch",
    },
)

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from manycore._engine._engine import ProcessEngine
    from manycore._engine._future import EngineFuture
    from manycore._engine._launch import BLAS_ENV, START_METHODS, default_start_method
