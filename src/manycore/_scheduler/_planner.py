"""The chunk planner: how many items the next batch of a map holds, from the
measured cost of an item. It does no I/O, so its decisions are tested without
processes."""

from __future__ import annotations

from manycore.backends import Backend

__all__ = ["ChunkPlanner"]

_FLOOR_SECONDS = 0.001  # the tail's batches shrink no further than this much work
_MAX_BATCH = 1 << 20
_OPENING_MAX = 1 << 16  # items in an opening batch, at most


class ChunkPlanner:
    """Picks the size of the next batch.

    Until an item's cost has been measured, batches hold one item: a long task is
    never stuck behind another in the same batch. Then each batch aims at
    ``target`` seconds of work, is at most ``growth`` times the largest batch that
    has *finished* (one noisy measurement cannot produce a giant batch, and sizes
    grow with completions, not with dispatches), and never exceeds
    ``remaining / (2 * workers)`` when the input's length is known, so the last
    batches are small and the workers finish together (though not below about
    ``_FLOOR_SECONDS`` of work: a tail of one-item batches is all round trips).
    ``limit`` caps a batch from outside (the lazy-input read-ahead bound).

    ``overhead``: what a batch costs beyond its items (a cluster's round trip,
    milliseconds). A batch of no more work than that is small whatever was
    measured: it may be that big at once, and the tail shrinks no further.

    ``opening``: where a probe's round trip would leave the workers idle (a
    cluster), a run whose length is known opens instead with one batch per
    worker, each of an equal share of the input (up to ``opening`` items), which
    the backend stops after its ``opening_budget`` with the rest of its items
    unrun: few items if they are slow, all of them if they are tiny.
    """

    def __init__(
        self,
        workers: int,
        chunksize: int | None = None,
        target: float = Backend.batch_seconds,
        growth: int = Backend.batch_growth,
        overhead: float = Backend.batch_overhead,
        opening: int = 0,
    ):
        self.workers = max(1, workers)
        self.opening = opening
        self.fixed = chunksize
        self.target = target
        self.growth = growth
        self.overhead = overhead
        self._items = 0
        self._seconds = 0.0
        self._largest_done = 1
        self._share: int | None = None  # an opening batch's items

    @classmethod
    def for_backend(
        cls, backend: Backend, chunksize: int | None, timed: bool = False
    ) -> ChunkPlanner:
        """The planner of a run on ``backend``. Items that mostly wait (asyncio) go
        one per batch: they run side by side anyway, a batch's result waits for its
        slowest item, and their wall time says nothing about the cost of batching."""
        if timed and backend.one_item_when_timed:
            chunksize = 1  # whatever was asked: the backend times batches, not items
        elif chunksize is None and backend.one_item_per_batch:
            chunksize = 1
        return cls(
            backend.workers,
            chunksize,
            backend.batch_seconds,
            backend.batch_growth,
            backend.batch_overhead,
            _OPENING_MAX if backend.opening_budget is not None else 0,
        )

    @property
    def cost(self) -> float | None:
        """Mean seconds per item so far, or None before the first measurement."""
        return self._seconds / self._items if self._items else None

    @property
    def opens(self) -> bool:
        """Whether the next batch is an opening one (see the class's doc)."""
        return self.opening > 0 and self.fixed is None and self._items == 0

    def observe(self, items: int, seconds: float) -> None:
        if items > 0:
            self._items += items
            self._seconds += max(seconds, 0.0)
            self._largest_done = max(self._largest_done, items)

    def next_size(self, remaining: int | None = None, limit: int | None = None) -> int:
        if self.fixed is not None:
            return self.fixed
        cost = self.cost
        if cost is None:
            if not (self.opening and remaining):
                return 1  # a probe
            if self._share is None:  # each worker's share of the input, at the opening
                most = min(self.opening, limit or remaining)
                batches = self.workers * -(-remaining // (self.workers * most))
                self._share = -(-remaining // batches)  # as many batches for each worker
            return max(1, min(self._share, remaining))
        size = int(self.target / cost) if cost > 0 else _MAX_BATCH
        small = int(self.overhead / cost) if cost > 0 else size  # a batch's own cost of work
        size = min(size, max(self._largest_done * self.growth, small), _MAX_BATCH)
        if remaining is not None:
            # Split what is left across the workers so they finish together, but
            # not into batches so small that round trips dominate the tail.
            floor = round(max(_FLOOR_SECONDS, self.overhead) / cost) if cost > 0 else size
            size = min(size, max(remaining // (2 * self.workers), floor), remaining)
        if limit is not None:
            size = min(size, limit)
        return max(1, size)
