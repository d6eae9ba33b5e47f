"""Whether a busy worker gets a second batch queued in its pipe (prefetch).

A batch queued behind a running one saves the worker a round trip (its result to
the parent, the next batch back) but is stuck there: when the running batch is
long, or the machine is loaded unevenly, another worker goes idle while that
batch waits. So a batch is queued only behind a running batch known to be short
next to a round trip (``ratio`` round trips at most, within bounds): where
prefetch pays. A function whose cost is not known yet, or a long batch, waits in
the parent and goes to whichever worker is free first.

The costs are measured: seconds per item of each function (from the worker's
own timing of each batch) and the round trip (the time from handing a batch to
an idle worker to reading its result, less the batch's own time). Nothing here
does I/O, so the policy is tested without processes.
"""

from __future__ import annotations

__all__ = ["Prefetch"]

_RATIO = 100.0  # a queued batch may wait behind at most this many round trips of work
_FLOOR = 0.005  # ... but it is always allowed behind this many seconds of work
_CEILING = 0.1  # ... and never behind more (a loaded parent's slow round trips)
_FIRST_ROUND_TRIP = 0.0005  # seconds, until one is measured
_WEIGHT = 0.25  # of a new measurement in the running averages
_FUNCTIONS = 256  # costs kept; past that the table starts over (re-measured)


class Prefetch:
    """The measured costs, and the decision made from them."""

    def __init__(
        self,
        ratio: float = _RATIO,
        floor: float = _FLOOR,
        ceiling: float = _CEILING,
        round_trip: float = _FIRST_ROUND_TRIP,
    ):
        self.ratio = ratio
        self.floor = floor
        self.ceiling = ceiling
        self.round_trip = round_trip
        self._costs: dict[int, float] = {}  # function id -> seconds per item

    def observe(self, fn_id: int, items: int, elapsed: float) -> None:
        """A batch of ``items`` items of function ``fn_id`` ran in ``elapsed`` s."""
        if items <= 0:
            return
        cost = max(elapsed, 0.0) / items
        old = self._costs.get(fn_id)
        if old is None and len(self._costs) >= _FUNCTIONS:
            self._costs.clear()
        # The larger of the two at once: a function that turns slow (its inputs
        # grow) must stop being queued behind before the average catches up.
        self._costs[fn_id] = cost if old is None or cost > old else _mix(old, cost)

    def observe_round_trip(self, seconds: float) -> None:
        if seconds >= 0.0:
            self.round_trip = _mix(self.round_trip, seconds)

    def estimate(self, fn_id: int, items: int) -> float | None:
        """Seconds a batch of ``items`` items of ``fn_id`` should take (None: unknown)."""
        cost = self._costs.get(fn_id)
        return None if cost is None else cost * items

    def limit(self) -> float:
        """The most work (seconds) a batch may be queued behind."""
        return min(max(self.ratio * self.round_trip, self.floor), self.ceiling)

    def may_queue_behind(self, fn_id: int, items: int) -> bool:
        """Whether a batch may wait in the pipe of a worker running a batch of
        ``items`` items of ``fn_id``."""
        seconds = self.estimate(fn_id, items)
        return seconds is not None and seconds <= self.limit()


def _mix(old: float, new: float) -> float:
    return old + _WEIGHT * (new - old)
