"""Worker insights: ``pool.stats()`` and ``mc.map(..., stats=True)``.

Each finished batch reports where it ran (``BatchResult.worker``), how long its
function ran (``elapsed``), how long its data took to move (``moving``: pickling
and copying its arguments in the parent, loading them in the worker, pickling
and loading its results) and, when its items were timed one by one, its slowest
items. A :class:`StatsRecorder` adds these up per worker as they arrive; idle
time is what is left of the wall time. Recording costs a few dictionary updates
per batch, not per item, so it is always on.

Items are timed one by one (two clock reads per item) only where that costs
nothing noticeable: when a call asks for ``stats=True``, or when the scheduler
has measured items at 20 us or more. A map of tiny items without ``stats=True``
adds up its batches but names no slow item.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from manycore._core import Batch, BatchResult, is_worker_crash, public

__all__ = ["SlowItem", "Stats", "StatsRecorder", "WorkerStats"]

SLOWEST_KEPT = 10  # slow items a Stats lists


@public
@dataclass(frozen=True)
class WorkerStats:
    """One worker's time. ``worker`` is its slot: 0..workers-1 on this machine
    (a replacement keeps the slot of the worker it replaces), the worker's
    address on a cluster. ``busy``: seconds running the function; ``moving``:
    seconds moving its data (pickling, copying, loading); ``idle``: the rest of
    the wall time. ``items``: items it ran, failed ones included (an item run
    again under ``retries`` counts each time), ``failed`` of them;
    ``restarts``: times its process was replaced (crash, timeout,
    ``max_tasks_per_worker``, ``max_memory_per_worker``)."""

    worker: int | str
    items: int
    failed: int
    batches: int
    busy: float
    moving: float
    idle: float
    restarts: int


@public
@dataclass(frozen=True)
class SlowItem:
    """An item that took long: its input ``index`` (None for a ``submit`` call),
    the seconds its function ran, and the ``worker`` that ran it."""

    index: int | None
    seconds: float
    worker: int | str | None
    call: str  # the function's name


@public
@dataclass(frozen=True)
class Stats:
    """What a pool's workers did over ``wall`` seconds (since the pool started or
    was last reset, or during one ``map``). ``str(stats)`` is a readable table."""

    wall: float
    items: int
    failed: int
    restarts: int
    workers: tuple[WorkerStats, ...]
    slowest: tuple[SlowItem, ...]
    #: calls that can run at once: the workers (asyncio: its concurrency)
    capacity: int = 1

    @property
    def busy(self) -> float:
        """Seconds the workers spent running the function, all workers together."""
        return sum(w.busy for w in self.workers)

    @property
    def moving(self) -> float:
        """Seconds spent moving data, all workers together."""
        return sum(w.moving for w in self.workers)

    @property
    def idle(self) -> float:
        return sum(w.idle for w in self.workers)

    @property
    def utilization(self) -> float:
        """Busy time over the workers' total wall time: 1.0 when every worker ran
        the function all the time (asyncio: every slot of its concurrency)."""
        total = self.wall * max(1, self.capacity)
        return self.busy / total if total > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """Plain data (for JSON): the fields, and the totals."""
        out = asdict(self)
        out.update(busy=self.busy, moving=self.moving, idle=self.idle)
        out["utilization"] = self.utilization
        return out

    def __str__(self) -> str:
        lines = [
            f"{self.items} items ({self.failed} failed) in {self.wall:.3f} s on "
            f"{self.capacity} workers: {self.utilization:.0%} busy, "
            f"{self.restarts} restarts",
            f"{'worker':>10} {'items':>8} {'busy s':>9} {'moving s':>9} {'idle s':>9} "
            f"{'restarts':>8}",
        ]
        for w in self.workers:
            lines.append(
                f"{w.worker!s:>10} {w.items:>8} {w.busy:>9.3f} {w.moving:>9.3f} "
                f"{w.idle:>9.3f} {w.restarts:>8}"
            )
        if self.slowest:
            lines.append("slowest items:")
            for s in self.slowest[:5]:
                what = "a submit call" if s.index is None else f"item {s.index}"
                lines.append(f"  {what} of {s.call}: {s.seconds:.4f} s on worker {s.worker}")
        return "\n".join(lines)


class _Tally:
    __slots__ = ("batches", "busy", "failed", "items", "moving")

    def __init__(self) -> None:
        self.items = self.failed = self.batches = 0
        self.busy = self.moving = 0.0


class StatsRecorder:
    """Adds up finished batches per worker (any thread may call ``record``)."""

    def __init__(
        self,
        slots: int,
        restarts: Mapping[int | str, int] | None = None,
        capacity: int | None = None,
        whole_pool: bool = False,
    ):
        # The pool's own (``whole_pool``) counts the time of nested work once: as
        # the time of the item that waits for it (BatchResult.nested).
        self._whole_pool = whole_pool
        self._slots = slots
        self._capacity = capacity or max(1, slots)
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._tallies: dict[int | str, _Tally] = {}
        self._slow: list[tuple[float, int, SlowItem]] = []  # min-heap of the slowest
        self._seq = 0
        self._restarts_base = dict(restarts or {})

    def reset(self, restarts: Mapping[int | str, int] | None = None) -> None:
        """Start counting afresh. In place: runs under way hold this recorder."""
        with self._lock:
            self._start = time.monotonic()
            self._tallies.clear()
            self._slow.clear()
            self._restarts_base = dict(restarts or {})

    def record(self, batch: Batch, result: BatchResult | BaseException) -> None:
        if is_worker_crash(result) and len(batch) == 1:
            # The crash of a batch of one is that item's outcome: it ran, and failed.
            result = BatchResult([None], {0: result}, 0.0, worker=result.worker_slot)
        if not isinstance(result, BatchResult):
            return  # a batch failed whole (cancelled, a crash to split): no item to count
        ran = len(result.values) - sum(hi - lo for lo, hi in result.unrun or ())
        worker = result.worker if result.worker is not None else 0
        with self._lock:
            tally = self._tallies.get(worker)
            if tally is None:
                tally = self._tallies[worker] = _Tally()
            tally.items += ran
            tally.failed += len(result.failures) if result.failures else 0
            tally.batches += 1
            if not (result.nested and self._whole_pool):
                tally.busy += result.elapsed
            tally.moving += result.moving
            slowest = result.slowest
            if slowest is None and len(batch) == 1 and not result.unrun:
                slowest = [(0, result.elapsed)]  # a batch of one item is that item
            for offset, seconds in slowest or ():
                self._note_slow(batch, offset, seconds, worker)

    def _note_slow(
        self, batch: Batch, offset: int, seconds: float, worker: int | str | None
    ) -> None:
        heap = self._slow
        if len(heap) >= SLOWEST_KEPT and seconds <= heap[0][0]:
            return
        name = getattr(batch.fn, "__qualname__", None) or type(batch.fn).__name__
        index = None if batch.submit else batch.start + offset
        self._seq += 1
        entry = (seconds, self._seq, SlowItem(index, seconds, worker, name))
        if len(heap) < SLOWEST_KEPT:
            heapq.heappush(heap, entry)
        else:
            heapq.heapreplace(heap, entry)

    def snapshot(self, restarts: Mapping[int | str, int] | None = None) -> Stats:
        """The figures so far. ``restarts``: the backend's replacements per slot,
        counted since it started (this recorder's share is what came after it)."""
        wall = time.monotonic() - self._start
        restarts = {k: n - self._restarts_base.get(k, 0) for k, n in (restarts or {}).items()}
        with self._lock:
            keys: list[int | str] = list(range(self._slots))
            keys += [k for k in self._tallies if k not in keys]
            keys += [k for k in restarts if k not in keys and restarts[k]]
            workers = []
            for key in keys:
                t = self._tallies.get(key) or _Tally()
                idle = max(0.0, wall - t.busy - t.moving)
                workers.append(
                    WorkerStats(
                        key,
                        t.items,
                        t.failed,
                        t.batches,
                        t.busy,
                        t.moving,
                        idle,
                        restarts.get(key, 0),
                    )
                )
            slowest = tuple(s for _, _, s in sorted(self._slow, reverse=True))
        return Stats(
            wall,
            sum(w.items for w in workers),
            sum(w.failed for w in workers),
            sum(w.restarts for w in workers),
            tuple(workers),
            slowest,
            self._capacity,
        )
