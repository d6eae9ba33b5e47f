"""``checkpoint=``: a map's finished items kept in an SQLite file, so that a run
killed half-way (even by SIGKILL) resumes where it stopped.

An item is keyed by its index and a fingerprint of its input; the file's ``meta``
table holds a fingerprint of the function. A resumed run reads the input as far
as the file holds results, compares each stored item's fingerprint with the
current one, and sends only the rest through the ordinary :class:`MapRun`, with
real input indices (so error notes and ``Failure.index`` are right) and
``on_error="collect"`` (so each failure is stored too). The caller's ``on_error``
is applied at the end, to the whole list. The file is committed once per
finished batch, never per item, in WAL mode: a killed process leaves the last
commit intact.

Stored failures are not kept as final: a resumed run computes them again (see
:func:`run_checkpointed`). The file itself is ``_checkpoint_file``; the
fingerprints are ``_fingerprint``.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import itertools
import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import cloudpickle

from manycore._core import Failure, SerializationError, pack_exception, rebuild, tag_with_index
from manycore._scheduler._checkpoint_file import CheckpointFile
from manycore._scheduler._checkpoint_pickle import load
from manycore._scheduler._fingerprint import fingerprint, function_name, input_digests
from manycore._scheduler._maprun import InputSource, MapRun
from manycore._scheduler._on_error import apply_on_error
from manycore._scheduler._options import CallOptions

__all__ = ["read_checkpoint", "run_checkpointed"]

_PREPASS_CHUNK = 4096  # input items read at a time while matching the stored ones
_MAX_PAYLOAD = 1_000_000_000 - 4096  # SQLite's default limit on one value's bytes
_MISSING = object()
_Start = Callable[[InputSource, CallOptions], MapRun]

# --------------------------------------------------------------------- the input


class _Source(InputSource):
    """A checkpointed run's input: only items not done yet are handed out, each
    with its real index; every item is fingerprinted as it is read."""

    def __init__(self, iterables: Sequence[Iterable[object]], star: bool):
        super().__init__(iterables, star)
        # Stretches of items not done that the match against the file read ahead.
        self._kept: collections.deque[tuple[int, Sequence[object], list[bytes]]] = (
            collections.deque()
        )
        self._kept_count = 0
        # What take() handed out and is not stored yet: first index -> [items,
        # fingerprints, how many not stored yet]; the first indices, sorted.
        self._out: dict[int, list[Any]] = {}
        self._starts: list[int] = []

    @property
    def remaining(self) -> int | None:
        rest = super().remaining
        return None if rest is None else rest + self._kept_count

    def read(self, n: int) -> tuple[int, Sequence[object], list[bytes]] | None:
        """The next ``n`` items of the input itself, with their fingerprints."""
        taken = super().take(n)
        if taken is None:
            return None
        start, items = taken
        return start, items, input_digests(items)

    def keep(self, start: int, items: Sequence[object], digests: list[bytes]) -> None:
        """Items read ahead and not done: take() hands them out first."""
        self._kept.append((start, items, digests))
        self._kept_count += len(items)

    def take(self, n: int) -> tuple[int, Sequence[object]] | None:
        if self._kept:
            start, items, digests = self._kept.popleft()
            if len(items) > n:
                self._kept.appendleft((start + n, items[n:], digests[n:]))
                items, digests = items[:n], digests[:n]
            self._kept_count -= len(items)
        else:
            got = self.read(n)
            if got is None:
                return None
            start, items, digests = got
        self._out[start] = [items, digests, len(items)]
        self._starts.append(start)  # always above the others: it stays sorted
        return start, items

    def settle(self, first: int, count: int) -> tuple[Sequence[object], list[bytes]]:
        """The inputs and fingerprints of items ``first..first+count``, which came
        back together (a batch, or part of one: they lie in one handed-out chunk)."""
        at = bisect.bisect_right(self._starts, first) - 1
        start = self._starts[at]
        chunk = self._out[start]
        lo = first - start
        chunk[2] -= count
        if chunk[2] == 0:
            del self._out[start]
            del self._starts[at]
        return chunk[0][lo : lo + count], chunk[1][lo : lo + count]


def _match_stored(
    source: _Source, store: CheckpointFile, results: list[object]
) -> tuple[int, list[int]]:
    """Read the input as far as the file holds results. An item whose stored
    fingerprint is its own is done: its value goes into ``results``; the others
    are kept in ``source`` to run. Returns how many are done and the indices
    whose input changed. (Stored items past the end of a shorter input are
    simply not used.)"""
    done = 0
    changed: list[int] = []
    last = store.last_done()
    while last is not None and source.position <= last:
        got = source.read(_PREPASS_CHUNK)
        if got is None:
            break
        start, items, digests = got
        end = start + len(items)
        _grow(results, end)
        rows = store.done_in(start, end)
        if len(rows) == len(items) and [row[1] for row in rows] == digests:
            try:  # the common case: all stored, none changed
                results[start:end] = [load(row[2]) for row in rows]
                done += len(rows)
                continue
            except Exception:
                pass  # one no longer loads: see which, below
        lo = 0  # the first offset of the stretch not done
        for index, stored, payload in rows:
            if stored != digests[index - start]:
                changed.append(index)
                continue
            try:
                results[index] = load(payload)
            except Exception:
                continue  # a value that no longer loads (its class is gone): computed again
            done += 1
            if index - start > lo:
                source.keep(start + lo, items[lo : index - start], digests[lo : index - start])
            lo = index - start + 1
        if lo < len(items):
            source.keep(start + lo, items[lo:], digests[lo:])
    return done, changed


def _grow(results: list[object], size: int) -> None:
    if len(results) < size:
        results.extend([_MISSING] * (size - len(results)))


# ----------------------------------------------------------------------- the run


def run_checkpointed(
    fn: Callable[..., object],
    iterables: Sequence[Iterable[object]],
    star: bool,
    policy: CallOptions,
    path: str,
    resume: bool | str,
    start: _Start,
) -> list[Any]:
    """``map``/``starmap`` with its finished items kept in the file at ``path``.

    ``start(source, policy)`` begins a :class:`MapRun` on the pool. The items are
    run unordered, collecting failures; the result is in input order, and
    ``policy.on_error`` applies to the whole list at the end. So with "raise",
    every item is run and stored before the first failure (in input order) is
    raised: a resumed run then computes only the failed items again.

    Why a stored failure is not final: the failures of long batches are often
    transient (a timeout under load, a killed worker, a network error), or fixed
    since (a changed function needs ``resume="force"``, which then retries them);
    a success is never computed again, a failure costs one more attempt.
    """
    fn_hash, fn_name = fingerprint(fn, star), function_name(fn)
    store = CheckpointFile(path)
    try:
        store.check(fn_hash, fn_name, resume)
        source = _Source(iterables, star)
        results: list[Any] = []
        if resume is not False:
            source.done, changed = _match_stored(source, store, results)
            if changed and resume is True:
                more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
                raise store.mismatch(
                    f"holds a result for input item {changed[0]}{more}, but that input "
                    "has changed since"
                )
        store.begin(fn_hash, fn_name, resume is False, source.total)
        run = start(source, dataclasses.replace(policy, ordered=False, on_error="collect"))
        with contextlib.closing(run.indexed()) as finished:  # closed: nothing left running
            for first, values in finished:
                items, digests = source.settle(first, len(values))
                store.put(_rows(first, values, items, digests))
                _grow(results, first + len(values))
                results[first : first + len(values)] = values
        if source.total is None:
            store.set_total(source.position)
    finally:
        store.close()
    return _apply(policy.on_error, results)


def _rows(
    first: int, values: list[object], items: Sequence[object], digests: list[bytes]
) -> Iterable[tuple[int, bytes, int, bytes]]:
    """The file's rows for items ``first...``. A value that cannot be stored
    becomes that item's failure (a SerializationError), in ``values`` too."""
    if Failure not in map(type, values):  # the common case, in C loops: no failure
        try:
            payloads = [pickle.dumps(v, 5) for v in values]
        except Exception:
            pass  # one of them needs cloudpickle, or cannot be stored: item by item
        else:
            if max(map(len, payloads), default=0) <= _MAX_PAYLOAD:
                span = range(first, first + len(values))
                return zip(span, digests, itertools.repeat(1), payloads)
    rows = []
    for offset, value in enumerate(values):
        index = first + offset
        if type(value) is not Failure:
            try:
                payload = _dump(value)
            except BaseException as exc:  # the user's __reduce__ ran: even SystemExit
                error = SerializationError(
                    f"the result of input item {index} ({type(value).__name__}) cannot be "
                    f"stored in the checkpoint: {exc}"
                )
                error.__cause__ = exc
                value = values[offset] = Failure(tag_with_index(error, index), index, items[offset])
            else:
                rows.append((index, digests[offset], 1, payload))
                continue
        rows.append((index, digests[offset], 0, _pack_failure(value)))
    return rows


def _dump(value: object) -> bytes:
    """A value as stored: pickle, else cloudpickle (a lambda, a local class)."""
    try:
        payload = pickle.dumps(value, 5)
    except Exception:
        payload = cloudpickle.dumps(value, 5)
    if len(payload) > _MAX_PAYLOAD:
        raise ValueError(f"{len(payload)} bytes pickled; an SQLite value holds 1 GB at most")
    return payload


def _pack_failure(failure: Failure) -> bytes:
    """A failure as it is stored: the packed exception, with the traceback text of
    where it ran (the worker's), so that it rebuilds as a :class:`Failure`."""
    blob, type_name, message, _ = pack_exception(failure.exception)
    return pickle.dumps((blob, type_name, message, failure.traceback), 5)


def _apply(on_error: str, results: list[Any]) -> list[Any]:
    """The caller's ``on_error`` over the whole list (a failure is its Failure)."""
    failed = {i for i, v in enumerate(results) if type(v) is Failure}
    _, out, error = apply_on_error(on_error, results, failed, results.__getitem__)
    if error is not None:
        raise error
    return out


def read_checkpoint(path: str | os.PathLike[str]) -> dict[int, Any]:
    """What the file holds: index -> value, or a :class:`Failure` (its ``input``
    is None: inputs are not stored) for a stored failure."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint file at {os.fspath(path)!r}")
    store = CheckpointFile(os.fspath(path), write=False)
    try:
        if not store.meta:
            return {}
        out: dict[int, Any] = {}
        for index, ok, payload in store.all_rows():
            out[index] = load(payload) if ok else Failure(rebuild(load(payload), load), index, None)
        return out
    finally:
        store.close()
