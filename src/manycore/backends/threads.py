"""``backend="threads"``: a pool of threads in this process.

Good for I/O-bound work and for functions that release the GIL (NumPy, most I/O).
Threads cannot be killed. When an item overstays its ``timeout``, the pool stops
waiting for it: the item fails with :class:`~manycore.TaskTimeout`, its thread is
abandoned (it finishes the call in the background and its result is dropped) and
a fresh thread takes its place, so a hung call never stalls the rest of the work.

A small pool of our own rather than ``ThreadPoolExecutor``, which can neither
replace a thread that is stuck nor tell which item a thread is running.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass

from manycore._core import (
    Batch,
    BatchResult,
    Deadlines,
    PoolBroken,
    cpu_budget,
    init_raised,
    pinned,
    pool_closed,
    run_batch,
    run_tracked,
    task_state,
    timed_out,
)
from manycore.backends._base import Backend, BackendOptions, Done, register_backend

__all__ = ["ThreadBackend"]

_CATCH = (Exception, SystemExit, KeyboardInterrupt)


@dataclass(eq=False)
class _Running:
    """A batch some thread runs: which item since when (written by that thread)."""

    batch: Batch
    done: Done | None  # None once reported: an abandoned thread must not keep the future
    thread: threading.Thread
    now: tuple[int, float] | None = None  # (offset, time.monotonic() it started)
    abandoned: bool = False  # timed out: reported already; the thread quits after it

    def mark(self, offset: int) -> bool:
        """Item ``offset`` starts now; False: stop (the run was abandoned).

        (No lock, no deadline armed per item: the watchdog, when the run's
        deadline comes, reads this and sets it again if a later item is on.)"""
        if self.abandoned:
            return False
        self.now = (offset, time.monotonic())
        return True


@register_backend
class ThreadBackend(Backend):
    name = "threads"
    accepts = frozenset({"thread_name_prefix"})

    @classmethod
    def default_workers(cls) -> int:
        """A few more than the CPUs: threads often wait on I/O."""
        return min(32, cpu_budget() + 4)

    def __init__(self, options: BackendOptions):
        super().__init__(options)
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # idle threads wait here for work
        # The watchdog waits on its own condition (same lock): a notify() meant for
        # an idle thread must never be swallowed by the watchdog.
        self._alarm = threading.Condition(lock)
        self._drained = threading.Condition(lock)  # a thread left: shutdown may be done
        self._work: deque[tuple[Batch, Done]] = deque()
        self._threads: set[threading.Thread] = set()  # not abandoned
        # Each thread's slot, 0..workers-1 (for pool.stats()): a replacement for a
        # thread abandoned after a timeout takes over its slot.
        self._slot_of: dict[threading.Thread, int] = {}
        self._restarts: dict[int, int] = {}
        # Threads started in the slot of a thread that waits for nested work: to
        # that thread (one each: more of its work waits for the same one).
        self._borrowed: dict[threading.Thread, threading.Thread] = {}
        self._idle = 0
        self._deadlines: Deadlines[_Running] = Deadlines()  # the item each timed run is on
        self._closing = False
        self._init_error: BaseException | None = None
        self._watchdog: threading.Thread | None = None

    # ----------------------------------------------------------------- caller

    def submit(self, batch: Batch, done: Done) -> None:
        with self._cond:
            if self._init_error is not None:
                raise self._broken()
            if self._closing:
                raise pool_closed()
            lender = self._nested_without_taker_locked(batch)
            inline = lender is threading.current_thread() and batch.timeout is None
            if not inline:
                # (Work a waiting thread needs goes first, as if it ran it itself.)
                self._queue_locked(batch, done, first=lender is not None)
            if lender is not None and not inline and lender not in self._borrowed.values():
                # Timed work cannot run in the thread that waits for it (that thread
                # could not give up on it), nor can a submit()'s retry (the pool's
                # retry thread sends it): a thread of its own takes the waiting
                # thread's slot meanwhile.
                self._borrowed[self._start_thread_locked(self._slot_of[lender])] = lender
        if inline:
            self._run_inline(batch, done)

    def origin(self) -> threading.Thread | None:
        """The pool's thread that submits now (its retries are sent by another thread)."""
        me = threading.current_thread()
        return me if me in self._threads else None

    def _nested_without_taker_locked(self, batch: Batch) -> threading.Thread | None:
        """Work that one of this pool's own threads gives it (a task's nested map
        or submit, or its retry) while no other thread is free to take it: that
        thread will wait for it, and if every thread did, none would be left to
        run it (a silent deadlock). Returns that thread, which lends its slot."""
        me = threading.current_thread()
        lender = me if me in self._threads else batch.origin
        if lender not in self._threads:
            return None
        free = self._idle - len(self._work) + self.workers - len(self._threads)
        return lender if free <= 0 else None

    def _run_inline(self, batch: Batch, done: Done) -> None:
        if batch.claim is not None and not batch.claim():
            return
        result = run_batch(
            batch.fn, batch.items, batch.star, batch.kwargs, _CATCH, batch.time_items
        )
        with self._cond:
            result.worker = self._slot_of.get(threading.current_thread())
        result.nested = True  # in the time of the item that waits for it
        done(batch, result)

    def _queue_locked(self, batch: Batch, done: Done, first: bool = False) -> None:
        if first:
            self._work.appendleft((batch, done))
        else:
            self._work.append((batch, done))
        if self._idle:
            self._cond.notify()
        # A woken thread counts as idle until it takes its item: start another
        # only when there are more items than takers.
        if len(self._work) > self._idle and len(self._threads) < self.workers:
            self._start_thread_locked()
        if batch.timeout is not None and self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch, name="manycore-thread-watchdog", daemon=True
            )
            self._watchdog.start()

    def cancel(self, batch: Batch) -> bool:
        with self._cond:
            for entry in self._work:
                if entry[0] is batch:
                    self._work.remove(entry)
                    break
            else:
                return False
        entry[1](batch, CancelledError())
        return True

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        with self._cond:
            self._closing = True
            dropped = list(self._work) if cancel_pending else []
            if cancel_pending:
                self._work.clear()
            threads = list(self._threads)
            self._cond.notify_all()
            self._alarm.notify()
        for batch, done in dropped:
            done(batch, CancelledError())
        me = threading.current_thread()
        if wait and me not in threads:
            # Wait for the work to drain, not for the threads themselves: one that
            # was abandoned after a timeout may never return, and is not waited for.
            with self._cond:
                while self._work or self._threads:
                    self._drained.wait()

    # ----------------------------------------------------------------- threads

    def _start_thread_locked(self, slot: int | None = None) -> threading.Thread:
        """Start a thread in the lowest free slot, or in ``slot``: one lent by a
        thread that waits for nested work (the pool then has a thread too many,
        which ends once it finds no work; see ``_serve``)."""
        if slot is None:
            used = {self._slot_of[t] for t in self._threads}
            slot = next(i for i in itertools.count() if i not in used)
        prefix = self.options.thread_name_prefix
        name = f"{prefix}_{slot}" if prefix else f"manycore-thread-{slot}"
        t = threading.Thread(target=self._serve, name=name, daemon=True)
        self._threads.add(t)
        self._slot_of[t] = slot
        t.start()
        return t

    def restarts(self) -> dict[int | str, int]:
        with self._cond:
            return dict(self._restarts.items())

    def _serve(self) -> None:
        me = threading.current_thread()
        state = None
        if self.options.init is not None:
            ok, state = self._initialise()
            if not ok:
                return
        task_state.set_thread(state, self.options.shared)
        while True:
            with self._cond:
                while not self._work and not self._closing:
                    if len(self._threads) > self.workers:
                        break  # a thread too many (a lent slot): it ends rather than idles
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if not self._work:  # closing, or a thread too many, and nothing left
                    break
                batch, done = self._work.popleft()
            wanted = batch.claim is None or batch.claim()
            # Past this point only ``run`` holds the future (the claim and ``done``
            # do): a thread abandoned mid-call drops it once the call is reported.
            batch.claim = None
            run = _Running(batch, done, me)
            del done
            if wanted and not self._run(run, self._slot_of[me]):
                return  # abandoned after a timeout: a replacement took over
            # An idle thread must not keep its last task alive: ``run.done`` holds
            # its future, and so the result the user may have dropped already.
            del batch, run
        if self.options.exit is not None:
            _run_exit(self.options.exit)
        with self._cond:
            self._threads.discard(me)
            self._slot_of.pop(me, None)
            self._borrowed = {b: t for b, t in self._borrowed.items() if me not in (b, t)}
            self._alarm.notify()  # the watchdog may stop when none is left
            self._drained.notify_all()

    def _run(self, run: _Running, slot: int) -> bool:
        """Run one batch; False if this thread was abandoned meanwhile.

        (A failed item's traceback leads back to this frame, which outlives the
        call in a reference cycle with the exception: it must not keep the batch,
        ``done`` and so the task's future, once they are reported.)"""
        batch, done = run.batch, run.done
        assert done is not None
        if batch.timeout is None:
            result = run_batch(
                batch.fn, batch.items, batch.star, batch.kwargs, _CATCH, batch.time_items
            )
            result.worker = slot
            result.nested = self._lent(run.thread)
            done(batch, result)
            del batch, done, result, run
            return True
        del done  # (only ``run`` holds it while the call runs: see _report_expired)

        with self._cond:
            # The first item starts after this: its deadline is no earlier.
            if self._deadlines.arm(run, time.monotonic() + batch.timeout):
                self._alarm.notify()

        def mark(offset: int) -> bool:
            return run.mark(offset)  # noqa: F821  (a cell: `del run` below empties it)

        result = run_tracked(batch.fn, batch.items, batch.star, batch.kwargs, _CATCH, mark)
        result.worker = slot
        with self._cond:
            self._deadlines.disarm(run)
            if run.abandoned:
                return False
            result.nested = run.thread in self._borrowed
        assert run.done is not None
        run.done(batch, result)
        del batch, result, run
        return True

    def _lent(self, thread: threading.Thread) -> bool:
        """``thread`` runs in the slot of a thread that waits for its work."""
        with self._cond:
            return thread in self._borrowed

    def _initialise(self) -> tuple[bool, object]:
        """Run ``init`` in this thread: (succeeded, what it returned)."""
        assert self.options.init is not None
        try:
            return True, self.options.init(*self.options.init_args)
        except BaseException as exc:
            with self._cond:
                if self._init_error is None:
                    self._init_error = exc
                dropped = list(self._work)
                self._work.clear()
                self._threads.discard(threading.current_thread())
                self._slot_of.pop(threading.current_thread(), None)
                self._drained.notify_all()
            err = self._broken()
            for batch, done in dropped:
                done(batch, err)
            return False, None

    def _broken(self) -> PoolBroken:
        assert self._init_error is not None
        return init_raised(self._init_error)

    # ---------------------------------------------------------------- watchdog

    def _watch(self) -> None:
        """Fail items that overstay their timeout and replace their threads."""
        while True:
            with self._cond:
                if self._closing and not self._threads and not self._work:
                    self._watchdog = None
                    return
                now = time.monotonic()
                # (In a method of its own: no loop variable of the scan may hold a
                # finished task, and its future, while the watchdog sleeps.)
                expired, wait = self._expire_locked(now)
                if not expired:
                    self._alarm.wait(wait)
            self._report_expired(expired, now)

    def _expire_locked(self, now: float) -> tuple[list[tuple[_Running, int, int]], float | None]:
        """The runs past their deadline, taken off the books (their threads
        abandoned and replaced); and the seconds until the next deadline."""
        expired = [
            self._abandon_locked(run) for run in self._deadlines.due(now) if self._late(run, now)
        ]
        return expired, self._deadlines.wait(now)

    def _late(self, run: _Running, now: float) -> bool:
        """``run``'s deadline came: True if its item overstayed; else (a later item
        is on, or none has started) its deadline is set anew."""
        limit = run.batch.timeout
        assert limit is not None
        seen = run.now
        if seen is not None and seen[1] + limit <= now:
            return True
        self._deadlines.arm(run, (now if seen is None else seen[1]) + limit)
        return False

    def _abandon_locked(self, run: _Running) -> tuple[_Running, int, int]:
        """``run``'s thread is left to its call; a new one takes its slot."""
        assert run.now is not None
        run.abandoned = True
        self._threads.discard(run.thread)
        slot = self._slot_of.pop(run.thread)
        lender = self._borrowed.pop(run.thread, None)
        if not self._closing or self._work:
            replacement = self._start_thread_locked(slot)
            self._restarts[slot] = self._restarts.get(slot, 0) + 1
            if lender is not None:  # it takes over the lent slot too
                self._borrowed[replacement] = lender
        self._drained.notify_all()
        return run, run.now[0], slot

    @staticmethod
    def _report_expired(expired: list[tuple[_Running, int, int]], now: float) -> None:
        for run, offset, slot in expired:
            late = _timed_out(run.batch, offset, now - run.now[1] if run.now else 0.0)
            late.worker = slot
            assert run.done is not None
            run.done(run.batch, late)
            # Its thread goes on with the call, maybe for ever: it must not keep the
            # future (and a retry's result) alive meanwhile.
            run.done = None


def _run_exit(exit_fn: Callable[[], object]) -> None:
    try:
        exit_fn()
    except Exception:
        import traceback

        traceback.print_exc()  # the thread is ending anyway: say it, do not raise


def _timed_out(batch: Batch, offset: int, seconds: float) -> BatchResult:
    assert batch.timeout is not None
    error = timed_out(
        batch.name_item(offset),
        batch.timeout,
        batch.start + offset,
        "a thread cannot be stopped: the call goes on in the background and its result "
        "will be dropped; use backend='processes' to really stop it",
    )
    return pinned(batch, offset, error, seconds)
