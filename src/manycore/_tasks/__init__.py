"""``@mc.task`` graphs: task futures, definitions, dispatch through the
scheduler's door, graph drawing and graph progress."""

from __future__ import annotations

from typing import TYPE_CHECKING

from manycore._core import lazy_door

__all__ = [
    "TaskState",
]

# The door: names other layers use, loaded on first use (see manycore._core._door).
__getattr__, __dir__ = lazy_door(
    __name__,
    {
        "TaskState": "_nodes",
    },
)

if TYPE_CHECKING:
    from manycore._tasks._nodes import TaskState
