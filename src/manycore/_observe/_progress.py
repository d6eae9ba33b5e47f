"""``progress=True``: a tqdm bar for a map (items done, rate, ETA, failures so
far; ``progress="Downloading"`` labels it), or for a task graph being waited
for (tasks settled out of all those behind it).

The scheduler calls :meth:`Progress.advance` once per finished batch, not per
item, so the bar costs a few microseconds per batch whatever the item count;
tqdm itself redraws at most ten times a second. ``tqdm.auto`` picks a notebook
widget under Jupyter and a text bar on a terminal (on stderr).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from manycore._core import Failure

__all__ = ["GraphProgress", "Progress"]


class Progress:
    def __init__(self, total: int | None, what: str, on_error: str, initial: int = 0):
        """``initial``: items done before the bar starts (a resumed checkpoint's);
        the rate and ETA count only the items done from now on."""
        from tqdm.auto import tqdm

        self._bar: Any = tqdm(  # (tqdm is untyped here)
            total=total,
            initial=initial,
            desc=what,
            unit="item",
            mininterval=0.1,
            smoothing=0.05,
            leave=True,
        )
        self._collect = on_error == "collect"
        self.failed = 0

    def advance(self, covered: int, out: Sequence[object], error: BaseException | None) -> None:
        """A batch of ``covered`` inputs is done: ``out`` its values as delivered
        (failed items left out with ``skip``, as Failures with ``collect``)."""
        failed = covered - len(out) + (error is not None)
        if self._collect:
            failed += sum(1 for x in out if type(x) is Failure)
        if failed:
            self.failed += failed
            self._bar.set_postfix(failed=self.failed, refresh=False)
        self._bar.update(covered)

    def close(self) -> None:
        self._bar.close()


class GraphProgress:
    """A bar over a task graph (and plain futures): how many have settled, how
    many of them failed. Refreshed by whoever waits, a few times a second.

    ``tally`` counts (settled, failed) now: the task layer knows what settled
    means for its nodes, the bar only draws it."""

    def __init__(self, total: int, tally: Callable[[], tuple[int, int]]):
        from tqdm.auto import tqdm

        self._tally = tally
        self._bar: Any = tqdm(total=total, desc="manycore", unit="task", leave=True)
        self.failed = 0

    def refresh(self) -> None:
        done, failed = self._tally()
        if failed != self.failed:
            self.failed = failed
            self._bar.set_postfix(failed=failed, refresh=False)
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self.refresh()
        self._bar.close()
