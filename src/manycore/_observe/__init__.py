"""What a run reports: per-worker stats, the map progress bar, the profile of a
function and the recommendation drawn from it. Sinks fed by the layers above."""

from __future__ import annotations

from typing import TYPE_CHECKING

from manycore._core import lazy_door

__all__ = [
    "BackendNames",
    "Measurements",
    "Profile",
    "ProfileRow",
    "Progress",
    "Recommendation",
    "Run",
    "Stats",
    "StatsRecorder",
    "decide",
    "queued",
    "queued_between",
]

# The door: names other layers use, loaded on first use (see manycore._core._door).
__getattr__, __dir__ = lazy_door(
    __name__,
    {
        "BackendNames": "_names",
        "Measurements": "_recommend",
        "Profile": "_profile_report",
        "ProfileRow": "_profile_report",
        "Progress": "_progress",
        "Recommendation": "_recommend",
        "Run": "_recommend",
        "Stats": "_stats",
        "StatsRecorder": "_stats",
        "decide": "_recommend",
        "queued": "_runqueue",
        "queued_between": "_runqueue",
    },
)

if TYPE_CHECKING:
    from manycore._observe._names import BackendNames
    from manycore._observe._profile_report import Profile, ProfileRow
    from manycore._observe._progress import Progress
    from manycore._observe._recommend import (
        Measurements,
        Recommendation,
        Run,
        decide,
    )
    from manycore._observe._runqueue import queued, queued_between
    from manycore._observe._stats import Stats, StatsRecorder
