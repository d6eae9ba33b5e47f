"""Who polls an engine's selector: a caller waiting for its result, or the I/O thread.

A round trip through a dedicated I/O thread costs three wake-ups (the worker, the
I/O thread, then the waiting caller, which must also win the GIL back). When a
caller blocks in ``Future.result()`` it can instead poll the selector itself and
read its own result: one wake-up fewer, which is most of the difference between
a raw pipe and a pool. The I/O thread polls whenever no caller does (futures
waited on with ``as_completed``, callbacks, ``map`` runs, dispatching queued work).

Rules, enforced here:

* ``lock`` (re-entrant: a done-callback may itself wait on a future) is held by
  whichever thread is polling.
* A caller that wants to drive while the I/O thread polls asks it to step aside
  (the engine writes to its wake-up pipe) and takes ``lock`` when it is released.
* A caller that finds another *caller* driving waits passively: that driver reads
  every result, its own included, and when it leaves, the I/O thread takes over at
  once because a passive waiter is counted.
* After a caller stops driving, the I/O thread holds back for ``grace`` seconds, so
  a caller that submits and waits in a loop keeps the selector without a hand-over
  each time. With nothing to do it lingers on that short timer for ``linger``
  seconds, then parks until :meth:`notify_work`.

Lock order: ``_cv`` may be held while the engine's own lock is taken (``has_work``),
never the other way round.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["PollTurns"]


class PollTurns:
    def __init__(self, grace: float = 0.002, linger: float = 0.2):
        self.lock = threading.RLock()
        self.grace = grace
        self.linger = linger
        self._cv = threading.Condition(threading.Lock())
        self._drivers = 0
        self._passive = 0
        self._closing = False
        self._parked = False
        self._last_drive = 0.0
        self._last_work = time.monotonic()
        self.io_ident: int | None = None  # the I/O thread, set when it starts
        self.holder: int | None = None  # thread polling now (informative, racy by design)
        self._local = threading.local()  # per thread: how deep it holds ``lock``

    # ----------------------------------------------------------- the lock

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self.lock.acquire(blocking, timeout):
            return False
        self._local.depth = getattr(self._local, "depth", 0) + 1
        self.holder = threading.get_ident()
        return True

    def release(self) -> None:
        self._local.depth -= 1
        if self._local.depth == 0:
            self.holder = None
        self.lock.release()

    def owned(self) -> bool:
        """This thread is polling (perhaps running a callback from inside a poll)."""
        return getattr(self._local, "depth", 0) > 0

    # ----------------------------------------------------------- callers

    def enter_driver(self) -> None:
        with self._cv:
            self._drivers += 1

    def leave_driver(self) -> None:
        with self._cv:
            self._drivers -= 1
            self._last_drive = self._last_work = time.monotonic()
            if self._drivers == 0 and self._parked:
                self._cv.notify_all()

    @contextmanager
    def passive(self) -> Iterator[None]:
        """A caller waits without polling; the I/O thread must poll for it."""
        with self._cv:
            self._passive += 1
            self._cv.notify_all()
        try:
            yield
        finally:
            with self._cv:
                self._passive -= 1

    def notify_work(self) -> None:
        """New work was queued; wake the I/O thread if it is parked."""
        # Under the lock: the I/O thread checks for work and parks atomically, so
        # either it saw this work or it is parked by now and is woken here.
        with self._cv:
            self._last_work = time.monotonic()
            if self._parked:
                self._cv.notify_all()

    def close(self) -> None:
        with self._cv:  # notify_all wakes a parked I/O thread as well as timed waits
            self._closing = True
            self._cv.notify_all()

    @property
    def closing(self) -> bool:
        return self._closing

    def io_should_yield(self) -> bool:
        """The I/O thread should stop polling: a caller wants the selector (also
        while closing: that caller's own result may be long done)."""
        return self._drivers > 0

    # --------------------------------------------------------- I/O thread

    def io_wait_turn(self, has_work: Callable[[], bool]) -> None:
        """Block the I/O thread until it should poll."""
        with self._cv:
            while True:
                now = time.monotonic()
                if self._drivers:
                    self._park()  # woken when the last driver leaves
                elif self._closing:
                    return
                elif has_work():
                    self._last_work = now
                    held_back = now - self._last_drive
                    if self._passive or held_back >= self.grace:
                        return
                    self._cv.wait(self.grace - held_back)
                else:
                    # Nothing to do: woken by notify_work. Shortly after activity the
                    # wait is also timed, so that a forgotten wake-up costs little.
                    lingering = now - self._last_work < self.linger
                    self._park(self.grace if lingering else None)

    def _park(self, timeout: float | None = None) -> None:
        # Every wait but the deliberate hold-back after a driver is a park, so that
        # whoever changes what the I/O thread waits for (new work, the last driver
        # leaving, closing) wakes it.
        self._parked = True
        try:
            self._cv.wait(timeout)
        finally:
            self._parked = False
