"""``mc.wait(..., progress=True)``: a tqdm bar over a task graph being waited
for (tasks settled out of all those behind it)."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from manycore._tasks._nodes import TaskNode, TaskState

__all__ = ["GraphProgress"]


class GraphProgress:
    """A bar over task calls (and plain futures): how many have settled, how
    many of them failed. Refreshed by whoever waits, a few times a second."""

    def __init__(self, nodes: list[TaskNode], futures: list[Future[Any]]):
        from tqdm.auto import tqdm

        self._nodes = nodes  # their state says whether they settled
        self._futures = futures  # futures that are not task calls
        total = len(nodes) + len(futures)
        self._bar: Any = tqdm(total=total, desc="manycore", unit="task", leave=True)
        self.failed = 0

    def refresh(self) -> None:
        done = failed = 0
        for node in self._nodes:
            state = node.state
            if state in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED):
                done += 1
                failed += state is TaskState.FAILED
        for f in self._futures:
            if f.done():
                done += 1
                failed += not f.cancelled() and f.exception() is not None
        if failed != self.failed:
            self.failed = failed
            self._bar.set_postfix(failed=failed, refresh=False)
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self.refresh()
        self._bar.close()
