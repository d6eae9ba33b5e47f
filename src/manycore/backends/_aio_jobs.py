"""The asyncio backend's book-keeping: a running item and the slot it holds, and
a batch (a job) the loop runs. Kept apart from the backend's loop and locking."""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from manycore._core import Batch, BatchResult
from manycore.backends._base import Done

if TYPE_CHECKING:
    import asyncio

    from manycore.backends.aio import AsyncioBackend

__all__ = ["ITEM", "Item", "Job"]


@dataclass(eq=False)
class Item:
    """One running item, and the slot it holds (guarded by its backend's lock).

    An item that gives work to its own pool lends its slot to that work while
    any of it is unfinished: it is waiting for it, and the work would otherwise
    wait for the slot (with every slot taken by such items: forever).
    """

    owner: AsyncioBackend
    outer: Item | None  # the item that submitted this one's batch (of any asyncio pool)
    nested: int = 0  # jobs submitted to ``owner`` from inside this item, not yet reported
    lent: bool = False  # its slot is counted free while those jobs are out
    ended: bool = False  # its outcome is settled: the slot is no longer its own


# The item whose task (or a thread it started, an amap's among them) runs now.
ITEM: contextvars.ContextVar[Item | None] = contextvars.ContextVar(
    "manycore_asyncio_item", default=None
)


@dataclass(eq=False)
class Job:
    """A batch the loop runs: what its items gave so far (guarded by the lock)."""

    batch: Batch
    done: Done
    values: list[object]
    left: int  # items without an outcome yet
    caller: Item | None = None  # the item it was submitted from, if any
    home: asyncio.AbstractEventLoop | None = None  # the caller's loop, to run the items on
    parent: Item | None = None  # the item of this pool that waits for it, if any
    failures: dict[int, BaseException] | None = None
    begun: int = 0  # items started; the next to start is items[begun]
    claimed: bool = False  # claim() was called: the batch counts as started
    reported: bool = False  # done() was called, or will be by whoever set this
    # running, by offset: the task, and the item whose slot it holds
    tasks: dict[int, tuple[asyncio.Task[None], Item]] = field(default_factory=dict)
    started: float = 0.0

    def result(self) -> BatchResult:
        elapsed = time.perf_counter() - self.started
        return BatchResult(self.values, self.failures, elapsed, worker="loop")
