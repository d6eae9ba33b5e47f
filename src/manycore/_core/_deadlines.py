"""Deadlines by key: the book of per-item deadlines for the backends that cannot
kill a running item, and of the scheduler's retries waiting out their backoff.

The threads, asyncio, cluster and serial backends share this book of deadlines:
a watchdog (the threads' and the cluster's a thread, asyncio's one loop timer)
asks it what is due and how long to sleep; the serial backend, which cannot be
interrupted, asks it once an item has returned. What a timed-out item becomes
stays with each backend, its words with ``manycore._core._errors.timed_out``.
The processes engine keeps its own, as it kills the worker
(``manycore._engine._faults``). The scheduler's retries wait out their backoff
on one too (``manycore._scheduler._retries``).

Not thread-safe: the caller holds its own lock around every call.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Deadlines"]

K = TypeVar("K", bound=Hashable)

# Stale heap entries (re-armed or disarmed keys) are dropped as they surface;
# past this many per live one the heap is rebuilt, so that a long timeout over
# many short items does not grow it without end.
_STALE_FACTOR = 2


class Deadlines(Generic[K]):
    """One deadline per key; re-arming a key replaces its deadline.

    The heap holds tokens, not keys: a disarmed key (a finished batch, whose
    future the user may have dropped) is no longer referenced from here."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._keys: dict[int, K] = {}  # token -> key, for live entries only
        self._tokens: dict[K, int] = {}
        self._when: dict[K, float] = {}  # each live key's deadline
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._tokens)

    def arm(self, key: K, when: float) -> bool:
        """``key`` is due at ``when`` (a ``time.monotonic()`` time); True if that is
        now the earliest deadline (a sleeping watchdog must wake to see it)."""
        self.disarm(key)
        token = next(self._seq)
        self._tokens[key], self._keys[token], self._when[key] = token, key, when
        heapq.heappush(self._heap, (when, token))
        if len(self._heap) > _STALE_FACTOR * len(self._keys) + 64:
            self._compact()
        return self.first() == when

    def disarm(self, key: K) -> None:
        token = self._tokens.pop(key, None)
        if token is not None:
            del self._keys[token]
            del self._when[key]

    def due(self, now: float) -> list[K]:
        """The keys whose deadline has passed, disarmed: taken off the book."""
        expired: list[K] = []
        while (first := self.first()) is not None and first <= now:
            token = heapq.heappop(self._heap)[1]
            key = self._keys.pop(token)
            del self._tokens[key], self._when[key]
            expired.append(key)
        return expired

    def passed(self, key: K, now: float) -> bool:
        """Take ``key`` off the book, its item having returned at ``now``: True if
        its deadline had passed by then (a backend that cannot interrupt an item,
        and so has no watchdog, asks this instead)."""
        when = self._when.get(key)
        self.disarm(key)
        return when is not None and when <= now

    def wait(self, now: float) -> float | None:
        """Seconds until the next deadline (None: none is left)."""
        first = self.first()
        return None if first is None else first - now

    def first(self) -> float | None:
        """The earliest live deadline (stale entries on top are dropped)."""
        heap = self._heap
        while heap and heap[0][1] not in self._keys:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if e[1] in self._keys]
        heapq.heapify(self._heap)
