"""Backend-agnostic policy: chunking, ordering, back-pressure, error handling.

:class:`ChunkPlanner` (``_planner``) decides batch sizes. :class:`MapRun` drives one
``map``/``imap`` call: it reads the input lazily in the caller's thread, keeps a
bounded window of batches in flight on the backend, and yields results.
"""

from __future__ import annotations

import itertools
import pickle
import queue
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

from manycore._core import (
    Batch,
    BatchResult,
    PoolClosed,
    SerializationError,
    is_pool_broken,
    is_worker_crash,
)
from manycore._observe import Stats, StatsRecorder
from manycore._scheduler._on_error import on_batch, own_copy
from manycore._scheduler._options import CallOptions
from manycore._scheduler._planner import ChunkPlanner
from manycore._scheduler._retries import Retries
from manycore.backends import Backend

if TYPE_CHECKING:
    from manycore._observe import Progress

__all__ = ["ChunkPlanner", "InputSource", "MapRun"]

_SAMPLE = 16  # items pickled to guess the size of an opening batch
_MIN_LOOKAHEAD = 64  # items a lazy input's batch may hold before any result is taken
_BIG_ITEM = 1 << 16  # an item holding this many bytes of array data is "big"
_BATCH_BYTES = 16 << 20  # a batch of big items holds about this much data at most
# Items are timed one by one (for the slowest items of pool.stats()) once they are
# known to cost this much: two clock reads are then under 1% of an item.
_TIME_ITEMS_FROM = 20e-6


_POOL_ERRORS = (PoolClosed, CancelledError)  # and PoolBroken (is_pool_broken)


def _is_array(obj: object) -> bool:
    """A NumPy array with at least one dimension (NumPy is never imported here)."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.ndarray) and obj.ndim > 0


def _array_bytes(item: object) -> int:
    """Bytes of NumPy array data in ``item`` (an array, or arrays in a tuple, list
    or dict, one level down), if that makes it a big item; else 0. NumPy is
    never imported here."""
    np = sys.modules.get("numpy")
    if np is None:
        return 0
    if isinstance(item, dict):
        parts: Iterable[object] = item.values()
    elif isinstance(item, (tuple, list)):
        parts = item
    else:
        parts = (item,)
    total = sum(p.nbytes for p in parts if isinstance(p, np.ndarray))
    return total if total >= _BIG_ITEM else 0


class InputSource:
    """Cuts the input into slices: sequences by slicing, iterators lazily.

    Several runs may read one source in turn (``backend="auto"`` runs the first
    items inline, then the rest elsewhere): ``until`` ends the input for the
    current run at that index, and a run started later goes on from
    ``position``, with the indexes of the whole input.
    """

    def __init__(self, iterables: Sequence[Iterable[object]], star: bool):
        self.star = star or len(iterables) > 1
        self.position = 0
        self.until: int | None = None  # take nothing at or past this index (None: no end)
        self._seq: Sequence[object] | None = None
        self._iter: Iterator[object] | None = None
        self.error: Exception | None = None  # what a lazy input raised, if it did
        self.item_bytes = 0  # array bytes in one item, when items are big arrays
        self.done = 0  # items done before the run began (a resumed checkpoint)
        only: Any = iterables[0] if len(iterables) == 1 else None
        if isinstance(only, (range, list, tuple)) or _is_array(only):
            self._seq = only
        elif only is not None:
            self._iter = iter(only)
        else:
            self._iter = zip(*iterables, strict=False)

    @property
    def total(self) -> int | None:
        return len(self._seq) if self._seq is not None else None

    @property
    def remaining(self) -> int | None:
        return len(self._seq) - self.position if self._seq is not None else None

    def take(self, n: int) -> tuple[int, Sequence[object]] | None:
        """The next ``n`` items (fewer at the end) and the index of the first."""
        start = self.position
        if self.until is not None:
            n = min(n, self.until - start)
            if n <= 0:
                return None
        if self._seq is not None:
            items = self._seq[start : start + n]
        else:
            assert self._iter is not None
            items = []
            try:
                items.extend(itertools.islice(self._iter, n))
            except Exception as exc:
                # The input itself failed: what it gave before still runs; the
                # run raises this once those results are out.
                self.error = exc
                self._iter = iter(())
        if not len(items):
            return None
        if start == 0:
            self.item_bytes = _array_bytes(items[0])
        self.position = start + len(items)
        return start, items

    def peek(self, n: int) -> list[object]:
        """The next ``n`` items (fewer at the end) of a sequence input, not taken."""
        assert self._seq is not None
        return list(self._seq[self.position : self.position + n])

    def at_end(self) -> bool:
        """True if no item is left. A lazy input reads one item ahead for this and
        keeps it for the next ``take`` (an error reading it is kept for the run)."""
        if self._seq is not None:
            return self.position >= len(self._seq)
        assert self._iter is not None
        try:
            for item in self._iter:
                self._iter = itertools.chain((item,), self._iter)
                return False
        except Exception as exc:
            self.error = exc  # raised by the next run once it has nothing else to do
            self._iter = iter(())
        return True


class MapRun:
    """One ``map``/``imap`` call on a backend; iterate it for lists of values,
    following ``policy``. Batches still out are cancelled on exit."""

    def __init__(
        self,
        backend: Backend,
        fn: Callable[..., object],
        source: InputSource,
        policy: CallOptions,
        planner: ChunkPlanner | None = None,
        fn_blob: bytes | None = None,
        recorders: Sequence[StatsRecorder] = (),
    ):
        """``planner``: by default the backend's (see :meth:`ChunkPlanner.for_backend`)."""
        if planner is None:
            planner = ChunkPlanner.for_backend(
                backend, policy.chunksize, policy.timeout is not None
            )
        self._backend = backend
        # The pool's stats, and the call's own last when it asked for stats=True.
        self._recorders = tuple(recorders)
        self.call_stats = self._recorders[-1] if policy.stats and recorders else None
        self._fn = fn
        self._fn_blob = fn_blob
        self._source = source
        self._planner = planner
        self._policy = policy
        self._done: queue.SimpleQueue[tuple[Batch, BatchResult | BaseException]] = (
            queue.SimpleQueue()
        )
        self._inflight: dict[int, Batch] = {}
        self._window = 2 * backend.workers if backend.concurrent else 1
        # Keys of one-item batches sent before any cost was known, where a batch
        # has a cost of its own (a cluster): once one answers, the rest of the
        # window is not kept waiting for them.
        self._probes: set[int] = set()
        self._exhausted = False
        self._keys = itertools.count()
        self._retry: list[Batch] = []  # items to run again now (a crash, unrun items)
        # Retries waiting out their backoff, by input index (on the clock of this
        # module's ``time``, which a scripted test replaces).
        self._retries: Retries[int, Batch] = Retries(time.monotonic)
        self._delivered = 0  # items handed to the consumer so far
        self._stopped = False  # stop() was called: end now, kill what runs
        self._bar: Progress | None = None  # the progress bar, while the run is iterated
        self._first = source.position  # 0, unless an earlier run took the first items

    def __iter__(self) -> Iterator[list[Any]]:
        stream = self._stream()
        try:
            for _, out in stream:
                yield out
        finally:
            stream.close()  # its own finally block cancels what is still out

    def indexed(self) -> Generator[tuple[int, list[Any]], None, None]:
        """``(index of the first, values)`` for each finished stretch of input, as
        batches finish (a checkpoint stores each where it belongs). Only for an
        unordered run collecting failures: then ``values`` holds one entry per
        input, a :class:`Failure` for a failed one, and the stretch is whole."""
        assert not self._policy.ordered and self._policy.on_error == "collect"
        return self._stream()

    def _stream(self) -> Generator[tuple[int, list[Any]], None, None]:
        # Ordered mode: start index -> (inputs the batch covered, values, error).
        ready: dict[int, tuple[int, list[Any], BaseException | None]] = {}
        next_start = self._first
        if self._policy.progress:
            from manycore._observe import Progress

            label = self._policy.progress
            self._bar = Progress(
                self._source.total,
                label if isinstance(label, str) else "manycore",
                self._policy.on_error,
                self._source.done,
            )
        try:
            while True:
                if self._stopped:
                    raise CancelledError("the map was stopped")
                self._fill(len(ready))
                if not self._inflight and not self._retries and not self._retry:
                    if self._source.error is not None:
                        raise self._source.error
                    break
                for start, covered, out, error in self._collect():
                    if self._bar is not None:
                        self._bar.advance(covered, out, error)
                    if not self._policy.ordered:
                        if out:
                            self._delivered += len(out)
                            yield start, out
                        if error is not None:
                            raise error
                        continue
                    ready[start] = (covered, out, error)
                # Results are handed out in input order; a failure is raised when
                # its turn comes, after every result before it.
                while next_start in ready:
                    start = next_start
                    covered, out, error = ready.pop(start)
                    next_start += covered
                    if out:
                        self._delivered += len(out)
                        yield start, out
                    if error is not None:
                        raise error
        except (KeyboardInterrupt, SystemExit):
            # Ctrl-C: what runs for this map stops now, where the backend can.
            self._cancel_inflight(kill=True)
            raise
        finally:
            self._cancel_inflight(kill=self._stopped)
            if self._bar is not None:
                self._bar.close()

    def stats(self) -> Stats:
        """The :class:`Stats` of this run so far (a run made with ``stats=True``)."""
        assert self.call_stats is not None
        return self.call_stats.snapshot(self._backend.restarts())

    def stop(self) -> None:
        """End this run from any thread (an ``amap`` whose caller was cancelled):
        its iteration raises CancelledError, and what runs for it is killed where
        the backend can."""
        self._stopped = True
        # A batch no run sent (key -1): it wakes a waiting _wait, and _collect
        # raises its CancelledError as a pool error.
        self._done.put((Batch(self._fn, (), key=-1), CancelledError("the map was stopped")))
        self._backend.wake()

    def _fill(self, buffered: int) -> None:
        """Send batches until the window is full; read the input only as needed."""
        self._retry.extend(self._retries.due())
        # Items to re-run go out even when the ordered buffer is full: the results
        # held there may be waiting for exactly these items.
        while self._room() and (self._retry or buffered < 4 * self._window):
            if self._retry:
                batch = self._retried()
            elif self._exhausted:
                return
            else:
                fresh = self._fresh()
                if fresh is None:
                    self._exhausted = True
                    return
                batch = fresh
            batch.key = next(self._keys)
            self._inflight[batch.key] = batch
            if self._planner.overhead and self._planner.cost is None:
                self._probes.add(batch.key)
            try:
                self._backend.submit(batch, self._on_done)
            except SerializationError as exc:
                # An input that will not pickle fails that item alone: split the
                # batch to find it; a single item's error goes through the policy.
                if len(batch) > 1:
                    self._inflight.pop(batch.key, None)
                    self._retry.extend(batch.part(o, o + 1) for o in reversed(range(len(batch))))
                else:
                    self._done.put((batch, exc))
            except BaseException:
                self._inflight.pop(batch.key, None)
                raise

    def _fresh(self) -> Batch | None:
        """The next batch from the input, sized by the planner; None at its end."""
        remaining = self._source.remaining
        # A lazy input is read at most about as far ahead as the consumer
        # has got: an endless generator costs bounded memory and time.
        limit = None if remaining is not None else max(_MIN_LOOKAHEAD, self._delivered)
        if self._source.item_bytes:
            # Big items (arrays) go a few at a time: copying a batch into
            # shared memory delays its start, and a small batch overlaps
            # the copy of the next with the work on this one.
            cap = max(1, _BATCH_BYTES // self._source.item_bytes)
            limit = cap if limit is None else min(limit, cap)
        opening = self._planner.opens
        if opening and remaining:
            limit = self._opening_cap(limit)
        size = self._planner.next_size(remaining, limit)
        taken = self._source.take(size)
        if taken is None:
            return None
        start, items = taken
        cost = self._planner.cost
        return Batch(
            self._fn,
            items,
            start,
            self._source.star,
            fn_blob=self._fn_blob,
            timeout=self._policy.timeout,
            time_items=self._policy.stats or (cost is not None and cost >= _TIME_ITEMS_FROM),
            budget=self._backend.opening_budget if opening and len(items) > 1 else None,
        )

    def _retried(self) -> Batch:
        """The next batch to run again. The rest of an opening batch goes out in
        batches of the planner's size (its items' cost is known now)."""
        batch = self._retry.pop()
        if batch.budget is None or self._planner.cost is None:
            return batch
        size = self._planner.next_size(len(batch) + (self._source.remaining or 0))
        if len(batch) > size:
            self._retry.append(batch.part(size, len(batch)))
            batch = batch.part(0, size)
        batch.budget = None
        return batch

    def _opening_cap(self, limit: int | None) -> int:
        """``limit`` for an opening batch: about ``_BATCH_BYTES`` of pickled
        items (those it does not reach are sent again)."""
        most = _BATCH_BYTES
        try:
            # The first item, then as many more as fit (pickled apart, each
            # carries a header: a list of a few tells the size of tiny items).
            first = len(pickle.dumps(self._source.peek(1), pickle.HIGHEST_PROTOCOL))
            sample = self._source.peek(max(1, min(_SAMPLE, most // first)))
            size = len(pickle.dumps(sample, pickle.HIGHEST_PROTOCOL))
        except Exception:  # it will not pickle: the batch that carries it says so
            return 1
        cap = max(1, most * len(sample) // size)
        return cap if limit is None else min(limit, cap)

    def _room(self) -> bool:
        """Whether the window has room for another batch."""
        busy = len(self._inflight)
        if self._probes and self._planner.cost is not None:
            busy -= len(self._probes)
        return busy < self._window

    def _on_done(self, batch: Batch, result: BatchResult | BaseException) -> None:
        self._done.put((batch, result))

    def _collect(self) -> list[tuple[int, int, list[Any], BaseException | None]]:
        """Wait for one batch (or for the next retry to fall due) and apply the
        policy: a list of (start, inputs covered, values to hand out, error to
        raise after them); empty when there is nothing to hand out yet."""
        got = self._wait()
        if got is None:
            return []
        batch, result = got
        self._inflight.pop(batch.key, None)
        self._probes.discard(batch.key)
        for recorder in self._recorders:
            recorder.record(batch, result)
        crash = is_worker_crash(result) or isinstance(result, SerializationError)
        if crash and len(batch) > 1:
            # The crash belongs to one item; give every item a batch of its own so
            # that only the guilty one fails and the innocent ones are computed.
            # So does a batch whose arguments would not load in the worker, or whose
            # results would not load here: one item's data spoils the whole pickle.
            for offset in reversed(range(len(batch))):
                self._retry.append(batch.part(offset, offset + 1))
            return []
        if isinstance(result, _POOL_ERRORS) or is_pool_broken(result):
            raise result  # the pool itself failed, not an item: no policy applies
        if isinstance(result, BaseException):  # the whole batch failed
            values: list[Any] = [None] * len(batch)
            failures = {i: own_copy(result, i) for i in range(len(batch))}
        else:
            if batch.budget is not None:  # its budget ran out: the items it ran say
                ran = len(batch) - sum(hi - lo for lo, hi in result.unrun or ())
                self._planner.observe(ran, result.elapsed)
            elif not result.unrun:  # a cut-short batch says little about item cost
                self._planner.observe(len(batch), result.elapsed)
            values, failures = result.values, result.failures or {}
            if result.unrun:
                return self._settle(batch, values, failures, result.unrun)
        return self._settle(batch, values, failures)

    def _wait(self) -> tuple[Batch, BatchResult | BaseException] | None:
        """The next finished batch, or None if a retry falls due first."""
        done = self._done
        deadline = self._retries.next_due()
        if not self._inflight:  # only retries are left: wait for the first
            time.sleep(self._retries.wait() or 0.0)
            return None
        if not done.empty():
            return done.get()
        if self._backend.drive(lambda: not done.empty(), deadline):
            if done.empty() and deadline is not None and time.monotonic() >= deadline:
                return None
            return done.get()  # normally there; after a close, it is on its way
        with self._backend.passive():  # another thread polls for us
            try:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                return done.get(timeout=timeout)
            except queue.Empty:
                return None

    def _settle(
        self,
        batch: Batch,
        values: list[Any],
        failures: dict[int, BaseException],
        unrun: list[tuple[int, int]] | None = None,
    ) -> list[tuple[int, int, list[Any], BaseException | None]]:
        """Split off the items to run again (retries after a backoff, unrun items at
        once); apply the error policy to the stretches between them."""
        on_error = self._policy.on_error
        holes = sorted(unrun or ())
        self._retry.extend(batch.part(lo, hi) for lo, hi in reversed(holes))  # lowest popped first
        for o in sorted(failures):
            if self._retries.book(batch.start + o, failures[o], self._policy, batch.part(o, o + 1)):
                holes.append((o, o + 1))
        if not holes:
            return [(batch.start, *on_batch(on_error, batch, values, failures))]
        entries = []
        prev = 0
        for lo, hi in [*sorted(holes), (len(batch), len(batch))]:
            if lo > prev:  # the stretch between holes is settled now
                part = batch.part(prev, lo)
                part_failures = {o - prev: e for o, e in failures.items() if prev <= o < lo}
                entries.append(
                    (part.start, *on_batch(on_error, part, values[prev:lo], part_failures))
                )
            prev = hi
        return entries

    def _cancel_inflight(self, kill: bool = False) -> None:
        batches = list(self._inflight.values())
        self._inflight.clear()
        self._probes.clear()
        # What has not started is dropped first: a kill frees a worker (or a
        # coroutine's slot), which would otherwise start a queued batch of this
        # very run only for it to be killed in turn.
        running = [b for b in batches if not _attempt(self._backend.cancel, b)]
        if kill:
            for batch in running:
                _attempt(self._backend.kill, batch)


def _attempt(stop: Callable[[Batch], bool], batch: Batch) -> bool:
    """``stop(batch)``; False also if it failed (the pool closed meanwhile, ...)."""
    try:
        return stop(batch)
    except Exception:
        return False
