"""Retries, written once for a map run, a pool's ``submit()`` calls and a task run
in place: each asks its :class:`Retries` whether a failure is run again, and
waits until the retry falls due as it can (a map run's loop, the pool's one
retry thread, a sleep). No I/O and no threads here; the clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

from manycore._core import Deadlines

if TYPE_CHECKING:
    from manycore._scheduler._options import CallOptions

__all__ = ["Retries"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Retries(Generic[K, V]):
    """The retries of one caller, by key (an input index, a future): how many each
    key has used, and those waiting out their backoff, each with what to run
    then, on a book by due time.

    Not thread-safe: a caller shared by threads holds its own lock around every call.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._used: dict[K, int] = {}
        self._book: Deadlines[K] = Deadlines()
        self._waiting: dict[K, V] = {}  # what each booked key runs when due

    def __len__(self) -> int:
        """How many retries wait out their backoff."""
        return len(self._waiting)

    def book(self, key: K, error: object, options: CallOptions, then: V) -> bool:
        """If ``options`` run ``key`` again after ``error`` (see
        :meth:`CallOptions.retried`): count the attempt, keep ``then`` until its
        backoff has passed, and say True."""
        used = self._used.get(key, 0)
        if not options.retried(error, used):
            return False
        self._used[key] = used + 1
        self._waiting[key] = then
        self._book.arm(key, self._clock() + options.backoff(used + 1))
        return True

    def next_due(self) -> float | None:
        """The clock's time when the next retry falls due (None: none waits)."""
        return self._book.first()

    def wait(self) -> float | None:
        """Seconds until the next retry falls due, 0 if one is due (None: none waits)."""
        left = self._book.wait(self._clock())
        return None if left is None else max(0.0, left)

    def due(self) -> list[V]:
        """What the retries now due run, earliest first, taken off the book."""
        return [self._waiting.pop(key) for key in self._book.due(self._clock())]

    def cancel(self, key: K) -> V | None:
        """``key``'s waiting retry taken off the book (None: none waits)."""
        self._book.disarm(key)
        return self._waiting.pop(key, None)

    def forget(self, key: K) -> None:
        """``key`` is settled: its count goes, and a retry still waiting with it."""
        if key in self._used:  # (else it was never booked: nothing to undo)
            self.cancel(key)
            del self._used[key]

    def drain(self) -> list[V]:
        """Every waiting retry taken off the book (a pool closing cancels them)."""
        waiting = list(self._waiting.values())
        for key in list(self._waiting):
            self.cancel(key)
        return waiting
