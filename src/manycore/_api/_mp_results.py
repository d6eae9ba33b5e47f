"""The result objects of ``manycore.multiprocessing.Pool``, as ``multiprocessing.pool``
has them: :class:`ApplyResult` (``AsyncResult``), :class:`MapResult`,
:class:`IMapIterator` and :class:`IMapUnorderedIterator`.

The pool's result thread calls ``settle`` on each (one thread, in the order the
outcomes arrive, as the standard pool's result-handler thread does), so callbacks
run one at a time and before ``get()`` returns. A :class:`Jobs` set holds the
results not yet complete, for ``Pool.join`` to wait on.
"""

from __future__ import annotations

import collections
import sys
import threading
import types
from collections.abc import Callable, Iterator
from multiprocessing import TimeoutError as MpTimeoutError
from typing import Any

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "Jobs",
    "MapResult",
]

Callback = Callable[[Any], object] | None


class Jobs:
    """The results of one pool that are not complete yet."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open: set[object] = set()

    def add(self, result: object) -> None:
        with self._cond:
            self._open.add(result)

    def discard(self, result: object) -> None:
        with self._cond:
            self._open.discard(result)
            if not self._open:
                self._cond.notify_all()

    def wait_empty(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._open)

    def pending(self) -> list[Any]:
        with self._cond:
            return list(self._open)


class ApplyResult:
    """The result of ``apply_async``: ``get``, ``wait``, ``ready``, ``successful``."""

    __class_getitem__: Any = classmethod(types.GenericAlias)

    def __init__(self, jobs: Jobs, callback: Callback, error_callback: Callback):
        self._event = threading.Event()
        self._jobs = jobs
        self._callback = callback
        self._error_callback = error_callback
        self._success = False
        self._value: Any = None
        jobs.add(self)

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        self.wait(timeout)
        if not self.ready():
            raise MpTimeoutError
        if self._success:
            return self._value
        raise self._value

    def settle(self, index: int, ok: bool, value: Any) -> None:
        """The outcome of part ``index`` (the pool's result thread calls this)."""
        self._success, self._value = ok, value
        self._finish()

    def fail(self, exc: BaseException) -> None:
        """Complete now with ``exc`` (the pool was terminated before the outcome came)."""
        if not self.ready():
            self._success, self._value = False, exc
            self._event.set()
            self._jobs.discard(self)

    def _finish(self) -> None:
        callback = self._callback if self._success else self._error_callback
        if callback is not None:
            _call(callback, self._value)
        self._event.set()
        self._jobs.discard(self)


AsyncResult = ApplyResult


class MapResult(ApplyResult):
    """The result of ``map_async``/``starmap_async``: one list, complete when every
    chunk is; the first chunk to fail (as they finish) gives the error."""

    def __init__(
        self, jobs: Jobs, chunksize: int, length: int, callback: Callback, error_callback: Callback
    ):
        super().__init__(jobs, callback, error_callback)
        self._success = True
        self._value = [None] * length
        self._chunksize = chunksize
        if chunksize <= 0:  # nothing to run: ready at once, and no callback (as the standard)
            self._number_left = 0
            self._event.set()
            jobs.discard(self)
        else:
            self._number_left = length // chunksize + bool(length % chunksize)

    def settle(self, index: int, ok: bool, value: Any) -> None:
        self._number_left -= 1
        if ok and self._success:
            size = self._chunksize
            self._value[index * size : (index + 1) * size] = value
        elif not ok and self._success:
            self._success, self._value = False, value  # only the first error is kept
        if self._number_left == 0:
            self._finish()

    def expect(self, parts: int) -> None:
        """Complete after ``parts`` outcomes (1: the input failed as it was cut up)."""
        self._number_left = parts


class IMapIterator:
    """The iterator of ``imap``: values in input order; ``next(timeout)``."""

    def __init__(self, jobs: Jobs):
        self._cond = threading.Condition(threading.Lock())
        self._jobs = jobs
        self._items: collections.deque[tuple[bool, Any]] = collections.deque()
        self._index = 0
        self._length: int | None = None
        self._unsorted: dict[int, tuple[bool, Any]] = {}
        jobs.add(self)

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._items:
                if self._index == self._length:
                    raise StopIteration
                self._cond.wait(timeout)
                if not self._items:
                    if self._index == self._length:
                        raise StopIteration
                    raise MpTimeoutError
            ok, value = self._items.popleft()
        if ok:
            return value
        raise value

    __next__ = next

    def settle(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            if self._index == index:
                self._items.append((ok, value))
                self._index += 1
                while self._index in self._unsorted:
                    self._items.append(self._unsorted.pop(self._index))
                    self._index += 1
                self._cond.notify()
            else:
                self._unsorted[index] = (ok, value)
            self._check_done()

    def set_length(self, length: int) -> None:
        """How many parts there are, once the input is all read."""
        with self._cond:
            self._length = length
            if self._index == length:
                self._cond.notify()
            self._check_done()

    def fail(self, exc: BaseException) -> None:
        """The pool was terminated: what did not come ends the iteration with ``exc``."""
        with self._cond:
            if self._index != self._length:
                self._items.append((False, exc))
                self._index += 1
                self._length = self._index
                self._cond.notify()
            self._check_done()

    def _check_done(self) -> None:
        if self._index == self._length:
            self._jobs.discard(self)


class IMapUnorderedIterator(IMapIterator):
    """The iterator of ``imap_unordered``: values as they finish."""

    def settle(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            self._items.append((ok, value))
            self._index += 1
            self._cond.notify()
            self._check_done()


def chunk_values(chunks: IMapIterator) -> Iterator[Any]:
    """The values of an ``imap`` run in chunks (each part a list)."""
    return (value for chunk in chunks for value in chunk)


def _call(callback: Callable[[Any], object], value: Any) -> None:
    """A user's callback. Its exception is reported, and the result still completes
    (the standard pool's result thread would die of it, and every later ``get()``
    would hang)."""
    try:
        callback(value)
    except Exception:
        hook = threading.excepthook
        info = sys.exc_info()
        hook(threading.ExceptHookArgs((info[0], info[1], info[2], threading.current_thread())))
