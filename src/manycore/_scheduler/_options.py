"""The options of one call, frozen: what every layer below the public edge reads
instead of a fan of keyword arguments (checked at the edge, in
``manycore._api._options``), and the retry decision they imply."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CallOptions"]

_BACKOFF_FIRST = 0.05  # seconds before the first retry of an item; doubles each time
_BACKOFF_MAX = 2.0


@dataclass(frozen=True)
class CallOptions:
    """What a run does with order and failures (the same on every backend).

    ``ordered``: results in input order, else as batches finish. ``on_error``:
    "raise" the first failure (in input order when ordered) after every result
    before it; "skip" failed items; "collect" a :class:`Failure` in their place.
    ``retries``: how many more times an item failing with one of ``retry_on`` is
    run, after a short exponential backoff; a retried item that succeeds is
    indistinguishable from one that succeeded at once. (When a worker dies during
    a batch of several items, each is run once more on its own to find the one
    that crashed it; that run is not counted as a retry.) ``timeout``: seconds an
    item may run; the backend stops it (or stops waiting) and it fails with
    :class:`~manycore.TaskTimeout`.
    """

    ordered: bool = True
    on_error: str = "raise"
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None
    progress: bool | str = False  # a tqdm bar, a str its label (see manycore._observe._progress)
    stats: bool = False  # the call returns its own Stats (see manycore._observe._stats)
    chunksize: int | None = None  # items per batch; None: the planner picks

    def retried(self, error: object, used: int) -> bool:
        """Whether an item that failed with ``error``, retried ``used`` times so
        far, is run again (map, submit and a task run in place all ask this)."""
        return used < self.retries and isinstance(error, self.retry_on)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (1, 2, ...)."""
        return float(min(_BACKOFF_FIRST * 2 ** (attempt - 1), _BACKOFF_MAX))
