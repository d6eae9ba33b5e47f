"""What a backend runs: a batch of calls of one function, and what comes back.

A batch is the unit every backend sees. The scheduler cuts the user's input into
batches (one item for ``submit``, many for ``map``); a backend runs the batch
somewhere with :func:`run_batch` and reports a :class:`BatchResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batch", "BatchResult", "Done", "pinned", "run_batch", "run_tracked"]


@dataclass(eq=False)
class Batch:
    """Calls ``fn`` on each element of ``items``.

    ``items`` is any sliceable sequence (a list, a ``range``, a NumPy array slice);
    with ``star`` each element is an argument tuple. ``kwargs`` (submit only) are
    passed to every call. ``start`` is the input index of ``items[0]``, used to name
    failing items.
    """

    fn: Callable[..., Any]
    items: Sequence[Any]
    start: int = 0
    star: bool = False
    kwargs: dict[str, Any] | None = None
    # Filled in by the scheduler: the batch's place in its run, and a per-backend
    # slot for bookkeeping (the process engine keeps the encoded payload there).
    key: int = 0
    # A single submit(fn, *args, **kwargs) call rather than a slice of a map's input.
    submit: bool = False
    fn_blob: bytes | None = field(default=None, repr=False)
    # Called by the backend just before the batch starts; False means it was
    # cancelled meanwhile and must be dropped (a submit() future's cancel()).
    claim: Callable[[], bool] | None = field(default=None, repr=False)
    # Seconds one item may run (None: no limit); the backend enforces it per item.
    timeout: float | None = None

    def part(self, lo: int, hi: int) -> Batch:
        """Items ``lo:hi`` of this batch as a batch of their own (to run again)."""
        return Batch(
            self.fn,
            self.items[lo:hi],
            self.start + lo,
            self.star,
            self.kwargs,
            submit=self.submit,
            fn_blob=self.fn_blob,
            timeout=self.timeout,
        )

    def __len__(self) -> int:
        return len(self.items)

    def name_item(self, offset: int) -> str:
        """How an error names one item: its input index, or the submitted call."""
        if self.submit:
            name = getattr(self.fn, "__qualname__", None) or repr(self.fn)
            return f"the call to {name}"
        return f"input item {self.start + offset}"


@dataclass(eq=False)
class BatchResult:
    """Outcome of a batch: one value per item, and the failures by offset.

    ``values[i]`` is ``None`` for a failed item; ``failures`` maps the offset in the
    batch to the exception. ``elapsed`` is the compute time measured where the batch
    ran (the chunk planner learns item cost from it). ``unrun`` lists ``(lo, hi)``
    offset ranges whose items have no outcome and must be run again: a worker that
    retired after its task quota, or that was killed for another item's timeout or
    crash (those items are innocent, and re-running them is not a retry).
    """

    values: list[Any]
    failures: dict[int, BaseException] | None
    elapsed: float
    unrun: list[tuple[int, int]] | None = None


def run_batch(
    fn: Callable[..., Any],
    items: Sequence[Any],
    star: bool,
    kwargs: dict[str, Any] | None,
    catch: type[BaseException] | tuple[type[BaseException], ...],
) -> BatchResult:
    """Run ``fn`` over ``items``; a failing item never loses the others' values.

    The common case is a tight loop with the ``try`` outside it; after a failure the
    loop resumes at the next item (items are sliceable), so the fast path stays fast.
    """
    started = time.perf_counter()
    values: list[Any] = []
    append = values.append
    failures: dict[int, BaseException] | None = None
    pos = 0
    n = len(items)
    while pos < n:
        rest = items[pos:] if pos else items
        try:
            if kwargs:
                for args in rest:
                    append(fn(*args, **kwargs))
            elif star:
                for args in rest:
                    append(fn(*args))
            else:
                for x in rest:
                    append(fn(x))
        except catch as exc:
            if failures is None:
                failures = {}
            failures[len(values)] = _from_user_code(exc)
            append(None)
        pos = len(values)
    return BatchResult(values, failures, time.perf_counter() - started)


def _from_user_code(exc: BaseException) -> BaseException:
    """Start the traceback at the user's function, not at the loop that called it."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        exc.__traceback__ = tb.tb_next
    return exc


def run_tracked(
    fn: Callable[..., Any],
    items: Sequence[Any],
    star: bool,
    kwargs: dict[str, Any] | None,
    catch: type[BaseException] | tuple[type[BaseException], ...],
    mark: Callable[[int], bool],
) -> BatchResult:
    """:func:`run_batch` that calls ``mark(offset)`` before each item.

    The mark records which item runs since when (for timeouts), or stops the batch
    by returning False (a worker past its memory limit): the items from there on
    are reported in ``unrun``. Slower per item than :func:`run_batch`, so it is
    used only when a batch needs it.
    """
    started = time.perf_counter()
    values: list[Any] = []
    failures: dict[int, BaseException] | None = None
    n = len(items)
    for offset in range(n):
        if not mark(offset):
            values.extend([None] * (n - offset))
            elapsed = time.perf_counter() - started
            return BatchResult(values, failures, elapsed, [(offset, n)])
        args = items[offset]
        try:
            if kwargs:
                values.append(fn(*args, **kwargs))
            elif star:
                values.append(fn(*args))
            else:
                values.append(fn(args))
        except catch as exc:
            if failures is None:
                failures = {}
            failures[offset] = _from_user_code(exc)
            values.append(None)
    return BatchResult(values, failures, time.perf_counter() - started)


def pinned(batch: Batch, offset: int, error: BaseException) -> BatchResult:
    """The outcome of a batch stopped at item ``offset`` (a timeout, or a crash
    that took the worker with it): that item fails; every other one has no
    outcome and is to be run again."""
    n = len(batch)
    unrun = [r for r in ((0, offset), (offset + 1, n)) if r[0] < r[1]]
    return BatchResult([None] * n, {offset: error}, 0.0, unrun or None)


# How a backend reports a batch: its result, or an exception that failed it whole.
Done = Callable[[Batch, "BatchResult | BaseException"], None]
