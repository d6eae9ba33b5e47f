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
  each time. While the pool is active it sleeps on that short timer and nobody has
  to wake it (a wake-up is a system call and, on 2 cores, a context switch that
  competes with the workers); idle for ``linger`` seconds, it parks until
  :meth:`notify_work`. Passive waiters and closing wake it at once.

Lock order: ``_cv`` may be held while the engine's own lock is taken (``has_work``),
never the other way round.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["PollTurns", "WakePipe"]


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
        self._deep = False  # parked with no timer: only notify_work() or close() wake it
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
            # Passive waiters need the I/O thread now; anything else it finds on
            # its short timer, so a submit-and-wait loop never wakes it.
            if self._drivers == 0 and self._passive and self._parked:
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
        # either it saw this work or it is parked by now. Only a deep park (idle
        # for ``linger``) needs a wake-up; a timed one checks again within ``grace``.
        with self._cv:
            self._last_work = time.monotonic()
            if self._parked and self._deep:
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
                if not self._drivers:
                    if self._closing:
                        return
                    if has_work():
                        self._last_work = now
                        if self._passive or now - self._last_drive >= self.grace:
                            return
                # While the pool is active (a driver, work held back, or recent
                # work), sleep on the short timer: nobody needs to wake it. Idle
                # for ``linger``, park until notify_work().
                active = self._drivers or now - self._last_work < max(self.linger, self.grace)
                self._park(self.grace if active else None)

    def _park(self, timeout: float | None) -> None:
        self._parked = True
        self._deep = timeout is None
        try:
            self._cv.wait(timeout)
        finally:
            self._parked = False
            self._deep = False


class WakePipe:
    """The pipe that wakes a poller out of ``select()``: one byte written to it
    makes its read end ready. The write end is used from any thread, also after
    close: its own lock, and -1 once closed, keep a stale descriptor number (reused
    by then for something else) from being written to."""

    def __init__(self, registry: set[int]):
        self._lock = threading.Lock()
        self._registry = registry
        self._r, self._w = os.pipe()
        for fd in (self._r, self._w):
            os.set_blocking(fd, False)
            registry.add(fd)  # descriptors a worker must not inherit

    def fileno(self) -> int:
        """The read end, for the selector."""
        return self._r

    def wake(self) -> None:
        with self._lock:
            if self._w < 0:
                return
            try:
                os.write(self._w, b"\0")
            except OSError:
                pass  # the pipe is full: a wake-up is pending anyway

    def drain(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            for fd in (self._r, self._w):
                self._registry.discard(fd)
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._w = -1
