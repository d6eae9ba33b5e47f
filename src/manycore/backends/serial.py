"""``backend="serial"``: runs every batch inline, in the caller's thread.

For debugging (a plain traceback, a debugger that stops in the function) and for
measuring what parallelism buys.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from manycore._core import (
    Batch,
    BatchResult,
    Deadlines,
    init_raised,
    pool_closed,
    run_batch,
    run_tracked,
    task_state,
    timed_out,
)
from manycore.backends._base import Backend, BackendOptions, Done, register_backend

__all__ = ["SerialBackend"]


@register_backend
class SerialBackend(Backend):
    name = "serial"
    concurrent = False

    def __init__(self, options: BackendOptions):
        super().__init__(options)
        self._closed = False
        self._lock = threading.Lock()  # init runs once, even with several callers
        self._initialised = options.init is None
        self._init_error: BaseException | None = None
        self._state: Any = None  # what init returned: mc.worker_state() in tasks

    def submit(self, batch: Batch, done: Done) -> None:
        if self._closed:
            raise pool_closed()
        if not self._initialised:
            self._initialise()
        if batch.claim is not None and not batch.claim():
            return
        # KeyboardInterrupt is the user's Ctrl-C here, not a task failing: let it go.
        previous = task_state.set_thread(self._state, self.options.shared)
        try:
            if batch.timeout is None:
                result = run_batch(
                    batch.fn, batch.items, batch.star, batch.kwargs, Exception, batch.time_items
                )
            else:
                result = _run_timed(batch, batch.timeout)
        finally:
            task_state.set_thread(*previous)
        done(batch, result)

    def _initialise(self) -> None:
        with self._lock:
            if self._init_error is None and not self._initialised:
                init = self.options.init
                assert init is not None
                try:
                    self._state = init(*self.options.init_args)
                except Exception as exc:
                    self._init_error = exc
                self._initialised = self._init_error is None
            if self._init_error is not None:
                raise init_raised(self._init_error, "the")

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        with self._lock:
            first = not self._closed
            self._closed = True
        if first and self._initialised and self.options.exit is not None:
            previous = task_state.set_thread(self._state, self.options.shared)
            try:
                self.options.exit()
            finally:
                task_state.set_thread(*previous)


def _run_timed(batch: Batch, timeout: float) -> BatchResult:
    """Run inline, each item on a book of deadlines as on the other backends that
    cannot kill; one found past its deadline once it has returned fails then:
    nothing can interrupt the caller's own thread, but the outcome is the same."""
    book: Deadlines[int] = Deadlines()
    began: list[float] = []  # when each item started, by offset
    late: list[tuple[int, float]] = []  # (offset, seconds it ran)

    def returned(now: float) -> None:  # the item that started last is over
        offset = len(began) - 1
        if offset >= 0 and book.passed(offset, now):
            late.append((offset, now - began[offset]))

    def mark(offset: int) -> bool:
        now = time.monotonic()
        returned(now)
        began.append(now)
        book.arm(offset, now + timeout)
        return True

    result = run_tracked(batch.fn, batch.items, batch.star, batch.kwargs, Exception, mark)
    returned(time.monotonic())
    for offset, took in late:
        result.values[offset] = None
        result.failures = result.failures or {}
        result.failures[offset] = timed_out(
            batch.name_item(offset),
            timeout,
            batch.start + offset,
            "the serial backend runs items in the caller's thread and cannot stop "
            "them: it ran to its end and its result was dropped",
            took=took,
        )
    return result
