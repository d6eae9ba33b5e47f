"""What a run reports: per-worker stats, the map progress bar, the profile of a
function and the recommendation drawn from it. Sinks fed by the layers above."""

from __future__ import annotations

from typing import TYPE_CHECKING

from manycore._core import lazy_door

__all__ = [
    "PROBE_THREADS",
    "BackendNames",
    "Measurements",
    "ProbeCall",
    "Profile",
    "ProfileRow",
    "Progress",
    "Recommendation",
    "Run",
    "Stats",
    "StatsRecorder",
    "decide",
    "probe_items",
    "queued",
    "queued_all",
    "queued_between",
    "threads_busy",
    "worth_probing",
]

# The door: names other layers use, loaded on first use (see manycore._core._door).
__getattr__, __dir__ = lazy_door(
    __name__,
    {
        "BackendNames": "_names",
        "Measurements": "_recommend",
        "PROBE_THREADS": "_gil",
        "ProbeCall": "_gil",
        "probe_items": "_gil",
        "Profile": "_profile_report",
        "ProfileRow": "_profile_report",
        "Progress": "_progress",
        "Recommendation": "_recommend",
        "Run": "_recommend",
        "Stats": "_stats",
        "StatsRecorder": "_stats",
        "decide": "_recommend",
        "queued": "_runqueue",
        "queued_all": "_runqueue",
        "queued_between": "_runqueue",
        "threads_busy": "_gil",
        "worth_probing": "_gil",
    },
)

if TYPE_CHECKING:
    from manycore._observe._gil import (
        PROBE_THREADS,
        ProbeCall,
        probe_items,
        threads_busy,
        worth_probing,
    )
    from manycore._observe._names import BackendNames
    from manycore._observe._profile_report import Profile, ProfileRow
    from manycore._observe._progress import Progress
    from manycore._observe._recommend import (
        Measurements,
        Recommendation,
        Run,
        decide,
    )
    from manycore._observe._runqueue import queued, queued_all, queued_between
    from manycore._observe._stats import Stats, StatsRecorder
