"""``progress=True``: a tqdm bar for a map (items done, rate, ETA, failures so
far; ``progress="Downloading"`` labels it). (A task graph's bar is
``manycore._tasks._progress``.)

The scheduler calls :meth:`Progress.advance` once per finished batch, not per
item, so the bar costs a few microseconds per batch whatever the item count;
tqdm itself redraws at most ten times a second. ``tqdm.auto`` picks a notebook
widget under Jupyter and a text bar on a terminal (on stderr).
"""

from __future__ import annotations

from collections.abc import Sequence

from manycore._core import Failure

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int | None, what: str, on_error: str, initial: int = 0):
        """``initial``: items done before the bar starts (a resumed checkpoint's);
        the rate and ETA count only the items done from now on."""
        from tqdm.auto import tqdm

        self._bar = tqdm(  # (tqdm is untyped)
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
