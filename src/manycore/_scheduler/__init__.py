"""The scheduler's door: how a call's items are batched, retried and settled on a
backend, whatever the backend (:class:`Scheduler`, one per pool), following one
frozen :class:`CallOptions`."""

from manycore._scheduler._maprun import CallOptions, ChunkPlanner, InputSource, MapRun
from manycore._scheduler._submission import Scheduler

__all__ = ["CallOptions", "ChunkPlanner", "InputSource", "MapRun", "Scheduler"]
