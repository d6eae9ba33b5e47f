"""Policy, with no I/O: chunking, ordering, back-pressure on lazy input,
timeouts, retries, ``on_error``, checkpoints. Reached through one door."""

from __future__ import annotations

from typing import TYPE_CHECKING

from manycore._core import lazy_door

__all__ = [
    "ChunkPlanner",
    "InputSource",
    "MapRun",
    "Policy",
    "Submitter",
    "run_checkpointed",
]

# The door: names other layers use, loaded on first use (see manycore._core._door).
__getattr__, __dir__ = lazy_door(
    __name__,
    {
        "ChunkPlanner": "_maprun",
        "InputSource": "_maprun",
        "MapRun": "_maprun",
        "Policy": "_maprun",
        "Submitter": "_submission",
        "run_checkpointed": "_checkpoint",
    },
)

if TYPE_CHECKING:
    from manycore._scheduler._checkpoint import run_checkpointed
    from manycore._scheduler._maprun import ChunkPlanner, InputSource, MapRun, Policy
    from manycore._scheduler._submission import Submitter
