"""Policy, with no I/O: chunking, ordering, back-pressure on lazy input, timeouts,
retries, ``on_error``, checkpoints. Reached through one door: a :class:`Scheduler` per
pool, following one frozen :class:`CallOptions` per call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from manycore._core import lazy_door

__all__ = [
    "CallOptions",
    "ChunkPlanner",
    "InputSource",
    "MapRun",
    "Retries",
    "Scheduler",
    "run_checkpointed",
]

# The door: names other layers use, loaded on first use (see manycore._core._door).
__getattr__, __dir__ = lazy_door(
    __name__,
    {
        "CallOptions": "_options",
        "ChunkPlanner": "_planner",
        "InputSource": "_maprun",
        "MapRun": "_maprun",
        "Retries": "_retries",
        "Scheduler": "_submission",
        "run_checkpointed": "_checkpoint",
    },
)

if TYPE_CHECKING:
    from manycore._scheduler._checkpoint import run_checkpointed
    from manycore._scheduler._maprun import InputSource, MapRun
    from manycore._scheduler._options import CallOptions
    from manycore._scheduler._planner import ChunkPlanner
    from manycore._scheduler._retries import Retries
    from manycore._scheduler._submission import Scheduler
