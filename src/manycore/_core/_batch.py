"""What a backend runs: a batch of calls of one function, and what comes back.

A batch is the unit every backend sees. The scheduler cuts the user's input into
batches (one item for ``submit``, many for ``map``); a backend runs the batch
somewhere with :func:`run_batch` and reports a :class:`BatchResult`.
"""

from __future__ import annotations

import itertools
import operator
import time
from collections.abc import Callable, Sequence

from manycore._core._errors import set_traceback

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from typing import Any, TypeVar

    R = TypeVar("R")

__all__ = ["Batch", "BatchResult", "Done", "pinned", "run_batch", "run_chunk", "run_tracked"]


def _repr(obj: object, names: tuple[str, ...]) -> str:
    fields = ", ".join(f"{name}={getattr(obj, name)!r}" for name in names)
    return f"{type(obj).__qualname__}({fields})"


# Batch and BatchResult are plain classes, not dataclasses: every worker imports
# this module, and ``dataclasses`` (with inspect, ast, dis) would cost it ~6 ms.
# Equality is identity, as with ``@dataclass(eq=False)``.
class Batch:
    """Calls ``fn`` on each element of ``items``.

    ``items`` is any sliceable sequence (a list, a ``range``, a NumPy array slice);
    with ``star`` each element is an argument tuple. ``kwargs`` (submit only) are
    passed to every call. ``start`` is the input index of ``items[0]``, used to name
    failing items.
    """

    def __init__(
        self,
        fn: Callable[..., object],
        items: Sequence[Any],
        start: int = 0,
        star: bool = False,
        kwargs: dict[str, object] | None = None,
        key: int = 0,
        submit: bool = False,
        fn_blob: bytes | None = None,
        claim: Callable[[], bool] | None = None,
        timeout: float | None = None,
        time_items: bool = False,
        origin: Any = None,
        budget: float | None = None,
    ) -> None:
        self.fn = fn
        self.items = items
        self.start = start
        self.star = star
        self.kwargs = kwargs
        # Filled in by the scheduler: the batch's place in its run, and a per-backend
        # slot for bookkeeping (the process engine keeps the encoded payload there).
        self.key = key
        # A single submit(fn, *args, **kwargs) call rather than a slice of a map's input.
        self.submit = submit
        self.fn_blob = fn_blob
        # Called by the backend just before the batch starts; False means it was
        # cancelled meanwhile and must be dropped (a submit() future's cancel()).
        self.claim = claim
        # Seconds one item may run (None: no limit); the backend enforces it per item.
        self.timeout = timeout
        # Time each item (for the slowest items of pool.stats()); costs two clock
        # reads per item, so only asked for where that is cheap (see _stats).
        self.time_items = time_items
        # Where the submitter waits (Backend.origin(): the event loop that awaits a
        # submit() future); a backend running coroutines runs them there. Untyped:
        # only the backend that made it reads it, as what its origin() returns.
        self.origin = origin
        # Seconds after which the batch stops, reporting the items it did not reach
        # as unrun (a map's opening batch, sized before any item's cost was known);
        # None: it runs whole. Only backends with an ``opening_budget`` read it.
        self.budget = budget

    def __repr__(self) -> str:
        return _repr(self, _BATCH_REPR)

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
            time_items=self.time_items,
            origin=self.origin,
            budget=self.budget,
        )

    def __len__(self) -> int:
        return len(self.items)

    def name_item(self, offset: int) -> str:
        """How an error names one item: its input index, or the submitted call."""
        if self.submit:
            name = getattr(self.fn, "__qualname__", None) or repr(self.fn)
            return f"the call to {name}"
        return f"input item {self.start + offset}"


class BatchResult:
    """Outcome of a batch: one value per item, and the failures by offset.

    ``values[i]`` is ``None`` for a failed item; ``failures`` maps the offset in the
    batch to the exception. ``elapsed`` is the compute time measured where the batch
    ran (the chunk planner learns item cost from it). ``unrun`` lists ``(lo, hi)``
    offset ranges whose items have no outcome and must be run again: a worker that
    retired after its task quota, or that was killed for another item's timeout or
    crash (those items are innocent, and re-running them is not a retry).

    For :mod:`manycore._observe._stats`: ``slowest`` lists ``(offset, seconds)`` of the
    batch's slowest items when they were timed one by one; ``moving`` is the
    seconds spent pickling, copying and loading the batch's data; ``worker`` is
    the slot (or cluster address) of the worker that ran it; ``nested``: it ran
    while an item of the same pool waited for it, in that item's slot (threads),
    so its time is counted once, as that item's.
    """

    def __init__(
        self,
        values: list[object],
        failures: dict[int, BaseException] | None,
        elapsed: float,
        unrun: list[tuple[int, int]] | None = None,
        slowest: list[tuple[int, float]] | None = None,
        moving: float = 0.0,
        worker: int | str | None = None,
        nested: bool = False,
    ) -> None:
        self.values = values
        self.failures = failures
        self.elapsed = elapsed
        self.unrun = unrun
        self.slowest = slowest
        self.moving = moving
        self.worker = worker
        self.nested = nested

    def __repr__(self) -> str:
        return _repr(self, _RESULT_REPR)


# What the reprs show (as the dataclasses did: not fn_blob, claim, origin).
_BATCH_REPR = (
    *("fn", "items", "start", "star", "kwargs", "key", "submit", "timeout", "time_items"),
    "budget",
)
_RESULT_REPR = ("values", "failures", "elapsed", "unrun", "slowest", "moving", "worker", "nested")


def run_chunk(fn: Callable[..., R], chunk: Sequence[tuple[Any, ...]]) -> list[R]:
    """``[fn(*args) for args in chunk]``: one call that runs a chunk of an Executor's
    ``map`` in a worker (here, in the module every worker imports anyway)."""
    return [fn(*args) for args in chunk]


def run_batch(
    fn: Callable[..., object],
    items: Sequence[Any],
    star: bool,
    kwargs: dict[str, object] | None,
    catch: type[BaseException] | tuple[type[BaseException], ...],
    time_items: bool = False,
) -> BatchResult:
    """Run ``fn`` over ``items``; a failing item never loses the others' values.

    The common case is a tight loop with the ``try`` outside it; after a failure the
    loop resumes at the next item (items are sliceable), so the fast path stays fast.
    ``time_items``: time each item, for ``BatchResult.slowest``.
    """
    if time_items:
        return _run_timed(fn, items, star, kwargs, catch)
    started = time.perf_counter()
    values: list[object] = []
    append = values.append
    failures: dict[int, BaseException] | None = None
    pos = 0
    n = len(items)
    while pos < n:
        rest = items[pos:] if pos else items
        try:
            # list.extend over map() loops in C (no bytecode per item) and keeps
            # what it appended when an item raises: len(values) is then its offset.
            if kwargs:
                for args in rest:
                    append(fn(*args, **kwargs))
            elif star:
                values.extend(itertools.starmap(fn, rest))
            else:
                values.extend(map(fn, rest))
        except catch as exc:
            if failures is None:
                failures = {}
            failures[len(values)] = from_user_code(exc)
            append(None)
        pos = len(values)
    return BatchResult(values, failures, time.perf_counter() - started)


def _run_timed(
    fn: Callable[..., object],
    items: Sequence[Any],
    star: bool,
    kwargs: dict[str, object] | None,
    catch: type[BaseException] | tuple[type[BaseException], ...],
) -> BatchResult:
    """:func:`run_batch` that times each item: one clock read per item (each item's
    time runs from the end of the one before), so tiny items pay little."""
    clock = time.perf_counter
    values: list[object] = []
    stamps: list[float] = []  # when each item ended
    append, stamp = values.append, stamps.append
    failures: dict[int, BaseException] | None = None
    call = _caller(fn, star, kwargs)
    frames = 1 if call is fn else 2  # this loop, and the wrapper around fn
    started = clock()
    for args in items:
        try:
            append(call(args))
        except catch as exc:
            if failures is None:
                failures = {}
            failures[len(values)] = from_user_code(exc, frames)
            append(None)
        stamp(clock())
    last = stamps[-1] if stamps else started
    took = list(map(operator.sub, stamps, [started, *stamps[:-1]]))
    result = BatchResult(values, failures, last - started)
    result.slowest = _slowest(took)
    return result


def _caller(
    fn: Callable[..., object], star: bool, kwargs: dict[str, object] | None
) -> Callable[[Any], object]:
    """``fn`` as a one-argument call on an item (an argument tuple with ``star``)."""
    if kwargs:
        return lambda args: fn(*args, **kwargs)
    if star:
        return lambda args: fn(*args)
    return fn


def from_user_code(exc: BaseException, frames: int = 1) -> BaseException:
    """Start the traceback at the user's function, not at the loop (``frames``
    of ours) that called it."""
    tb = exc.__traceback__
    for _ in range(frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    # Not ``exc.__traceback__ = tb``: a frozen dataclass exception refuses that
    # (its __setattr__ raises), and the error would end the worker or thread.
    set_traceback(exc, tb)
    return exc


def run_tracked(
    fn: Callable[..., object],
    items: Sequence[Any],
    star: bool,
    kwargs: dict[str, object] | None,
    catch: type[BaseException] | tuple[type[BaseException], ...],
    mark: Callable[[int], bool] | None,
) -> BatchResult:
    """:func:`run_batch` that times each item and calls ``mark(offset)`` (if
    given) before it.

    The mark records which item runs since when (for timeouts), or stops the batch
    by returning False (a worker past its memory limit): the items from there on
    are reported in ``unrun``. Slower per item than :func:`run_batch`, so it is
    used only when a batch needs it.
    """
    clock = time.perf_counter
    started = clock()
    values: list[object] = []
    failures: dict[int, BaseException] | None = None
    took: list[float] = []
    n = len(items)
    for offset in range(n):
        if mark is not None and not mark(offset):
            values.extend([None] * (n - offset))
            result = BatchResult(values, failures, clock() - started, [(offset, n)])
            result.slowest = _slowest(took)
            return result
        args = items[offset]
        began = clock()
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
            failures[offset] = from_user_code(exc)
            values.append(None)
        took.append(clock() - began)
    result = BatchResult(values, failures, clock() - started)
    result.slowest = _slowest(took)
    return result


def _slowest(took: list[float], keep: int = 5) -> list[tuple[int, float]]:
    """The ``keep`` slowest ``(offset, seconds)`` of a batch (few travel back).
    ``max`` and ``index`` scan in C: a batch of a million items takes milliseconds."""
    if len(took) <= keep:
        return list(enumerate(took))
    took = list(took)
    out = []
    for _ in range(keep):
        seconds = max(took)
        offset = took.index(seconds)
        out.append((offset, seconds))
        took[offset] = -1.0
    return out


def pinned(batch: Batch, offset: int, error: BaseException, seconds: float = 0.0) -> BatchResult:
    """The outcome of a batch stopped at item ``offset`` (a timeout, or a crash
    that took the worker with it): that item fails; every other one has no
    outcome and is to be run again. ``seconds``: how long that item had run
    (a timed-out item is among the slowest, not the fastest)."""
    n = len(batch)
    unrun = [r for r in ((0, offset), (offset + 1, n)) if r[0] < r[1]]
    result = BatchResult([None] * n, {offset: error}, seconds, unrun or None)
    result.slowest = [(offset, seconds)]
    return result


# How a backend reports a batch: its result, or an exception that failed it whole.
Done = Callable[[Batch, "BatchResult | BaseException"], None]
